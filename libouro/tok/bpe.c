/*
 * bpe.c - Hugging Face tokenizer.json files with a BPE model: byte-level
 * BPE as every Ouro checkpoint ships (SmolLM2's, GPT-2's, Qwen's and
 * Llama-3's kind) and the SentencePiece-style variants (Metaspace, byte
 * fallback, unk).
 *
 * Encoding follows the reference pipeline step by step:
 *   1. added tokens that are not "normalized" are cut out of the raw text,
 *      leftmost-longest, honouring single_word / lstrip / rstrip;
 *   2. each remaining stretch is normalised (NFC, NFKC, Lowercase,
 *      Replace, Prepend, Strip, Sequence), then "normalized" added tokens
 *      are cut out of it;
 *   3. the pre-tokenizers split it into pieces (Digits, ByteLevel with the
 *      GPT-2 pattern, Split with a regex, WhitespaceSplit, Metaspace,
 *      Sequence);
 *   4. each piece goes through BPE: its characters (bytes, for byte-level
 *      models) become symbols, and the adjacent pair with the lowest merge
 *      rank, leftmost on ties, is merged until none is left;
 *   5. the post-processor adds its special tokens (TemplateProcessing).
 *
 * Byte-level models are run on raw bytes: the vocabulary's byte-level
 * strings (byte 0x20 is "Ġ", ...) are mapped back to the bytes they stand
 * for when the file is loaded, so a piece never needs re-encoding and the
 * GPT-2 pattern is matched by hand (tok_class) instead of by a regex
 * engine. Split patterns of other tokenizers go to PCRE2, with \s and \S
 * rewritten to the reference engine's White_Space set.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <pcre2.h>
#include <utf8proc.h>

#include "ouro.h"
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

static void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_block *b = a->head;

	if (!b || b->cap - b->n < n) {
		size_t cap = n > 65536 ? n : 65536;
		b = malloc(sizeof *b + cap);
		if (!b)
			return NULL;
		b->n = 0;
		b->cap = cap;
		b->next = a->head;
		a->head = b;
	}
	void *p = b->d + b->n;
	b->n += n;
	return p;
}

static void arena_reset(struct arena *a)
{
	/* keep the newest block, free the rest */
	if (!a->head)
		return;
	struct arena_block *b = a->head->next;
	while (b) {
		struct arena_block *nx = b->next;
		free(b);
		b = nx;
	}
	a->head->next = NULL;
	a->head->n = 0;
}

static void arena_free(struct arena *a)
{
	arena_reset(a);
	free(a->head);
	a->head = NULL;
}

static int pv_push(struct piecevec *v, const char *p, size_t n, int at_start)
{
	if (n == 0)
		return OURO_OK;
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 1024;
		void *q = realloc(v->v, cap * sizeof *v->v);
		if (!q)
			return ouro_fail(OURO_ENOMEM, "out of memory splitting text");
		v->v = q;
		v->cap = cap;
	}
	v->v[v->n].p = p;
	v->v[v->n].n = n;
	v->v[v->n].at_start = at_start;
	v->n++;
	return OURO_OK;
}

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

/* Maps a byte-level string back to bytes into out (at most n bytes).
 * Returns the byte count, or -1 if a character is not in the alphabet. */
static long byte_level_decode(const char *s, size_t n, char *out)
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

static int utf8_len_at(const char *s, size_t n, int32_t *cp)
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

static char *dup_mem(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

/* ---- PCRE2 patterns ----------------------------------------------------- */

/* The reference engine's \s: the White_Space code points. */
#define WS_CLASS "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}" \
		 "\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static int compile_re(pcre2_code **out, const char *pat, size_t len,
		      int literal, const char *what)
{
	struct ouro_bytes b = {0};
	int err, in_class = 0, rc = OURO_OK;
	PCRE2_SIZE off;

	if (literal) {
		rc = ouro_bytes_add(&b, pat, len);
	} else {
		for (size_t i = 0; i < len && rc == OURO_OK; i++) {
			char c = pat[i];
			if (c == '\\' && i + 1 < len) {
				char d = pat[i + 1];
				if (d == 's')
					rc = ouro_bytes_add(&b, in_class ? WS_CLASS : "[" WS_CLASS "]",
							    strlen(in_class ? WS_CLASS : "[" WS_CLASS "]"));
				else if (d == 'S' && !in_class)
					rc = ouro_bytes_add(&b, "[^" WS_CLASS "]",
							    strlen("[^" WS_CLASS "]"));
				else
					rc = ouro_bytes_add(&b, pat + i, 2);
				i++;
				continue;
			}
			if (c == '[' && !in_class) {
				in_class = 1;
				rc = ouro_bytes_add(&b, &c, 1);
				/* a ']' right after '[' or '[^' is literal */
				if (i + 1 < len && pat[i + 1] == '^')
					rc = ouro_bytes_add(&b, pat + ++i, 1);
				if (i + 1 < len && pat[i + 1] == ']')
					rc = ouro_bytes_add(&b, pat + ++i, 1);
				continue;
			}
			if (c == ']' && in_class)
				in_class = 0;
			rc = ouro_bytes_add(&b, &c, 1);
		}
	}
	if (rc) {
		ouro_bytes_free(&b);
		return rc;
	}
	*out = pcre2_compile((PCRE2_SPTR)(b.p ? b.p : ""), b.n,
			     PCRE2_UTF | PCRE2_NO_UTF_CHECK |
			     (literal ? PCRE2_LITERAL : PCRE2_UCP), &err, &off, NULL);
	ouro_bytes_free(&b);
	if (!*out) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof msg);
		return ouro_fail(OURO_EMODEL, "%s: regex %.*s: %s", what,
				 (int)(len > 200 ? 200 : len), pat, (char *)msg);
	}
	pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);   /* falls back if it fails */
	return OURO_OK;
}

/* ---- loading ------------------------------------------------------------ */

static int jbool(json_t *o, const char *key, int dflt)
{
	json_t *v = json_object_get(o, key);

	return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* Reads a {"String": s} or {"Regex": r} pattern. */
static int load_pattern(json_t *pat, pcre2_code **re, char **lit, size_t *litlen,
			const char *what)
{
	json_t *s = json_object_get(pat, "String");
	json_t *r = json_object_get(pat, "Regex");

	if (json_is_string(s)) {
		if (lit) {
			*litlen = json_string_length(s);
			*lit = dup_mem(json_string_value(s), *litlen);
			return *lit ? OURO_OK : ouro_fail(OURO_ENOMEM, "out of memory");
		}
		return compile_re(re, json_string_value(s), json_string_length(s), 1, what);
	}
	if (json_is_string(r))
		return compile_re(re, json_string_value(r), json_string_length(r), 0, what);
	return ouro_fail(OURO_EMODEL, "%s: pattern is neither {\"String\": ...} nor {\"Regex\": ...}", what);
}

/* The start every loader of a pipeline component n shares (kind:
 * "normalizer", "decoder", ...): an absent or null component is nothing
 * to load, and a Sequence loads each item of its list `key` with load.
 * *type is the type of any other component, else NULL. A Sequence
 * without the list is an error only if `strict`. */
static int load_component(struct tok_hf *t, json_t *n, const char *what, const char *kind,
			  const char *key, int strict,
			  int (*load)(struct tok_hf *, json_t *, const char *), const char **type)
{
	json_t *list, *e;
	size_t i;
	int rc;

	*type = NULL;
	if (!n || json_is_null(n))
		return OURO_OK;
	if (!(*type = jstr(n, "type")))
		return ouro_fail(OURO_EMODEL, "%s: %s without a type", what, kind);
	if (strcmp(*type, "Sequence"))
		return OURO_OK;
	*type = NULL;
	list = json_object_get(n, key);
	if (strict && !json_is_array(list))
		return ouro_fail(OURO_EMODEL, "%s: Sequence %s without a %s list", what, kind, key);
	json_array_foreach(list, i, e)
		if ((rc = load(t, e, what)))
			return rc;
	return OURO_OK;
}

static int load_normalizer(struct tok_hf *t, json_t *n, const char *what)
{
	const char *type;
	int rc;

	if ((rc = load_component(t, n, what, "normalizer", "normalizers", 1, load_normalizer, &type)) ||
	    !type)
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
		nm->left = jbool(n, "strip_left", 1);
		nm->right = jbool(n, "strip_right", 1);
	} else if (!strcmp(type, "Prepend")) {
		json_t *s = json_object_get(n, "prepend");
		if (!json_is_string(s))
			return ouro_fail(OURO_EMODEL, "%s: Prepend normalizer without a prepend string", what);
		nm->type = NORM_PREPEND;
		nm->alen = json_string_length(s);
		nm->a = dup_mem(json_string_value(s), nm->alen);
	} else if (!strcmp(type, "Replace")) {
		json_t *c = json_object_get(n, "content");
		if (!json_is_string(c))
			return ouro_fail(OURO_EMODEL, "%s: Replace normalizer without content", what);
		nm->type = NORM_REPLACE;
		nm->blen = json_string_length(c);
		nm->b = dup_mem(json_string_value(c), nm->blen);
		t->nnorm++;   /* so that a failure below frees what was made */
		rc = load_pattern(json_object_get(n, "pattern"), &nm->re, &nm->a, &nm->alen, what);
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

static int parse_behavior(const char *s, enum hf_behavior *b)
{
	static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious",
				      "MergedWithNext", "Contiguous"};

	for (int i = 0; i < 5; i++)
		if (s && !strcmp(s, names[i])) {
			*b = (enum hf_behavior)i;
			return 0;
		}
	return -1;
}

static int load_pretokenizer(struct tok_hf *t, json_t *n, const char *what)
{
	const char *type;
	int rc;

	if ((rc = load_component(t, n, what, "pre_tokenizer", "pretokenizers", 1, load_pretokenizer,
				 &type)) || !type)
		return rc;
	if (t->byte_level)
		return ouro_fail(OURO_EMODEL, "%s: pre_tokenizer %s after ByteLevel is not supported", what, type);
	void *p = realloc(t->pre, (size_t)(t->npre + 1) * sizeof *t->pre);
	if (!p)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	t->pre = p;
	struct hf_pre *pr = &t->pre[t->npre];
	memset(pr, 0, sizeof *pr);
	t->npre++;
	if (!strcmp(type, "Digits")) {
		pr->type = PRE_DIGITS;
		pr->individual = jbool(n, "individual_digits", 0);
	} else if (!strcmp(type, "ByteLevel")) {
		pr->type = PRE_BYTELEVEL;
		pr->prefix_space = jbool(n, "add_prefix_space", 1);
		pr->use_regex = jbool(n, "use_regex", 1);
		t->byte_level = 1;
	} else if (!strcmp(type, "WhitespaceSplit")) {
		pr->type = PRE_WSSPLIT;
	} else if (!strcmp(type, "Split")) {
		pr->type = PRE_SPLIT;
		if (parse_behavior(jstr(n, "behavior"), &pr->behavior))
			return ouro_fail(OURO_EMODEL, "%s: Split pre_tokenizer with unknown behavior", what);
		pr->invert = jbool(n, "invert", 0);
		if ((rc = load_pattern(json_object_get(n, "pattern"), &pr->re, NULL, NULL, what)))
			return rc;
		pr->md = pcre2_match_data_create_from_pattern(pr->re, NULL);
		if (!pr->md)
			return ouro_fail(OURO_ENOMEM, "out of memory");
	} else if (!strcmp(type, "Metaspace")) {
		const char *r = jstr(n, "replacement");
		const char *scheme = jstr(n, "prepend_scheme");
		pr->type = PRE_METASPACE;
		if (!r || strlen(r) == 0 || strlen(r) > 4 ||
		    tok_utf8_check(r, strlen(r)) != strlen(r))
			return ouro_fail(OURO_EMODEL, "%s: Metaspace replacement must be one character", what);
		pr->repl_len = strlen(r);
		memcpy(pr->repl, r, pr->repl_len);
		if (scheme)
			pr->prepend = !strcmp(scheme, "always") ? 2 : !strcmp(scheme, "first") ? 1 : 0;
		else
			pr->prepend = jbool(n, "add_prefix_space", 1) ? 2 : 0;
		pr->split = jbool(n, "split", 1);
		/* the decoder counterpart, in case the file names none */
		memcpy(t->dec_repl, pr->repl, pr->repl_len);
		t->dec_repl_len = pr->repl_len;
	} else {
		return ouro_fail(OURO_EMODEL, "%s: pre_tokenizer type %s is not supported", what, type);
	}
	return OURO_OK;
}

/* Looks up a vocabulary token as written in the file; for byte-level
 * models the key is the decoded bytes. */
static const struct tok_strent *vocab_get(const struct tok_hf *t, const char *s,
					  size_t n, char *tmp)
{
	if (t->byte_level) {
		long l = byte_level_decode(s, n, tmp);
		if (l < 0)
			return tok_strmap_get(&t->raw, s, n);
		return tok_strmap_get(&t->vocab, tmp, (size_t)l);
	}
	return tok_strmap_get(&t->vocab, s, n);
}

static int load_model(struct tok_hf *t, json_t *m, json_t *added, const char *what)
{
	json_t *vocab = json_object_get(m, "vocab");
	json_t *merges = json_object_get(m, "merges");
	const char *type = jstr(m, "type");
	const char *key;
	json_t *val;
	char *tmp = NULL;
	size_t tmpcap = 0;
	int rc = OURO_OK;

	if (type && strcmp(type, "BPE"))
		return ouro_fail(OURO_EMODEL, "%s: model type %s is not supported (only BPE)", what, type);
	if (!json_is_object(vocab))
		return ouro_fail(OURO_EMODEL, "%s: model.vocab is not an object", what);
	if (!json_is_array(merges))
		return ouro_fail(OURO_EMODEL, "%s: model.merges is not an array", what);
	json_t *dropout = json_object_get(m, "dropout");
	if (json_is_number(dropout) && json_number_value(dropout) > 0)
		return ouro_fail(OURO_EMODEL, "%s: BPE dropout is not supported", what);
	t->fuse_unk = jbool(m, "fuse_unk", 0);
	t->byte_fallback = jbool(m, "byte_fallback", 0);
	t->ignore_merges = jbool(m, "ignore_merges", 0);
	if (jstr(m, "continuing_subword_prefix")) {
		t->prefix_len = strlen(jstr(m, "continuing_subword_prefix"));
		t->prefix = dup_mem(jstr(m, "continuing_subword_prefix"), t->prefix_len);
	}
	if (jstr(m, "end_of_word_suffix")) {
		t->suffix_len = strlen(jstr(m, "end_of_word_suffix"));
		t->suffix = dup_mem(jstr(m, "end_of_word_suffix"), t->suffix_len);
	}

	/* vocabulary */
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
	json_object_foreach(vocab, key, val) {
		size_t klen = strlen(key);   /* jansson keys have no NULs */
		int32_t id = (int32_t)json_integer_value(val);
		const char *k = key;
		long l = (long)klen;
		int added_new;
		if (klen + 1 > tmpcap) {
			free(tmp);
			tmpcap = klen * 2 + 64;
			if (!(tmp = malloc(tmpcap)))
				return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		if (t->byte_level) {
			l = byte_level_decode(key, klen, tmp);
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

	/* merges: "a b" strings or ["a", "b"] pairs */
	size_t nm = json_array_size(merges);
	if (tok_pairmap_init(&t->merges, nm)) {
		free(tmp);
		return ouro_fail(OURO_ENOMEM, "out of memory for %zu merges", nm);
	}
	for (size_t i = 0; i < nm && rc == OURO_OK; i++) {
		json_t *e = json_array_get(merges, i);
		const char *a, *b;
		size_t alen, blen;
		if (json_is_string(e)) {
			const char *s = json_string_value(e);
			const char *sp = strchr(s, ' ');
			if (!sp || strchr(sp + 1, ' ')) {
				rc = ouro_fail(OURO_EMODEL, "%s: merge %zu \"%.60s\" is not two tokens separated by one space", what, i, s);
				break;
			}
			a = s;
			alen = (size_t)(sp - s);
			b = sp + 1;
			blen = strlen(b);
		} else if (json_is_array(e) && json_array_size(e) == 2 &&
			   json_is_string(json_array_get(e, 0)) &&
			   json_is_string(json_array_get(e, 1))) {
			a = json_string_value(json_array_get(e, 0));
			alen = json_string_length(json_array_get(e, 0));
			b = json_string_value(json_array_get(e, 1));
			blen = json_string_length(json_array_get(e, 1));
		} else {
			rc = ouro_fail(OURO_EMODEL, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", what, i);
			break;
		}
		size_t need = (alen + blen) * 2 + 8;
		if (need > tmpcap) {
			free(tmp);
			tmpcap = need * 2;
			if (!(tmp = malloc(tmpcap))) {
				rc = ouro_fail(OURO_ENOMEM, "out of memory");
				break;
			}
		}
		const struct tok_strent *ea = vocab_get(t, a, alen, tmp);
		const struct tok_strent *eb = vocab_get(t, b, blen, tmp);
		if (!ea || !eb) {
			rc = ouro_fail(OURO_EMODEL, "%s: merge %zu: token \"%.*s\" is not in the vocabulary",
				       what, i, (int)(ea ? blen : alen), ea ? b : a);
			break;
		}
		/* the merged token: a + b without b's continuing-subword prefix */
		size_t skip = 0;
		if (t->prefix && blen >= t->prefix_len && !memcmp(b, t->prefix, t->prefix_len))
			skip = t->prefix_len;
		memcpy(tmp + tmpcap / 2, a, alen);
		memcpy(tmp + tmpcap / 2 + alen, b + skip, blen - skip);
		const struct tok_strent *en = vocab_get(t, tmp + tmpcap / 2, alen + blen - skip, tmp);
		if (!en) {
			rc = ouro_fail(OURO_EMODEL, "%s: merge %zu: \"%.*s%.*s\" is not in the vocabulary",
				       what, i, (int)alen, a, (int)(blen - skip), b + skip);
			break;
		}
		tok_pairmap_put(&t->merges, ea->val, eb->val, (int32_t)i, en->val);
	}
	free(tmp);
	if (rc)
		return rc;

	/* unknown token */
	t->unk_id = -1;
	const char *unk = jstr(m, "unk_token");
	if (unk) {
		char ubuf[256];
		const struct tok_strent *e = strlen(unk) < sizeof ubuf ? vocab_get(t, unk, strlen(unk), ubuf) : NULL;
		if (!e)
			return ouro_fail(OURO_EMODEL, "%s: unk_token \"%.60s\" is not in the vocabulary", what, unk);
		t->unk_id = e->val;
	}
	return OURO_OK;
}

/* The initial symbols of each byte in a byte-level model: the byte's
 * character if the vocabulary has it, else its <0xXX> tokens (byte
 * fallback), else unk, else nothing (the byte is dropped, as the reference
 * does). */
static void byte_level_initial(struct tok_hf *t)
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
				long rl = byte_level_decode(hex, strlen(hex), raw);
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

static int load_added(struct tok_hf *t, json_t *list, const char *what)
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
		const struct tok_strent *ve = vocab_get(t, cs, clen, tmp);
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
		a->content = dup_mem(cs, a->len);
		if (!a->content) {
			json_decref(list);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		t->nadded++;
		a->id = aid;
		a->special = jbool(e, "special", 0);
		a->lstrip = jbool(e, "lstrip", 0);
		a->rstrip = jbool(e, "rstrip", 0);
		a->single_word = jbool(e, "single_word", 0);
		a->normalized = jbool(e, "normalized", !a->special);
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

/* Reads the ids a TemplateProcessing "special_tokens" entry stands for. */
static int template_ids(struct tok_hf *t, json_t *specials, const char *name,
			int32_t **ids, int *n, const char *what)
{
	json_t *st = json_object_get(json_object_get(specials, name), "ids");
	size_t i;
	json_t *e;

	if (!json_is_array(st))
		return ouro_fail(OURO_EMODEL, "%s: post_processor special token %.60s has no ids", what, name);
	json_array_foreach(st, i, e) {
		json_int_t id = json_integer_value(e);
		/* an id no token has would be encoded and then not decode */
		if (!json_is_integer(e) || id < 0 || id >= t->nids || !t->id_str[id])
			return ouro_fail(OURO_EMODEL, "%s: post_processor special token %.60s has an id that is no token's",
					 what, name);
		void *p = realloc(*ids, (size_t)(*n + 1) * sizeof **ids);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		*ids = p;
		(*ids)[(*n)++] = (int32_t)id;
	}
	return OURO_OK;
}

static int load_post(struct tok_hf *t, json_t *p, const char *what)
{
	const char *type;
	int rc;

	if ((rc = load_component(t, p, what, "post_processor", "processors", 0, load_post, &type)) || !type)
		return rc;
	if (!strcmp(type, "ByteLevel"))
		return OURO_OK;   /* offsets only */
	if (!strcmp(type, "TemplateProcessing")) {
		json_t *single = json_object_get(p, "single");
		json_t *specials = json_object_get(p, "special_tokens");
		size_t i;
		json_t *e;
		int seen_a = 0;
		if (!json_is_array(single))
			return ouro_fail(OURO_EMODEL, "%s: TemplateProcessing without a single template", what);
		json_array_foreach(single, i, e) {
			json_t *sp = json_object_get(e, "SpecialToken");
			if (json_object_get(e, "Sequence")) {
				seen_a = 1;
			} else if (sp) {
				const char *name = jstr(sp, "id");
				if (!name)
					return ouro_fail(OURO_EMODEL, "%s: TemplateProcessing special token without an id", what);
				if ((rc = seen_a ? template_ids(t, specials, name, &t->post_suf, &t->npost_suf, what)
						 : template_ids(t, specials, name, &t->post_pre, &t->npost_pre, what)))
					return rc;
			} else {
				return ouro_fail(OURO_EMODEL, "%s: TemplateProcessing item is neither SpecialToken nor Sequence", what);
			}
		}
		return OURO_OK;
	}
	if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
		json_t *cls = json_object_get(p, "cls"), *sep = json_object_get(p, "sep");
		json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
		if (!json_is_integer(ci) || !json_is_integer(si) ||
		    json_integer_value(ci) < 0 || json_integer_value(ci) >= t->nids ||
		    json_integer_value(si) < 0 || json_integer_value(si) >= t->nids ||
		    !t->id_str[json_integer_value(ci)] || !t->id_str[json_integer_value(si)])
			return ouro_fail(OURO_EMODEL, "%s: %s without valid cls and sep", what, type);
		t->post_pre = malloc(sizeof *t->post_pre);
		t->post_suf = malloc(sizeof *t->post_suf);
		if (!t->post_pre || !t->post_suf)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		t->post_pre[0] = (int32_t)json_integer_value(ci);
		t->post_suf[0] = (int32_t)json_integer_value(si);
		t->npost_pre = t->npost_suf = 1;
		return OURO_OK;
	}
	return ouro_fail(OURO_EMODEL, "%s: post_processor type %s is not supported", what, type);
}

static int load_decoder(struct tok_hf *t, json_t *d, const char *what)
{
	const char *type;
	int rc;

	if ((rc = load_component(t, d, what, "decoder", "decoders", 0, load_decoder, &type)) || !type)
		return rc;
	if (!strcmp(type, "ByteLevel")) {
		t->dec_bytelevel = 1;
	} else if (!strcmp(type, "ByteFallback")) {
		t->dec_bytefallback = 1;
	} else if (!strcmp(type, "Metaspace")) {
		const char *r = jstr(d, "replacement");
		const char *scheme = jstr(d, "prepend_scheme");
		if (r && strlen(r) <= 4) {
			t->dec_repl_len = strlen(r);
			memcpy(t->dec_repl, r, t->dec_repl_len);
		}
		t->dec_metaspace = 1;
		t->dec_strip_first = scheme ? strcmp(scheme, "never") != 0 : jbool(d, "add_prefix_space", 1);
	} else if (!strcmp(type, "Replace")) {
		/* the SentencePiece-style "▁" -> " " */
		const char *pat = jstr(json_object_get(d, "pattern"), "String");
		if (pat && strlen(pat) <= 4 && !strcmp(jstr(d, "content") ? jstr(d, "content") : "", " ")) {
			t->dec_repl_len = strlen(pat);
			memcpy(t->dec_repl, pat, t->dec_repl_len);
			t->dec_metaspace = 1;
		}
	} else if (!strcmp(type, "Strip")) {
		json_t *start = json_object_get(d, "start");
		if (json_integer_value(start) > 0)
			t->dec_strip_first = 1;
	}
	/* Fuse and others change nothing in the bytes */
	return OURO_OK;
}

void tok_hf_free(struct tok_hf *t)
{
	if (!t)
		return;
	tok_strmap_free(&t->vocab);
	tok_strmap_free(&t->raw);
	tok_strmap_free(&t->added_map);
	tok_pairmap_free(&t->merges);
	free(t->id_str);
	free(t->id_len);
	free(t->id_special);
	free(t->prefix);
	free(t->suffix);
	for (int i = 0; i < t->nadded; i++)
		free(t->added[i].content);
	free(t->added);
	free(t->raw_match.tok);
	free(t->norm_match.tok);
	for (int i = 0; i < t->nnorm; i++) {
		free(t->norm[i].a);
		free(t->norm[i].b);
		pcre2_code_free(t->norm[i].re);
	}
	free(t->norm);
	for (int i = 0; i < t->npre; i++) {
		pcre2_match_data_free(t->pre[i].md);
		pcre2_code_free(t->pre[i].re);
	}
	free(t->pre);
	free(t->post_pre);
	free(t->post_suf);
	free(t->pv[0].v);
	free(t->pv[1].v);
	ouro_bytes_free(&t->nbuf[0]);
	ouro_bytes_free(&t->nbuf[1]);
	free(t->syms);
	free(t->heap);
	arena_free(&t->arena);
	free(t->cache);
	free(t);
}

int tok_hf_load(struct tok_hf **out, const char *path, const char *buf, size_t len)
{
	json_error_t jerr;
	json_t *root;
	struct tok_hf *t;
	int rc;

	*out = NULL;
	root = json_loadb(buf, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
	if (!root)
		return ouro_fail(OURO_EMODEL, "%s: not a tokenizer.json (invalid JSON at line %d: %s)",
				 path, jerr.line, jerr.text);
	if (!json_is_object(root)) {
		static const char *what[] = {
			[JSON_ARRAY] = "an array", [JSON_STRING] = "a string", [JSON_INTEGER] = "a number",
			[JSON_REAL] = "a number", [JSON_TRUE] = "true", [JSON_FALSE] = "false",
			[JSON_NULL] = "null",
		};
		rc = ouro_fail(OURO_EMODEL, "%s: not a tokenizer.json (the JSON is %s, not an object)",
			       path, what[json_typeof(root)]);
		json_decref(root);
		return rc;
	}
	json_t *model = json_object_get(root, "model");
	if (!json_is_object(model)) {
		json_decref(root);
		return ouro_fail(OURO_EMODEL, "%s: no model object", path);
	}
	t = calloc(1, sizeof *t);
	if (!t) {
		json_decref(root);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	t->unk_id = -1;
	/* the pre-tokenizer decides whether the model is byte-level, which
	 * the vocabulary's keys depend on: load it first */
	rc = load_normalizer(t, json_object_get(root, "normalizer"), path);
	if (!rc)
		rc = load_pretokenizer(t, json_object_get(root, "pre_tokenizer"), path);
	if (!rc) {
		rc = load_model(t, model, json_object_get(root, "added_tokens"), path);
	}
	if (!rc)
		rc = load_added(t, json_object_get(root, "added_tokens"), path);
	if (!rc)
		rc = load_post(t, json_object_get(root, "post_processor"), path);
	if (!rc)
		rc = load_decoder(t, json_object_get(root, "decoder"), path);
	json_decref(root);
	if (!rc && t->byte_level)
		byte_level_initial(t);
	if (!rc && t->byte_level && !t->prefix && !t->suffix) {
		t->cache = calloc(CACHE_SLOTS, sizeof *t->cache);
		if (!t->cache)
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if (rc) {
		tok_hf_free(t);
		return rc;
	}
	*out = t;
	return OURO_OK;
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
		e = vocab_get(t, piece, n, tmp);
		free(tmp);
	} else {
		e = tok_strmap_get(&t->vocab, piece, n);
	}
	return e ? e->val : -1;
}

/* ---- normalizers -------------------------------------------------------- */

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
		int l = utf8_len_at(s + i, n - i, &cp);
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
			pos = ov[1] + (size_t)utf8_len_at(s + ov[1], n - ov[1], &cp);
			rc = rc ? rc : ouro_bytes_add(dst, s + ov[1], pos - ov[1]);
			last = pos;
		} else {
			pos = ov[1];
		}
	}
	pcre2_match_data_free(md);
	return rc ? rc : ouro_bytes_add(dst, s + last, n - last);
}

/* Runs the normalizers over s[0..n); the result is in *res, *rlen (either
 * s itself or one of t's buffers). */
static int normalize(struct tok_hf *t, const char *s, size_t n,
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
			size_t a = 0, b = n;
			int32_t cp;
			while (nm->left && a < b) {
				int l = utf8_len_at(s + a, b - a, &cp);
				if (!tok_is_space(cp))
					break;
				a += (size_t)l;
			}
			while (nm->right && b > a) {
				size_t k = b - 1;
				while (k > a && ((unsigned char)s[k] & 0xC0) == 0x80)
					k--;
				utf8_len_at(s + k, b - k, &cp);
				if (!tok_is_space(cp))
					break;
				b = k;
			}
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

/* ---- pre-tokenizers ----------------------------------------------------- */

/* Splits one piece by the GPT-2 pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * matched at each position in that order, as a backtracking engine does. */
static int split_gpt2(struct piecevec *out, const struct piece *pc)
{
	const char *s = pc->p;
	size_t n = pc->n, i = 0;
	int rc = OURO_OK;

	while (i < n && rc == OURO_OK) {
		size_t start = i, j;
		int32_t cp, cp2;
		int l = utf8_len_at(s + i, n - i, &cp), cls;

		if (cp == '\'' && i + 1 < n) {
			char a = s[i + 1], b = i + 2 < n ? s[i + 2] : 0;
			size_t m = 0;
			if (a == 's' || a == 't' || a == 'm' || a == 'd')
				m = 2;
			else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
				 (a == 'l' && b == 'l'))
				m = 3;
			if (m) {
				rc = pv_push(out, s + i, m, pc->at_start && i == 0);
				i += m;
				continue;
			}
		}
		j = i;
		cls = tok_class(cp);
		if (cp == ' ' && i + 1 < n) {
			int l2 = utf8_len_at(s + i + 1, n - i - 1, &cp2);
			int c2 = tok_class(cp2);
			if (c2 != TOK_C_SPACE) {
				cls = c2;
				j = i + 1 + (size_t)l2;
				goto run;
			}
		}
		if (cls != TOK_C_SPACE) {
			j = i + (size_t)l;
run:
			while (j < n) {
				int lj = utf8_len_at(s + j, n - j, &cp2);
				if (tok_class(cp2) != cls)
					break;
				j += (size_t)lj;
			}
		} else {
			/* a run of white space; before a non-space, leave its last
			 * character to go with what follows, unless it is the only one */
			size_t last = i;
			j = i;
			while (j < n) {
				int lj = utf8_len_at(s + j, n - j, &cp2);
				if (!tok_is_space(cp2))
					break;
				last = j;
				j += (size_t)lj;
			}
			if (j < n && last > i)
				j = last;
		}
		rc = pv_push(out, s + start, j - start, pc->at_start && start == 0);
		i = j;
	}
	return rc;
}

/* Digits: numeric characters (Nd, Nl, No) each alone, or in runs. */
static int split_digits(struct piecevec *out, const struct piece *pc, int individual)
{
	const char *s = pc->p;
	size_t n = pc->n, i = 0, start = 0;
	int rc = OURO_OK, prev_num = 0;

	while (i < n && rc == OURO_OK) {
		int32_t cp;
		int l = utf8_len_at(s + i, n - i, &cp);
		int num = tok_class(cp) == TOK_C_NUMBER;
		if (num && individual) {
			rc = pv_push(out, s + start, i - start, pc->at_start && start == 0);
			if (!rc)
				rc = pv_push(out, s + i, (size_t)l, pc->at_start && i == 0);
			start = i + (size_t)l;
		} else if (i > start && num != prev_num) {
			rc = pv_push(out, s + start, i - start, pc->at_start && start == 0);
			start = i;
		}
		prev_num = num;
		i += (size_t)l;
	}
	return rc ? rc : pv_push(out, s + start, n - start, pc->at_start && start == 0);
}

static int split_ws(struct piecevec *out, const struct piece *pc)
{
	const char *s = pc->p;
	size_t n = pc->n, i = 0, start = 0;
	int rc = OURO_OK;

	while (i < n && rc == OURO_OK) {
		int32_t cp;
		int l = utf8_len_at(s + i, n - i, &cp);
		if (tok_is_space(cp)) {
			rc = pv_push(out, s + start, i - start, pc->at_start && start == 0);
			start = i + (size_t)l;
		}
		i += (size_t)l;
	}
	return rc ? rc : pv_push(out, s + start, n - start, pc->at_start && start == 0);
}

/* Applies a Split behaviour to the spans [b_k, e_k) with is_match flags. */
struct span { size_t b, e; int m; };

static int split_regex(struct tok_hf *t, struct piecevec *out, struct hf_pre *pr,
		       const struct piece *pc)
{
	const char *s = pc->p;
	size_t n = pc->n, pos = 0, prev = 0;
	struct span *sp = NULL;
	size_t ns = 0, cap = 0;
	int rc = OURO_OK;

#define ADD_SPAN(B, E, M) do { \
	if (ns == cap) { \
		cap = cap ? cap * 2 : 64; \
		void *q_ = realloc(sp, cap * sizeof *sp); \
		if (!q_) { free(sp); return ouro_fail(OURO_ENOMEM, "out of memory"); } \
		sp = q_; \
	} \
	sp[ns].b = (B); sp[ns].e = (E); sp[ns].m = (M); ns++; \
} while (0)

	while (pos <= n) {
		int r = pcre2_match(pr->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, pr->md, NULL);
		if (r < 0)
			break;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(pr->md);
		if (ov[0] > prev)
			ADD_SPAN(prev, ov[0], 0);
		ADD_SPAN(ov[0], ov[1], 1);
		prev = ov[1];
		if (ov[1] == ov[0]) {
			int32_t cp;
			if (ov[1] >= n)
				break;
			pos = ov[1] + (size_t)utf8_len_at(s + ov[1], n - ov[1], &cp);
		} else {
			pos = ov[1];
		}
	}
	if (prev < n)
		ADD_SPAN(prev, n, 0);
#undef ADD_SPAN
	if (pr->invert)
		for (size_t k = 0; k < ns; k++)
			sp[k].m = !sp[k].m;

	/* merge by behaviour, in place */
	size_t m = 0;
	int prev_match = 0;
	switch (pr->behavior) {
	case BEH_REMOVED:
		for (size_t k = 0; k < ns; k++)
			if (!sp[k].m)
				sp[m++] = sp[k];
		break;
	case BEH_ISOLATED:
		m = ns;
		break;
	case BEH_MERGED_PREV:
		for (size_t k = 0; k < ns; k++) {
			if (sp[k].m && !prev_match && m > 0)
				sp[m - 1].e = sp[k].e;
			else
				sp[m++] = sp[k];
			prev_match = sp[k].m;
		}
		break;
	case BEH_MERGED_NEXT:
		for (size_t k = ns; k-- > 0;) {
			/* built backwards from the end of the array */
			if (sp[k].m && !prev_match && m > 0)
				sp[ns - m].b = sp[k].b;
			else {
				m++;
				sp[ns - m] = sp[k];
			}
			prev_match = sp[k].m;
		}
		memmove(sp, sp + ns - m, m * sizeof *sp);
		break;
	case BEH_CONTIGUOUS:
		for (size_t k = 0; k < ns; k++) {
			if (sp[k].m == prev_match && m > 0)
				sp[m - 1].e = sp[k].e;
			else
				sp[m++] = sp[k];
			prev_match = sp[k].m;
		}
		break;
	}
	for (size_t k = 0; k < m && rc == OURO_OK; k++)
		rc = pv_push(out, s + sp[k].b, sp[k].e - sp[k].b, pc->at_start && sp[k].b == 0);
	free(sp);
	(void)t;
	return rc;
}

static int metaspace(struct tok_hf *t, struct piecevec *out, struct hf_pre *pr,
		     const struct piece *pc)
{
	size_t spaces = 0;
	int add = 0;

	for (size_t i = 0; i < pc->n; i++)
		spaces += pc->p[i] == ' ';
	if (pr->prepend == 2 || (pr->prepend == 1 && pc->at_start))
		add = !(pc->n && (pc->p[0] == ' ' ||
			(pc->n >= pr->repl_len && !memcmp(pc->p, pr->repl, pr->repl_len))));
	size_t len = pc->n + spaces * (pr->repl_len - 1) + (add ? pr->repl_len : 0);
	char *d = arena_alloc(&t->arena, len + 1), *o = d;
	if (!d)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if (add) {
		memcpy(o, pr->repl, pr->repl_len);
		o += pr->repl_len;
	}
	for (size_t i = 0; i < pc->n; i++) {
		if (pc->p[i] == ' ') {
			memcpy(o, pr->repl, pr->repl_len);
			o += pr->repl_len;
		} else {
			*o++ = pc->p[i];
		}
	}
	if (!pr->split)
		return pv_push(out, d, len, pc->at_start);
	/* split before each replacement character (MergedWithNext) */
	size_t start = 0;
	for (size_t i = 0; i + pr->repl_len <= len; i++) {
		if (i > start && !memcmp(d + i, pr->repl, pr->repl_len)) {
			int rc = pv_push(out, d + start, i - start, pc->at_start && start == 0);
			if (rc)
				return rc;
			start = i;
		}
	}
	return pv_push(out, d + start, len - start, pc->at_start && start == 0);
}

static int pretokenize(struct tok_hf *t, const char *s, size_t n, int at_start,
		       struct piecevec **res)
{
	int cur = 0, rc = OURO_OK;

	t->pv[0].n = 0;
	if ((rc = pv_push(&t->pv[0], s, n, at_start)))
		return rc;
	for (int k = 0; k < t->npre && rc == OURO_OK; k++) {
		struct hf_pre *pr = &t->pre[k];
		struct piecevec *in = &t->pv[cur], *out = &t->pv[cur ^ 1];
		out->n = 0;
		for (size_t i = 0; i < in->n && rc == OURO_OK; i++) {
			struct piece pc = in->v[i];
			switch (pr->type) {
			case PRE_DIGITS:
				rc = split_digits(out, &pc, pr->individual);
				break;
			case PRE_BYTELEVEL:
				if (pr->prefix_space && pc.p[0] != ' ') {
					char *d = arena_alloc(&t->arena, pc.n + 1);
					if (!d)
						return ouro_fail(OURO_ENOMEM, "out of memory");
					d[0] = ' ';
					memcpy(d + 1, pc.p, pc.n);
					pc.p = d;
					pc.n++;
				}
				rc = pr->use_regex ? split_gpt2(out, &pc) : pv_push(out, pc.p, pc.n, pc.at_start);
				break;
			case PRE_SPLIT:
				rc = split_regex(t, out, pr, &pc);
				break;
			case PRE_WSSPLIT:
				rc = split_ws(out, &pc);
				break;
			case PRE_METASPACE:
				rc = metaspace(t, out, pr, &pc);
				break;
			}
		}
		cur ^= 1;
	}
	*res = &t->pv[cur];
	return rc;
}

/* ---- BPE ---------------------------------------------------------------- */

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
		int l = utf8_len_at(s + i, n - i, &cp);
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

static int bpe_piece(struct tok_hf *t, const char *s, size_t n, struct ouro_ids *out)
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

/* ---- encoding ----------------------------------------------------------- */

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

/* Finds the next added token in s[from..n): its span [*b, *e) after
 * lstrip / rstrip, and its id. Returns 0 when there is none. */
static int next_added(const struct hf_matcher *m, const char *s, size_t n,
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
					size_t q = start - 1;
					while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80)
						q--;
					utf8_len_at(s + q, start - q, &cp);
					before = is_word_char(cp);
				}
				if (stop < n) {
					utf8_len_at(s + stop, n - stop, &cp);
					after = is_word_char(cp);
				}
				if (before || after) {
					/* not a word of its own: the search goes on after it */
					i = stop - 1;
					goto next_pos;
				}
			}
			if (a->lstrip) {
				while (start > floor) {
					size_t q = start - 1;
					while (q > floor && ((unsigned char)s[q] & 0xC0) == 0x80)
						q--;
					utf8_len_at(s + q, start - q, &cp);
					if (!tok_is_space(cp))
						break;
					start = q;
				}
			}
			if (a->rstrip) {
				while (stop < n) {
					int l = utf8_len_at(s + stop, n - stop, &cp);
					if (!tok_is_space(cp))
						break;
					stop += (size_t)l;
				}
			}
			*b = start;
			*e = stop;
			*id = a->id;
			return 1;
		}
next_pos:;
	}
	return 0;
}

static int encode_text(struct tok_hf *t, const char *s, size_t n, int at_start,
		       struct ouro_ids *out)
{
	struct piecevec *pv = NULL;
	int rc;

	if (n == 0)
		return OURO_OK;
	if ((rc = pretokenize(t, s, n, at_start, &pv)))
		return rc;
	for (size_t i = 0; i < pv->n; i++)
		if ((rc = bpe_piece(t, pv->v[i].p, pv->v[i].n, out)))
			return rc;
	return OURO_OK;
}

/* Normalises one stretch between raw added tokens and encodes it. */
static int encode_segment(struct tok_hf *t, const char *s, size_t n, int at_start,
			  struct ouro_ids *out)
{
	const char *ns;
	size_t nn, pos = 0, b, e, floor = 0;
	int32_t id;
	int rc;

	if (n == 0)
		return OURO_OK;
	if ((rc = normalize(t, s, n, &ns, &nn)))
		return rc;
	/* the normalised text may live in a scratch buffer that the next
	 * segment reuses; this segment is done with it before that */
	while (next_added(&t->norm_match, ns, nn, pos, floor, &b, &e, &id)) {
		if ((rc = encode_text(t, ns + pos, b - pos, at_start && pos == 0, out)))
			return rc;
		if ((rc = ouro_ids_push(out, id)))
			return rc;
		pos = floor = e;
	}
	return encode_text(t, ns + pos, nn - pos, at_start && pos == 0, out);
}

int tok_hf_encode(struct tok_hf *t, const char *s, size_t n, struct ouro_ids *out)
{
	size_t pos = 0, b, e, floor = 0;
	int32_t id;
	int rc = OURO_OK;

	arena_reset(&t->arena);
	for (int i = 0; i < t->npost_pre && !rc; i++)
		rc = ouro_ids_push(out, t->post_pre[i]);
	while (!rc && next_added(&t->raw_match, s, n, pos, floor, &b, &e, &id)) {
		rc = encode_segment(t, s + pos, b - pos, pos == 0, out);
		if (!rc)
			rc = ouro_ids_push(out, id);
		pos = floor = e;
	}
	if (!rc)
		rc = encode_segment(t, s + pos, n - pos, pos == 0, out);
	for (int i = 0; i < t->npost_suf && !rc; i++)
		rc = ouro_ids_push(out, t->post_suf[i]);
	return rc;
}

/* ---- decoding ----------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tok_hf_decode(const struct tok_hf *t, const int32_t *ids, size_t n,
		  struct ouro_bytes *out)
{
	size_t start = out->n;
	int rc = OURO_OK;

	for (size_t i = 0; i < n && !rc; i++) {
		int32_t id = ids[i];
		if (id < 0 || id >= t->nids || !t->id_str[id])
			return ouro_fail(OURO_EINPUT, "token id %d is out of range [0, %d)", id, t->nids);
		const char *s = t->id_str[id];
		size_t l = t->id_len[id];
		if (t->id_special[id] && t->dec_bytelevel) {
			/* added tokens go through the byte-level decoder too: a
			 * text of alphabet characters stands for its bytes, any
			 * other is its own UTF-8 */
			char *tmp = malloc(l + 1);
			long bl = tmp ? byte_level_decode(s, l, tmp) : -1;
			rc = bl >= 0 ? ouro_bytes_add(out, tmp, (size_t)bl) : ouro_bytes_add(out, s, l);
			free(tmp);
			continue;
		}
		if (t->id_special[id] || t->byte_level) {
			/* raw bytes: added tokens, and byte-level tokens, which
			 * were mapped back to bytes when loaded */
			rc = ouro_bytes_add(out, s, l);
			continue;
		}
		if (t->dec_bytefallback && l == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' &&
		    s[5] == '>' && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
			char c = (char)(hexval(s[3]) * 16 + hexval(s[4]));
			rc = ouro_bytes_add(out, &c, 1);
			continue;
		}
		if (t->dec_metaspace && t->dec_repl_len) {
			size_t last = 0;
			for (size_t k = 0; k + t->dec_repl_len <= l && !rc; k++) {
				if (!memcmp(s + k, t->dec_repl, t->dec_repl_len)) {
					rc = ouro_bytes_add(out, s + last, k - last);
					if (!rc)
						rc = ouro_bytes_add(out, " ", 1);
					k += t->dec_repl_len - 1;
					last = k + 1;
				}
			}
			if (!rc)
				rc = ouro_bytes_add(out, s + last, l - last);
		} else {
			rc = ouro_bytes_add(out, s, l);
		}
	}
	if (!rc && t->dec_strip_first && out->n > start && out->p[start] == ' ') {
		memmove(out->p + start, out->p + start + 1, out->n - start - 1);
		out->n--;
		out->p[out->n] = 0;
	}
	return rc;
}
