/*
 * amx.c - matrix products on Intel AMX tiles in BF16, for long inputs
 * (prefill, scoring) when the user asks for them with OURO_MATMUL=bf16.
 *
 * y[n, out] = x[n, in] * W^T is computed as its transpose, W * x^T, so
 * that the weights are read straight from the mapped file as A tiles
 * (16 rows of W x 32 k): nothing of W is copied or repacked when it is
 * stored in BF16 with rows a multiple of 32 long (other formats are
 * converted to BF16 a chunk of rows at a time). x is rounded to BF16 once
 * per product and packed as B tiles (16 k-pairs x 16 positions x 2, the
 * pair layout TDPBF16PS reads), and the products accumulate in float32
 * tiles of 16 rows of W x 16 positions, transposed into y on the way out.
 *
 * The activations lose precision to BF16 (8 significant bits), which is
 * why this path is opt-in: the default float32 path matches the
 * reference within 1e-6. Chunks of OURO_CHUNK rows of W are shared out
 * among the threads as in ouro_matmul, so the result does not depend on
 * the thread count.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if OURO_X86
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#define TK 32                  /* k per tile */
#define TN 16                  /* rows of W, or positions, per tile */
#define TILE (TN * TK)         /* BF16 values in a tile: 1 KiB */

struct tilecfg {
	uint8_t palette, start_row, reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
};

/* 1 when OURO_MATMUL=bf16 is set and the CPU and kernel allow AMX (and
 * the CPU has AVX512-BF16, as every one with AMX-BF16 has, for packing). */
int ouro_amx_enabled(void)
{
	static int enabled = -1;
	unsigned a, b, c, d;
	const char *mode;

	if (enabled >= 0)
		return enabled;
	mode = getenv("OURO_MATMUL");
	enabled = mode && strcmp(mode, "bf16") == 0 && __get_cpuid_count(7, 0, &a, &b, &c, &d) &&
		  (d & (1u << 22)) && (d & (1u << 24)) &&   /* AMX-BF16, AMX-TILE */
		  __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5)) &&  /* AVX512-BF16 */
		  syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
	return enabled;
}

struct amx_job {
	float *y;                  /* [n, out] */
	const uint16_t *xp;        /* [n16/16, kt, TILE] x packed as B tiles */
	const struct ouro_weight *w;
	int64_t n, n16, kt;        /* kt: k tiles */
	int direct;                /* W is BF16 with in % 32 == 0: A from the file */
	float *wrow;               /* [threads, OURO_CHUNK, in] widened rows */
	uint16_t *wb;              /* [threads, OURO_CHUNK, kt * TK] rows in BF16 */
	float *ctmp;               /* [threads, 4, TN, TN] */
};

#define T512 __attribute__((target("avx512f,avx512bf16")))

/* Transposes the 16 x 16 32-bit values of r[16] in registers. */
T512 static void transpose16(__m512 r[16])
{
	__m512 t[16], u[16];

	for (int i = 0; i < 16; i += 2) {
		t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
	}
	/* u[4g + k], 128-bit lane L: column 4L + k of rows 4g..4g+3 */
	for (int g = 0; g < 16; g += 4) {
		u[g] = _mm512_shuffle_ps(t[g], t[g + 2], 0x44);
		u[g + 1] = _mm512_shuffle_ps(t[g], t[g + 2], 0xee);
		u[g + 2] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0x44);
		u[g + 3] = _mm512_shuffle_ps(t[g + 1], t[g + 3], 0xee);
	}
	for (int k = 0; k < 4; k++) {
		__m512 x0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88);
		__m512 x1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xdd);
		__m512 x2 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
		__m512 x3 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xdd);
		r[k] = _mm512_shuffle_f32x4(x0, x2, 0x88);
		r[4 + k] = _mm512_shuffle_f32x4(x1, x3, 0x88);
		r[8 + k] = _mm512_shuffle_f32x4(x0, x2, 0xdd);
		r[12 + k] = _mm512_shuffle_f32x4(x1, x3, 0xdd);
	}
}

/* Stores a C tile held in tmp (16 rows of W from r, 16 positions from p)
 * into y, transposed in registers. */
T512 static void store_c(const struct amx_job *j, const float *tmp, int64_t r, int64_t rows, int64_t p)
{
	__m512 v[16];
	__mmask16 m = (__mmask16)((1u << rows) - 1);

	for (int i = 0; i < TN; i++)
		v[i] = _mm512_loadu_ps(tmp + i * TN);
	transpose16(v);
	for (int64_t pos = p; pos < p + TN && pos < j->n; pos++)
		_mm512_mask_storeu_ps(j->y + pos * j->w->out + r, m, v[pos - p]);
}

struct pack_job {
	uint16_t *xp;
	const float *x;
	int64_t n, in, kt;
};

/* Packs positions 16g.. of x as B tiles, for groups g in [begin, end):
 * each position's 32 values of a k tile rounded to BF16 (to nearest even;
 * denormals become zero) as 16 pairs, then 16 positions transposed into
 * the tile's rows. */
T512 static void pack_x(void *ctx, int64_t begin, int64_t end)
{
	const struct pack_job *j = ctx;

	for (int64_t g = begin; g < end; g++)
		for (int64_t kb = 0; kb < j->kt; kb++) {
			int64_t k0 = kb * TK, left = j->in - k0 < TK ? j->in - k0 : TK;
			__mmask16 lo = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
			__mmask16 hi = (__mmask16)(left >= 32 ? 0xffff : left > 16 ? (1u << (left - 16)) - 1 : 0);
			__m512 v[16];

			for (int i = 0; i < TN; i++) {
				int64_t pos = g * TN + i;

				v[i] = _mm512_setzero_ps();
				if (pos < j->n) {
					const float *src = j->x + pos * j->in + k0;
					v[i] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(
						_mm512_maskz_loadu_ps(hi, src + 16), _mm512_maskz_loadu_ps(lo, src)));
				}
			}
			transpose16(v);
			for (int i = 0; i < TN; i++)
				_mm512_storeu_ps(j->xp + (g * j->kt + kb) * TILE + i * TK, v[i]);
		}
}

__attribute__((target("amx-tile,amx-bf16")))
static void amx_chunks(void *ctx, int part, int64_t begin, int64_t end)
{
	const struct amx_job *j = ctx;
	const struct ouro_weight *w = j->w;
	int64_t in = w->in, kt = j->kt, lda;
	float *wrow = j->wrow + (size_t)part * OURO_CHUNK * (size_t)in;
	uint16_t *wb = j->wb + (size_t)part * OURO_CHUNK * (size_t)(kt * TK);
	float *tmp = j->ctmp + (size_t)part * 4 * TN * TN;
	struct tilecfg cfg;

	memset(&cfg, 0, sizeof cfg);
	cfg.palette = 1;
	for (int t = 0; t < 8; t++) {
		cfg.rows[t] = TN;
		cfg.colsb[t] = 64;
	}
	_tile_loadconfig(&cfg);
	for (int64_t c = begin; c < end; c++) {
		int64_t r0 = c * OURO_CHUNK, r = w->out - r0 < OURO_CHUNK ? w->out - r0 : OURO_CHUNK;
		const uint16_t *a;

		if (j->direct && r == OURO_CHUNK) {
			a = (const uint16_t *)((const char *)w->t->data + (size_t)(r0 * in) * 2);
			lda = in * 2;
		} else {   /* convert (and zero-pad) the chunk's rows to BF16 */
			ouro_weight_rows(wrow, w, r0, r);
			memset(wb, 0, (size_t)OURO_CHUNK * (size_t)(kt * TK) * sizeof *wb);
			for (int64_t i = 0; i < r; i++)
				ouro_from_f32(wb + i * kt * TK, wrow + i * in, OURO_BF16, (size_t)in);
			a = wb;
			lda = kt * TK * 2;
		}
		/* 32 rows of W x 32 positions at a time: C tiles 0-3 */
		for (int64_t rb = 0; rb < OURO_CHUNK && rb < r; rb += 2 * TN)
			for (int64_t pb = 0; pb < j->n16; pb += 2 * TN) {
				int two = pb + TN < j->n16;
				_tile_zero(0);
				_tile_zero(1);
				_tile_zero(2);
				_tile_zero(3);
				for (int64_t kb = 0; kb < kt; kb++) {
					const char *a0 = (const char *)a + rb * lda + kb * TK * 2;
					const uint16_t *b0 = j->xp + ((pb / TN) * kt + kb) * TILE;
					_tile_loadd(4, a0, lda);
					_tile_loadd(5, a0 + TN * lda, lda);
					_tile_loadd(6, b0, 64);
					_tile_dpbf16ps(0, 4, 6);
					_tile_dpbf16ps(1, 5, 6);
					if (two) {
						_tile_loadd(7, b0 + kt * TILE, 64);
						_tile_dpbf16ps(2, 4, 7);
						_tile_dpbf16ps(3, 5, 7);
					}
				}
				int64_t rows0 = r - rb < TN ? r - rb : TN;
				int64_t rows1 = r - rb - TN < TN ? r - rb - TN : TN;
				_tile_stored(0, tmp, TN * 4);
				store_c(j, tmp, r0 + rb, rows0, pb);
				if (rows1 > 0) {
					_tile_stored(1, tmp, TN * 4);
					store_c(j, tmp, r0 + rb + TN, rows1, pb);
				}
				if (two) {
					_tile_stored(2, tmp, TN * 4);
					store_c(j, tmp, r0 + rb, rows0, pb + TN);
					if (rows1 > 0) {
						_tile_stored(3, tmp, TN * 4);
						store_c(j, tmp, r0 + rb + TN, rows1, pb + TN);
					}
				}
			}
	}
	_tile_release();
}

int ouro_amx_matmul(float *y, const float *x, const struct ouro_weight *w, int64_t n)
{
	int64_t kt = (w->in + TK - 1) / TK, n16 = (n + TN - 1) / TN * TN;
	size_t threads = (size_t)ouro_threads();
	struct amx_job j = {
		.y = y, .w = w, .n = n, .n16 = n16, .kt = kt,
		.direct = w->t->dtype == OURO_BF16 && !w->scale && w->in % TK == 0,
		.ctmp = malloc(threads * 4 * TN * TN * sizeof(float)),
	};
	uint16_t *xp = malloc((size_t)n16 * (size_t)(kt * TK) * sizeof *xp);
	struct pack_job pj = {xp, x, n, w->in, kt};
	int convert = !j.direct || w->out % OURO_CHUNK;   /* some rows to convert */
	int rc = OURO_OK;

	if (convert) {
		j.wrow = malloc(threads * OURO_CHUNK * (size_t)w->in * sizeof(float));
		j.wb = malloc(threads * OURO_CHUNK * (size_t)(kt * TK) * sizeof(uint16_t));
	}
	if ((convert && (!j.wrow || !j.wb)) || !j.ctmp || !xp) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory for the BF16 matrix product");
		goto out;
	}
	ouro_parallel(pack_x, &pj, n16 / TN);
	j.xp = xp;
	ouro_parallel_parts(amx_chunks, &j, (w->out + OURO_CHUNK - 1) / OURO_CHUNK);
out:
	free(j.wrow);
	free(j.wb);
	free(j.ctmp);
	free(xp);
	return rc;
}
#else
int ouro_amx_enabled(void)
{
	return 0;
}
#endif
