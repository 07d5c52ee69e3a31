/*
 * kernels.c - the numerical building blocks of the forward pass, in
 * float32: matrix products through OpenBLAS with weights read in their
 * stored dtype, and RMSNorm.
 *
 * A weight matrix in BF16 or F16 is widened into a scratch buffer of one
 * matrix just before its product, so no float32 copy of the whole model
 * ever exists; the product itself is one sgemm over all positions.
 */
#include <cblas.h>
#include <math.h>

#include "internal.h"

void ouro_set_threads(int n)
{
	openblas_set_num_threads(n);
}

void ouro_matmul(float *y, const float *x, const struct ouro_tensor *w,
		 int64_t n, float *wbuf)
{
	int64_t out = w->shape[0], in = w->shape[1];

	ouro_to_f32(wbuf, w->data, w->dtype, (size_t)(out * in));
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)out,
		    (blasint)in, 1.0f, x, (blasint)in, wbuf, (blasint)in, 0.0f, y, (blasint)out);
}

void ouro_rmsnorm(float *y, const float *x, const float *weight, int64_t n,
		  int64_t d, float eps)
{
	for (int64_t i = 0; i < n; i++) {
		const float *xi = x + i * d;
		float *yi = y + i * d;
		double ss = 0;

		for (int64_t j = 0; j < d; j++)
			ss += (double)xi[j] * xi[j];
		float r = 1.0f / sqrtf((float)(ss / (double)d) + eps);
		for (int64_t j = 0; j < d; j++)
			yi[j] = xi[j] * r * weight[j];
	}
}
