/*
 * bpe.c - BPE merging of one piece of a tokenizer.json model: its
 * characters (bytes, for byte-level models) become symbols, with byte
 * fallback and unk for those the vocabulary lacks, and the adjacent pair
 * with the lowest merge rank, leftmost on ties, is merged until none is
 * left. Short words are merged by scanning, long ones with a heap, and
 * short pieces' ids are cached.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "hf.h"

static int syms_reserve(struct tok_hf *t, size_t n)
{
	if (n <= t->syms_cap)
		return OURO_OK;
	size_t cap = t->syms_cap ? t->syms_cap : 256;
	while (cap < n)
		cap *= 2;
	void *p = realloc(t->syms, cap * sizeof *t->syms);
	void *q = realloc(t->heap, cap * 2 * sizeof *t->heap);
	if (p)
		t->syms = p;
	if (q)
		t->heap = q;
	if (!p || !q)
		return ouro_fail(OURO_ENOMEM, "out of memory for a word of %zu symbols", n);
	t->syms_cap = cap;
	t->heap_cap = cap * 2;
	return OURO_OK;
}

static inline int cand_less(const struct merge_cand *a, const struct merge_cand *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

/* Merges symbols[0..n) (linked by prev/next) with a heap of candidate
 * pairs ordered by (rank, position): the reference's algorithm, for long
 * words. */
static void merge_heap(struct tok_hf *t, struct sym *sy, int32_t n)
{
	struct merge_cand *h = t->heap;
	size_t hn = 0;

#define HEAP_PUSH(R, P, I) do { \
	size_t c_ = hn++; \
	struct merge_cand x_ = {(R), (P), (I)}; \
	while (c_ > 0 && cand_less(&x_, &h[(c_ - 1) / 2])) { \
		h[c_] = h[(c_ - 1) / 2]; \
		c_ = (c_ - 1) / 2; \
	} \
	h[c_] = x_; \
} while (0)

	for (int32_t i = 0; i + 1 < n; i++) {
		const struct tok_pairent *pe = tok_pairmap_get(&t->merges, sy[i].id, sy[i + 1].id);
		if (pe)
			HEAP_PUSH(pe->rank, i, pe->id);
	}
	while (hn > 0) {
		struct merge_cand top = h[0];
		/* pop */
		struct merge_cand last = h[--hn];
		size_t c = 0;
		for (;;) {
			size_t l = 2 * c + 1, best = c;
			const struct merge_cand *bv = &last;
			if (l < hn && cand_less(&h[l], bv)) {
				best = l;
				bv = &h[l];
			}
			if (l + 1 < hn && cand_less(&h[l + 1], bv))
				best = l + 1;
			if (best == c)
				break;
			h[c] = h[best];
			c = best;
		}
		if (hn > 0)
			h[c] = last;

		struct sym *a = &sy[top.pos];
		if (a->len == 0 || a->next < 0)
			continue;
		struct sym *b = &sy[a->next];
		const struct tok_pairent *pe = tok_pairmap_get(&t->merges, a->id, b->id);
		if (!pe || pe->id != top.id)
			continue;   /* stale */
		a->id = top.id;
		a->len += b->len;
		b->len = 0;
		a->next = b->next;
		if (b->next >= 0)
			sy[b->next].prev = top.pos;
		/* the heap holds at most one entry per merge plus the initial
		 * pairs: fewer than 2n */
		if (a->prev >= 0) {
			pe = tok_pairmap_get(&t->merges, sy[a->prev].id, a->id);
			if (pe)
				HEAP_PUSH(pe->rank, a->prev, pe->id);
		}
		if (a->next >= 0) {
			pe = tok_pairmap_get(&t->merges, a->id, sy[a->next].id);
			if (pe)
				HEAP_PUSH(pe->rank, top.pos, pe->id);
		}
	}
#undef HEAP_PUSH
}

/* The same result for short words: scan for the lowest-ranked adjacent
 * pair, leftmost on ties, merge it, repeat. ids[0..n) in place; returns the
 * new count. */
static int32_t merge_scan(const struct tok_hf *t, int32_t *ids, int32_t n)
{
	int32_t rank[64], to[64];

	for (int32_t i = 0; i + 1 < n; i++) {
		const struct tok_pairent *pe = tok_pairmap_get(&t->merges, ids[i], ids[i + 1]);
		rank[i] = pe ? pe->rank : INT32_MAX;
		to[i] = pe ? pe->id : -1;
	}
	while (n > 1) {
		int32_t best = -1, br = INT32_MAX;
		for (int32_t i = 0; i + 1 < n; i++)
			if (rank[i] < br) {
				br = rank[i];
				best = i;
			}
		if (best < 0)
			break;
		ids[best] = to[best];
		memmove(ids + best + 1, ids + best + 2, (size_t)(n - best - 2) * sizeof *ids);
		memmove(rank + best + 1, rank + best + 2, (size_t)(n - best - 2 > 0 ? n - best - 2 : 0) * sizeof *rank);
		memmove(to + best + 1, to + best + 2, (size_t)(n - best - 2 > 0 ? n - best - 2 : 0) * sizeof *to);
		n--;
		for (int32_t i = best - 1; i <= best; i++) {
			if (i < 0 || i + 1 >= n)
				continue;
			const struct tok_pairent *pe = tok_pairmap_get(&t->merges, ids[i], ids[i + 1]);
			rank[i] = pe ? pe->rank : INT32_MAX;
			to[i] = pe ? pe->id : -1;
		}
	}
	return n;
}

/* Builds the initial symbols of a piece into t->syms; returns the count
 * or -1 with an error set. */
static int64_t initial_symbols(struct tok_hf *t, const char *s, size_t n)
{
	if (syms_reserve(t, n * 4 + 1))
		return -1;
	struct sym *sy = t->syms;
	int64_t k = 0;

	if (t->byte_level) {
		for (size_t i = 0; i < n; i++) {
			unsigned char b = (unsigned char)s[i];
			for (int j = 0; j < t->byte_nids[b]; j++) {
				int32_t id = t->byte_ids[b][j];
				if (id == t->unk_id && t->fuse_unk && k > 0 && sy[k - 1].id == t->unk_id) {
					sy[k - 1].len++;
					continue;
				}
				sy[k].id = id;
				sy[k].len = 1;
				k++;
			}
		}
		return k;
	}
	char *buf = NULL;
	size_t bcap = 0;
	for (size_t i = 0; i < n;) {
		int32_t cp;
		int l = hf_utf8_at(s + i, n - i, &cp);
		int last = i + (size_t)l == n;
		const struct tok_strent *e;
		const char *key = s + i;
		size_t klen = (size_t)l;
		if ((t->prefix && i > 0) || (t->suffix && last)) {
			size_t need = t->prefix_len + (size_t)l + t->suffix_len;
			if (need > bcap) {
				free(buf);
				bcap = need + 64;
				if (!(buf = malloc(bcap))) {
					ouro_fail(OURO_ENOMEM, "out of memory");
					return -1;
				}
			}
			klen = 0;
			if (t->prefix && i > 0) {
				memcpy(buf, t->prefix, t->prefix_len);
				klen = t->prefix_len;
			}
			memcpy(buf + klen, s + i, (size_t)l);
			klen += (size_t)l;
			if (t->suffix && last) {
				memcpy(buf + klen, t->suffix, t->suffix_len);
				klen += t->suffix_len;
			}
			key = buf;
		}
		e = tok_strmap_get(&t->vocab, key, klen);
		if (e) {
			sy[k].id = e->val;
			sy[k].len = l;
			k++;
		} else {
			int done = 0;
			if (t->byte_fallback) {
				int32_t bid[4];
				int ok = 1;
				for (int j = 0; j < l && ok; j++) {
					char hex[8];
					snprintf(hex, sizeof hex, "<0x%02X>", (unsigned char)s[i + j]);
					const struct tok_strent *h = tok_strmap_get(&t->vocab, hex, 6);
					if (h)
						bid[j] = h->val;
					else
						ok = 0;
				}
				if (ok) {
					for (int j = 0; j < l; j++) {
						sy[k].id = bid[j];
						sy[k].len = 1;
						k++;
					}
					done = 1;
				}
			}
			if (!done && t->unk_id >= 0) {
				if (t->fuse_unk && k > 0 && sy[k - 1].id == t->unk_id) {
					sy[k - 1].len += l;
				} else {
					sy[k].id = t->unk_id;
					sy[k].len = l;
					k++;
				}
			}
		}
		i += (size_t)l;
	}
	free(buf);
	return k;
}

int tok_hf_bpe(struct tok_hf *t, const char *s, size_t n, struct ouro_ids *out)
{
	struct cache_ent *ce = NULL;
	int rc;

	if (t->cache && n <= CACHE_KEY) {
		ce = &t->cache[tok_hash(s, n) & (CACHE_SLOTS - 1)];
		if (ce->klen == n && !memcmp(ce->key, s, n)) {
			for (int i = 0; i < ce->nids; i++)
				if ((rc = ouro_ids_push(out, ce->ids[i])))
					return rc;
			return OURO_OK;
		}
	}
	if (t->ignore_merges) {
		const struct tok_strent *e = tok_strmap_get(&t->vocab, s, n);
		if (e)
			return ouro_ids_push(out, e->val);
	}
	int64_t k = initial_symbols(t, s, n);
	if (k < 0)
		return OURO_ENOMEM;
	struct sym *sy = t->syms;
	int32_t nk = (int32_t)k;
	size_t first = out->n;

	if (nk <= 64) {
		int32_t ids[64];
		for (int32_t i = 0; i < nk; i++)
			ids[i] = sy[i].id;
		nk = merge_scan(t, ids, nk);
		for (int32_t i = 0; i < nk; i++)
			if ((rc = ouro_ids_push(out, ids[i])))
				return rc;
	} else {
		for (int32_t i = 0; i < nk; i++) {
			sy[i].prev = i - 1;
			sy[i].next = i + 1 < nk ? i + 1 : -1;
		}
		merge_heap(t, sy, nk);
		for (int32_t i = 0; i < nk; i++)
			if (sy[i].len && (rc = ouro_ids_push(out, sy[i].id)))
				return rc;
	}
	if (ce && out->n - first <= CACHE_IDS) {
		ce->klen = (uint8_t)n;
		memcpy(ce->key, s, n);
		ce->nids = (uint8_t)(out->n - first);
		if (ce->nids)
			memcpy(ce->ids, out->v + first, ce->nids * sizeof *ce->ids);
	}
	return OURO_OK;
}
