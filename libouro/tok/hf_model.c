/*
 * hf_model.c - the BPE model section of a tokenizer.json: the vocabulary,
 * the merges (as "a b" strings or ["a", "b"] pairs) and the unk token,
 * and lookups of a piece's id.
 *
 * Byte-level models are run on raw bytes: the vocabulary's byte-level
 * strings (byte 0x20 is "Ġ", ...) are mapped back to the bytes they stand
 * for when the file is loaded, so that a piece never needs re-encoding.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "hf.h"

/* The GPT-2 byte-to-character table: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes for U+0100 upwards in byte order. */
static void byte_level_table(int32_t cp_of[256])
{
	int next = 256;

	for (int b = 0; b < 256; b++) {
		int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
				(b >= 0xAE && b <= 0xFF);
		cp_of[b] = printable ? b : next++;
	}
}

long tok_hf_byte_level_decode(const char *s, size_t n, char *out)
{
	static int32_t cp_of[256];
	static int16_t byte_of[324];
	static int ready;
	size_t i = 0, o = 0;

	if (!ready) {   /* idempotent; a race writes the same values */
		byte_level_table(cp_of);
		for (int c = 0; c < 324; c++)
			byte_of[c] = -1;
		for (int b = 0; b < 256; b++)
			byte_of[cp_of[b]] = (int16_t)b;
		ready = 1;
	}
	while (i < n) {
		int32_t cp;
		int l = tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
		if (l == 0 || cp >= 324 || byte_of[cp] < 0)
			return -1;
		out[o++] = (char)byte_of[cp];
		i += (size_t)l;
	}
	return (long)o;
}

const struct tok_strent *tok_hf_vocab_get(const struct tok_hf *t, const char *s,
					  size_t n, char *tmp)
{
	if (t->byte_level) {
		long l = tok_hf_byte_level_decode(s, n, tmp);
		if (l < 0)
			return tok_strmap_get(&t->raw, s, n);
		return tok_strmap_get(&t->vocab, tmp, (size_t)l);
	}
	return tok_strmap_get(&t->vocab, s, n);
}

/* Makes *buf hold at least need bytes (its contents are not kept). */
static int scratch_reserve(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return OURO_OK;
	free(*buf);
	*cap = need * 2;
	if (!(*buf = malloc(*cap)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	return OURO_OK;
}

/* Checks what the model section is and reads its options. */
static int model_options(struct tok_hf *t, json_t *m, json_t *vocab, json_t *merges,
			 const char *what)
{
	const char *type = hf_jstr(m, "type");

	if (type && strcmp(type, "BPE"))
		return ouro_fail(OURO_EMODEL, "%s: model type %s is not supported (only BPE)", what, type);
	if (!json_is_object(vocab))
		return ouro_fail(OURO_EMODEL, "%s: model.vocab is not an object", what);
	if (!json_is_array(merges))
		return ouro_fail(OURO_EMODEL, "%s: model.merges is not an array", what);
	json_t *dropout = json_object_get(m, "dropout");
	if (json_is_number(dropout) && json_number_value(dropout) > 0)
		return ouro_fail(OURO_EMODEL, "%s: BPE dropout is not supported", what);
	t->fuse_unk = hf_jbool(m, "fuse_unk", 0);
	t->byte_fallback = hf_jbool(m, "byte_fallback", 0);
	t->ignore_merges = hf_jbool(m, "ignore_merges", 0);
	if (hf_jstr(m, "continuing_subword_prefix")) {
		t->prefix_len = strlen(hf_jstr(m, "continuing_subword_prefix"));
		t->prefix = tok_hf_memdup(hf_jstr(m, "continuing_subword_prefix"), t->prefix_len);
	}
	if (hf_jstr(m, "end_of_word_suffix")) {
		t->suffix_len = strlen(hf_jstr(m, "end_of_word_suffix"));
		t->suffix = tok_hf_memdup(hf_jstr(m, "end_of_word_suffix"), t->suffix_len);
	}
	return OURO_OK;
}

/* Sets t->nids from the ids of the vocabulary and of the added tokens,
 * and allocates the tables indexed by id. */
static int alloc_ids(struct tok_hf *t, json_t *vocab, json_t *added, const char *what)
{
	const char *key;
	json_t *val;

	t->nids = 0;
	json_object_foreach(vocab, key, val) {
		json_int_t id = json_integer_value(val);
		if (!json_is_integer(val) || id < 0 || id >= INT32_MAX / 2)
			return ouro_fail(OURO_EMODEL, "%s: vocab entry \"%.60s\" has no valid id", what, key);
		if (id + 1 > t->nids)
			t->nids = (int32_t)id + 1;
	}
	for (size_t i = 0; i < json_array_size(added); i++) {
		json_int_t id = json_integer_value(json_object_get(json_array_get(added, i), "id"));
		if (id >= INT32_MAX / 2)
			return ouro_fail(OURO_EMODEL, "%s: added token %zu has id %lld, too large", what, i, (long long)id);
		if (id + 1 > t->nids)
			t->nids = (int32_t)id + 1;
	}
	t->id_str = calloc((size_t)t->nids + 1, sizeof *t->id_str);
	t->id_len = calloc((size_t)t->nids + 1, sizeof *t->id_len);
	t->id_special = calloc((size_t)t->nids + 1, 1);
	if (!t->id_str || !t->id_len || !t->id_special)
		return ouro_fail(OURO_ENOMEM, "out of memory for %d tokens", t->nids);
	return OURO_OK;
}

/* Reads the vocabulary into t->vocab (for a byte-level model, keyed by
 * the bytes each entry stands for) and t->raw, and points each id's text
 * at its key. */
static int load_vocab(struct tok_hf *t, json_t *vocab)
{
	const char *key;
	json_t *val;
	char *tmp = NULL;
	size_t tmpcap = 0;
	int rc;

	json_object_foreach(vocab, key, val) {
		size_t klen = strlen(key);   /* jansson keys have no NULs */
		int32_t id = (int32_t)json_integer_value(val);
		const char *k = key;
		long l = (long)klen;
		int added_new;
		if ((rc = scratch_reserve(&tmp, &tmpcap, klen + 1)))
			return rc;
		if (t->byte_level) {
			l = tok_hf_byte_level_decode(key, klen, tmp);
			k = tmp;
		}
		/* an entry that is not byte-level text cannot come out of
		 * BPE on bytes; it is kept as written, for lookups and decoding */
		struct tok_strent *e = l < 0 ? tok_strmap_put(&t->raw, key, klen, id, &added_new)
					     : tok_strmap_put(&t->vocab, k, (size_t)l, id, &added_new);
		if (!e) {
			free(tmp);
			return ouro_fail(OURO_ENOMEM, "out of memory for the vocabulary");
		}
	}
	free(tmp);
	/* id -> text for decoding, from the maps' arenas (stable from now on) */
	for (size_t i = 0; i < t->raw.n; i++) {
		struct tok_strent *e = &t->raw.ent[i];
		t->id_str[e->val] = t->raw.arena + e->off;
		t->id_len[e->val] = e->len;
	}
	for (size_t i = 0; i < t->vocab.n; i++) {
		struct tok_strent *e = &t->vocab.ent[i];
		t->id_str[e->val] = t->vocab.arena + e->off;
		t->id_len[e->val] = e->len;
	}
	return OURO_OK;
}

/* The two tokens of merge i, e: an "a b" string or an ["a", "b"] pair. */
static int merge_parts(json_t *e, size_t i, const char **a, size_t *alen,
		       const char **b, size_t *blen, const char *what)
{
	if (json_is_string(e)) {
		const char *s = json_string_value(e);
		const char *sp = strchr(s, ' ');
		if (!sp || strchr(sp + 1, ' '))
			return ouro_fail(OURO_EMODEL, "%s: merge %zu \"%.60s\" is not two tokens separated by one space", what, i, s);
		*a = s;
		*alen = (size_t)(sp - s);
		*b = sp + 1;
		*blen = strlen(*b);
		return OURO_OK;
	}
	if (json_is_array(e) && json_array_size(e) == 2 &&
	    json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
		*a = json_string_value(json_array_get(e, 0));
		*alen = json_string_length(json_array_get(e, 0));
		*b = json_string_value(json_array_get(e, 1));
		*blen = json_string_length(json_array_get(e, 1));
		return OURO_OK;
	}
	return ouro_fail(OURO_EMODEL, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", what, i);
}

/* Adds merge i of a and b, whose tokens must all be in the vocabulary, as
 * rank i. tmp [tmpcap] holds at least 2 * (alen + blen) bytes. */
static int add_merge(struct tok_hf *t, size_t i, const char *a, size_t alen,
		     const char *b, size_t blen, char *tmp, size_t tmpcap, const char *what)
{
	const struct tok_strent *ea = tok_hf_vocab_get(t, a, alen, tmp);
	const struct tok_strent *eb = tok_hf_vocab_get(t, b, blen, tmp);

	if (!ea || !eb)
		return ouro_fail(OURO_EMODEL, "%s: merge %zu: token \"%.*s\" is not in the vocabulary",
				 what, i, (int)(ea ? blen : alen), ea ? b : a);
	/* the merged token: a + b without b's continuing-subword prefix */
	size_t skip = 0;
	if (t->prefix && blen >= t->prefix_len && !memcmp(b, t->prefix, t->prefix_len))
		skip = t->prefix_len;
	memcpy(tmp + tmpcap / 2, a, alen);
	memcpy(tmp + tmpcap / 2 + alen, b + skip, blen - skip);
	const struct tok_strent *en = tok_hf_vocab_get(t, tmp + tmpcap / 2, alen + blen - skip, tmp);
	if (!en)
		return ouro_fail(OURO_EMODEL, "%s: merge %zu: \"%.*s%.*s\" is not in the vocabulary",
				 what, i, (int)alen, a, (int)(blen - skip), b + skip);
	tok_pairmap_put(&t->merges, ea->val, eb->val, (int32_t)i, en->val);
	return OURO_OK;
}

/* Reads the merges, ranked by their place in the list. */
static int load_merges(struct tok_hf *t, json_t *merges, const char *what)
{
	size_t nm = json_array_size(merges);
	char *tmp = NULL;
	size_t tmpcap = 0;
	int rc = OURO_OK;

	if (tok_pairmap_init(&t->merges, nm))
		return ouro_fail(OURO_ENOMEM, "out of memory for %zu merges", nm);
	for (size_t i = 0; i < nm && rc == OURO_OK; i++) {
		const char *a = NULL, *b = NULL;
		size_t alen = 0, blen = 0;
		if (!(rc = merge_parts(json_array_get(merges, i), i, &a, &alen, &b, &blen, what)) &&
		    !(rc = scratch_reserve(&tmp, &tmpcap, (alen + blen) * 2 + 8)))
			rc = add_merge(t, i, a, alen, b, blen, tmp, tmpcap, what);
	}
	free(tmp);
	return rc;
}

/* Sets t->unk_id from the model's unk_token, -1 without one. */
static int load_unk(struct tok_hf *t, const char *unk, const char *what)
{
	t->unk_id = -1;
	if (unk) {
		char ubuf[256];
		const struct tok_strent *e = strlen(unk) < sizeof ubuf ? tok_hf_vocab_get(t, unk, strlen(unk), ubuf) : NULL;
		if (!e)
			return ouro_fail(OURO_EMODEL, "%s: unk_token \"%.60s\" is not in the vocabulary", what, unk);
		t->unk_id = e->val;
	}
	return OURO_OK;
}

int tok_hf_load_model(struct tok_hf *t, json_t *m, json_t *added, const char *what)
{
	json_t *vocab = json_object_get(m, "vocab");
	json_t *merges = json_object_get(m, "merges");
	int rc;

	if ((rc = model_options(t, m, vocab, merges, what)) ||
	    (rc = alloc_ids(t, vocab, added, what)) ||
	    (rc = load_vocab(t, vocab)) ||
	    (rc = load_merges(t, merges, what)))
		return rc;
	return load_unk(t, hf_jstr(m, "unk_token"), what);
}

/* The initial symbols of each byte in a byte-level model: the byte's
 * character if the vocabulary has it, else its <0xXX> tokens (byte
 * fallback), else unk, else nothing (the byte is dropped, as the reference
 * does). */
void tok_hf_byte_level_initial(struct tok_hf *t)
{
	int32_t cp_of[256];

	byte_level_table(cp_of);
	for (int b = 0; b < 256; b++) {
		char c = (char)b;
		const struct tok_strent *e = tok_strmap_get(&t->vocab, &c, 1);
		t->byte_nids[b] = 0;
		if (e) {
			t->byte_ids[b][0] = e->val;
			t->byte_nids[b] = 1;
			continue;
		}
		if (t->byte_fallback) {
			char u[4];
			int l = tok_utf8_put(u, cp_of[b]), ok = 1;
			for (int k = 0; k < l; k++) {
				char hex[8];
				snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)u[k]);
				/* byte-level keys are decoded bytes; hex is ASCII */
				char raw[8];
				long rl = tok_hf_byte_level_decode(hex, strlen(hex), raw);
				const struct tok_strent *h = rl > 0 ? tok_strmap_get(&t->vocab, raw, (size_t)rl) : NULL;
				if (!h) {
					ok = 0;
					break;
				}
				t->byte_ids[b][k] = h->val;
			}
			if (ok) {
				t->byte_nids[b] = (uint8_t)l;
				continue;
			}
		}
		if (t->unk_id >= 0) {
			t->byte_ids[b][0] = t->unk_id;
			t->byte_nids[b] = 1;
		}
	}
}

int64_t tok_hf_vocab_size(const struct tok_hf *t)
{
	return t->nids;
}

int32_t tok_hf_piece_id(const struct tok_hf *t, const char *piece)
{
	size_t n = strlen(piece);
	const struct tok_strent *e = tok_strmap_get(&t->added_map, piece, n);

	if (e)
		return e->val;
	if (t->byte_level) {
		char *tmp = malloc(n + 1);
		if (!tmp)
			return -1;
		e = tok_hf_vocab_get(t, piece, n, tmp);
		free(tmp);
	} else {
		e = tok_strmap_get(&t->vocab, piece, n);
	}
	return e ? e->val : -1;
}
