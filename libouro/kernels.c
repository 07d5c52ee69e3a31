/*
 * kernels.c - the numerical building blocks of the forward pass, in
 * float32: matrix products through OpenBLAS with weights read in their
 * stored dtype, and RMSNorm.
 *
 * A weight matrix in BF16 or F16 is widened, a block of rows at a time,
 * into a scratch buffer of at most OURO_WBUF_FLOATS floats just before its
 * product, so no float32 copy of the model (or of one large matrix) ever
 * exists; each block's product is one sgemm over all positions. A single
 * position (decoding) goes to ouro_matvec instead, which reads W once.
 */
#include <cblas.h>
#include <math.h>

#include "internal.h"

void ouro_matmul(float *y, const float *x, const struct ouro_tensor *w,
		 int64_t n, float *wbuf)
{
	int64_t out = w->shape[0], in = w->shape[1];
	int64_t rows = OURO_WBUF_FLOATS / in < 1 ? 1 : OURO_WBUF_FLOATS / in;
	size_t esize = ouro_dtype_size(w->dtype);

	if (n == 1) {                  /* decoding: stream W once, unwidened */
		ouro_matvec(y, x, w);
		return;
	}
	/* W is widened a block of rows at a time; y[:, r0..r0+rows) per block */
	for (int64_t r0 = 0; r0 < out; r0 += rows) {
		int64_t r = out - r0 < rows ? out - r0 : rows;

		ouro_to_f32(wbuf, (const char *)w->data + (size_t)(r0 * in) * esize, w->dtype,
			    (size_t)(r * in));
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)r,
			    (blasint)in, 1.0f, x, (blasint)in, wbuf, (blasint)in, 0.0f, y + r0,
			    (blasint)out);
	}
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
