/*
 * kernels.c - numerical building blocks besides the matrix products
 * (matmul.c): weight rows widened to float32 for the code that needs
 * whole rows (AMX packing, quantization), and RMSNorm.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

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
