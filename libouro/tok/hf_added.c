/*
 * hf_added.c - the added tokens of a tokenizer.json: reading them, with
 * the ids the reference gives them, and finding them in text,
 * leftmost-longest, honouring single_word / lstrip / rstrip. Those that
 * are not "normalized" are looked for in the raw text, the others in
 * normalised text (two matchers).
 */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "ouro.h"
#include "hf.h"

/* ---- reading ------------------------------------------------------------ */

/* Gathers the added tokens whose "normalized" flag is `normalized` into
 * m, ordered for tok_hf_next_added. */
static int matcher_build(struct hf_matcher *m, struct hf_added *tok, int n, int normalized)
{
	int k = 0;

	m->tok = malloc((size_t)(n + 1) * sizeof *m->tok);
	if (!m->tok)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	for (int i = 0; i < n; i++)
		if ((int)tok[i].normalized == normalized && tok[i].len > 0)
			m->tok[k++] = &tok[i];
	m->n = k;
	/* sort by first byte, then longest first (insertion sort: few tokens
	 * in most files; qsort would need a comparator over pointers) */
	for (int i = 1; i < k; i++) {
		struct hf_added *x = m->tok[i];
		int j = i - 1;
		while (j >= 0) {
			struct hf_added *y = m->tok[j];
			unsigned char fx = (unsigned char)x->content[0], fy = (unsigned char)y->content[0];
			if (fy < fx || (fy == fx && y->len >= x->len))
				break;
			m->tok[j + 1] = y;
			j--;
		}
		m->tok[j + 1] = x;
	}
	int j = 0;
	for (int b = 0; b <= 256; b++) {
		while (j < k && (unsigned char)m->tok[j]->content[0] < b)
			j++;
		m->first[b] = j;
	}
	return OURO_OK;
}

int tok_hf_load_added(struct tok_hf *t, json_t *list, const char *what)
{
	size_t i;
	json_t *e;
	int rc;

	if (!list || json_is_null(list))
		list = json_array();   /* none */
	else
		json_incref(list);
	if (!json_is_array(list)) {
		json_decref(list);
		return ouro_fail(OURO_EMODEL, "%s: added_tokens is not an array", what);
	}
	t->added = calloc(json_array_size(list) + 1, sizeof *t->added);
	if (!t->added) {
		json_decref(list);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	/* The reference does not take the ids in the file as they are: a
	 * token already in the vocabulary gets its id there, and the others
	 * get the next free ids after the vocabulary, in order. For a
	 * consistent file (every real one) that is the id written. */
	int32_t model_size = (int32_t)(t->vocab.n + t->raw.n), next_id = -1;
	json_array_foreach(list, i, e) {
		json_t *c = json_object_get(e, "content");
		json_t *id = json_object_get(e, "id");
		struct hf_added *a = &t->added[t->nadded];
		if (!json_is_string(c) || !json_is_integer(id) ||
		    json_integer_value(id) < 0 || json_integer_value(id) >= t->nids) {
			json_decref(list);
			return ouro_fail(OURO_EMODEL, "%s: added token %zu has no content or no valid id", what, i);
		}
		size_t clen = json_string_length(c);
		const char *cs = json_string_value(c);
		if (clen == 0 || tok_strmap_get(&t->added_map, cs, clen))
			continue;
		char *tmp = malloc(clen + 1);
		if (!tmp) {
			json_decref(list);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		const struct tok_strent *ve = tok_hf_vocab_get(t, cs, clen, tmp);
		free(tmp);
		int32_t aid;
		if (ve) {
			aid = ve->val;
		} else {
			aid = next_id < 0 ? model_size : next_id;
			next_id = aid + 1;
		}
		if (aid >= t->nids) {
			json_decref(list);
			return ouro_fail(OURO_EMODEL, "%s: added token %zu \"%.60s\" would get id %d, beyond the ids the file uses",
					 what, i, cs, aid);
		}
		a->len = clen;
		a->content = tok_hf_memdup(cs, a->len);
		if (!a->content) {
			json_decref(list);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		t->nadded++;
		a->id = aid;
		a->special = hf_jbool(e, "special", 0);
		a->lstrip = hf_jbool(e, "lstrip", 0);
		a->rstrip = hf_jbool(e, "rstrip", 0);
		a->single_word = hf_jbool(e, "single_word", 0);
		a->normalized = hf_jbool(e, "normalized", !a->special);
		int added_new;
		if (!tok_strmap_put(&t->added_map, a->content, a->len, a->id, &added_new)) {
			json_decref(list);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		/* decode added tokens to their content */
		t->id_str[a->id] = a->content;
		t->id_len[a->id] = (uint32_t)a->len;
		t->id_special[a->id] = 1;
	}
	json_decref(list);
	if ((rc = matcher_build(&t->raw_match, t->added, t->nadded, 0)))
		return rc;
	return matcher_build(&t->norm_match, t->added, t->nadded, 1);
}

/* ---- finding ------------------------------------------------------------ */

/* \w of the reference's regex engine: Alphabetic, marks, decimal digits,
 * connector punctuation and the joiners. Alphabetic is the letters, Nl and
 * Other_Alphabetic, which outside the marks is a few blocks of enclosed
 * letters (So). */
static int is_word_char(int32_t cp)
{
	if (cp < 0x80)
		return (unsigned)((cp | 0x20) - 'a') < 26u || (unsigned)(cp - '0') < 10u || cp == '_';
	switch (utf8proc_category(cp)) {
	case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL:
	case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
	case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
	case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_PC:
		return 1;
	default:
		return cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9) ||
		       (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
		       (cp >= 0x1F170 && cp <= 0x1F189);
	}
}

int tok_hf_next_added(const struct hf_matcher *m, const char *s, size_t n,
		      size_t from, size_t floor, size_t *b, size_t *e, int32_t *id)
{
	if (m->n == 0)
		return 0;
	for (size_t i = from; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		for (int k = m->first[c]; k < m->first[c + 1]; k++) {
			const struct hf_added *a = m->tok[k];
			if (a->len > n - i || memcmp(s + i, a->content, a->len))
				continue;
			size_t start = i, stop = i + a->len;
			int32_t cp;
			if (a->single_word) {
				int before = 0, after = 0;
				if (start > 0) {
					hf_char_before(s, 0, start, &cp);
					before = is_word_char(cp);
				}
				if (stop < n) {
					hf_utf8_at(s + stop, n - stop, &cp);
					after = is_word_char(cp);
				}
				if (before || after) {
					/* not a word of its own: the search goes on after it */
					i = stop - 1;
					goto next_pos;
				}
			}
			if (a->lstrip)
				start = hf_space_start(s, floor, start);
			if (a->rstrip)
				stop = hf_space_end(s, stop, n);
			*b = start;
			*e = stop;
			*id = a->id;
			return 1;
		}
next_pos:;
	}
	return 0;
}
