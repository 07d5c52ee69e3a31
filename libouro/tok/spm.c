/*
 * spm.c - SentencePiece .model files: the protobuf ModelProto read by hand
 * (the wire format is four cases), the normalizer, and the two model
 * kinds, BPE and unigram, giving the ids spm_encode gives.
 *
 * Normalising (sentencepiece normalizer.cc's behaviour): user-defined
 * symbols pass verbatim; elsewhere the longest rule of the precompiled
 * character map (nmt_nfkc, nfkc, ...; none for "identity") replaces a
 * prefix, else one character is copied. With remove_extra_whitespaces,
 * leading, trailing and repeated spaces go; add_dummy_prefix puts a space
 * first (last with treat_whitespace_as_suffix); escape_whitespaces writes
 * spaces as U+2581 "▁".
 *
 * BPE: characters (and user-defined symbols, which never merge) become
 * symbols; the adjacent pair whose concatenation is a piece with the
 * highest score, leftmost on ties, merges until none is left.
 * Unigram: the Viterbi path over all pieces that match, scored by the
 * pieces' log probabilities (user-defined symbols get a bonus that always
 * wins), with an unknown-character node where no one-character piece
 * fits; scores are summed in the same float/double mix as the reference,
 * so that ties fall the same way.
 * Unknown pieces become their UTF-8 bytes' <0xXX> pieces with byte_fallback,
 * else the unk id.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "tok_internal.h"

enum { SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER = 4,
       SPM_UNUSED = 5, SPM_BYTE = 6 };
enum { SPM_UNIGRAM = 1, SPM_BPE = 2, SPM_WORD = 3, SPM_CHAR = 4 };

struct spm_piece {
	const char *s;     /* into the file copy */
	uint32_t len;
	float score;
	int type;
};

struct tok_spm {
	char *file;                   /* the .model bytes; pieces point here */
	struct spm_piece *pieces;     /* [n] */
	int32_t n;
	struct tok_strmap normal;     /* NORMAL, USER_DEFINED, UNUSED -> id */
	struct tok_strmap reserved;   /* CONTROL, UNKNOWN, BYTE -> id */
	int32_t unk_id;
	int32_t byte_id[256];         /* <0xXX> pieces, -1 if absent */
	int model_type;
	int byte_fallback, ws_suffix;
	char unk_surface[64];
	/* user-defined symbols, longest first per first byte */
	int32_t *user;                /* [nuser] ids */
	int nuser;
	int user_first[257];
	/* normalizer */
	struct tok_charsmap cm;
	int add_dummy_prefix, remove_extra_ws, escape_ws;
	float min_score, max_score;
	uint32_t max_piece_len;       /* bytes */
	/* scratch */
	struct ouro_bytes norm;
};

/* ---- protobuf wire format ----------------------------------------------- */

struct pb {
	const unsigned char *p, *end;
};

static int pb_varint(struct pb *b, uint64_t *v)
{
	uint64_t x = 0;

	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end)
			return -1;
		unsigned char c = *b->p++;
		x |= (uint64_t)(c & 0x7F) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* One field: its number, wire type, and value (varint or fixed in v, a
 * length-delimited slice in sub). */
struct pb_field {
	uint32_t num;
	int wt;
	uint64_t v;
	struct pb sub;
};

/* Reads the next field of b into *f. Returns -1 on malformed input. */
static int pb_field(struct pb *b, struct pb_field *f)
{
	uint64_t key, len;

	if (pb_varint(b, &key) || key >> 3 == 0 || key >> 3 > UINT32_MAX)
		return -1;
	f->num = (uint32_t)(key >> 3);
	f->wt = (int)(key & 7);
	switch (f->wt) {
	case 0:
		return pb_varint(b, &f->v);
	case 1:
		if (b->end - b->p < 8)
			return -1;
		memcpy(&f->v, b->p, 8);
		b->p += 8;
		return 0;
	case 5: {
		uint32_t x;
		if (b->end - b->p < 4)
			return -1;
		memcpy(&x, b->p, 4);
		b->p += 4;
		f->v = x;
		return 0;
	}
	case 2:
		if (pb_varint(b, &len) || len > (uint64_t)(b->end - b->p))
			return -1;
		f->sub.p = b->p;
		f->sub.end = b->p + len;
		b->p += len;
		return 0;
	default:
		return -1;   /* groups are not used by sentencepiece */
	}
}

/* ---- loading ------------------------------------------------------------ */

/* The byte a piece "<0xXX>" stands for (exactly two hex digits; sscanf's
 * %2X would also take a sign, "<0x-8>"), or -1. s[0..len) need not end
 * in NUL: pieces point into the file. */
static int byte_piece(const char *s, size_t len)
{
	int v = 0;

	if (len != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	for (int k = 3; k < 5; k++) {
		char c = s[k];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

static int parse_piece(struct tok_spm *t, struct pb b, struct spm_piece *pc, const char *what, int32_t i)
{
	struct pb_field f;

	pc->s = NULL;
	pc->len = 0;
	pc->score = 0;
	pc->type = SPM_NORMAL;
	while (b.p < b.end) {
		if (pb_field(&b, &f))
			return ouro_fail(OURO_EMODEL, "%s: piece %d: malformed protobuf", what, i);
		if (f.num == 1 && f.wt == 2) {
			pc->s = (const char *)f.sub.p;
			pc->len = (uint32_t)(f.sub.end - f.sub.p);
		} else if (f.num == 2 && f.wt == 5) {
			uint32_t x = (uint32_t)f.v;
			memcpy(&pc->score, &x, 4);
		} else if (f.num == 3 && f.wt == 0) {
			pc->type = (int)f.v;
		}
	}
	(void)t;
	if (!pc->s || pc->len == 0)
		return ouro_fail(OURO_EMODEL, "%s: piece %d is empty", what, i);
	if (tok_utf8_check(pc->s, pc->len) != pc->len)
		return ouro_fail(OURO_EMODEL, "%s: piece %d is not valid UTF-8", what, i);
	if (pc->type < SPM_NORMAL || pc->type > SPM_BYTE)
		return ouro_fail(OURO_EMODEL, "%s: piece %d has unknown type %d", what, i, pc->type);
	if (!isfinite(pc->score))
		return ouro_fail(OURO_EMODEL, "%s: piece %d has score %g", what, i, (double)pc->score);
	return OURO_OK;
}

static int parse_trainer(struct tok_spm *t, struct pb b, const char *what)
{
	struct pb_field f;

	while (b.p < b.end) {
		if (pb_field(&b, &f))
			return ouro_fail(OURO_EMODEL, "%s: trainer_spec: malformed protobuf", what);
		if (f.num == 3 && f.wt == 0)
			t->model_type = (int)f.v;
		else if (f.num == 35 && f.wt == 0)
			t->byte_fallback = f.v != 0;
		else if (f.num == 24 && f.wt == 0)
			t->ws_suffix = f.v != 0;
		else if (f.num == 44 && f.wt == 2 && (size_t)(f.sub.end - f.sub.p) < sizeof t->unk_surface) {
			memcpy(t->unk_surface, f.sub.p, (size_t)(f.sub.end - f.sub.p));
			t->unk_surface[f.sub.end - f.sub.p] = 0;
		}
	}
	return OURO_OK;
}

static int parse_normalizer(struct tok_spm *t, struct pb b, const char *what)
{
	struct pb_field f;
	int rc;

	while (b.p < b.end) {
		if (pb_field(&b, &f))
			return ouro_fail(OURO_EMODEL, "%s: normalizer_spec: malformed protobuf", what);
		if (f.num == 2 && f.wt == 2) {
			tok_charsmap_free(&t->cm);
			if ((rc = tok_charsmap_init(&t->cm, f.sub.p, (size_t)(f.sub.end - f.sub.p), what)))
				return rc;
		} else if (f.num == 3 && f.wt == 0) {
			t->add_dummy_prefix = f.v != 0;
		} else if (f.num == 4 && f.wt == 0) {
			t->remove_extra_ws = f.v != 0;
		} else if (f.num == 5 && f.wt == 0) {
			t->escape_ws = f.v != 0;
		}
	}
	return OURO_OK;
}

/* The first pass over the file: reads the trainer and normalizer specs,
 * counts the pieces and makes room for them. */
static int read_specs(struct tok_spm *t, struct pb b, const char *path)
{
	struct pb_field f;
	int32_t npieces = 0;
	int rc = OURO_OK;

	while (b.p < b.end && rc == OURO_OK) {
		if (pb_field(&b, &f))
			return ouro_fail(OURO_EMODEL, "%s: not a SentencePiece model (malformed protobuf at byte %zu)",
					 path, (size_t)((const char *)b.p - t->file));
		if (f.num == 1 && f.wt == 2) {
			if (npieces == INT32_MAX / 2)
				rc = ouro_fail(OURO_EMODEL, "%s: too many pieces", path);
			npieces++;
		} else if (f.num == 2 && f.wt == 2) {
			rc = parse_trainer(t, f.sub, path);
		} else if (f.num == 3 && f.wt == 2) {
			rc = parse_normalizer(t, f.sub, path);
		}
	}
	if (rc)
		return rc;
	if (npieces == 0)
		return ouro_fail(OURO_EMODEL, "%s: not a SentencePiece model (no pieces)", path);
	if (t->model_type != SPM_UNIGRAM && t->model_type != SPM_BPE)
		return ouro_fail(OURO_EMODEL, "%s: model type %d is not supported (only unigram and BPE)",
				 path, t->model_type);
	if (!(t->pieces = calloc((size_t)npieces, sizeof *t->pieces)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	return OURO_OK;
}

/* The second pass: the pieces, into t->pieces (the first pass checked
 * the fields and counted them). */
static int read_pieces(struct tok_spm *t, struct pb b, const char *path)
{
	struct pb_field f;
	int rc = OURO_OK;

	while (!rc && b.p < b.end) {
		pb_field(&b, &f);
		if (f.num == 1 && f.wt == 2)
			rc = parse_piece(t, f.sub, &t->pieces[t->n], path, t->n), t->n++;
	}
	return rc;
}

/* Enters piece i into the maps and the tables of special pieces. */
static int index_piece(struct tok_spm *t, int32_t i, const char *path)
{
	struct spm_piece *pc = &t->pieces[i];
	int normal = pc->type == SPM_NORMAL || pc->type == SPM_USER || pc->type == SPM_UNUSED;
	int added;

	if (!tok_strmap_put(normal ? &t->normal : &t->reserved, pc->s, pc->len, i, &added))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if (!added)
		return ouro_fail(OURO_EMODEL, "%s: piece %d \"%.*s\" is already defined", path, i,
				 (int)(pc->len > 60 ? 60 : pc->len), pc->s);
	if (pc->type == SPM_NORMAL) {
		if (pc->score < t->min_score)
			t->min_score = pc->score;
		if (pc->score > t->max_score)
			t->max_score = pc->score;
	}
	if (pc->len > t->max_piece_len && normal)
		t->max_piece_len = pc->len;
	if (pc->type == SPM_UNKNOWN) {
		if (t->unk_id >= 0)
			return ouro_fail(OURO_EMODEL, "%s: more than one unknown piece", path);
		t->unk_id = i;
	}
	if (pc->type == SPM_BYTE) {
		int x = byte_piece(pc->s, pc->len);
		if (!t->byte_fallback)
			return ouro_fail(OURO_EMODEL, "%s: byte piece %d but byte_fallback is off", path, i);
		if (x < 0)
			return ouro_fail(OURO_EMODEL, "%s: byte piece %d \"%.*s\" is not <0xXX>", path, i,
					 (int)(pc->len > 60 ? 60 : pc->len), pc->s);
		t->byte_id[x] = i;
	}
	if (pc->type == SPM_USER) {
		void *p = realloc(t->user, (size_t)(t->nuser + 1) * sizeof *t->user);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		t->user = p;
		t->user[t->nuser++] = i;
	}
	return OURO_OK;
}

/* Indexes every piece, and checks that the special pieces the model needs
 * are there. */
static int index_pieces(struct tok_spm *t, const char *path)
{
	int rc;

	for (int i = 0; i < 256; i++)
		t->byte_id[i] = -1;
	/* the reference starts from FLT_MAX and FLT_MIN (the smallest positive
	 * float, not the most negative): with only negative scores, max_score
	 * stays FLT_MIN, which user-defined symbols' scores build on */
	t->min_score = FLT_MAX;
	t->max_score = FLT_MIN;
	for (int32_t i = 0; i < t->n; i++)
		if ((rc = index_piece(t, i, path)))
			return rc;
	if (t->unk_id < 0)
		return ouro_fail(OURO_EMODEL, "%s: no unknown piece (<unk>)", path);
	if (t->byte_fallback)
		for (int i = 0; i < 256; i++)
			if (t->byte_id[i] < 0)
				return ouro_fail(OURO_EMODEL, "%s: byte_fallback without the piece <0x%02X>", path, i);
	return OURO_OK;
}

/* Orders the user-defined symbols by first byte, longest first, and
 * indexes them by first byte. */
static void sort_user(struct tok_spm *t)
{
	for (int i = 1; i < t->nuser; i++) {
		int32_t x = t->user[i];
		int j = i - 1;
		while (j >= 0) {
			const struct spm_piece *a = &t->pieces[t->user[j]], *c = &t->pieces[x];
			unsigned char fa = (unsigned char)a->s[0], fc = (unsigned char)c->s[0];
			if (fa < fc || (fa == fc && a->len >= c->len))
				break;
			t->user[j + 1] = t->user[j];
			j--;
		}
		t->user[j + 1] = x;
	}
	for (int c = 0, j = 0; c <= 256; c++) {
		while (j < t->nuser && (unsigned char)t->pieces[t->user[j]].s[0] < c)
			j++;
		t->user_first[c] = j;
	}
}

int tok_spm_load(struct tok_spm **out, const char *path, const char *buf, size_t len)
{
	struct tok_spm *t;
	int rc;

	*out = NULL;
	t = calloc(1, sizeof *t);
	if (!t)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	t->model_type = SPM_UNIGRAM;
	t->add_dummy_prefix = t->remove_extra_ws = t->escape_ws = 1;
	t->unk_id = -1;
	strcpy(t->unk_surface, " \xE2\x81\x87 ");
	t->file = malloc(len ? len : 1);
	if (!t->file) {
		free(t);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	memcpy(t->file, buf, len);
	struct pb file = {(const unsigned char *)t->file, (const unsigned char *)t->file + len};
	if ((rc = read_specs(t, file, path)) || (rc = read_pieces(t, file, path)) ||
	    (rc = index_pieces(t, path))) {
		tok_spm_free(t);
		return rc;
	}
	sort_user(t);
	*out = t;
	return OURO_OK;
}

void tok_spm_free(struct tok_spm *t)
{
	if (!t)
		return;
	tok_strmap_free(&t->normal);
	tok_strmap_free(&t->reserved);
	tok_charsmap_free(&t->cm);
	ouro_bytes_free(&t->norm);
	free(t->pieces);
	free(t->user);
	free(t->file);
	free(t);
}

int64_t tok_spm_vocab_size(const struct tok_spm *t)
{
	return t->n;
}

static int32_t piece_to_id(const struct tok_spm *t, const char *s, size_t n)
{
	const struct tok_strent *e = tok_strmap_get(&t->reserved, s, n);

	if (e)
		return e->val;
	e = tok_strmap_get(&t->normal, s, n);
	return e ? e->val : t->unk_id;
}

int32_t tok_spm_piece_id(const struct tok_spm *t, const char *piece)
{
	size_t n = strlen(piece);
	int32_t id = piece_to_id(t, piece, n);

	if (id == t->unk_id && (t->pieces[id].len != n || memcmp(piece, t->pieces[id].s, n)))
		return -1;
	return id;
}

/* ---- normalizing -------------------------------------------------------- */

/* Length of the user-defined symbol at s[0..n), or 0. */
static size_t user_match(const struct tok_spm *t, const char *s, size_t n)
{
	unsigned char c = (unsigned char)s[0];

	for (int k = t->user_first[c]; k < t->user_first[c + 1]; k++) {
		const struct spm_piece *p = &t->pieces[t->user[k]];
		if (p->len <= n && !memcmp(s, p->s, p->len))
			return p->len;
	}
	return 0;
}

/* One normalisation step at s[0..n): the text it becomes (*rep, *replen)
 * and the bytes it consumes. */
static size_t normalize_prefix(const struct tok_spm *t, const char *s, size_t n,
			       const char **rep, size_t *replen)
{
	size_t m;
	int32_t cp;

	if ((m = user_match(t, s, n))) {
		*rep = s;
		*replen = m;
		return m;
	}
	if ((m = tok_charsmap_match(&t->cm, s, n, rep, replen)))
		return m;
	m = (size_t)tok_utf8_next((const unsigned char *)s, n, &cp);
	if (m == 0) {   /* not reached: encode checks the text first */
		*rep = "\xEF\xBF\xBD";
		*replen = 3;
		return 1;
	}
	*rep = s;
	*replen = m;
	return m;
}

static int normalize(struct tok_spm *t, const char *s, size_t n)
{
	struct ouro_bytes *o = &t->norm;
	const char *rep;
	size_t replen, m;
	int rc = OURO_OK, prev_space;
	static const char ws[] = "\xE2\x96\x81";
	const char *space = t->escape_ws ? ws : " ";
	size_t spacelen = t->escape_ws ? 3 : 1;

	o->n = 0;
	rc = ouro_bytes_add(o, "", 0);
	if (t->remove_extra_ws) {
		while (n > 0) {
			m = normalize_prefix(t, s, n, &rep, &replen);
			if (!(replen == 1 && rep[0] == ' '))
				break;
			s += m;
			n -= m;
		}
	}
	if (n == 0)
		return rc;
	if (!t->ws_suffix && t->add_dummy_prefix)
		rc = ouro_bytes_add(o, space, spacelen);
	prev_space = t->remove_extra_ws;
	while (n > 0 && rc == OURO_OK) {
		m = normalize_prefix(t, s, n, &rep, &replen);
		while (prev_space && replen > 0 && rep[0] == ' ') {
			rep++;
			replen--;
		}
		if (replen > 0) {
			for (size_t i = 0; i < replen && rc == OURO_OK; i++)
				rc = rep[i] == ' ' && t->escape_ws ? ouro_bytes_add(o, ws, 3)
								    : ouro_bytes_add(o, rep + i, 1);
			prev_space = rep[replen - 1] == ' ';
		}
		s += m;
		n -= m;
		if (!t->remove_extra_ws)
			prev_space = 0;
	}
	if (t->remove_extra_ws)
		while (o->n >= spacelen && !memcmp(o->p + o->n - spacelen, space, spacelen))
			o->n -= spacelen;
	if (t->ws_suffix && t->add_dummy_prefix && rc == OURO_OK)
		rc = ouro_bytes_add(o, space, spacelen);
	return rc;
}

/* ---- output of one piece ------------------------------------------------ */

/* Appends the ids of piece s[0..n) with id `id`. Consecutive unknown
 * pieces become one unk id, as in the reference; *prev_unk tracks that. */
static int emit(const struct tok_spm *t, const char *s, size_t n, int32_t id,
		int *prev_unk, struct ouro_ids *out)
{
	int rc = OURO_OK;
	int unk = id == t->unk_id;

	if (unk && *prev_unk && !t->byte_fallback)
		return OURO_OK;
	*prev_unk = unk;
	if (unk && t->byte_fallback) {
		for (size_t i = 0; i < n && !rc; i++)
			rc = ouro_ids_push(out, t->byte_id[(unsigned char)s[i]]);
		return rc;
	}
	return ouro_ids_push(out, id);
}

/* ---- unigram ------------------------------------------------------------ */

struct best {
	float score;
	int32_t id;
	int64_t start;   /* -1: not reached */
};

static int encode_unigram(struct tok_spm *t, const char *s, size_t n, struct ouro_ids *out)
{
	struct best *bp = malloc((n + 1) * sizeof *bp);
	const float unk_score = t->min_score - 10.0f;
	int rc = OURO_OK;

	if (!bp)
		return ouro_fail(OURO_ENOMEM, "out of memory for %zu bytes of text", n);
	for (size_t i = 0; i <= n; i++) {
		bp[i].start = -1;
		bp[i].score = 0;
		bp[i].id = -1;
	}
	for (size_t start = 0; start < n;) {
		const float here = bp[start].score;
		int32_t cp;
		size_t mblen = (size_t)tok_utf8_next((const unsigned char *)s + start, n - start, &cp);
		int single = 0;
		if (mblen == 0)
			mblen = 1;
		/* every piece s[start..end) for end at a character boundary */
		for (size_t end = start + mblen; end <= n && end - start <= t->max_piece_len;) {
			const struct tok_strent *e = tok_strmap_get(&t->normal, s + start, end - start);
			if (e && t->pieces[e->val].type != SPM_UNUSED) {
				size_t length = end - start;
				double score = t->pieces[e->val].type == SPM_USER
					? (double)((float)length * t->max_score) - 0.1
					: (double)t->pieces[e->val].score;
				double cand = score + (double)here;
				if (bp[end].start < 0 || cand > (double)bp[end].score) {
					bp[end].score = (float)cand;
					bp[end].start = (int64_t)start;
					bp[end].id = e->val;
				}
				if (length == mblen)
					single = 1;
			}
			if (end == n)
				break;
			int32_t c2;
			int l = tok_utf8_next((const unsigned char *)s + end, n - end, &c2);
			end += l > 0 ? (size_t)l : 1;
		}
		if (!single) {
			float cand = unk_score + here;
			if (bp[start + mblen].start < 0 || cand > bp[start + mblen].score) {
				bp[start + mblen].score = cand;
				bp[start + mblen].start = (int64_t)start;
				bp[start + mblen].id = t->unk_id;
			}
		}
		start += mblen;
	}
	/* backtrack, then emit in order */
	size_t k = 0;
	for (int64_t e = (int64_t)n; e > 0; e = bp[e].start)
		k++;
	int64_t *ends = malloc((k + 1) * sizeof *ends);
	if (!ends) {
		free(bp);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	size_t i = k;
	for (int64_t e = (int64_t)n; e > 0; e = bp[e].start)
		ends[--i] = e;
	int prev_unk = 0;
	for (i = 0; i < k && !rc; i++) {
		int64_t e = ends[i], b0 = bp[e].start;
		rc = emit(t, s + b0, (size_t)(e - b0), bp[e].id, &prev_unk, out);
	}
	free(ends);
	free(bp);
	return rc;
}

/* ---- BPE ---------------------------------------------------------------- */

struct bsym {
	size_t off, len;
	int32_t prev, next;
	int freeze;
};

struct bpair {
	float score;
	int32_t left, right;
	size_t size;
};

static inline int bpair_before(const struct bpair *a, const struct bpair *b)
{
	/* higher score first, then the leftmost */
	return a->score > b->score || (a->score == b->score && a->left < b->left);
}

struct bheap {
	struct bpair *v;
	size_t n, cap;
};

static int bheap_push(struct bheap *h, struct bpair x)
{
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		void *p = realloc(h->v, cap * sizeof *h->v);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		h->v = p;
		h->cap = cap;
	}
	size_t c = h->n++;
	while (c > 0 && bpair_before(&x, &h->v[(c - 1) / 2])) {
		h->v[c] = h->v[(c - 1) / 2];
		c = (c - 1) / 2;
	}
	h->v[c] = x;
	return OURO_OK;
}

static struct bpair bheap_pop(struct bheap *h)
{
	struct bpair top = h->v[0], last = h->v[--h->n];
	size_t c = 0;

	for (;;) {
		size_t l = 2 * c + 1, best = c;
		const struct bpair *bv = &last;
		if (l < h->n && bpair_before(&h->v[l], bv)) {
			best = l;
			bv = &h->v[l];
		}
		if (l + 1 < h->n && bpair_before(&h->v[l + 1], bv))
			best = l + 1;
		if (best == c)
			break;
		h->v[c] = h->v[best];
		c = best;
	}
	if (h->n > 0)
		h->v[c] = last;
	return top;
}

static int maybe_pair(const struct tok_spm *t, const char *s, struct bsym *sy,
		      int32_t l, int32_t r, struct bheap *h)
{
	if (l < 0 || r < 0 || sy[l].freeze || sy[r].freeze)
		return OURO_OK;
	size_t size = sy[l].len + sy[r].len;
	const struct tok_strent *e = tok_strmap_get(&t->normal, s + sy[l].off, size);
	if (!e)
		return OURO_OK;
	struct bpair p = {t->pieces[e->val].score, l, r, size};
	return bheap_push(h, p);
}

static int encode_bpe(struct tok_spm *t, const char *s, size_t n, struct ouro_ids *out)
{
	struct bsym *sy = malloc((n + 1) * sizeof *sy);
	struct bheap h = {0};
	int32_t k = 0;
	int rc = OURO_OK;

	if (!sy)
		return ouro_fail(OURO_ENOMEM, "out of memory for %zu bytes of text", n);
	for (size_t i = 0; i < n; k++) {
		size_t m = user_match(t, s + i, n - i);
		int32_t cp;
		sy[k].freeze = m > 0;
		if (!m) {
			int l = tok_utf8_next((const unsigned char *)s + i, n - i, &cp);
			m = l > 0 ? (size_t)l : 1;
		}
		sy[k].off = i;
		sy[k].len = m;
		sy[k].prev = k - 1;
		i += m;
		sy[k].next = i < n ? k + 1 : -1;
	}
	for (int32_t i = 1; i < k && !rc; i++)
		rc = maybe_pair(t, s, sy, i - 1, i, &h);
	while (h.n > 0 && !rc) {
		struct bpair top = bheap_pop(&h);
		struct bsym *a = &sy[top.left], *b = &sy[top.right];
		if (a->len == 0 || b->len == 0 || a->len + b->len != top.size || a->next != top.right)
			continue;
		a->len += b->len;
		a->next = b->next;
		if (b->next >= 0)
			sy[b->next].prev = top.left;
		b->len = 0;
		rc = maybe_pair(t, s, sy, a->prev, top.left, &h);
		if (!rc)
			rc = maybe_pair(t, s, sy, top.left, a->next, &h);
	}
	int prev_unk = 0;
	for (int32_t i = 0; i >= 0 && k > 0 && !rc; i = sy[i].next) {
		int32_t id = piece_to_id(t, s + sy[i].off, sy[i].len);
		rc = emit(t, s + sy[i].off, sy[i].len, id, &prev_unk, out);
	}
	free(h.v);
	free(sy);
	return rc;
}

int tok_spm_encode(struct tok_spm *t, const char *text, size_t len, struct ouro_ids *out)
{
	int rc;

	if ((rc = normalize(t, text, len)))
		return rc;
	if (t->norm.n == 0)
		return OURO_OK;
	return t->model_type == SPM_BPE ? encode_bpe(t, t->norm.p, t->norm.n, out)
					 : encode_unigram(t, t->norm.p, t->norm.n, out);
}

/* ---- decoding ----------------------------------------------------------- */

int tok_spm_decode(const struct tok_spm *t, const int32_t *ids, size_t n,
		   struct ouro_bytes *out)
{
	int at_start = 1, rc = OURO_OK;

	for (size_t i = 0; i < n && !rc; i++) {
		int32_t id = ids[i];
		if (id < 0 || id >= t->n)
			return ouro_fail(OURO_EINPUT, "token id %d is out of range [0, %d)", id, t->n);
		const struct spm_piece *p = &t->pieces[id];
		const char *s = p->s;
		size_t l = p->len;
		switch (p->type) {
		case SPM_CONTROL:
			continue;
		case SPM_UNKNOWN:
			rc = ouro_bytes_add(out, t->unk_surface, strlen(t->unk_surface));
			at_start = 0;
			continue;
		case SPM_BYTE: {
			char c = (char)byte_piece(s, l);   /* checked when loaded */
			rc = ouro_bytes_add(out, &c, 1);
			at_start = 0;
			continue;
		}
		}
		if (at_start && (t->add_dummy_prefix || t->remove_extra_ws) &&
		    l >= 3 && !memcmp(s, "\xE2\x96\x81", 3)) {
			s += 3;
			l -= 3;
		}
		at_start = 0;
		size_t last = 0;
		for (size_t k = 0; k + 3 <= l && !rc; k++) {
			if (!memcmp(s + k, "\xE2\x96\x81", 3)) {
				rc = ouro_bytes_add(out, s + last, k - last);
				if (!rc)
					rc = ouro_bytes_add(out, " ", 1);
				k += 2;
				last = k + 1;
			}
		}
		if (!rc)
			rc = ouro_bytes_add(out, s + last, l - last);
	}
	return rc;
}
