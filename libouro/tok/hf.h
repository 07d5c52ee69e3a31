/*
 * hf.h - what the files of the Hugging Face tokenizer.json tokenizer
 * share and nothing else sees: the handle (struct tok_hf) with the parts
 * of the file it was loaded from, and each step's entry points. One file
 * a step:
 *   hf_load.c       the file: its JSON root, what the section loaders
 *                   share (Sequence components, patterns), freeing;
 *   hf_model.c      the BPE model section: vocabulary, merges, unk token,
 *                   and the byte-level alphabet;
 *   hf_added.c      added tokens: reading them and finding them in text;
 *   hf_normalize.c  the normalizers;
 *   hf_pretok.c     the pre-tokenizers;
 *   bpe.c           merging the symbols of one piece;
 *   hf_encode.c     the encoding pipeline, and the post-processor;
 *   hf_decode.c     the decoders.
 * The public entry points (tok_hf_load, tok_hf_encode, ...) are declared
 * in tok_internal.h, for tokenizer.c.
 */
#ifndef OURO_TOK_HF_H
#define OURO_TOK_HF_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <pcre2.h>

#include "tok_internal.h"

/* ---- the parts of a tokenizer.json -------------------------------------- */

struct hf_added {
	char *content;
	size_t len;
	int32_t id;
	unsigned special : 1, lstrip : 1, rstrip : 1, single_word : 1,
		 normalized : 1;
};

/* A set of added tokens matched together, leftmost-longest. */
struct hf_matcher {
	int n;
	struct hf_added **tok;   /* [n] sorted by first byte, longest first */
	int first[257];          /* tokens with first byte b: first[b]..first[b+1] */
};

enum hf_norm_type {
	NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD, NORM_LOWER, NORM_PREPEND,
	NORM_REPLACE, NORM_REPLACE_RE, NORM_STRIP,
};

struct hf_norm {
	enum hf_norm_type type;
	char *a, *b;            /* Prepend: a; Replace: pattern a, content b */
	size_t alen, blen;
	pcre2_code *re;
	int left, right;        /* Strip */
};

enum hf_pre_type {
	PRE_DIGITS, PRE_BYTELEVEL, PRE_SPLIT, PRE_WSSPLIT, PRE_METASPACE,
};

enum hf_behavior {
	BEH_REMOVED, BEH_ISOLATED, BEH_MERGED_PREV, BEH_MERGED_NEXT,
	BEH_CONTIGUOUS,
};

struct hf_pre {
	enum hf_pre_type type;
	int individual;          /* Digits */
	int prefix_space;        /* ByteLevel: add_prefix_space */
	int use_regex;           /* ByteLevel */
	pcre2_code *re;          /* Split */
	pcre2_match_data *md;
	enum hf_behavior behavior;
	int invert;
	char repl[8];            /* Metaspace replacement character */
	size_t repl_len;
	int prepend;             /* Metaspace: 0 never, 1 first, 2 always */
	int split;
};

/* A stretch of text being pre-tokenized. */
struct piece {
	const char *p;
	size_t n;
	int at_start;            /* begins the input (Metaspace "first") */
};

struct piecevec {
	struct piece *v;
	size_t n, cap;
};

/* Storage for strings the pipeline makes; blocks never move. */
struct arena {
	struct arena_block { struct arena_block *next; size_t n, cap; char d[]; } *head;
};

/* One BPE symbol while merging. */
struct sym {
	int32_t id;
	int32_t prev, next;   /* indexes, -1 at the ends */
	int32_t len;          /* 0 once merged into its left neighbour */
};

struct merge_cand {
	int32_t rank, pos, id;
};

#define CACHE_SLOTS 65536
#define CACHE_KEY 24
#define CACHE_IDS 8

/* A direct-mapped cache of short pieces and their ids. */
struct cache_ent {
	uint8_t klen, nids;     /* klen 0: empty */
	char key[CACHE_KEY];
	int32_t ids[CACHE_IDS];
};

struct tok_hf {
	/* model */
	struct tok_strmap vocab;      /* token (raw bytes for byte-level) -> id */
	int32_t nids;                 /* max id + 1 */
	struct tok_strmap raw;        /* byte-level vocabulary entries that are not
				       * byte-level text: as written -> id */
	const char **id_str;          /* [nids] text of each id (bytes for byte-level
				       * entries), or NULL; points into vocab, raw
				       * or added */
	uint32_t *id_len;             /* [nids] */
	uint8_t *id_special;          /* [nids] 1 for added tokens */
	struct tok_pairmap merges;
	int byte_level;               /* the pre-tokenizer ends in ByteLevel */
	int32_t byte_ids[256][4];     /* byte-level: initial symbols of a byte */
	uint8_t byte_nids[256];
	int32_t unk_id;               /* -1 without unk_token */
	int fuse_unk, byte_fallback, ignore_merges;
	char *prefix, *suffix;        /* continuing_subword_prefix, end_of_word_suffix */
	size_t prefix_len, suffix_len;

	/* added tokens */
	struct hf_added *added;
	int nadded;
	struct tok_strmap added_map;  /* content -> id */
	struct hf_matcher raw_match, norm_match;

	/* pipeline */
	struct hf_norm *norm;
	int nnorm;
	struct hf_pre *pre;
	int npre;
	int32_t *post_pre, *post_suf; /* ids the post-processor adds */
	int npost_pre, npost_suf;

	/* decoder */
	int dec_bytelevel, dec_bytefallback, dec_metaspace, dec_strip_first;
	char dec_repl[8];
	size_t dec_repl_len;

	/* scratch, reused across calls */
	struct piecevec pv[2];
	struct ouro_bytes nbuf[2];
	struct sym *syms;
	size_t syms_cap;
	struct merge_cand *heap;
	size_t heap_cap;
	struct arena arena;
	struct cache_ent *cache;
};

/* ---- small helpers ------------------------------------------------------ */

/* A boolean member of o, dflt when it is absent or not a boolean. */
static inline int hf_jbool(json_t *o, const char *key, int dflt)
{
	json_t *v = json_object_get(o, key);

	return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* A string member of o, or NULL. */
static inline const char *hf_jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* Length of the character at s[0..n) (n > 0) and its code point in *cp;
 * on text that was checked to be UTF-8, as all text here is. */
static inline int hf_utf8_at(const char *s, size_t n, int32_t *cp)
{
	unsigned char c = (unsigned char)s[0];

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	int l = tok_utf8_next((const unsigned char *)s, n, cp);
	if (l == 0) {   /* cannot happen on checked text; step one byte */
		*cp = 0xFFFD;
		return 1;
	}
	return l;
}

/* The start of the character just before s[i] (floor < i), looked for
 * no further back than floor, and its code point in *cp. */
static inline size_t hf_char_before(const char *s, size_t floor, size_t i, int32_t *cp)
{
	size_t q = i - 1;

	while (q > floor && ((unsigned char)s[q] & 0xC0) == 0x80)
		q--;
	hf_utf8_at(s + q, i - q, cp);
	return q;
}

/* The end of the white space that starts at s[i], within s[0..n). */
static inline size_t hf_space_end(const char *s, size_t i, size_t n)
{
	int32_t cp;

	while (i < n) {
		int l = hf_utf8_at(s + i, n - i, &cp);
		if (!tok_is_space(cp))
			break;
		i += (size_t)l;
	}
	return i;
}

/* The start of the white space just before s[i], no further back than
 * floor. */
static inline size_t hf_space_start(const char *s, size_t floor, size_t i)
{
	int32_t cp;

	while (i > floor) {
		size_t q = hf_char_before(s, floor, i, &cp);
		if (!tok_is_space(cp))
			break;
		i = q;
	}
	return i;
}

/* ---- hf_load.c ---------------------------------------------------------- */

/* A NUL-terminated copy of s[0..n), which may hold NULs; NULL when out of
 * memory. */
char *tok_hf_memdup(const char *s, size_t n);

/* The start every loader of a pipeline component n shares (kind:
 * "normalizer", "decoder", ...): an absent or null component is nothing
 * to load, and a Sequence loads each item of its list `key` with load.
 * *type is the type of any other component, else NULL. A Sequence
 * without the list is an error only if `strict`. */
int tok_hf_load_component(struct tok_hf *t, json_t *n, const char *what, const char *kind,
			  const char *key, int strict,
			  int (*load)(struct tok_hf *, json_t *, const char *), const char **type);

/* Reads a {"String": s} or {"Regex": r} pattern: a string into *lit,
 * *litlen when lit is not NULL, else compiled as a literal into *re; a
 * regex compiled into *re. */
int tok_hf_load_pattern(json_t *pat, pcre2_code **re, char **lit, size_t *litlen,
			const char *what);

/* ---- hf_model.c --------------------------------------------------------- */

/* Loads the model section m (vocabulary, merges, unk token); the added
 * tokens' ids count towards the number of ids. */
int tok_hf_load_model(struct tok_hf *t, json_t *m, json_t *added, const char *what);

/* Sets the initial symbols of each byte of a byte-level model. */
void tok_hf_byte_level_initial(struct tok_hf *t);

/* Maps a byte-level string back to bytes into out (at most n bytes).
 * Returns the byte count, or -1 if a character is not in the alphabet. */
long tok_hf_byte_level_decode(const char *s, size_t n, char *out);

/* Looks up a vocabulary token as written in the file; for byte-level
 * models the key is the decoded bytes, made in tmp (n bytes). */
const struct tok_strent *tok_hf_vocab_get(const struct tok_hf *t, const char *s,
					  size_t n, char *tmp);

/* ---- hf_added.c --------------------------------------------------------- */

/* Loads the added_tokens list (after the model: their ids depend on it). */
int tok_hf_load_added(struct tok_hf *t, json_t *list, const char *what);

/* Finds the next added token of m in s[from..n): its span [*b, *e) after
 * lstrip / rstrip, which reaches back no further than floor, and its id.
 * Returns 0 when there is none. */
int tok_hf_next_added(const struct hf_matcher *m, const char *s, size_t n,
		      size_t from, size_t floor, size_t *b, size_t *e, int32_t *id);

/* ---- hf_normalize.c ----------------------------------------------------- */

int tok_hf_load_normalizer(struct tok_hf *t, json_t *n, const char *what);

/* Runs the normalizers over s[0..n); the result is in *res, *rlen (either
 * s itself or one of t's buffers). */
int tok_hf_normalize(struct tok_hf *t, const char *s, size_t n,
		     const char **res, size_t *rlen);

/* ---- hf_pretok.c -------------------------------------------------------- */

int tok_hf_load_pretokenizer(struct tok_hf *t, json_t *n, const char *what);

/* Splits s[0..n) into the pieces *res (t's scratch); at_start: s begins
 * the input. */
int tok_hf_pretokenize(struct tok_hf *t, const char *s, size_t n, int at_start,
		       struct piecevec **res);

/* Drops the strings the pre-tokenizers made (keeping one block for the
 * next text); frees them all. */
void tok_hf_arena_reset(struct arena *a);
void tok_hf_arena_free(struct arena *a);

/* ---- bpe.c -------------------------------------------------------------- */

/* Appends the ids of the piece s[0..n) to out. */
int tok_hf_bpe(struct tok_hf *t, const char *s, size_t n, struct ouro_ids *out);

/* ---- hf_encode.c -------------------------------------------------------- */

int tok_hf_load_post(struct tok_hf *t, json_t *p, const char *what);

/* ---- hf_decode.c -------------------------------------------------------- */

int tok_hf_load_decoder(struct tok_hf *t, json_t *d, const char *what);

#endif
