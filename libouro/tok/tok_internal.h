/*
 * tok_internal.h - what the tokenizer modules share and the programs do
 * not see: UTF-8 and Unicode class helpers, the string and pair hash maps
 * (tok_util.c), the SentencePiece character map normaliser
 * (tok_charsmap.c), and the two tokenizer kinds' entry points (hf.h's
 * files, spm.c) that tokenizer.c dispatches to.
 */
#ifndef OURO_TOK_INTERNAL_H
#define OURO_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---- UTF-8 and Unicode classes ------------------------------------------ */

/* Length of the valid UTF-8 character at s[0..n) and its code point in *cp,
 * or 0 if the bytes there are not a valid character. n > 0. */
int tok_utf8_next(const unsigned char *s, size_t n, int32_t *cp);

/* Offset of the first invalid UTF-8 byte in s[0..n), or n if it is valid. */
size_t tok_utf8_check(const char *s, size_t n);

/* Appends the UTF-8 form of cp (at most 4 bytes) to p; returns its length. */
int tok_utf8_put(char *p, int32_t cp);

/* Character classes of the GPT-2 split pattern, from Unicode general
 * categories (utf8proc) and the White_Space property. */
enum tok_class {
	TOK_C_OTHER = 0,   /* none of the below */
	TOK_C_LETTER = 1,  /* \p{L}: Lu Ll Lt Lm Lo */
	TOK_C_NUMBER = 2,  /* \p{N}: Nd Nl No */
	TOK_C_SPACE = 3,   /* \s: White_Space */
};
int tok_class(int32_t cp);
int tok_is_space(int32_t cp);

/* ---- hash maps ---------------------------------------------------------- */

uint64_t tok_hash(const void *p, size_t n);

/* Byte string -> int32; keys are copied into the map. */
struct tok_strmap {
	struct tok_strent { uint64_t hash; uint32_t off, len; int32_t val; } *ent;
	uint32_t *slot;       /* [mask+1]: entry index + 1, 0 when empty */
	uint32_t mask;
	size_t n, cap;
	char *arena;
	size_t arena_n, arena_cap;
};
/* Inserts key -> val; if the key is present, returns its entry unchanged
 * with *added 0. Returns NULL when out of memory. */
struct tok_strent *tok_strmap_put(struct tok_strmap *m, const void *key,
				  size_t len, int32_t val, int *added);
const struct tok_strent *tok_strmap_get(const struct tok_strmap *m,
					const void *key, size_t len);
static inline const char *tok_strmap_key(const struct tok_strmap *m,
					 const struct tok_strent *e)
{
	return m->arena + e->off;
}
void tok_strmap_free(struct tok_strmap *m);

/* (int32, int32) -> (rank, id) for BPE merges. */
struct tok_pairmap {
	struct tok_pairent { uint64_t key; int32_t rank, id; } *ent;
	uint32_t mask;
	size_t n;
};
int tok_pairmap_init(struct tok_pairmap *m, size_t expect);
/* Adds or replaces a pair: a later duplicate wins, as in the reference. */
void tok_pairmap_put(struct tok_pairmap *m, int32_t a, int32_t b,
		     int32_t rank, int32_t id);
static inline const struct tok_pairent *
tok_pairmap_get(const struct tok_pairmap *m, int32_t a, int32_t b)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	uint64_t h = key * 0x9E3779B97F4A7C15ull;
	uint32_t i = (uint32_t)(h >> 32) & m->mask;

	for (;; i = (i + 1) & m->mask) {
		if (m->ent[i].key == key)
			return &m->ent[i];
		if (m->ent[i].key == UINT64_MAX)
			return NULL;
	}
}
void tok_pairmap_free(struct tok_pairmap *m);

/* ---- the SentencePiece precompiled character map -------------------------
 * A darts-clone double array over UTF-8 prefixes and a pool of
 * NUL-terminated replacements (sentencepiece normalizer.cc's format).
 */
struct tok_charsmap {
	const uint32_t *units;   /* [nunits] */
	size_t nunits;
	const char *pool;        /* [npool] */
	size_t npool;
	void *owned;             /* copy of the blob */
};
/* Validates and copies blob[0..len); an empty blob gives an identity map. */
int tok_charsmap_init(struct tok_charsmap *cm, const void *blob, size_t len,
		      const char *what);
/* Longest rule matching a prefix of s[0..n): its length, and the
 * replacement in *rep / *replen; 0 when none matches. */
size_t tok_charsmap_match(const struct tok_charsmap *cm, const char *s,
			  size_t n, const char **rep, size_t *replen);
void tok_charsmap_free(struct tok_charsmap *cm);

/* ---- the two kinds ------------------------------------------------------ */

struct tok_hf;
int tok_hf_load(struct tok_hf **out, const char *path, const char *buf,
		size_t len);
void tok_hf_free(struct tok_hf *t);
int64_t tok_hf_vocab_size(const struct tok_hf *t);
int32_t tok_hf_piece_id(const struct tok_hf *t, const char *piece);
int tok_hf_encode(struct tok_hf *t, const char *text, size_t len,
		  struct ouro_ids *out);
int tok_hf_decode(const struct tok_hf *t, const int32_t *ids, size_t n,
		  struct ouro_bytes *out);

struct tok_spm;
int tok_spm_load(struct tok_spm **out, const char *path, const char *buf,
		 size_t len);
void tok_spm_free(struct tok_spm *t);
int64_t tok_spm_vocab_size(const struct tok_spm *t);
int32_t tok_spm_piece_id(const struct tok_spm *t, const char *piece);
int tok_spm_encode(struct tok_spm *t, const char *text, size_t len,
		   struct ouro_ids *out);
int tok_spm_decode(const struct tok_spm *t, const int32_t *ids, size_t n,
		   struct ouro_bytes *out);

#endif
