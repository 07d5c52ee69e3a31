/*
 * kernels.c - the numerical building blocks of the forward pass, in
 * float32: matrix products through OpenBLAS with weights read in their
 * stored dtype, and RMSNorm.
 *
 * A weight matrix in BF16 or F16 is widened a chunk of OURO_CHUNK rows at
 * a time into each thread's slice of a scratch buffer just before its
 * product, so no float32 copy of the model (or of one large matrix) ever
 * exists; each chunk's product is one single-threaded sgemm over all
 * positions, and the chunks are shared out among the threads. A single
 * position (decoding) goes to ouro_matvec instead, which reads W once.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "internal.h"

size_t ouro_wbuf_floats(int64_t in)
{
	return (size_t)ouro_threads() * OURO_CHUNK * (size_t)in;
}

void ouro_weight_rows(float *dst, const struct ouro_weight *w, int64_t r0, int64_t r)
{
	if (w->q4) {
		ouro_q4_rows(-1, dst, w, r0, r);
		return;
	}
	size_t esize = ouro_dtype_size(w->t->dtype);
	const char *src = (const char *)w->t->data + (size_t)(r0 * w->in) * esize;

	if (!w->scale) {
		ouro_to_f32(dst, src, w->t->dtype, (size_t)(r * w->in));
		return;
	}
	int64_t blocks = r * w->in / OURO_Q8_BLOCK;
	const char *sc = (const char *)w->scale->data + (size_t)(r0 * w->in / OURO_Q8_BLOCK) * 2;
	for (int64_t b = 0; b < blocks; b++) {
		float d;
		int8_t q[OURO_Q8_BLOCK];

		ouro_to_f32(&d, sc + 2 * b, OURO_F16, 1);
		memcpy(q, src + b * OURO_Q8_BLOCK, OURO_Q8_BLOCK);
		for (int i = 0; i < OURO_Q8_BLOCK; i++)
			dst[b * OURO_Q8_BLOCK + i] = (float)q[i] * d;
	}
}

struct mm_job {
	float *y;             /* [n, out] */
	const float *x;       /* [n, in] */
	const struct ouro_weight *w;
	int64_t n, in, out;
	float *wbuf;          /* [threads, OURO_CHUNK, in] */
};

/* Chunks [begin, end) of OURO_CHUNK output columns, on thread `part`. */
static void mm_chunks(void *ctx, int part, int64_t begin, int64_t end)
{
	const struct mm_job *j = ctx;
	float *buf = j->wbuf + (size_t)part * OURO_CHUNK * (size_t)j->in;

	for (int64_t c = begin; c < end; c++) {
		int64_t r0 = c * OURO_CHUNK, r = j->out - r0 < OURO_CHUNK ? j->out - r0 : OURO_CHUNK;

		ouro_weight_rows(buf, j->w, r0, r);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)j->n, (blasint)r,
			    (blasint)j->in, 1.0f, j->x, (blasint)j->in, buf, (blasint)j->in, 0.0f,
			    j->y + r0, (blasint)j->out);
	}
}

void ouro_matmul(float *y, const float *x, const struct ouro_weight *w,
		 int64_t n, float *wbuf)
{
	struct mm_job j = {y, x, w, n, w->in, w->out, wbuf};

	if (n == 1) {                  /* decoding: stream W once, unwidened */
		ouro_matvec(y, x, w);
		return;
	}
	/* long inputs on AMX tiles when asked for (a failed allocation there
	 * falls back to the float32 path) */
	if (n >= 16 && ouro_amx_enabled() && ouro_amx_matmul(y, x, w, n) == OURO_OK)
		return;
	ouro_parallel_parts(mm_chunks, &j, (j.out + OURO_CHUNK - 1) / OURO_CHUNK);
}

void ouro_rmsnorm_row(float *y, const float *x, const float *weight, int64_t d, float eps)
{
	double ss = 0;

	for (int64_t k = 0; k < d; k++)
		ss += (double)x[k] * x[k];
	float r = 1.0f / sqrtf((float)(ss / (double)d) + eps);
	for (int64_t k = 0; k < d; k++)
		y[k] = x[k] * r * weight[k];
}

struct norm_job {
	float *y;
	const float *x, *weight;
	int64_t d;
	float eps;
};

static void norm_rows(void *ctx, int64_t begin, int64_t end)
{
	const struct norm_job *j = ctx;

	for (int64_t i = begin; i < end; i++)
		ouro_rmsnorm_row(j->y + i * j->d, j->x + i * j->d, j->weight, j->d, j->eps);
}

void ouro_rmsnorm(float *y, const float *x, const float *weight, int64_t n,
		  int64_t d, float eps)
{
	struct norm_job j = {y, x, weight, d, eps};

	ouro_parallel(norm_rows, &j, n);
}
