/*
 * safetensors.c - the one reader and writer of safetensors images, used
 * for model weights (mapped files) and for the record streams that the
 * programs exchange (see ouro-record(5)).
 *
 * An image is: u64 little-endian header length N, N bytes of JSON header
 * (an object: tensor name -> {dtype, shape, data_offsets}, and an optional
 * "__metadata__" object of strings), then the data section. Everything in
 * the header is validated against the real length before any tensor is
 * used: known dtypes, non-negative shapes whose byte size matches the
 * offsets (computed without overflow), and tensors that tile the data
 * section exactly, without gaps or overlaps. A stream is images back to
 * back; each image's length is 8 + N + the end of its last tensor.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"

/* The safetensors reference limit on header size. */
#define MAX_HEADER (100u * 1000 * 1000)

struct ouro_st {
	json_t *root;                 /* owns the name and metadata strings */
	int n;
	struct ouro_tensor *t;        /* [n] in header order */
	uint64_t *begin;              /* [n] data offset of each tensor */
	int nmeta;
	const char **mkey, **mval;    /* [nmeta] */
	void *owned;                  /* data section of a record read from a stream */
};

/* Orders [begin, end, index] triples by begin, then end, so empty tensors
 * come before a tensor that starts where they do. */
static int cmp_offset(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;

	if (x[0] != y[0])
		return (x[0] > y[0]) - (x[0] < y[0]);
	return (x[1] > y[1]) - (x[1] < y[1]);
}

static int parse_shape(struct ouro_tensor *t, json_t *shape, const char *what)
{
	size_t i;
	json_t *d;

	if (!json_is_array(shape) || json_array_size(shape) > OURO_MAX_DIMS)
		return ouro_fail(OURO_EINPUT, "%s: tensor %s: shape is not an array of at most %d sizes",
				 what, t->name, OURO_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	json_array_foreach(shape, i, d) {
		if (!json_is_integer(d) || json_integer_value(d) < 0)
			return ouro_fail(OURO_EINPUT, "%s: tensor %s: shape has a size that is not a non-negative integer",
					 what, t->name);
		t->shape[i] = json_integer_value(d);
	}
	return OURO_OK;
}

/* Reads the "__metadata__" object v into st->mkey, st->mval. */
static int parse_metadata(struct ouro_st *st, json_t *v, const char *what)
{
	const char *mk;
	json_t *mv;
	size_t nm = json_object_size(v);

	if (!json_is_object(v))
		return ouro_fail(OURO_EINPUT, "%s: __metadata__ is not an object", what);
	st->mkey = calloc(nm ? nm : 1, sizeof *st->mkey);
	st->mval = calloc(nm ? nm : 1, sizeof *st->mval);
	if (!st->mkey || !st->mval)
		return ouro_fail(OURO_ENOMEM, "%s: out of memory for metadata", what);
	json_object_foreach(v, mk, mv) {
		if (!json_is_string(mv))
			return ouro_fail(OURO_EINPUT, "%s: metadata value of %s is not a string", what, mk);
		st->mkey[st->nmeta] = mk;
		st->mval[st->nmeta++] = json_string_value(mv);
	}
	return OURO_OK;
}

/* Reads the header entry `key`: v into tensor t, its data offsets into
 * *begin, *end, both checked against its dtype and shape. */
static int parse_tensor(struct ouro_tensor *t, const char *key, json_t *v, const char *what,
			uint64_t *begin, uint64_t *end)
{
	json_t *dt = json_object_get(v, "dtype"), *off = json_object_get(v, "data_offsets");
	int dtype, rc;

	t->name = key;
	if (!*key)
		return ouro_fail(OURO_EINPUT, "%s: a tensor has an empty name", what);
	if (!json_is_object(v) || json_object_size(v) != 3 || !dt || !off ||
	    !json_object_get(v, "shape"))
		return ouro_fail(OURO_EINPUT, "%s: tensor %s: entry must have exactly dtype, shape and data_offsets",
				 what, key);
	dtype = json_is_string(dt) ? ouro_dtype_parse(json_string_value(dt)) : -1;
	if (dtype < 0)
		return ouro_fail(OURO_EINPUT, "%s: tensor %s: unknown dtype %s", what, key,
				 json_is_string(dt) ? json_string_value(dt) : "(not a string)");
	t->dtype = dtype;
	if ((rc = parse_shape(t, json_object_get(v, "shape"), what)))
		return rc;
	if (!json_is_array(off) || json_array_size(off) != 2 ||
	    !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)) ||
	    json_integer_value(json_array_get(off, 0)) < 0 ||
	    json_integer_value(json_array_get(off, 1)) < json_integer_value(json_array_get(off, 0)))
		return ouro_fail(OURO_EINPUT, "%s: tensor %s: data_offsets is not [begin, end] with 0 <= begin <= end",
				 what, key);
	*begin = (uint64_t)json_integer_value(json_array_get(off, 0));
	*end = (uint64_t)json_integer_value(json_array_get(off, 1));
	uint64_t bytes = ouro_dtype_size(t->dtype);
	for (int i = 0; i < t->ndim; i++) {
		uint64_t d = (uint64_t)t->shape[i];
		if (d && bytes > UINT64_MAX / 2 / d)
			return ouro_fail(OURO_EINPUT, "%s: tensor %s: shape is too large", what, key);
		bytes *= d;
	}
	if (bytes != *end - *begin)
		return ouro_fail(OURO_EINPUT, "%s: tensor %s: shape and dtype %s need %llu bytes, data_offsets give %llu",
				 what, key, ouro_dtype_name(t->dtype), (unsigned long long)bytes,
				 (unsigned long long)(*end - *begin));
	t->nbytes = bytes;
	return OURO_OK;
}

/* Checks that the tensors' [begin, end, index] spans [st->n] tile
 * [0, *datalen) exactly, and sets *datalen; sorts spans. */
static int check_tiling(const struct ouro_st *st, uint64_t *spans, const char *what,
			uint64_t *datalen)
{
	qsort(spans, (size_t)st->n, 3 * sizeof *spans, cmp_offset);
	*datalen = 0;
	for (int i = 0; i < st->n; i++) {
		if (spans[3 * i] != *datalen)
			return ouro_fail(OURO_EINPUT, "%s: tensor %s: data starts at byte %llu, expected %llu (tensors overlap or leave a gap)",
					 what, st->t[spans[3 * i + 2]].name,
					 (unsigned long long)spans[3 * i], (unsigned long long)*datalen);
		*datalen = spans[3 * i + 1];
	}
	return OURO_OK;
}

/* Parses the JSON header hdr[0..len); *datalen gets the data section size. */
static int parse_header(struct ouro_st *st, const char *what, const char *hdr,
			size_t len, uint64_t *datalen)
{
	json_error_t jerr;
	const char *key;
	json_t *v;
	uint64_t *spans;
	int rc = OURO_OK;

	st->root = json_loadb(hdr, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!st->root)
		return ouro_fail(OURO_EINPUT, "%s: header is not valid JSON: %s (column %d)",
				 what, jerr.text, jerr.column);
	if (!json_is_object(st->root))
		return ouro_fail(OURO_EINPUT, "%s: header is not a JSON object", what);

	size_t count = json_object_size(st->root);
	st->t = calloc(count ? count : 1, sizeof *st->t);
	st->begin = calloc(count ? count : 1, sizeof *st->begin);
	spans = calloc(count ? count : 1, 3 * sizeof *spans);
	if (!st->t || !st->begin || !spans) {
		free(spans);
		return ouro_fail(OURO_ENOMEM, "%s: out of memory for %zu header entries", what, count);
	}
	json_object_foreach(st->root, key, v) {
		if (strcmp(key, "__metadata__") == 0) {
			if ((rc = parse_metadata(st, v, what)))
				break;
			continue;
		}
		uint64_t *span = &spans[3 * st->n];
		if ((rc = parse_tensor(&st->t[st->n], key, v, what, &span[0], &span[1])))
			break;
		st->begin[st->n] = span[0];
		span[2] = (uint64_t)st->n;
		st->n++;
	}
	if (!rc)
		rc = check_tiling(st, spans, what, datalen);
	free(spans);
	return rc;
}

static void set_data(struct ouro_st *st, const unsigned char *base)
{
	for (int i = 0; i < st->n; i++)
		st->t[i].data = base + st->begin[i];
}

/* The format lets a tensor start at any byte; a record read into memory
 * gets its tensors aligned to their element size, so that programs may
 * load elements directly. When one is not, the data section is copied
 * with each tensor on an 8-byte boundary (st->begin then indexes the
 * copy). Returns the buffer to own: data itself, or the copy. */
static unsigned char *realign(struct ouro_st *st, unsigned char *data, const char *what)
{
	uint64_t total = 0;
	int ok = 1;

	for (int i = 0; i < st->n; i++) {
		ok &= st->begin[i] % ouro_dtype_size(st->t[i].dtype) == 0;
		total += (st->t[i].nbytes + 7) & ~(uint64_t)7;   /* no overflow: within the read data + 8n */
	}
	if (ok)
		return data;
	unsigned char *copy = total <= SIZE_MAX ? malloc(total ? total : 1) : NULL;
	if (!copy) {
		ouro_fail(OURO_ENOMEM, "%s: out of memory for a %llu-byte record", what,
			  (unsigned long long)total);
		return NULL;
	}
	total = 0;
	for (int i = 0; i < st->n; i++) {
		if (st->t[i].nbytes)
			memcpy(copy + total, data + st->begin[i], st->t[i].nbytes);
		st->begin[i] = total;
		total += (st->t[i].nbytes + 7) & ~(uint64_t)7;
	}
	free(data);
	return copy;
}

static uint64_t get_u64le(const unsigned char *b)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

int ouro_st_parse(struct ouro_st **out, const char *what, const void *buf,
		  uint64_t len, uint64_t *used)
{
	const unsigned char *b = buf;
	struct ouro_st *st;
	uint64_t n, datalen;
	int rc;

	*out = NULL;
	if (len < 8)
		return ouro_fail(OURO_EINPUT, "%s: %llu bytes is too short for a safetensors header",
				 what, (unsigned long long)len);
	n = get_u64le(b);
	if (n > MAX_HEADER || n > len - 8)
		return ouro_fail(OURO_EINPUT, "%s: header length %llu exceeds the file (%llu bytes) or the %u-byte limit",
				 what, (unsigned long long)n, (unsigned long long)len, MAX_HEADER);
	if (!(st = calloc(1, sizeof *st)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", what);
	rc = parse_header(st, what, (const char *)b + 8, n, &datalen);
	if (rc == OURO_OK && datalen > len - 8 - n)
		rc = ouro_fail(OURO_EINPUT, "%s: tensor data ends at byte %llu, past the end of the file (%llu bytes)",
			       what, (unsigned long long)(8 + n + datalen), (unsigned long long)len);
	if (rc) {
		ouro_st_free(st);
		return rc;
	}
	set_data(st, b + 8 + n);
	*used = 8 + n + datalen;
	*out = st;
	return OURO_OK;
}

/* Reads exactly len bytes; returns how many were read before EOF. */
static size_t read_full(FILE *f, void *buf, size_t len)
{
	return fread(buf, 1, len, f);
}

/* A record that says it is of a format version this library does not
 * know is refused; files without the key (weights) are not records. */
static int check_version(const struct ouro_st *st, const char *what)
{
	const char *v = ouro_st_meta(st, "ouro.version");
	size_t major = strlen(OURO_RECORD_VERSION);

	if (v && !(strncmp(v, OURO_RECORD_VERSION, major) == 0 && (v[major] == '\0' || v[major] == '.')))
		return ouro_fail(OURO_EINPUT, "%s: record format version %s is not supported (this build reads %s)",
				 what, v, OURO_RECORD_VERSION);
	return OURO_OK;
}

int ouro_st_read(struct ouro_st **out, FILE *f, const char *what)
{
	unsigned char lenbuf[8];
	struct ouro_st *st = NULL;
	char *hdr = NULL;
	unsigned char *data = NULL;
	uint64_t n, datalen, have = 0;
	size_t got;
	int rc;

	*out = NULL;
	got = read_full(f, lenbuf, 8);
	if (got == 0 && !ferror(f))
		return OURO_OK;
	if (got < 8)
		goto short_read;
	n = get_u64le(lenbuf);
	if (n > MAX_HEADER)
		return ouro_fail(OURO_EINPUT, "%s: record header length %llu exceeds the %u-byte limit",
				 what, (unsigned long long)n, MAX_HEADER);
	if (!(hdr = malloc(n ? n : 1)) || !(st = calloc(1, sizeof *st))) {
		free(hdr);
		return ouro_fail(OURO_ENOMEM, "%s: out of memory for a %llu-byte header", what,
				 (unsigned long long)n);
	}
	if (read_full(f, hdr, n) < n)
		goto short_read;
	if ((rc = parse_header(st, what, hdr, n, &datalen)))
		goto fail;
	/* Grow the buffer as data arrives, so a header that lies about its
	 * size ends in a truncation error, not in a huge allocation. */
	while (have < datalen) {
		uint64_t want = datalen - have, cap = have ? have : (1u << 20);
		unsigned char *p;

		if (want > cap)
			want = cap;
		if (have + want > SIZE_MAX || !(p = realloc(data, have + want))) {
			rc = ouro_fail(OURO_ENOMEM, "%s: out of memory for a %llu-byte record",
				       what, (unsigned long long)datalen);
			goto fail;
		}
		data = p;
		if (read_full(f, data + have, want) < want)
			goto short_read;
		have += want;
	}
	if (!data && !(data = malloc(1))) {    /* no data: a valid base all the same */
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", what);
		goto fail;
	}
	free(hdr);
	hdr = NULL;
	if (!(st->owned = realign(st, data, what))) {
		rc = OURO_ENOMEM;
		goto fail;
	}
	data = NULL;
	set_data(st, st->owned);
	if ((rc = check_version(st, what)))
		goto fail;
	*out = st;
	return OURO_OK;
short_read:
	rc = ferror(f) ? ouro_fail(OURO_ESYS, "%s: read error: %s", what, strerror(errno))
		       : ouro_fail(OURO_EINPUT, "%s: truncated record", what);
fail:
	free(hdr);
	free(data);
	ouro_st_free(st);
	return rc;
}

void ouro_st_free(struct ouro_st *st)
{
	if (!st)
		return;
	json_decref(st->root);
	free(st->t);
	free(st->begin);
	free(st->mkey);
	free(st->mval);
	free(st->owned);
	free(st);
}

int ouro_st_count(const struct ouro_st *st)
{
	return st->n;
}

const struct ouro_tensor *ouro_st_tensor(const struct ouro_st *st, int i)
{
	return &st->t[i];
}

const struct ouro_tensor *ouro_st_find(const struct ouro_st *st, const char *name)
{
	for (int i = 0; i < st->n; i++)
		if (strcmp(st->t[i].name, name) == 0)
			return &st->t[i];
	return NULL;
}

const char *ouro_st_meta(const struct ouro_st *st, const char *key)
{
	for (int i = 0; i < st->nmeta; i++)
		if (strcmp(st->mkey[i], key) == 0)
			return st->mval[i];
	return NULL;
}

int ouro_st_meta_count(const struct ouro_st *st)
{
	return st->nmeta;
}

void ouro_st_meta_at(const struct ouro_st *st, int i, const char **key, const char **val)
{
	*key = st->mkey[i];
	*val = st->mval[i];
}

/* ---- writing --------------------------------------------------------- */

struct ouro_record {
	json_t *meta;
	int n, cap;
	struct ouro_tensor *t;
};

struct ouro_record *ouro_record_new(void)
{
	struct ouro_record *r = calloc(1, sizeof *r);

	if (!r)
		return NULL;
	r->meta = json_object();
	if (!r->meta) {
		ouro_record_free(r);
		return NULL;
	}
	return r;
}

void ouro_record_free(struct ouro_record *r)
{
	if (!r)
		return;
	for (int i = 0; i < r->n; i++)
		free((char *)r->t[i].name);
	free(r->t);
	json_decref(r->meta);
	free(r);
}

int ouro_record_meta(struct ouro_record *r, const char *key, const char *val)
{
	if (json_object_set_new(r->meta, key, json_string(val)))
		return ouro_fail(OURO_EINPUT, "metadata %s is not valid UTF-8", key);
	return OURO_OK;
}

int ouro_record_meta_copy(struct ouro_record *r, const struct ouro_st *from)
{
	int rc;

	for (int i = 0; from && i < ouro_st_meta_count(from); i++) {
		const char *key, *val;
		ouro_st_meta_at(from, i, &key, &val);
		if ((rc = ouro_record_meta(r, key, val)))
			return rc;
	}
	return OURO_OK;
}

int ouro_record_add(struct ouro_record *r, const char *name, enum ouro_dtype dt,
		    int ndim, const int64_t *shape, const void *data)
{
	struct ouro_tensor *t;

	if (ndim < 0 || ndim > OURO_MAX_DIMS)
		return ouro_fail(OURO_EINPUT, "tensor %s: %d dimensions, at most %d allowed",
				 name, ndim, OURO_MAX_DIMS);
	if (r->n == r->cap) {
		int cap = r->cap ? 2 * r->cap : 8;
		void *p = realloc(r->t, (size_t)cap * sizeof *r->t);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		r->t = p;
		r->cap = cap;
	}
	t = &r->t[r->n];
	memset(t, 0, sizeof *t);
	if (!(t->name = strdup(name)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	t->dtype = dt;
	t->ndim = ndim;
	memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
	t->data = data;
	t->nbytes = (uint64_t)ouro_tensor_numel(t) * ouro_dtype_size(dt);
	r->n++;
	return OURO_OK;
}

/* Larger elements first, so every tensor starts aligned to its element
 * size with no padding between tensors (the format allows none). */
static int cmp_elem_size(const void *a, const void *b)
{
	const struct ouro_tensor *const *x = a, *const *y = b;
	size_t sx = ouro_dtype_size((*x)->dtype), sy = ouro_dtype_size((*y)->dtype);

	if (sx != sy)
		return sx < sy ? 1 : -1;
	return (*x > *y) - (*x < *y);   /* stable: keep insertion order */
}

int ouro_record_write(const struct ouro_record *r, FILE *f, const char *what)
{
	const struct ouro_tensor **order = malloc((size_t)(r->n ? r->n : 1) * sizeof *order);
	json_t *hdr = json_object();
	char *text = NULL;
	uint64_t off = 0;
	int rc = OURO_OK;

	/* the version is this writer's, whatever metadata was copied in */
	if (!order || !hdr ||
	    json_object_set_new(r->meta, "ouro.version", json_string(OURO_RECORD_VERSION)) ||
	    json_object_set(hdr, "__metadata__", r->meta)) {
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", what);
		goto out;
	}
	for (int i = 0; i < r->n; i++)
		order[i] = &r->t[i];
	qsort(order, (size_t)r->n, sizeof *order, cmp_elem_size);
	for (int i = 0; i < r->n; i++) {
		const struct ouro_tensor *t = order[i];
		json_t *shape = json_array();

		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		if (json_object_set_new(hdr, t->name,
					json_pack("{s:s, s:o, s:[I,I]}", "dtype", ouro_dtype_name(t->dtype),
						  "shape", shape, "data_offsets",
						  (json_int_t)off, (json_int_t)(off + t->nbytes)))) {
			rc = ouro_fail(OURO_EINPUT, "%s: cannot encode tensor %s", what, t->name);
			goto out;
		}
		off += t->nbytes;
	}
	if (!(text = json_dumps(hdr, JSON_COMPACT))) {
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", what);
		goto out;
	}
	/* Pad with blanks so the data section starts 8-byte aligned. */
	size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
	unsigned char lenbuf[8];
	static const char blanks[8] = "        ";

	for (int i = 0; i < 8; i++)
		lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
	if (fwrite(lenbuf, 1, 8, f) != 8 || fwrite(text, 1, len, f) != len ||
	    fwrite(blanks, 1, padded - len, f) != padded - len)
		goto ioerr;
	for (int i = 0; i < r->n; i++)
		if (order[i]->nbytes && fwrite(order[i]->data, 1, order[i]->nbytes, f) != order[i]->nbytes)
			goto ioerr;
	goto out;
ioerr:
	rc = ouro_fail(OURO_ESYS, "%s: write error: %s", what, strerror(errno));
out:
	free(text);
	json_decref(hdr);
	free(order);
	return rc;
}
