/*
 * eval_extract.c - the answer of a generated text, for ouro-eval gen: a
 * thinking section dropped, then the answer extracted (GSM8K's "####",
 * the last number, the last \boxed{...}, a regular expression, or the
 * whole text), and answers normalised so that the reference and the
 * extraction compare as equal strings. The rules are those of
 * ouro-eval(1), EXTRACTION; they are here once so that the unit test, the
 * program and the man page speak of the same thing.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "eval.h"

const char *const ouro_extract_names[] = {"text", "gsm8k", "last-number", "boxed", "regex"};

/* A number as it is written in a solution: a sign, a dollar, digits with
 * thousands commas, a decimal part ("-$1,234.50"). */
#define NUMBER_RE "-?\\$?-?[0-9](?:[0-9,]*[0-9])?(?:\\.[0-9]+)?"

static int compile(pcre2_code **re, const char *pat, const char *what)
{
	int err;
	PCRE2_SIZE off;
	PCRE2_UCHAR msg[256];

	if ((*re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &off, NULL)))
		return OURO_OK;
	pcre2_get_error_message(err, msg, sizeof msg);
	return ouro_fail(OURO_EUSAGE, "%s: '%s' is not a regular expression: %s at offset %zu", what,
			 pat, (const char *)msg, (size_t)off);
}

int ouro_extract_init(struct ouro_extract *x, const char *spec)
{
	int rc;

	memset(x, 0, sizeof *x);
	if (strncmp(spec, "regex:", 6) == 0) {
		x->kind = OURO_EXTRACT_REGEX;
		if ((rc = compile((pcre2_code **)&x->re, spec + 6, "--extract")))
			return rc;
	} else {
		for (x->kind = OURO_EXTRACT_TEXT; x->kind < OURO_EXTRACT_REGEX; x->kind++)
			if (strcmp(spec, ouro_extract_names[x->kind]) == 0)
				break;
		if (x->kind == OURO_EXTRACT_REGEX)
			return ouro_fail(OURO_EUSAGE, "--extract: '%s' is not text, gsm8k, last-number, boxed or regex:RE",
					 spec);
	}
	if ((rc = compile((pcre2_code **)&x->number, NUMBER_RE, "number")))
		ouro_extract_free(x);
	return rc;
}

void ouro_extract_free(struct ouro_extract *x)
{
	pcre2_code_free(x->re);
	pcre2_code_free(x->number);
	x->re = x->number = NULL;
}

/* The first match of re in s [len] at or after start: 1 with group g's
 * bounds (the whole match if the pattern has no such group, or it did
 * not take part) in *b, *e; 0 if none; -1 for an error of the matcher. */
static int match(const pcre2_code *re, const char *s, size_t len, size_t start, int g, size_t *b,
		 size_t *e)
{
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
	int n;

	if (!md)
		return -1;
	n = pcre2_match(re, (PCRE2_SPTR)s, len, start, 0, md, NULL);
	if (n > 0) {
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		if (g >= n || ov[2 * g] == PCRE2_UNSET)
			g = 0;
		*b = ov[2 * g];
		*e = ov[2 * g + 1];
	}
	pcre2_match_data_free(md);
	return n > 0 ? 1 : n == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

/* The last number in s [len] from start: 1 with its bounds, else 0. */
static int last_number(const pcre2_code *re, const char *s, size_t len, size_t start, size_t *b,
		       size_t *e)
{
	size_t mb, me;
	int found = 0, r;

	while (start <= len && (r = match(re, s, len, start, 0, &mb, &me)) == 1) {
		*b = mb;
		*e = me;
		found = 1;
		start = me > mb ? me : mb + 1;
	}
	return found;
}

/* The contents of the last \boxed{...} of s [len] whose braces balance. */
static int last_boxed(const char *s, size_t len, size_t *b, size_t *e)
{
	static const char key[] = "\\boxed{";
	const size_t klen = sizeof key - 1;

	for (size_t at = len >= klen ? len - klen + 1 : 0; at-- > 0;) {
		if (memcmp(s + at, key, klen))
			continue;
		int depth = 1;
		size_t i = at + klen;
		for (; i < len && depth; i++)
			depth += s[i] == '{' ? 1 : s[i] == '}' ? -1 : 0;
		if (depth == 0) {
			*b = at + klen;
			*e = i - 1;
			return 1;
		}
	}
	return 0;
}

/* The part of text [len] that is not a thinking section: what follows
 * the last "</think>", else what precedes a "<think>" never closed, else
 * all of it. */
static void drop_think(const char *text, size_t len, size_t *b, size_t *e)
{
	const char *close = NULL, *open;

	*b = 0;
	*e = len;
	for (const char *p = text; (p = memmem(p, len - (size_t)(p - text), "</think>", 8)); p += 8)
		close = p;
	if (close)
		*b = (size_t)(close - text) + 8;
	else if ((open = memmem(text, len, "<think>", 7)))
		*e = (size_t)(open - text);
}

int ouro_extract_answer(const struct ouro_extract *x, const char *text, size_t len,
			struct ouro_bytes *out, int *found)
{
	size_t lo, hi, b = 0, e = 0;
	int r = 0;

	out->n = 0;
	drop_think(text, len, &lo, &hi);
	const char *s = text + lo;
	size_t n = hi - lo;
	switch (x->kind) {
	case OURO_EXTRACT_TEXT:
		b = 0;
		e = n;
		r = 1;
		break;
	case OURO_EXTRACT_GSM8K: {
		const char *mark = memmem(s, n, "####", 4);
		if (mark)
			r = match(x->number, s, n, (size_t)(mark - s) + 4, 0, &b, &e);
		if (r == 0)
			r = last_number(x->number, s, n, 0, &b, &e);
		break;
	}
	case OURO_EXTRACT_LAST_NUMBER: r = last_number(x->number, s, n, 0, &b, &e); break;
	case OURO_EXTRACT_BOXED: r = last_boxed(s, n, &b, &e); break;
	case OURO_EXTRACT_REGEX: r = match(x->re, s, n, 0, 1, &b, &e); break;
	}
	if (r < 0)
		return ouro_fail(OURO_EINPUT, "the regular expression failed on the text (invalid UTF-8, or a limit)");
	*found = r;
	if (r && ouro_bytes_add(out, s + b, e - b))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	return OURO_OK;
}

static int is_blank(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* s [len] as a canonical number if it is one (a sign and a dollar in
 * either order, digits with commas, a decimal part): the digits without
 * commas or leading zeros, the decimal part without trailing zeros (and
 * without its point when nothing is left), "-" only before a number that
 * is not zero. 0 if s is not a number. */
static int canonical_number(const char *s, size_t len, struct ouro_bytes *out)
{
	size_t i = 0, d0, d1, f0 = 0, f1 = 0;
	int sign = 0, dollar = 0;
	char digits[64];
	size_t nd = 0;

	for (; i < len && (s[i] == '-' || s[i] == '+' || s[i] == '$'); i++) {
		if (s[i] == '$' ? dollar++ : sign)
			return 0;
		if (s[i] != '$')
			sign = s[i];
	}
	d0 = i;
	for (; i < len && ((s[i] >= '0' && s[i] <= '9') || (s[i] == ',' && i > d0)); i++)
		;
	d1 = i;
	if (d1 == d0 || s[d1 - 1] == ',')
		return 0;
	if (i < len && s[i] == '.') {
		f0 = ++i;
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++)
			;
		f1 = i;
	}
	if (i != len)
		return 0;
	for (size_t k = d0; k < d1; k++)
		if (s[k] != ',' && (nd || s[k] != '0') && nd < sizeof digits)
			digits[nd++] = s[k];
	while (f1 > f0 && s[f1 - 1] == '0')
		f1--;
	if (nd == sizeof digits)
		return 0;
	int zero = nd == 0 && f1 == f0;
	if ((sign == '-' && !zero && ouro_bytes_add(out, "-", 1)) ||
	    (nd ? ouro_bytes_add(out, digits, nd) : ouro_bytes_add(out, "0", 1)) ||
	    (f1 > f0 && (ouro_bytes_add(out, ".", 1) || ouro_bytes_add(out, s + f0, f1 - f0))))
		return -1;
	return 1;
}

int ouro_answer_normalize(const char *s, size_t len, struct ouro_bytes *out)
{
	utf8proc_uint8_t *folded = NULL;
	int r;

	out->n = 0;
	while (len && is_blank((unsigned char)s[len - 1]))
		len--;
	while (len && is_blank((unsigned char)*s)) {
		s++;
		len--;
	}
	if ((r = canonical_number(s, len, out)))
		return r < 0 ? ouro_fail(OURO_ENOMEM, "out of memory") : OURO_OK;
	/* a string: case folded (invalid UTF-8 is left as it is), blank runs
	 * made one space, trailing punctuation of a sentence dropped */
	if (utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &folded,
			 UTF8PROC_CASEFOLD | UTF8PROC_COMPOSE) >= 0) {
		s = (const char *)folded;
		len = strlen(s);
	}
	for (size_t i = 0; i < len && !r; i++) {
		if (is_blank((unsigned char)s[i]) && (i + 1 == len || is_blank((unsigned char)s[i + 1])))
			continue;
		r = ouro_bytes_add(out, is_blank((unsigned char)s[i]) ? " " : s + i, 1);
	}
	while (!r && out->n && out->p[out->n - 1] && strchr(".,;:!? ", out->p[out->n - 1]))
		out->n--;
	free(folded);
	return r ? ouro_fail(OURO_ENOMEM, "out of memory") : OURO_OK;
}
