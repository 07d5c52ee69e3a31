/*
 * hf_normalize.c - the normalizers of a tokenizer.json (NFC, NFD, NFKC,
 * NFKD, Lowercase, Replace with a string or a regex, Prepend, Strip, and
 * Sequences of them): reading them and running them over a stretch of
 * text. Unicode normal forms and lowercase come from utf8proc.
 */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "ouro.h"
#include "hf.h"

/* ---- reading ------------------------------------------------------------ */

int tok_hf_load_normalizer(struct tok_hf *t, json_t *n, const char *what)
{
	const char *type;
	int rc;

	if ((rc = tok_hf_load_component(t, n, what, "normalizer", "normalizers", 1,
					tok_hf_load_normalizer, &type)) || !type)
		return rc;
	void *p = realloc(t->norm, (size_t)(t->nnorm + 1) * sizeof *t->norm);
	if (!p)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	t->norm = p;
	struct hf_norm *nm = &t->norm[t->nnorm];
	memset(nm, 0, sizeof *nm);
	if (!strcmp(type, "NFC")) {
		nm->type = NORM_NFC;
	} else if (!strcmp(type, "NFD")) {
		nm->type = NORM_NFD;
	} else if (!strcmp(type, "NFKC")) {
		nm->type = NORM_NFKC;
	} else if (!strcmp(type, "NFKD")) {
		nm->type = NORM_NFKD;
	} else if (!strcmp(type, "Lowercase")) {
		nm->type = NORM_LOWER;
	} else if (!strcmp(type, "Strip")) {
		nm->type = NORM_STRIP;
		nm->left = hf_jbool(n, "strip_left", 1);
		nm->right = hf_jbool(n, "strip_right", 1);
	} else if (!strcmp(type, "Prepend")) {
		json_t *s = json_object_get(n, "prepend");
		if (!json_is_string(s))
			return ouro_fail(OURO_EMODEL, "%s: Prepend normalizer without a prepend string", what);
		nm->type = NORM_PREPEND;
		nm->alen = json_string_length(s);
		nm->a = tok_hf_memdup(json_string_value(s), nm->alen);
	} else if (!strcmp(type, "Replace")) {
		json_t *c = json_object_get(n, "content");
		if (!json_is_string(c))
			return ouro_fail(OURO_EMODEL, "%s: Replace normalizer without content", what);
		nm->type = NORM_REPLACE;
		nm->blen = json_string_length(c);
		nm->b = tok_hf_memdup(json_string_value(c), nm->blen);
		t->nnorm++;   /* so that a failure below frees what was made */
		rc = tok_hf_load_pattern(json_object_get(n, "pattern"), &nm->re, &nm->a, &nm->alen, what);
		if (rc)
			return rc;
		if (nm->re)
			nm->type = NORM_REPLACE_RE;
		if (nm->type == NORM_REPLACE && nm->alen == 0)
			return ouro_fail(OURO_EMODEL, "%s: Replace normalizer with an empty pattern", what);
		return OURO_OK;
	} else {
		return ouro_fail(OURO_EMODEL, "%s: normalizer type %s is not supported", what, type);
	}
	t->nnorm++;
	return OURO_OK;
}

/* ---- running ------------------------------------------------------------ */

static int norm_unicode(struct ouro_bytes *dst, const char *s, size_t n, int opts)
{
	utf8proc_uint8_t *res = NULL;
	utf8proc_ssize_t r;

	r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &res,
			 (utf8proc_option_t)(UTF8PROC_STABLE | opts));
	if (r < 0)
		return ouro_fail(r == UTF8PROC_ERROR_NOMEM ? OURO_ENOMEM : OURO_EINPUT,
				 "normalizer: %s", utf8proc_errmsg(r));
	int rc = ouro_bytes_add(dst, res, (size_t)r);
	free(res);
	return rc;
}

static int norm_lower(struct ouro_bytes *dst, const char *s, size_t n)
{
	size_t i = 0;
	int rc = OURO_OK;

	while (i < n && rc == OURO_OK) {
		int32_t cp;
		int l = hf_utf8_at(s + i, n - i, &cp);
		char u[8];
		int ul;
		if (cp == 0x130) {   /* the one unconditional full lowercase mapping */
			ul = tok_utf8_put(u, 'i');
			ul += tok_utf8_put(u + ul, 0x307);
		} else {
			ul = tok_utf8_put(u, utf8proc_tolower(cp));
		}
		rc = ouro_bytes_add(dst, u, (size_t)ul);
		i += (size_t)l;
	}
	return rc;
}

static int norm_replace_re(struct ouro_bytes *dst, const struct hf_norm *nm,
			   const char *s, size_t n)
{
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(nm->re, NULL);
	size_t pos = 0, last = 0;
	int rc = OURO_OK;

	if (!md)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	while (pos <= n && rc == OURO_OK) {
		int r = pcre2_match(nm->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
		if (r < 0)
			break;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		rc = ouro_bytes_add(dst, s + last, ov[0] - last);
		if (!rc)
			rc = ouro_bytes_add(dst, nm->b, nm->blen);
		last = ov[1];
		if (ov[1] == ov[0]) {   /* empty match: step one character */
			int32_t cp;
			if (ov[1] >= n)
				break;
			pos = ov[1] + (size_t)hf_utf8_at(s + ov[1], n - ov[1], &cp);
			rc = rc ? rc : ouro_bytes_add(dst, s + ov[1], pos - ov[1]);
			last = pos;
		} else {
			pos = ov[1];
		}
	}
	pcre2_match_data_free(md);
	return rc ? rc : ouro_bytes_add(dst, s + last, n - last);
}

int tok_hf_normalize(struct tok_hf *t, const char *s, size_t n,
		     const char **res, size_t *rlen)
{
	int cur = 0, rc = OURO_OK;

	for (int i = 0; i < t->nnorm && rc == OURO_OK; i++) {
		const struct hf_norm *nm = &t->norm[i];
		struct ouro_bytes *dst = &t->nbuf[cur];
		dst->n = 0;
		switch (nm->type) {
		case NORM_NFC:
			rc = norm_unicode(dst, s, n, UTF8PROC_COMPOSE);
			break;
		case NORM_NFD:
			rc = norm_unicode(dst, s, n, UTF8PROC_DECOMPOSE);
			break;
		case NORM_NFKC:
			rc = norm_unicode(dst, s, n, UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
			break;
		case NORM_NFKD:
			rc = norm_unicode(dst, s, n, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
			break;
		case NORM_LOWER:
			rc = norm_lower(dst, s, n);
			break;
		case NORM_PREPEND:
			if (n)
				rc = ouro_bytes_add(dst, nm->a, nm->alen);
			if (!rc)
				rc = ouro_bytes_add(dst, s, n);
			break;
		case NORM_STRIP: {
			size_t a = nm->left ? hf_space_end(s, 0, n) : 0;
			size_t b = nm->right ? hf_space_start(s, a, n) : n;
			rc = ouro_bytes_add(dst, s + a, b - a);
			break;
		}
		case NORM_REPLACE: {
			size_t i0 = 0, last = 0;
			while (i0 + nm->alen <= n && rc == OURO_OK) {
				if (!memcmp(s + i0, nm->a, nm->alen)) {
					rc = ouro_bytes_add(dst, s + last, i0 - last);
					if (!rc)
						rc = ouro_bytes_add(dst, nm->b, nm->blen);
					i0 += nm->alen;
					last = i0;
				} else {
					i0++;
				}
			}
			if (!rc)
				rc = ouro_bytes_add(dst, s + last, n - last);
			break;
		}
		case NORM_REPLACE_RE:
			rc = norm_replace_re(dst, nm, s, n);
			break;
		}
		if (!dst->p)
			rc = rc ? rc : ouro_bytes_add(dst, "", 0);
		s = dst->p;
		n = dst->n;
		cur ^= 1;
	}
	*res = s;
	*rlen = n;
	return rc;
}
