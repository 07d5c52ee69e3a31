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
#include <cpuid.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

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

/* 1 when OURO_MATMUL=bf16 is set and the CPU and kernel allow AMX. */
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

/* Stores C tile t (16 rows of W from r, 16 positions from p) into y. */
__attribute__((target("amx-tile,amx-bf16")))
static void store_c(const struct amx_job *j, float *tmp, int64_t r, int64_t rows, int64_t p)
{
	for (int64_t pos = p; pos < p + TN && pos < j->n; pos++)
		for (int64_t i = 0; i < rows; i++)
			j->y[pos * j->w->out + r + i] = tmp[i * TN + (pos - p)];
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
		.wrow = malloc(threads * OURO_CHUNK * (size_t)w->in * sizeof(float)),
		.wb = malloc(threads * OURO_CHUNK * (size_t)(kt * TK) * sizeof(uint16_t)),
		.ctmp = malloc(threads * 4 * TN * TN * sizeof(float)),
	};
	uint16_t *xp = calloc((size_t)n16 * (size_t)(kt * TK), sizeof *xp);
	uint16_t *row = calloc((size_t)(kt * TK), sizeof *row);
	int rc = OURO_OK;

	if (!j.wrow || !j.wb || !j.ctmp || !xp || !row) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory for the BF16 matrix product");
		goto out;
	}
	/* B tiles: xp[pb][kb] row kp holds, for each of 16 positions, the
	 * BF16 pair x[pos][kb*32 + 2kp], x[pos][kb*32 + 2kp + 1] */
	for (int64_t pos = 0; pos < n; pos++) {
		uint16_t *dst = xp + (pos / TN) * kt * TILE + (pos % TN) * 2;

		ouro_from_f32(row, x + pos * w->in, OURO_BF16, (size_t)w->in);
		for (int64_t p = 0; p < kt * TK / 2; p++)
			memcpy(dst + (p / (TK / 2)) * TILE + (p % (TK / 2)) * TK, row + 2 * p, 4);
	}
	j.xp = xp;
	ouro_parallel_parts(amx_chunks, &j, (w->out + OURO_CHUNK - 1) / OURO_CHUNK);
out:
	free(j.wrow);
	free(j.wb);
	free(j.ctmp);
	free(xp);
	free(row);
	return rc;
}
