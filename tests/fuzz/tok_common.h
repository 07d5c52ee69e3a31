/*
 * tok_common.h - what the tokenizer harnesses do with a tokenizer that
 * loaded: encode a fixed set of texts (with the features tokenizer files
 * switch on: spaces, digits, punctuation, newlines, non-Latin scripts,
 * combining marks, emoji, special tokens) and decode the result, and
 * decode every id of the vocabulary (up to a bound). Included by
 * tok_json.c and tok_spm.c, which say how to call their kind.
 */
#ifndef OURO_FUZZ_TOK_COMMON_H
#define OURO_FUZZ_TOK_COMMON_H

#include <string.h>

#include "fuzz.h"
#include "ouro.h"
#include "tok/tok_internal.h"

static const char *const fuzz_texts[] = {
	"",
	" ",
	"Hello, world! It's 2024: 3.14159 and 1,000,000.",
	"  leading  and\ttabs\r\nand   trailing  ",
	"\n\n\nnew\nlines\n",
	"Grüße aus Köln — naïve café ﬁ ① Ⅻ",
	"日本語のテキスト、中文文本，한국어 텍스트",
	"e\xCC\x81 a\xCC\x8A \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
	"<|im_start|>user\nhi<|im_end|>\n<|endoftext|><unk><s></s>",
	"x",
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	"\xE2\x96\x81\xE2\x96\x81 \xE2\x96\x81 pre\xE2\x96\201fixed",   /* U+2581 */
	"'s 't 're 've 'm 'll 'd CAN'T",
};

typedef int (*fuzz_encode_fn)(void *t, const char *text, size_t len, struct ouro_ids *out);
typedef int (*fuzz_decode_fn)(const void *t, const int32_t *ids, size_t n, struct ouro_bytes *out);

static void fuzz_tok_exercise(void *t, int64_t vocab, fuzz_encode_fn enc, fuzz_decode_fn dec)
{
	struct ouro_ids ids = {0};
	struct ouro_bytes out = {0};

	FUZZ_ASSERT(vocab >= 0);
	for (size_t k = 0; k < sizeof fuzz_texts / sizeof *fuzz_texts; k++) {
		const char *s = fuzz_texts[k];
		ids.n = 0;
		if (enc(t, s, strlen(s), &ids) == OURO_OK) {
			for (size_t i = 0; i < ids.n; i++)
				FUZZ_ASSERT(ids.v[i] >= 0 && ids.v[i] < vocab);
			out.n = 0;
			FUZZ_ASSERT(dec(t, ids.v, ids.n, &out) == OURO_OK);
			fuzz_touch(out.p, out.n);
		}
	}
	/* every id one by one (an id the file leaves out may fail), then
	 * ids just outside the vocabulary (always rejected) */
	int64_t n = vocab < 70000 ? vocab : 70000;
	for (int64_t i = 0; i < n; i++) {
		int32_t id = (int32_t)i;
		out.n = 0;
		if (dec(t, &id, 1, &out) == OURO_OK)
			fuzz_touch(out.p, out.n);
	}
	int32_t bad[2] = {-1, vocab < INT32_MAX ? (int32_t)vocab : -2};
	out.n = 0;
	FUZZ_ASSERT(dec(t, bad, 1, &out) != OURO_OK);
	out.n = 0;
	FUZZ_ASSERT(dec(t, bad + 1, 1, &out) != OURO_OK);
	ouro_ids_free(&ids);
	ouro_bytes_free(&out);
}

#endif
