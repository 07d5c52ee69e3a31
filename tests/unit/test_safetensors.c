/*
 * test_safetensors.c - unit tests of libouro's safetensors reader and
 * writer, its float conversions and its integer parser.
 *
 *   - records written by ouro_record_write read back by ouro_st_read and
 *     ouro_st_parse: metadata, dtypes, shapes, bytes, every tensor aligned
 *     to its element size, streams of records, a clean end of stream;
 *   - ouro_st_parse on crafted bad images, one per validation path of
 *     libouro/core/safetensors.c, and ouro_st_read on truncated streams;
 *   - ouro_to_f32 / ouro_from_f32 for BF16 and F16 against a reference
 *     written here from the formats' definitions (round to nearest even in
 *     double arithmetic): every 16-bit pattern, every midpoint between
 *     neighbours and the floats either side of it, NaN, infinities,
 *     subnormals, overflow;
 *   - ouro_parse_int edge cases.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "unit.h"

/* ---- helpers ------------------------------------------------------------ */

/* An image: u64 little-endian length of hdr, hdr, then dlen bytes of data
 * (a byte pattern). The caller frees it; *len gets its length. */
static unsigned char *image(const char *hdr, size_t dlen, size_t *len)
{
	size_t n = strlen(hdr);
	unsigned char *b = malloc(8 + n + dlen + 1);

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)n >> (8 * i));
	memcpy(b + 8, hdr, n);
	for (size_t i = 0; i < dlen; i++)
		b[8 + n + i] = (unsigned char)(i * 7 + 1);
	*len = 8 + n + dlen;
	return b;
}

/* ouro_st_parse must refuse hdr (with dlen data bytes) as invalid input,
 * leave *out NULL and say "crafted: ...frag...". */
static int refused(const char *hdr, size_t dlen, const char *frag)
{
	size_t len;
	unsigned char *b = image(hdr, dlen, &len);
	struct ouro_st *st = (struct ouro_st *)b;   /* must be reset to NULL */
	uint64_t used = 0;
	int rc = ouro_st_parse(&st, "crafted", b, len, &used);
	int ok = rc == OURO_EINPUT && st == NULL &&
		 strncmp(ouro_errmsg(), "crafted: ", 9) == 0 && strstr(ouro_errmsg(), frag);

	if (!ok)
		fprintf(stderr, "  header %s: status %d, message '%s', expected 1 and '%s'\n", hdr, rc,
			rc ? ouro_errmsg() : "", frag);
	ouro_st_free(rc ? NULL : st);
	free(b);
	return ok;
}

/* ouro_st_parse must accept hdr with dlen data bytes; returns the parse,
 * whose data points into *buf (the caller frees both). */
static struct ouro_st *accepted(const char *hdr, size_t dlen, unsigned char **buf)
{
	size_t len;
	struct ouro_st *st;
	uint64_t used = 0;
	int rc;

	*buf = image(hdr, dlen, &len);
	rc = ouro_st_parse(&st, "crafted", *buf, len, &used);
	if (rc || used != len) {
		fprintf(stderr, "  header %s: status %d (%s), used %llu of %zu\n", hdr, rc,
			rc ? ouro_errmsg() : "ok", (unsigned long long)used, len);
		return NULL;
	}
	return st;
}

static int shape_is(const struct ouro_tensor *t, int ndim, const int64_t *shape)
{
	if (t->ndim != ndim)
		return 0;
	for (int i = 0; i < ndim; i++)
		if (t->shape[i] != shape[i])
			return 0;
	return 1;
}

/* ---- records round trip -------------------------------------------------- */

#define NT 9

static const struct {
	const char *name;
	enum ouro_dtype dt;
	int ndim;
	int64_t shape[4];
} spec[NT] = {
	{"u8", OURO_U8, 1, {3}},
	{"f32", OURO_F32, 2, {2, 3}},
	{"bf16", OURO_BF16, 1, {5}},
	{"empty.i32", OURO_I32, 1, {0}},
	{"i64", OURO_I64, 1, {2}},
	{"f16", OURO_F16, 3, {1, 1, 3}},
	{"scalar.f64", OURO_F64, 0, {0}},
	{"bool", OURO_BOOL, 2, {1, 1}},
	{"i16.wide", OURO_I16, 4, {1, 2, 1, 3}},
};

static void test_round_trip(void)
{
	unsigned char data[NT][64];
	struct ouro_record *r = ouro_record_new();
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CHECK(r != NULL && f != NULL);
	for (int i = 0; i < NT; i++)
		for (int j = 0; j < 64; j++)
			data[i][j] = (unsigned char)(i * 31 + j);
	CHECK(ouro_record_meta(r, "ouro.test", "round trip") == OURO_OK);
	CHECK(ouro_record_meta(r, "unicode", "h\xc3\xa9llo") == OURO_OK);
	CHECK(ouro_record_meta(r, "bad", "\xff\xfe") == OURO_EINPUT);
	for (int i = 0; i < NT; i++)
		CHECK(ouro_record_add(r, spec[i].name, spec[i].dt, spec[i].ndim, spec[i].shape,
				      data[i]) == OURO_OK);
	int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
	CHECK(ouro_record_add(r, "too.many.dims", OURO_U8, 9, nine, data[0]) == OURO_EINPUT);
	/* two records back to back: a stream */
	CHECK(ouro_record_write(r, f, "memstream") == OURO_OK);
	CHECK(ouro_record_write(r, f, "memstream") == OURO_OK);
	CHECK(fclose(f) == 0);
	ouro_record_free(r);

	/* the header: 8-byte length, padded so the data starts 8-aligned */
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | (unsigned char)buf[i];
	CHECK(hlen % 8 == 0 && 8 + hlen <= len);
	CHECK(buf[8] == '{');

	/* ouro_st_parse: two images, the second starting where the first ends */
	struct ouro_st *st[2] = {NULL, NULL};
	uint64_t used[2] = {0, 0};
	CHECK(ouro_st_parse(&st[0], "mem", buf, len, &used[0]) == OURO_OK);
	CHECK(st[0] && used[0] == len / 2);
	CHECK(ouro_st_parse(&st[1], "mem", buf + used[0], len - used[0], &used[1]) == OURO_OK);
	CHECK(st[1] && used[0] + used[1] == len);
	for (int k = 0; k < 2 && st[k]; k++) {
		const char *base = buf + k * used[0] + 8 + hlen;

		CHECK(ouro_st_count(st[k]) == NT);
		CHECK(ouro_st_find(st[k], "absent") == NULL);
		CHECK(strcmp(ouro_st_meta(st[k], "ouro.version"), OURO_RECORD_VERSION) == 0);
		CHECK(strcmp(ouro_st_meta(st[k], "ouro.test"), "round trip") == 0);
		CHECK(strcmp(ouro_st_meta(st[k], "unicode"), "h\xc3\xa9llo") == 0);
		CHECK(ouro_st_meta(st[k], "bad") == NULL);
		CHECK(ouro_st_meta(st[k], "absent") == NULL);
		CHECK(ouro_st_meta_count(st[k]) == 3);
		for (int i = 0; i < NT; i++) {
			const struct ouro_tensor *t = ouro_st_find(st[k], spec[i].name);
			size_t esize = ouro_dtype_size(spec[i].dt);

			CHECK(t != NULL);
			if (!t)
				continue;
			CHECK(t->dtype == spec[i].dt);
			CHECK(shape_is(t, spec[i].ndim, spec[i].shape));
			CHECK(t->nbytes == (uint64_t)ouro_tensor_numel(t) * esize);
			CHECK(memcmp(t->data, data[i], t->nbytes) == 0);
			/* aligned to its element size within the data section */
			CHECK(((const char *)t->data - base) % (ptrdiff_t)esize == 0);
		}
	}
	ouro_st_free(st[0]);
	ouro_st_free(st[1]);

	/* ouro_st_read: two records, then a clean end of stream */
	f = fmemopen(buf, len, "rb");
	CHECK(f != NULL);
	for (int k = 0; k < 3 && f; k++) {
		struct ouro_st *s = (struct ouro_st *)buf;
		int rc = ouro_st_read(&s, f, "fmem");

		CHECK(rc == OURO_OK);
		if (k == 2) {
			CHECK(s == NULL);
			break;
		}
		CHECK(s != NULL);
		if (!s)
			break;
		CHECK(ouro_st_count(s) == NT);
		CHECK(ouro_st_meta_count(s) == 3);
		for (int i = 0; i < ouro_st_meta_count(s); i++) {
			const char *key, *val;
			ouro_st_meta_at(s, i, &key, &val);
			CHECK(strcmp(ouro_st_meta(s, key), val) == 0);
		}
		for (int i = 0; i < NT; i++) {
			const struct ouro_tensor *t = ouro_st_tensor(s, i);
			const struct ouro_tensor *u = ouro_st_find(s, t->name);
			int j = 0;

			while (j < NT && strcmp(spec[j].name, t->name))
				j++;
			CHECK(j < NT && u == t);
			if (j == NT)
				continue;
			CHECK(t->dtype == spec[j].dt && shape_is(t, spec[j].ndim, spec[j].shape));
			CHECK(memcmp(t->data, data[j], t->nbytes) == 0);
			/* the owned data section is malloc-aligned: pointers aligned too */
			CHECK((uintptr_t)t->data % ouro_dtype_size(t->dtype) == 0);
		}
		ouro_st_free(s);
	}
	if (f)
		fclose(f);
	free(buf);
}

/* Tensors of one dtype, one of them empty, keep header order and tile. */
static void test_round_trip_empty_between(void)
{
	struct ouro_record *r = ouro_record_new();
	float a[2] = {1, 2}, c[1] = {3};
	int64_t two = 2, zero = 0, one = 1;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct ouro_st *st = NULL;
	uint64_t used;

	CHECK(ouro_record_add(r, "a", OURO_F32, 1, &two, a) == OURO_OK);
	CHECK(ouro_record_add(r, "b", OURO_F32, 1, &zero, NULL) == OURO_OK);
	CHECK(ouro_record_add(r, "c", OURO_F32, 1, &one, c) == OURO_OK);
	CHECK(ouro_record_write(r, f, "mem") == OURO_OK);
	fclose(f);
	CHECK(ouro_st_parse(&st, "mem", buf, len, &used) == OURO_OK && used == len);
	if (st) {
		CHECK(ouro_st_find(st, "b")->nbytes == 0);
		CHECK(((const float *)ouro_st_find(st, "c")->data)[0] == 3);
		CHECK(((const float *)ouro_st_find(st, "a")->data)[1] == 2);
	}
	ouro_st_free(st);
	ouro_record_free(r);
	free(buf);
}

/* A record with no tensors at all: only metadata. */
static void test_empty_record(void)
{
	struct ouro_record *r = ouro_record_new();
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CHECK(ouro_record_write(r, f, "mem") == OURO_OK);
	fclose(f);
	ouro_record_free(r);
	f = fmemopen(buf, len, "rb");
	struct ouro_st *st = NULL;
	CHECK(ouro_st_read(&st, f, "fmem") == OURO_OK && st != NULL);
	if (st) {
		CHECK(ouro_st_count(st) == 0);
		CHECK(strcmp(ouro_st_meta(st, "ouro.version"), OURO_RECORD_VERSION) == 0);
	}
	ouro_st_free(st);
	st = NULL;
	CHECK(ouro_st_read(&st, f, "fmem") == OURO_OK && st == NULL);
	fclose(f);
	free(buf);
}

/* A write error is reported as a system error naming the destination. */
static void test_write_error(void)
{
	char small[16];
	FILE *f = fmemopen(small, sizeof small, "wb");
	struct ouro_record *r = ouro_record_new();
	uint8_t d[64] = {0};
	int64_t n = 64;

	setvbuf(f, NULL, _IONBF, 0);
	ouro_record_add(r, "d", OURO_U8, 1, &n, d);
	CHECK(ouro_record_write(r, f, "tiny") == OURO_ESYS);
	CHECK(strncmp(ouro_errmsg(), "tiny: ", 6) == 0);
	ouro_record_free(r);
	fclose(f);
}

/* ---- ouro_st_parse on crafted images --------------------------------------- */

#define T(dt, shape, off) "{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}"

static void test_parse_good(void)
{
	unsigned char *b;
	struct ouro_st *st;

	/* nothing but an empty object, or only metadata */
	st = accepted("{}", 0, &b);
	CHECK(st && ouro_st_count(st) == 0 && ouro_st_meta_count(st) == 0);
	ouro_st_free(st);
	free(b);
	st = accepted("{\"__metadata__\":{\"a\":\"1\",\"b\":\"\"}}", 0, &b);
	CHECK(st && ouro_st_count(st) == 0 && ouro_st_meta_count(st) == 2);
	CHECK(st && strcmp(ouro_st_meta(st, "b"), "") == 0);
	ouro_st_free(st);
	free(b);

	/* header order need not be offset order; data is where offsets say */
	st = accepted("{\"y\":" T("U8", "[2]", "[4,6]") ",\"x\":" T("F32", "[1]", "[0,4]") "}", 6, &b);
	CHECK(st && ouro_st_count(st) == 2);
	if (st) {
		const unsigned char *base = b + 8 + (b[0] | b[1] << 8);
		CHECK(ouro_st_find(st, "x")->data == base);
		CHECK(ouro_st_find(st, "y")->data == base + 4);
		CHECK(ouro_st_find(st, "y")->nbytes == 2);
		CHECK(strcmp(ouro_st_tensor(st, 0)->name, "y") == 0);
	}
	ouro_st_free(st);
	free(b);

	/* a scalar (shape []) and an empty tensor at the end */
	st = accepted("{\"s\":" T("F64", "[]", "[0,8]") ",\"e\":" T("BF16", "[0,5]", "[8,8]") "}", 8, &b);
	CHECK(st && ouro_st_find(st, "s")->ndim == 0 && ouro_st_find(st, "e")->nbytes == 0);
	ouro_st_free(st);
	free(b);

	/* eight dimensions is the limit, and it is allowed */
	st = accepted("{\"d\":" T("I8", "[1,1,1,1,1,1,1,2]", "[0,2]") "}", 2, &b);
	CHECK(st && ouro_st_find(st, "d")->ndim == 8);
	ouro_st_free(st);
	free(b);

	/* trailing bytes after the data are the next record's: used says so */
	{
		size_t len;
		uint64_t used = 0;
		unsigned char *img = image("{\"x\":" T("U8", "[1]", "[0,1]") "}", 5, &len);
		st = NULL;
		CHECK(ouro_st_parse(&st, "crafted", img, len, &used) == OURO_OK);
		CHECK(used == len - 4);
		ouro_st_free(st);
		free(img);
	}

	/* an empty tensor listed after the tensor that starts at its offset:
	 * the safetensors reference (which sorts by (begin, end)) accepts it */
	st = accepted("{\"a\":" T("U8", "[2]", "[0,2]") ",\"z\":" T("U8", "[0]", "[0,0]") "}", 2, &b);
	CHECK(st != NULL);
	ouro_st_free(st);
	free(b);
}

static void test_parse_bad(void)
{
	/* framing */
	{
		unsigned char b[16] = {0};
		struct ouro_st *st;
		uint64_t used;

		for (uint64_t len = 0; len < 8; len++) {
			CHECK(ouro_st_parse(&st, "short", b, len, &used) == OURO_EINPUT);
			CHECK(st == NULL && strstr(ouro_errmsg(), "short: ") == ouro_errmsg());
		}
		/* header length one past what follows */
		b[0] = 9;
		memcpy(b + 8, "{}      ", 8);
		CHECK(ouro_st_parse(&st, "past", b, 16, &used) == OURO_EINPUT && st == NULL);
		CHECK(strstr(ouro_errmsg(), "header length 9"));
		b[0] = 8;
		CHECK(ouro_st_parse(&st, "exact", b, 16, &used) == OURO_OK && used == 16);
		ouro_st_free(st);
		/* lengths near 2^64 must not wrap */
		memset(b, 0xff, 8);
		CHECK(ouro_st_parse(&st, "huge", b, 16, &used) == OURO_EINPUT && st == NULL);
		/* over the 100 MB limit although the buffer is that large: the
		 * parser must refuse before reading past the length field */
		uint64_t big = 100000001;
		unsigned char *p = malloc((size_t)big + 8);
		CHECK(p != NULL);
		if (p) {
			for (int i = 0; i < 8; i++)
				p[i] = (unsigned char)(big >> (8 * i));
			CHECK(ouro_st_parse(&st, "limit", p, big + 8, &used) == OURO_EINPUT);
			CHECK(strstr(ouro_errmsg(), "limit"));
			free(p);
		}
	}

	/* the JSON header */
	CHECK(refused("", 0, "not valid JSON"));
	CHECK(refused("{", 0, "not valid JSON"));
	CHECK(refused("{\"a\":" T("U8", "[1]", "[0,1]") "} x", 1, "not valid JSON"));
	CHECK(refused("[]", 0, "not a JSON object"));
	CHECK(refused("\"x\"", 0, "JSON"));
	CHECK(refused("7", 0, "JSON"));
	CHECK(refused("{\"a\":" T("U8", "[1]", "[0,1]") ",\"a\":" T("U8", "[1]", "[1,2]") "}", 2,
		      "not valid JSON"));
	CHECK(refused("{\"a\\u0000b\":" T("U8", "[1]", "[0,1]") "}", 1, "JSON"));

	/* __metadata__ */
	CHECK(refused("{\"__metadata__\":[]}", 0, "__metadata__ is not an object"));
	CHECK(refused("{\"__metadata__\":\"v1\"}", 0, "__metadata__ is not an object"));
	CHECK(refused("{\"__metadata__\":{\"n\":1}}", 0, "metadata value of n is not a string"));
	CHECK(refused("{\"__metadata__\":{\"n\":null}}", 0, "metadata value of n"));

	/* entries */
	CHECK(refused("{\"\":" T("U8", "[1]", "[0,1]") "}", 1, "empty name"));
	CHECK(refused("{\"a\":[]}", 0, "tensor a: entry must have"));
	CHECK(refused("{\"a\":7}", 0, "tensor a: entry must have"));
	CHECK(refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor a: entry must have"));
	CHECK(refused("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1],\"extra\":1}}", 1,
		      "tensor a: entry must have"));
	CHECK(refused("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":0}}", 1,
		      "tensor a: entry must have"));

	/* dtype */
	CHECK(refused("{\"a\":" T("F8_E4M3", "[1]", "[0,1]") "}", 1, "tensor a: unknown dtype F8_E4M3"));
	CHECK(refused("{\"a\":" T("bf16", "[1]", "[0,2]") "}", 2, "unknown dtype bf16"));
	CHECK(refused("{\"a\":" T("", "[1]", "[0,1]") "}", 1, "unknown dtype"));
	CHECK(refused("{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
		      "unknown dtype (not a string)"));

	/* shape */
	CHECK(refused("{\"a\":" T("U8", "1", "[0,1]") "}", 1, "tensor a: shape"));
	CHECK(refused("{\"a\":" T("U8", "{}", "[0,1]") "}", 1, "tensor a: shape"));
	CHECK(refused("{\"a\":" T("U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", 1, "at most 8"));
	CHECK(refused("{\"a\":" T("U8", "[-1]", "[0,1]") "}", 1, "non-negative"));
	CHECK(refused("{\"a\":" T("U8", "[1.0]", "[0,1]") "}", 1, "non-negative integer"));
	CHECK(refused("{\"a\":" T("U8", "[\"1\"]", "[0,1]") "}", 1, "non-negative integer"));
	CHECK(refused("{\"a\":" T("U8", "[true]", "[0,1]") "}", 1, "non-negative integer"));

	/* data_offsets */
	CHECK(refused("{\"a\":" T("U8", "[1]", "[0]") "}", 1, "tensor a: data_offsets"));
	CHECK(refused("{\"a\":" T("U8", "[1]", "[0,1,2]") "}", 1, "data_offsets"));
	CHECK(refused("{\"a\":" T("U8", "[1]", "{}") "}", 1, "data_offsets"));
	CHECK(refused("{\"a\":" T("U8", "[1]", "[0,1.0]") "}", 1, "data_offsets"));
	CHECK(refused("{\"a\":" T("U8", "[1]", "[\"0\",1]") "}", 1, "data_offsets"));
	CHECK(refused("{\"a\":" T("U8", "[0]", "[-1,-1]") "}", 1, "data_offsets"));
	CHECK(refused("{\"a\":" T("U8", "[1]", "[1,0]") "}", 1, "data_offsets"));

	/* sizes: overflow, mismatch with the offsets */
	CHECK(refused("{\"a\":" T("BF16", "[1099511627776,1099511627776]", "[0,2]") "}", 2,
		      "tensor a: shape is too large"));
	CHECK(refused("{\"a\":" T("F64", "[4294967296,4294967296]", "[0,8]") "}", 8, "too large"));
	CHECK(refused("{\"a\":" T("U8", "[9223372036854775807,2]", "[0,2]") "}", 2, "too large"));
	CHECK(refused("{\"a\":" T("I64", "[3037000500,3037000500]", "[0,8]") "}", 8, "too large"));
	CHECK(refused("{\"a\":" T("F32", "[2]", "[0,4]") "}", 4, "tensor a: shape and dtype F32 need 8 bytes, data_offsets give 4"));
	CHECK(refused("{\"a\":" T("BF16", "[2]", "[0,8]") "}", 8, "need 4 bytes"));
	CHECK(refused("{\"a\":" T("U8", "[0]", "[0,1]") "}", 1, "need 0 bytes"));

	/* tiling: the data section must be covered exactly */
	CHECK(refused("{\"a\":" T("U8", "[2]", "[1,3]") "}", 3, "tensor a: data starts at byte 1, expected 0"));
	CHECK(refused("{\"a\":" T("U8", "[2]", "[0,2]") ",\"b\":" T("U8", "[2]", "[1,3]") "}", 3,
		      "tensor b: data starts at byte 1, expected 2"));
	CHECK(refused("{\"a\":" T("U8", "[2]", "[0,2]") ",\"b\":" T("U8", "[2]", "[3,5]") "}", 5,
		      "tensor b: data starts at byte 3, expected 2"));
	CHECK(refused("{\"a\":" T("U8", "[2]", "[0,2]") ",\"b\":" T("U8", "[2]", "[0,2]") "}", 2,
		      "overlap"));

	/* data past the end of the buffer */
	CHECK(refused("{\"a\":" T("U8", "[4]", "[0,4]") "}", 3, "past the end"));
	CHECK(refused("{\"a\":" T("U8", "[4]", "[0,4]") "}", 0, "past the end"));
	CHECK(refused("{\"a\":" T("I8", "[9007199254740993]", "[0,9007199254740993]") "}", 1,
		      "past the end"));
}

/* ---- ouro_st_read on streams ------------------------------------------------ */

/* ouro_st_read on bytes b[0..len) must fail with status and a message
 * containing frag. */
static int read_refused(const void *b, size_t len, int status, const char *frag)
{
	FILE *f = fmemopen((void *)b, len, "rb");
	struct ouro_st *st = (struct ouro_st *)f;
	int rc = ouro_st_read(&st, f, "stream");
	int ok = rc == status && st == NULL && strncmp(ouro_errmsg(), "stream: ", 8) == 0 &&
		 strstr(ouro_errmsg(), frag);

	if (!ok)
		fprintf(stderr, "  %zu-byte stream: status %d, message '%s', expected %d and '%s'\n",
			len, rc, ouro_errmsg(), status, frag);
	if (!rc)
		ouro_st_free(st);
	fclose(f);
	return ok;
}

static void test_read_bad(void)
{
	size_t len;
	unsigned char *b = image("{\"a\":" T("U8", "[4]", "[0,4]") "}", 4, &len);

	CHECK(read_refused(b, 1, OURO_EINPUT, "truncated"));
	CHECK(read_refused(b, 7, OURO_EINPUT, "truncated"));
	CHECK(read_refused(b, 8, OURO_EINPUT, "truncated"));
	CHECK(read_refused(b, len - 10, OURO_EINPUT, "truncated"));
	CHECK(read_refused(b, len - 1, OURO_EINPUT, "truncated"));
	free(b);

	/* the header is checked as ouro_st_parse checks it */
	b = image("{\"a\":" T("U8", "[4]", "[1,5]") "}", 5, &len);
	CHECK(read_refused(b, len, OURO_EINPUT, "data starts at byte 1"));
	free(b);
	b = image("{not json}", 0, &len);
	CHECK(read_refused(b, len, OURO_EINPUT, "not valid JSON"));
	free(b);

	/* a header over the limit is refused before it is allocated */
	unsigned char big[16] = {0};
	uint64_t n = 100000001;
	for (int i = 0; i < 8; i++)
		big[i] = (unsigned char)(n >> (8 * i));
	CHECK(read_refused(big, sizeof big, OURO_EINPUT, "limit"));
	memset(big, 0xff, 8);
	CHECK(read_refused(big, sizeof big, OURO_EINPUT, "limit"));

	/* a header that promises 2^50 bytes of data is a truncated record,
	 * not a huge allocation */
	b = image("{\"a\":" T("U8", "[1125899906842624]", "[0,1125899906842624]") "}", 100, &len);
	CHECK(read_refused(b, len, OURO_EINPUT, "truncated"));
	free(b);

	/* a good record, then garbage shorter than a length field */
	b = image("{\"a\":" T("U8", "[1]", "[0,1]") "}", 1, &len);
	unsigned char *two = malloc(len + 3);
	memcpy(two, b, len);
	memcpy(two + len, "abc", 3);
	FILE *f = fmemopen(two, len + 3, "rb");
	struct ouro_st *st = NULL;
	CHECK(ouro_st_read(&st, f, "stream") == OURO_OK && st != NULL);
	ouro_st_free(st);
	CHECK(ouro_st_read(&st, f, "stream") == OURO_EINPUT && st == NULL);
	CHECK(strstr(ouro_errmsg(), "truncated"));
	fclose(f);
	free(two);
	free(b);

	/* an empty stream is a clean end */
	f = fmemopen((void *)"x", 1, "rb");
	fgetc(f);
	st = (struct ouro_st *)f;
	CHECK(ouro_st_read(&st, f, "stream") == OURO_OK && st == NULL);
	fclose(f);
}

/* ---- dtypes ------------------------------------------------------------------ */

static void test_dtypes(void)
{
	static const char *names[OURO_NDTYPES] = {
		[OURO_F32] = "F32", [OURO_F16] = "F16", [OURO_BF16] = "BF16", [OURO_F64] = "F64",
		[OURO_I8] = "I8", [OURO_U8] = "U8", [OURO_I16] = "I16", [OURO_I32] = "I32",
		[OURO_I64] = "I64", [OURO_BOOL] = "BOOL",
	};
	static const size_t sizes[OURO_NDTYPES] = {
		[OURO_F32] = 4, [OURO_F16] = 2, [OURO_BF16] = 2, [OURO_F64] = 8, [OURO_I8] = 1,
		[OURO_U8] = 1, [OURO_I16] = 2, [OURO_I32] = 4, [OURO_I64] = 8, [OURO_BOOL] = 1,
	};

	for (int i = 0; i < OURO_NDTYPES; i++) {
		CHECK(strcmp(ouro_dtype_name(i), names[i]) == 0);
		CHECK(ouro_dtype_parse(names[i]) == i);
		CHECK(ouro_dtype_size(i) == sizes[i]);
	}
	CHECK(ouro_dtype_parse("f32") == -1);
	CHECK(ouro_dtype_parse("F32 ") == -1);
	CHECK(ouro_dtype_parse("") == -1);
	CHECK(ouro_dtype_parse("U64") == -1);
}

/* ---- float conversions ---------------------------------------------------- */

/* The reference: x rounded to nearest even with p significand bits, least
 * exponent emin (below it, subnormals with spacing 2^(emin-p+1)) and
 * largest finite value max (beyond it, infinity), in double arithmetic. */
static double round_ref(double x, int p, int emin, double max)
{
	int e;

	if (isnan(x) || isinf(x) || x == 0)
		return x;
	frexp(x, &e);                       /* |x| = m 2^e, m in [0.5, 1) */
	if (e - 1 < emin)
		e = emin + 1;
	double ulp = ldexp(1, e - p);
	double r = nearbyint(x / ulp) * ulp;   /* default mode: to nearest even */
	if (fabs(r) > max)
		return copysign(INFINITY, x);
	return r;
}

static uint16_t bf16_bits_ref(float f)
{
	float r = (float)round_ref(f, 8, -126, ldexp(255.0 / 128, 127));
	uint32_t u;

	memcpy(&u, &r, 4);
	return (uint16_t)(u >> 16);
}

static double f16_value_ref(uint16_t h)
{
	int e = h >> 10 & 0x1f, m = h & 0x3ff;
	double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);

	return h & 0x8000 ? -v : v;
}

static uint16_t f16_bits_ref(float f)
{
	double r = round_ref(f, 11, -14, 65504);
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	double a = fabs(r);

	if (isinf(a))
		return sign | 0x7c00;
	if (a < ldexp(1, -14))
		return sign | (uint16_t)(a * ldexp(1, 24));
	int e;
	double m = frexp(a, &e);            /* a = m 2^e, m in [0.5, 1) */
	return sign | (uint16_t)((e + 14) << 10) | (uint16_t)(m * 2048 - 1024);
}

static float f32_of_bits(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static uint32_t bits_of_f32(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static uint16_t to16(float f, enum ouro_dtype dt)
{
	uint16_t h;

	ouro_from_f32(&h, &f, dt, 1);
	return h;
}

static float from16(uint16_t h, enum ouro_dtype dt)
{
	float f;

	ouro_to_f32(&f, &h, dt, 1);
	return f;
}

/* Checks the encoding of f against the reference; counts mismatches and
 * prints the first few. */
static int conv_bad;

static void check_enc(float f, enum ouro_dtype dt)
{
	uint16_t got = to16(f, dt);
	uint16_t want = dt == OURO_BF16 ? bf16_bits_ref(f) : f16_bits_ref(f);

	if (got != want && conv_bad++ < 8)
		fprintf(stderr, "  %s(%a = 0x%08x) = 0x%04x, expected 0x%04x\n", ouro_dtype_name(dt),
			(double)f, bits_of_f32(f), got, want);
}

static void test_bf16(void)
{
	int bad_decode = 0, bad_nan = 0;

	conv_bad = 0;
	for (uint32_t h = 0; h < 0x10000; h++) {
		float v = from16((uint16_t)h, OURO_BF16);

		if (bits_of_f32(v) != h << 16)
			bad_decode++;
		if (isnan(v)) {
			/* NaN stays NaN (a signalling one must not become infinity) */
			uint16_t back = to16(v, OURO_BF16);
			if (!isnan(from16(back, OURO_BF16)) || (back & 0x8000) != (h & 0x8000))
				bad_nan++;
			continue;
		}
		check_enc(v, OURO_BF16);
		if ((h & 0x7fff) >= 0x7f80)
			continue;
		/* the midpoint to the next value away from zero, and either side */
		float mid = f32_of_bits(h << 16 | 0x8000);
		check_enc(mid, OURO_BF16);
		check_enc(nextafterf(mid, 0), OURO_BF16);
		check_enc(nextafterf(mid, signbit(v) ? -INFINITY : INFINITY), OURO_BF16);
	}
	/* a sweep over all floats with a prime stride */
	for (uint64_t u = 0; u < 0x100000000ull; u += 4099) {
		float f = f32_of_bits((uint32_t)u);
		if (!isnan(f))
			check_enc(f, OURO_BF16);
	}
	CHECK(bad_decode == 0);
	CHECK(bad_nan == 0);
	CHECK(conv_bad == 0);

	/* named cases */
	CHECK(to16(1.0f, OURO_BF16) == 0x3f80);
	CHECK(to16(-2.0f, OURO_BF16) == 0xc000);
	CHECK(to16(f32_of_bits(0x3f808000), OURO_BF16) == 0x3f80);   /* tie, even below */
	CHECK(to16(f32_of_bits(0x3f818000), OURO_BF16) == 0x3f82);   /* tie, even above */
	CHECK(to16(f32_of_bits(0x3f808001), OURO_BF16) == 0x3f81);   /* just over the tie */
	CHECK(to16(f32_of_bits(0x3f807fff), OURO_BF16) == 0x3f80);   /* just under */
	CHECK(to16(INFINITY, OURO_BF16) == 0x7f80);
	CHECK(to16(-INFINITY, OURO_BF16) == 0xff80);
	CHECK(to16(FLT_MAX, OURO_BF16) == 0x7f80);
	CHECK(to16(f32_of_bits(0x7f7f7fff), OURO_BF16) == 0x7f7f);   /* largest finite */
	CHECK(to16(-0.0f, OURO_BF16) == 0x8000);
	CHECK(to16(f32_of_bits(0x00000001), OURO_BF16) == 0x0000);   /* tiny subnormal */
	CHECK(to16(f32_of_bits(0x00018000), OURO_BF16) == 0x0002);   /* subnormal tie */
	CHECK(to16(f32_of_bits(0x007fffff), OURO_BF16) == 0x0080);   /* up to the least normal */
	CHECK(isnan(from16(to16(f32_of_bits(0x7f800001), OURO_BF16), OURO_BF16)));
	CHECK(isnan(from16(to16(f32_of_bits(0xffc00000), OURO_BF16), OURO_BF16)));
	CHECK(from16(0x0001, OURO_BF16) == ldexpf(1, -133));
}

static void test_f16(void)
{
	int bad_decode = 0, bad_nan = 0;

	conv_bad = 0;
	for (uint32_t h = 0; h < 0x10000; h++) {
		float v = from16((uint16_t)h, OURO_F16);
		double want = f16_value_ref((uint16_t)h);

		if (isnan(want)) {
			uint16_t back = to16(v, OURO_F16);
			if (!isnan(v) || !isnan(from16(back, OURO_F16)) ||
			    (back & 0x8000) != (h & 0x8000))
				bad_nan++;
			continue;
		}
		if ((double)v != want || !signbit(v) != !signbit(want))
			bad_decode++;
		check_enc(v, OURO_F16);
		if ((h & 0x7fff) >= 0x7c00)
			continue;
		float next = (h & 0x7fff) == 0x7bff ? copysignf(65536, v)
						       : from16((uint16_t)(h + 1), OURO_F16);
		float mid = (float)(((double)v + next) / 2);
		check_enc(mid, OURO_F16);
		check_enc(nextafterf(mid, 0), OURO_F16);
		check_enc(nextafterf(mid, signbit(v) ? -INFINITY : INFINITY), OURO_F16);
	}
	for (uint64_t u = 0; u < 0x100000000ull; u += 4099) {
		float f = f32_of_bits((uint32_t)u);
		if (!isnan(f))
			check_enc(f, OURO_F16);
	}
	CHECK(bad_decode == 0);
	CHECK(bad_nan == 0);
	CHECK(conv_bad == 0);

	/* named cases */
	CHECK(to16(1.0f, OURO_F16) == 0x3c00);
	CHECK(to16(-2.0f, OURO_F16) == 0xc000);
	CHECK(to16(65504.0f, OURO_F16) == 0x7bff);
	CHECK(to16(65519.0f, OURO_F16) == 0x7bff);
	CHECK(to16(65520.0f, OURO_F16) == 0x7c00);      /* tie to even: infinity */
	CHECK(to16(1e6f, OURO_F16) == 0x7c00);
	CHECK(to16(-1e6f, OURO_F16) == 0xfc00);
	CHECK(to16(FLT_MAX, OURO_F16) == 0x7c00);
	CHECK(to16(INFINITY, OURO_F16) == 0x7c00);
	CHECK(to16(-INFINITY, OURO_F16) == 0xfc00);
	CHECK(isnan(from16(to16(NAN, OURO_F16), OURO_F16)));
	CHECK(isnan(from16(to16(f32_of_bits(0x7f800001), OURO_F16), OURO_F16)));
	CHECK(to16(1 + ldexpf(1, -11), OURO_F16) == 0x3c00);       /* tie, even below */
	CHECK(to16(1 + 3 * ldexpf(1, -11), OURO_F16) == 0x3c02);   /* tie, even above */
	CHECK(to16(1 + ldexpf(1, -11) + ldexpf(1, -20), OURO_F16) == 0x3c01);
	CHECK(to16(ldexpf(1, -14), OURO_F16) == 0x0400);           /* least normal */
	CHECK(to16(ldexpf(1, -24), OURO_F16) == 0x0001);           /* least subnormal */
	CHECK(to16(-ldexpf(1, -24), OURO_F16) == 0x8001);
	CHECK(to16(ldexpf(1, -25), OURO_F16) == 0x0000);           /* tie to even zero */
	CHECK(to16(ldexpf(3, -26), OURO_F16) == 0x0001);           /* over the tie */
	CHECK(to16(ldexpf(3, -25), OURO_F16) == 0x0002);           /* tie, even above */
	CHECK(to16(ldexpf(1, -26), OURO_F16) == 0x0000);
	CHECK(to16(-ldexpf(1, -26), OURO_F16) == 0x8000);
	CHECK(to16(ldexpf(1023, -24), OURO_F16) == 0x03ff);        /* largest subnormal */
	CHECK(to16(ldexpf(2047, -25), OURO_F16) == 0x0400);        /* rounds up into normal */
	CHECK(to16(f32_of_bits(0x00000001), OURO_F16) == 0x0000);  /* float subnormal */
	CHECK(to16(-0.0f, OURO_F16) == 0x8000);
	CHECK(from16(0x0001, OURO_F16) == ldexpf(1, -24));
	CHECK(from16(0x03ff, OURO_F16) == ldexpf(1023, -24));
	CHECK(from16(0x8001, OURO_F16) == -ldexpf(1, -24));
	CHECK(from16(0x7bff, OURO_F16) == 65504);
	CHECK(isinf(from16(0x7c00, OURO_F16)) && from16(0xfc00, OURO_F16) < 0);
	CHECK(isnan(from16(0x7e00, OURO_F16)) && isnan(from16(0x7c01, OURO_F16)));
}

/* Arrays at odd byte offsets, and F32 passing through unchanged. */
static void test_conv_arrays(void)
{
	float src[5] = {1.5f, -0.25f, 65504, -0.0f, 3.0e-5f}, back[5];
	unsigned char raw[2 * 5 + 1];
	float f32buf[6];

	for (int d = 0; d < 2; d++) {
		enum ouro_dtype dt = d ? OURO_F16 : OURO_BF16;

		ouro_from_f32(raw + 1, src, dt, 5);
		ouro_to_f32(back, raw + 1, dt, 5);
		for (int i = 0; i < 5; i++) {
			uint16_t h;
			memcpy(&h, raw + 1 + 2 * i, 2);
			CHECK(h == to16(src[i], dt));
			CHECK(bits_of_f32(back[i]) == bits_of_f32(from16(h, dt)));
		}
	}
	ouro_from_f32(f32buf + 1, src, OURO_F32, 5);
	CHECK(memcmp(f32buf + 1, src, sizeof src) == 0);
	ouro_to_f32(back, f32buf + 1, OURO_F32, 5);
	CHECK(memcmp(back, src, sizeof src) == 0);
	ouro_to_f32(back, raw, OURO_BF16, 0);
	ouro_from_f32(raw, src, OURO_F16, 0);
}

/* ---- ouro_parse_int ------------------------------------------------------ */

static int parses(const char *s, long lo, long hi, long want)
{
	long v = 12345;

	return ouro_parse_int(s, lo, hi, &v, "--x") == OURO_OK && v == want;
}

static int rejects(const char *s, long lo, long hi)
{
	long v = 12345;
	int rc = ouro_parse_int(s, lo, hi, &v, "--x");

	return rc == OURO_EUSAGE && v == 12345 && strncmp(ouro_errmsg(), "--x: ", 5) == 0 &&
	       strstr(ouro_errmsg(), s);
}

static void test_parse_int(void)
{
	char buf[64];

	CHECK(parses("0", 0, 10, 0));
	CHECK(parses("10", 0, 10, 10));
	CHECK(parses("-3", -5, 5, -3));
	CHECK(parses("-0", 0, 1, 0));
	CHECK(parses("007", 0, 10, 7));
	CHECK(parses("+4", 0, 10, 4));
	snprintf(buf, sizeof buf, "%ld", LONG_MAX);
	CHECK(parses(buf, 0, LONG_MAX, LONG_MAX));
	snprintf(buf, sizeof buf, "%ld", LONG_MIN);
	CHECK(parses(buf, LONG_MIN, 0, LONG_MIN));

	CHECK(rejects("", 0, 10));
	CHECK(rejects("x", 0, 10));
	CHECK(rejects("-", 0, 10));
	CHECK(rejects("5x", 0, 10));
	CHECK(rejects("5 ", 0, 10));
	CHECK(rejects(" 5", 0, 10));
	CHECK(rejects("\t5", 0, 10));
	CHECK(rejects("5\n", 0, 10));
	CHECK(rejects("1.0", 0, 10));
	CHECK(rejects("1e3", 0, 10000));
	CHECK(rejects("0x10", 0, 100));
	CHECK(rejects("11", 0, 10));
	CHECK(rejects("-1", 0, 10));
	CHECK(rejects("0", 1, 256));
	CHECK(rejects("257", 1, 256));
	CHECK(rejects("9223372036854775808", LONG_MIN, LONG_MAX));
	CHECK(rejects("-9223372036854775809", LONG_MIN, LONG_MAX));
	CHECK(rejects("99999999999999999999999", 0, 10));
	CHECK(ouro_parse_int("3", 0, 10, &(long){0}, "--steps") == OURO_OK);
	/* errno left over from an earlier call does not poison the next */
	errno = ERANGE;
	CHECK(parses("3", 0, 10, 3));
}

int main(void)
{
	test_round_trip();
	test_round_trip_empty_between();
	test_empty_record();
	test_write_error();
	test_parse_good();
	test_parse_bad();
	test_read_bad();
	test_dtypes();
	test_bf16();
	test_f16();
	test_conv_arrays();
	test_parse_int();
	return unit_done("test_safetensors");
}
