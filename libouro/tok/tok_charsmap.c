/*
 * tok_charsmap.c - SentencePiece's precompiled character map, the table
 * behind its normalizers (nmt_nfkc, nfkc, ...): a little-endian u32 size
 * of a darts-clone double-array trie, the trie's u32 units, then a pool of
 * NUL-terminated replacement strings that the trie's values index.
 *
 * Normalising is a longest-prefix search of the UTF-8 text in the trie;
 * the unit layout (leaf flag bit 8, label in the low byte, offset in the
 * bits above 10 scaled by bit 9, value in the low 31 bits) is darts-clone's.
 * Every index is checked against the blob, which comes from a file.
 */
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "tok_internal.h"

static inline uint32_t unit_offset(uint32_t u)
{
	return (u >> 10) << ((u & (1u << 9)) >> 6);
}

static inline uint32_t unit_label(uint32_t u)
{
	return u & ((1u << 31) | 0xFF);
}

static inline int unit_has_leaf(uint32_t u)
{
	return (u >> 8) & 1;
}

static inline uint32_t unit_value(uint32_t u)
{
	return u & ((1u << 31) - 1);
}

int tok_charsmap_init(struct tok_charsmap *cm, const void *blob, size_t len,
		      const char *what)
{
	uint32_t tsize;

	memset(cm, 0, sizeof *cm);
	if (len == 0)
		return OURO_OK;
	if (len <= 4)
		return ouro_fail(OURO_EMODEL, "%s: precompiled_charsmap of %zu bytes is too short", what, len);
	memcpy(&tsize, blob, 4);   /* little-endian on every machine we build for */
	if (tsize == 0 || tsize % 4 || tsize > len - 4)
		return ouro_fail(OURO_EMODEL, "%s: precompiled_charsmap trie size %u does not fit its %zu bytes",
				 what, tsize, len);
	cm->owned = malloc(len);
	if (!cm->owned)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	memcpy(cm->owned, blob, len);
	cm->units = (const uint32_t *)((const char *)cm->owned + 4);
	cm->nunits = tsize / 4;
	cm->pool = (const char *)cm->owned + 4 + tsize;
	cm->npool = len - 4 - tsize;
	return OURO_OK;
}

size_t tok_charsmap_match(const struct tok_charsmap *cm, const char *s,
			  size_t n, const char **rep, size_t *replen)
{
	const unsigned char *k = (const unsigned char *)s;
	size_t pos, best = 0;
	uint32_t bestval = 0;

	if (!cm->units)
		return 0;
	pos = unit_offset(cm->units[0]);
	for (size_t i = 0; i < n; i++) {
		pos ^= k[i];
		if (pos >= cm->nunits)
			break;
		uint32_t u = cm->units[pos];
		if (unit_label(u) != k[i])
			break;
		pos ^= unit_offset(u);
		if (unit_has_leaf(u)) {
			if (pos >= cm->nunits)
				break;
			best = i + 1;
			bestval = unit_value(cm->units[pos]);
		}
	}
	if (best == 0)
		return 0;
	/* the replacement: a NUL-terminated string in the pool */
	if (bestval >= cm->npool)
		return 0;
	const char *r = cm->pool + bestval;
	const char *end = memchr(r, 0, cm->npool - bestval);
	if (!end)
		return 0;
	*rep = r;
	*replen = (size_t)(end - r);
	return best;
}

void tok_charsmap_free(struct tok_charsmap *cm)
{
	free(cm->owned);
	memset(cm, 0, sizeof *cm);
}
