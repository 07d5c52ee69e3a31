/*
 * tok_util.c - small pieces the tokenizers share: UTF-8 decoding and
 * checking, the Unicode classes the pre-tokenizers split on, a byte-string
 * hash map (vocabularies) and an id-pair hash map (BPE merges), and the
 * growable id and byte buffers of the public API.
 *
 * Unicode general categories come from utf8proc. White_Space is a
 * property utf8proc does not expose; its 25 code points are listed below
 * (Unicode PropList.txt, unchanged since Unicode 6.3), and the unit test
 * checks every code point against the reference implementation.
 */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "ouro.h"
#include "tok_internal.h"

int tok_utf8_next(const unsigned char *s, size_t n, int32_t *cp)
{
	unsigned c = s[0];
	int len;
	int32_t v, min;

	if (c < 0x80) {
		*cp = (int32_t)c;
		return 1;
	}
	if (c < 0xC2)
		return 0;
	if (c < 0xE0) {
		len = 2; v = c & 0x1F; min = 0x80;
	} else if (c < 0xF0) {
		len = 3; v = c & 0x0F; min = 0x800;
	} else if (c < 0xF5) {
		len = 4; v = c & 0x07; min = 0x10000;
	} else {
		return 0;
	}
	if ((size_t)len > n)
		return 0;
	for (int i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return 0;
	*cp = v;
	return len;
}

size_t tok_utf8_check(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	int32_t cp;

	while (i < n) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		int l = tok_utf8_next(u + i, n - i, &cp);
		if (l == 0)
			return i;
		i += (size_t)l;
	}
	return n;
}

int tok_utf8_put(char *p, int32_t cp)
{
	unsigned char *u = (unsigned char *)p;

	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		u[0] = (unsigned char)(0xC0 | cp >> 6);
		u[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		u[0] = (unsigned char)(0xE0 | cp >> 12);
		u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		u[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	u[0] = (unsigned char)(0xF0 | cp >> 18);
	u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
	u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
	u[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

int tok_is_space(int32_t cp)
{
	if (cp < 0x80)
		return (cp >= 9 && cp <= 13) || cp == 0x20;
	switch (cp) {
	case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
	case 0x202F: case 0x205F: case 0x3000:
		return 1;
	}
	return cp >= 0x2000 && cp <= 0x200A;
}

int tok_class(int32_t cp)
{
	if (cp < 0x80) {
		if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
			return TOK_C_LETTER;
		if (cp >= '0' && cp <= '9')
			return TOK_C_NUMBER;
		return tok_is_space(cp) ? TOK_C_SPACE : TOK_C_OTHER;
	}
	switch (utf8proc_category(cp)) {
	case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL:
	case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO:
		return TOK_C_LETTER;
	case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_NO:
		return TOK_C_NUMBER;
	default:
		return tok_is_space(cp) ? TOK_C_SPACE : TOK_C_OTHER;
	}
}

/* ---- hashing ------------------------------------------------------------ */

uint64_t tok_hash(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull);

	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xFF51AFD7ED558CCDull;
		h ^= h >> 32;
		s += 8;
		n -= 8;
	}
	if (n) {
		uint64_t w = 0;
		memcpy(&w, s, n);
		h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
	}
	h ^= h >> 29;
	h *= 0x9E3779B97F4A7C15ull;
	return h ^ (h >> 32);
}

/* ---- byte string map ---------------------------------------------------- */

static int strmap_grow(struct tok_strmap *m)
{
	uint32_t nslots = m->slot ? (m->mask + 1) * 2 : 1024;
	uint32_t *slot = calloc(nslots, sizeof *slot);

	if (!slot)
		return -1;
	for (size_t i = 0; i < m->n; i++) {
		uint32_t j = (uint32_t)m->ent[i].hash & (nslots - 1);
		while (slot[j])
			j = (j + 1) & (nslots - 1);
		slot[j] = (uint32_t)i + 1;
	}
	free(m->slot);
	m->slot = slot;
	m->mask = nslots - 1;
	return 0;
}

struct tok_strent *tok_strmap_put(struct tok_strmap *m, const void *key,
				  size_t len, int32_t val, int *added)
{
	uint64_t h = tok_hash(key, len);
	uint32_t i;

	*added = 0;
	if (len > UINT32_MAX / 2)
		return NULL;
	if (!m->slot || (m->n + 1) * 2 > (size_t)m->mask + 1)
		if (strmap_grow(m))
			return NULL;
	for (i = (uint32_t)h & m->mask; m->slot[i]; i = (i + 1) & m->mask) {
		struct tok_strent *e = &m->ent[m->slot[i] - 1];
		if (e->hash == h && e->len == len &&
		    memcmp(m->arena + e->off, key, len) == 0)
			return e;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 1024;
		void *p = realloc(m->ent, cap * sizeof *m->ent);
		if (!p)
			return NULL;
		m->ent = p;
		m->cap = cap;
	}
	if (m->arena_n + len + 1 > m->arena_cap) {
		size_t cap = m->arena_cap ? m->arena_cap : 1 << 16;
		while (cap < m->arena_n + len + 1)
			cap *= 2;
		if (cap > UINT32_MAX)
			return NULL;
		char *p = realloc(m->arena, cap);
		if (!p)
			return NULL;
		m->arena = p;
		m->arena_cap = cap;
	}
	struct tok_strent *e = &m->ent[m->n];
	e->hash = h;
	e->off = (uint32_t)m->arena_n;
	e->len = (uint32_t)len;
	e->val = val;
	memcpy(m->arena + m->arena_n, key, len);
	m->arena[m->arena_n + len] = 0;
	m->arena_n += len + 1;
	m->slot[i] = (uint32_t)++m->n;
	*added = 1;
	return e;
}

const struct tok_strent *tok_strmap_get(const struct tok_strmap *m,
					const void *key, size_t len)
{
	if (!m->slot)
		return NULL;
	uint64_t h = tok_hash(key, len);
	for (uint32_t i = (uint32_t)h & m->mask; m->slot[i];
	     i = (i + 1) & m->mask) {
		const struct tok_strent *e = &m->ent[m->slot[i] - 1];
		if (e->hash == h && e->len == len &&
		    memcmp(m->arena + e->off, key, len) == 0)
			return e;
	}
	return NULL;
}

void tok_strmap_free(struct tok_strmap *m)
{
	free(m->ent);
	free(m->slot);
	free(m->arena);
	memset(m, 0, sizeof *m);
}

/* ---- pair map ----------------------------------------------------------- */

int tok_pairmap_init(struct tok_pairmap *m, size_t expect)
{
	size_t n = 1024;

	while (n < expect * 2 + 2)
		n *= 2;
	m->ent = malloc(n * sizeof *m->ent);
	if (!m->ent)
		return -1;
	for (size_t i = 0; i < n; i++)
		m->ent[i].key = UINT64_MAX;
	m->mask = (uint32_t)(n - 1);
	m->n = 0;
	return 0;
}

void tok_pairmap_put(struct tok_pairmap *m, int32_t a, int32_t b,
		     int32_t rank, int32_t id)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	uint64_t h = key * 0x9E3779B97F4A7C15ull;
	uint32_t i = (uint32_t)(h >> 32) & m->mask;

	/* the caller sized the map for every pair; at most half full */
	for (;; i = (i + 1) & m->mask) {
		if (m->ent[i].key == key)
			break;
		if (m->ent[i].key == UINT64_MAX) {
			m->n++;
			break;
		}
	}
	m->ent[i].key = key;
	m->ent[i].rank = rank;
	m->ent[i].id = id;
}

void tok_pairmap_free(struct tok_pairmap *m)
{
	free(m->ent);
	memset(m, 0, sizeof *m);
}

/* ---- public buffers ----------------------------------------------------- */

void ouro_ids_free(struct ouro_ids *ids)
{
	free(ids->v);
	memset(ids, 0, sizeof *ids);
}

void ouro_bytes_free(struct ouro_bytes *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

int ouro_ids_push(struct ouro_ids *ids, int32_t id)
{
	if (ids->n == ids->cap) {
		size_t cap = ids->cap ? ids->cap * 2 : 256;
		void *p = realloc(ids->v, cap * sizeof *ids->v);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory for %zu token ids", cap);
		ids->v = p;
		ids->cap = cap;
	}
	ids->v[ids->n++] = id;
	return OURO_OK;
}

int ouro_bytes_add(struct ouro_bytes *b, const void *p, size_t n)
{
	if (n > SIZE_MAX / 2 - b->n)
		return ouro_fail(OURO_ENOMEM, "text too long");
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *q = realloc(b->p, cap);
		if (!q)
			return ouro_fail(OURO_ENOMEM, "out of memory for %zu bytes of text", cap);
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
	return OURO_OK;
}
