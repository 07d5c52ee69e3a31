/*
 * npy.c - NumPy .npy files and .npz archives from tensors (see export.h).
 *
 * One routine produces the bytes of a .npy image (header, then the data,
 * BF16 widened to float32 in bounded blocks) and hands them to a sink: the
 * stream itself for a .npy file, or a deflate stream and a CRC for a
 * member of a .npz. The zip writer streams: each member's local header
 * says "sizes follow" (flag bit 3) and a data descriptor after the data
 * carries the CRC and sizes, and the central directory at the end repeats
 * them. Every member uses zip64 fields, so there is one layout for small
 * and huge archives alike, and the tests exercise all of it. Dates are
 * fixed (1980-01-01), so the same tensors give the same bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ouro.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c writes tensor data as stored, which is little-endian only on little-endian hosts"
#endif

#define NPY_ALIGN 64
#define BLOCK (1 << 16)     /* elements widened, or bytes deflated, at a time */

/* ---- the .npy image ---------------------------------------------------- */

typedef int (*sink_fn)(void *ctx, const void *p, size_t n);

/* NumPy's dtype string for dt (BF16 as its float32 widening). */
static const char *npy_descr(enum ouro_dtype dt)
{
	switch (dt) {
	case OURO_F32: case OURO_BF16: return "<f4";
	case OURO_F16: return "<f2";
	case OURO_F64: return "<f8";
	case OURO_I8: return "|i1";
	case OURO_U8: return "|u1";
	case OURO_I16: return "<i2";
	case OURO_I32: return "<i4";
	case OURO_I64: return "<i8";
	case OURO_BOOL: return "|b1";
	default: return NULL;
	}
}

/* The header of t's .npy image in buf [cap]; *len gets its length, a
 * multiple of NPY_ALIGN. Format 1.0 (a 16-bit header length) always
 * suffices: eight dimensions of 20 digits need under 300 bytes. */
static int npy_header(char *buf, size_t cap, size_t *len, const struct ouro_tensor *t,
		      const char *what)
{
	const char *descr = npy_descr(t->dtype);
	size_t k = 10, total;

	if (!descr)
		return ouro_fail(OURO_EINPUT, "%s: tensor '%s' has a dtype NumPy cannot hold", what,
				 t->name);
	k += (size_t)snprintf(buf + k, cap - k, "{'descr': '%s', 'fortran_order': False, 'shape': (",
			      descr);
	for (int d = 0; d < t->ndim; d++)
		k += (size_t)snprintf(buf + k, cap - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
	k += (size_t)snprintf(buf + k, cap - k, "%s), }", t->ndim == 1 ? "," : "");
	total = (k + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;   /* + '\n' */
	if (total > cap)
		return ouro_fail(OURO_EINPUT, "%s: tensor '%s': .npy header too long", what, t->name);
	memset(buf + k, ' ', total - 1 - k);
	buf[total - 1] = '\n';
	memcpy(buf, "\x93NUMPY\x01\x00", 8);
	buf[8] = (char)((total - 10) & 0xff);
	buf[9] = (char)((total - 10) >> 8);
	*len = total;
	return OURO_OK;
}

/* The number of bytes of t's data in the .npy image. */
static uint64_t npy_data_bytes(const struct ouro_tensor *t)
{
	return t->dtype == OURO_BF16 ? t->nbytes * 2 : t->nbytes;
}

/* Feeds t's .npy image (header hdr [hlen], then the data) to sink. */
static int npy_emit(const struct ouro_tensor *t, const char *hdr, size_t hlen, sink_fn sink,
		    void *ctx)
{
	const unsigned char *p = t->data;
	int rc;

	if ((rc = sink(ctx, hdr, hlen)))
		return rc;
	if (t->dtype != OURO_BF16) {
		for (uint64_t off = 0; off < t->nbytes; off += BLOCK * 16) {
			uint64_t n = t->nbytes - off < BLOCK * 16 ? t->nbytes - off : BLOCK * 16;
			if ((rc = sink(ctx, p + off, (size_t)n)))
				return rc;
		}
		return OURO_OK;
	}
	float *wide = malloc(BLOCK * sizeof *wide);   /* [BLOCK] */
	uint64_t numel = t->nbytes / 2;

	if (!wide)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	for (uint64_t i = 0; i < numel && !rc; i += BLOCK) {
		size_t n = numel - i < BLOCK ? (size_t)(numel - i) : BLOCK;
		ouro_to_f32(wide, p + i * 2, OURO_BF16, n);
		rc = sink(ctx, wide, n * sizeof *wide);
	}
	free(wide);
	return rc;
}

struct file_sink {
	FILE *f;
	const char *what;
};

static int file_write(void *ctx, const void *p, size_t n)
{
	struct file_sink *s = ctx;

	if (n && fwrite(p, 1, n, s->f) != n)
		return ouro_fail(OURO_ESYS, "%s: write error: %s", s->what, strerror(errno));
	return OURO_OK;
}

int ouro_npy_write(FILE *f, const char *what, const struct ouro_tensor *t)
{
	struct file_sink s = {f, what};
	char hdr[512];
	size_t hlen;
	int rc;

	if ((rc = npy_header(hdr, sizeof hdr, &hlen, t, what)))
		return rc;
	return npy_emit(t, hdr, hlen, file_write, &s);
}

/* ---- the .npz archive -------------------------------------------------- */

#define ZIP_VERSION 45          /* 4.5: zip64 */
#define ZIP_MADE_BY (3 << 8 | ZIP_VERSION)   /* Unix */
#define ZIP_FLAGS 0x0808        /* bit 3: data descriptor; bit 11: UTF-8 names */
#define ZIP_DEFLATE 8
#define ZIP_DOS_DATE 0x0021     /* 1980-01-01 */
#define ZIP_MODE (0100644u << 16)

struct member {
	char *name;               /* with ".npy" */
	uint32_t crc;
	uint64_t csize, usize, offset;
};

struct ouro_npz {
	FILE *f;
	char *what;
	int level;
	uint64_t pos;             /* bytes written so far */
	struct member *m;
	size_t n, cap;
	/* the member being written */
	z_stream zs;
	uint32_t crc;
	uint64_t usize, csize;
	unsigned char *out;       /* [BLOCK] deflate output */
};

/* Little-endian field writers into a byte buffer. */
static unsigned char *le16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	return p + 2;
}

static unsigned char *le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	return p + 4;
}

static unsigned char *le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
	return p + 8;
}

static int npz_write(struct ouro_npz *z, const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, z->f) != n)
		return ouro_fail(OURO_ESYS, "%s: write error: %s", z->what, strerror(errno));
	z->pos += n;
	return OURO_OK;
}

int ouro_npz_new(struct ouro_npz **out, FILE *f, const char *what, int level)
{
	struct ouro_npz *z = calloc(1, sizeof *z);

	*out = NULL;
	if (level < -1 || level > 9) {
		free(z);
		return ouro_fail(OURO_EUSAGE, "%s: compression level %d is not in -1..9", what, level);
	}
	if (!z || !(z->what = strdup(what)) || !(z->out = malloc(BLOCK))) {
		ouro_npz_free(z);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	z->f = f;
	z->level = level;
	*out = z;
	return OURO_OK;
}

void ouro_npz_free(struct ouro_npz *z)
{
	if (!z)
		return;
	for (size_t i = 0; i < z->n; i++)
		free(z->m[i].name);
	free(z->m);
	free(z->out);
	free(z->what);
	free(z);
}

/* Runs deflate over in [n] (flush: Z_NO_FLUSH or Z_FINISH) and writes
 * what comes out. */
static int npz_deflate(struct ouro_npz *z, const void *in, size_t n, int flush)
{
	int zr;

	z->zs.next_in = (unsigned char *)(uintptr_t)in;
	z->zs.avail_in = (uInt)n;
	do {
		z->zs.next_out = z->out;
		z->zs.avail_out = BLOCK;
		zr = deflate(&z->zs, flush);
		if (zr == Z_STREAM_ERROR)
			return ouro_fail(OURO_ESYS, "%s: zlib deflate failed", z->what);
		size_t got = BLOCK - z->zs.avail_out;
		z->csize += got;
		int rc = npz_write(z, z->out, got);
		if (rc)
			return rc;
	} while (z->zs.avail_out == 0 || (flush == Z_FINISH && zr != Z_STREAM_END));
	return OURO_OK;
}

/* The sink of a member's .npy image: CRC, then deflate in bounded pieces
 * (avail_in is 32 bits). */
static int npz_sink(void *ctx, const void *p, size_t n)
{
	struct ouro_npz *z = ctx;
	const unsigned char *b = p;

	z->usize += n;
	while (n) {
		size_t k = n < BLOCK * 16 ? n : BLOCK * 16;
		int rc;
		z->crc = (uint32_t)crc32(z->crc, b, (uInt)k);
		if ((rc = npz_deflate(z, b, k, Z_NO_FLUSH)))
			return rc;
		b += k;
		n -= k;
	}
	return OURO_OK;
}

int ouro_npz_add(struct ouro_npz *z, const char *name, const struct ouro_tensor *t)
{
	unsigned char lh[30 + 20], dd[24], *p;
	struct member *mb;
	char hdr[512];
	size_t hlen, nlen = strlen(name) + 4;
	int rc;

	if (!*name || nlen > 0xffff)
		return ouro_fail(OURO_EINPUT, "%s: member name of %zu bytes is not in 1..65531", z->what,
				 nlen - 4);
	if ((rc = npy_header(hdr, sizeof hdr, &hlen, t, z->what)))
		return rc;
	if (z->n == z->cap) {
		size_t cap = z->cap ? 2 * z->cap : 16;
		struct member *m = realloc(z->m, cap * sizeof *m);
		if (!m)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		z->m = m;
		z->cap = cap;
	}
	mb = &z->m[z->n];
	if (!(mb->name = malloc(nlen + 1)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	snprintf(mb->name, nlen + 1, "%s.npy", name);
	for (size_t i = 0; i < z->n; i++)
		if (strcmp(z->m[i].name, mb->name) == 0) {
			free(mb->name);
			return ouro_fail(OURO_EINPUT, "%s: member '%s' is already in the archive", z->what,
					 name);
		}
	mb->offset = z->pos;
	z->n++;

	/* local file header: sizes in the data descriptor; zip64 extra */
	p = le32(lh, 0x04034b50);
	p = le16(p, ZIP_VERSION);
	p = le16(p, ZIP_FLAGS);
	p = le16(p, ZIP_DEFLATE);
	p = le16(p, 0);                 /* time 00:00 */
	p = le16(p, ZIP_DOS_DATE);
	p = le32(p, 0);                 /* crc: see the data descriptor */
	p = le32(p, 0xffffffff);        /* sizes: in the zip64 extra */
	p = le32(p, 0xffffffff);
	p = le16(p, (unsigned)nlen);
	p = le16(p, 20);
	if ((rc = npz_write(z, lh, 30)) || (rc = npz_write(z, mb->name, nlen)))
		return rc;
	p = le16(lh, 0x0001);
	p = le16(p, 16);
	p = le64(p, 0);                 /* sizes follow the data */
	le64(p, 0);
	if ((rc = npz_write(z, lh, 20)))
		return rc;

	memset(&z->zs, 0, sizeof z->zs);
	if (deflateInit2(&z->zs, z->level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return ouro_fail(OURO_ENOMEM, "%s: zlib could not start a deflate stream", z->what);
	z->crc = (uint32_t)crc32(0, NULL, 0);
	z->usize = z->csize = 0;
	rc = npy_emit(t, hdr, hlen, npz_sink, z);
	if (!rc)
		rc = npz_deflate(z, NULL, 0, Z_FINISH);
	deflateEnd(&z->zs);
	if (rc)
		return rc;
	if (z->usize != hlen + npy_data_bytes(t))
		return ouro_fail(OURO_ESYS, "%s: member '%s': wrote %llu bytes, expected %llu", z->what,
				 name, (unsigned long long)z->usize,
				 (unsigned long long)(hlen + npy_data_bytes(t)));
	mb->crc = z->crc;
	mb->usize = z->usize;
	mb->csize = z->csize;

	/* zip64 data descriptor */
	p = le32(dd, 0x08074b50);
	p = le32(p, mb->crc);
	p = le64(p, mb->csize);
	le64(p, mb->usize);
	return npz_write(z, dd, sizeof dd);
}

int ouro_npz_finish(struct ouro_npz *z)
{
	unsigned char b[64], *p;
	uint64_t cd_start = z->pos;
	int rc = OURO_OK;

	for (size_t i = 0; i < z->n && !rc; i++) {
		const struct member *mb = &z->m[i];
		size_t nlen = strlen(mb->name);

		p = le32(b, 0x02014b50);
		p = le16(p, ZIP_MADE_BY);
		p = le16(p, ZIP_VERSION);
		p = le16(p, ZIP_FLAGS);
		p = le16(p, ZIP_DEFLATE);
		p = le16(p, 0);
		p = le16(p, ZIP_DOS_DATE);
		p = le32(p, mb->crc);
		p = le32(p, 0xffffffff);    /* csize, usize, offset: in the zip64 extra */
		p = le32(p, 0xffffffff);
		p = le16(p, (unsigned)nlen);
		p = le16(p, 28);            /* extra */
		p = le16(p, 0);             /* comment */
		p = le16(p, 0);             /* disk */
		p = le16(p, 0);             /* internal attributes */
		p = le32(p, ZIP_MODE);
		le32(p, 0xffffffff);
		if ((rc = npz_write(z, b, 46)) || (rc = npz_write(z, mb->name, nlen)))
			break;
		p = le16(b, 0x0001);
		p = le16(p, 24);
		p = le64(p, mb->usize);     /* the order the format fixes */
		p = le64(p, mb->csize);
		le64(p, mb->offset);
		rc = npz_write(z, b, 28);
	}
	uint64_t cd_size = z->pos - cd_start, eocd64 = z->pos;

	if (!rc) {      /* zip64 end of central directory record */
		p = le32(b, 0x06064b50);
		p = le64(p, 44);
		p = le16(p, ZIP_MADE_BY);
		p = le16(p, ZIP_VERSION);
		p = le32(p, 0);
		p = le32(p, 0);
		p = le64(p, z->n);
		p = le64(p, z->n);
		p = le64(p, cd_size);
		le64(p, cd_start);
		rc = npz_write(z, b, 56);
	}
	if (!rc) {      /* its locator */
		p = le32(b, 0x07064b50);
		p = le32(p, 0);
		p = le64(p, eocd64);
		le32(p, 1);
		rc = npz_write(z, b, 20);
	}
	if (!rc) {      /* the classic end record, pointing to the zip64 one */
		p = le32(b, 0x06054b50);
		p = le16(p, 0);
		p = le16(p, 0);
		p = le16(p, z->n < 0xffff ? (unsigned)z->n : 0xffff);
		p = le16(p, z->n < 0xffff ? (unsigned)z->n : 0xffff);
		p = le32(p, cd_size < 0xffffffff ? (uint32_t)cd_size : 0xffffffff);
		p = le32(p, 0xffffffff);
		le16(p, 0);
		rc = npz_write(z, b, 22);
	}
	ouro_npz_free(z);
	return rc;
}
