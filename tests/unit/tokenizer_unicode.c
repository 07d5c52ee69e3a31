/*
 * tokenizer_unicode.c - the character classes the byte-level pre-tokenizer
 * splits on, for every code point, against the reference.
 *
 * tests/tokenizer/gpt2-classes.txt (written by scripts/tok-reference from
 * the Hugging Face tokenizers library) gives, as ranges, how the reference
 * classes each code point in the GPT-2 pattern (L letter, N number, S
 * space, P other) and whether its Digits pre-tokenizer splits it off
 * ("d"). libouro's classes come from utf8proc's general categories; the
 * reference knows a newer Unicode version, so it may class code points
 * that are unassigned (Cn) in utf8proc's tables differently. Every code
 * point assigned in utf8proc's Unicode version must agree.
 * Also: UTF-8 decoding against the definition, byte for byte.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "ouro.h"
#include "tok/tok_internal.h"
#include "unit.h"

static char ours(int32_t cp)
{
	switch (tok_class(cp)) {
	case TOK_C_LETTER: return 'L';
	case TOK_C_NUMBER: return 'N';
	case TOK_C_SPACE: return 'S';
	default: return 'P';
	}
}

static void test_classes(void)
{
	FILE *f = fopen("tests/tokenizer/gpt2-classes.txt", "r");
	static unsigned start[8192];
	static char cls[8192][4];
	int n = 0;
	long same = 0, newer = 0, bad = 0, total = 0;

	CHECK(f != NULL);
	if (!f)
		return;
	while (n < 8192 && fscanf(f, "%x %3s", &start[n], cls[n]) == 2)
		n++;
	fclose(f);
	CHECK(n > 100);
	for (int32_t cp = 0, j = 0; cp <= 0x10FFFF; cp++) {
		if (cp >= 0xD800 && cp <= 0xDFFF)
			continue;
		while (j + 1 < n && start[j + 1] <= (unsigned)cp)
			j++;
		char want = cls[j][0];
		int want_digit = cls[j][1] == 'd';
		int digit = tok_class(cp) == TOK_C_NUMBER;   /* Digits splits Nd Nl No */
		total++;
		if (ours(cp) == want && digit == want_digit) {
			same++;
		} else if (utf8proc_category(cp) == UTF8PROC_CATEGORY_CN) {
			newer++;
		} else {
			if (bad++ < 10)
				fprintf(stderr, "U+%04X: ours %c%s, reference %s\n", cp, ours(cp),
					digit ? "d" : "", cls[j]);
		}
	}
	CHECK(bad == 0);
	printf("# unicode classes: %ld code points, %ld as the reference, %ld differ where "
	       "utf8proc (Unicode %s) has them unassigned, %ld other differences\n",
	       total, same, newer, utf8proc_unicode_version(), bad);
}

static void test_utf8(void)
{
	unsigned char b[4];
	long bad = 0;

	/* every code point encodes and decodes back */
	for (int32_t cp = 0; cp <= 0x10FFFF; cp++) {
		if (cp >= 0xD800 && cp <= 0xDFFF)
			continue;
		int32_t back = -1;
		int l = tok_utf8_put((char *)b, cp);
		if (tok_utf8_next(b, (size_t)l, &back) != l || back != cp ||
		    tok_utf8_check((const char *)b, (size_t)l) != (size_t)l)
			bad++;
		if (l > 1 && tok_utf8_next(b, (size_t)l - 1, &back) != 0)   /* truncated */
			bad++;
	}
	CHECK(bad == 0);
	/* every 2-byte sequence: valid exactly when the definition says so */
	bad = 0;
	for (int x = 0; x < 256; x++)
		for (int y = 0; y < 256; y++) {
			int32_t cp;
			b[0] = (unsigned char)x;
			b[1] = (unsigned char)y;
			int l = tok_utf8_next(b, 2, &cp);
			int want = x < 0x80 ? 1 : (x >= 0xC2 && x <= 0xDF && (y & 0xC0) == 0x80) ? 2 : 0;
			bad += l != want;
		}
	CHECK(bad == 0);
	/* surrogates, overlongs and values past U+10FFFF are invalid */
	CHECK(tok_utf8_check("\xED\xA0\x80", 3) == 0);
	CHECK(tok_utf8_check("a\xE0\x80\x80", 4) == 1);
	CHECK(tok_utf8_check("ab\xF0\x80\x80\x80", 6) == 2);
	CHECK(tok_utf8_check("\xF4\x90\x80\x80", 4) == 0);
	CHECK(tok_utf8_check("\xF4\x8F\xBF\xBF", 4) == 4);
	CHECK(tok_utf8_check("\xC0\xAF", 2) == 0);
	CHECK(tok_utf8_check("a\0b", 3) == 3);
}

int main(void)
{
	test_classes();
	test_utf8();
	return unit_done("tokenizer_unicode");
}
