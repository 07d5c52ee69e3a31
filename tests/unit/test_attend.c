/*
 * test_attend.c - ouro_attend, the attention arithmetic shared by the
 * forward pass and the batch engine, on odd shapes.
 *
 *   1. Against a plain float64 reference of causal softmax attention:
 *      relative error below 1e-5 (printed).
 *   2. Batch invariance: query i's result is the same bit for bit when it
 *      is computed alone (m = 1, n0 = its position), in a block of all
 *      the queries, or in a block starting anywhere; and whatever runs the
 *      keys are split into.
 *   3. bf16 runs give exactly the float32 result of the same values
 *      widened.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unit.h"

#define NQ 37      /* positions */
#define HD 24      /* head size: one vector of 16 and a tail of 8 */
#define STRIDE 29  /* floats between rows */

static float q[NQ * STRIDE], k[NQ * STRIDE], v[NQ * STRIDE];
static uint16_t kb[NQ * STRIDE], vb[NQ * STRIDE];

/* The runs of positions 0..n-1 split at every multiple of `len`. */
static int split(struct ouro_kv_run *runs, int64_t n, int64_t len, int bf16)
{
	int r = 0;

	for (int64_t p = 0; p < n; p += len)
		runs[r++] = (struct ouro_kv_run){
			bf16 ? (const void *)(kb + p * STRIDE) : (const void *)(k + p * STRIDE),
			bf16 ? (const void *)(vb + p * STRIDE) : (const void *)(v + p * STRIDE),
			n - p < len ? n - p : len, STRIDE, bf16 ? OURO_BF16 : OURO_F32};
	return r;
}

int main(void)
{
	static float scores[NQ * NQ], work[NQ + HD], out[NQ * HD], one[HD];
	struct ouro_kv_run runs[NQ];
	double worst = 0;

	srand(3);
	for (int i = 0; i < NQ * STRIDE; i++) {
		q[i] = (float)rand() / RAND_MAX * 2 - 1;
		k[i] = (float)rand() / RAND_MAX * 2 - 1;
		v[i] = (float)rand() / RAND_MAX * 2 - 1;
	}
	/* 1: all queries in one block, keys in one run, against float64 */
	int n = split(runs, NQ, NQ, 0);
	ouro_attend(out, HD, q, STRIDE, NQ, 0, runs, n, HD, scores, work);
	for (int i = 0; i < NQ; i++) {
		double s[NQ], mx = -INFINITY, sum = 0, d = 0, r = 0;
		for (int j = 0; j <= i; j++) {
			s[j] = 0;
			for (int c = 0; c < HD; c++)
				s[j] += (double)q[i * STRIDE + c] * k[j * STRIDE + c];
			s[j] /= sqrt(HD);
			mx = s[j] > mx ? s[j] : mx;
		}
		for (int j = 0; j <= i; j++)
			sum += s[j] = exp(s[j] - mx);
		for (int c = 0; c < HD; c++) {
			double a = 0;
			for (int j = 0; j <= i; j++)
				a += s[j] / sum * v[j * STRIDE + c];
			d += (a - out[i * HD + c]) * (a - out[i * HD + c]);
			r += a * a;
		}
		worst = fmax(worst, sqrt(d / r));
	}
	CHECK(worst < 1e-5);

	/* 2: each query alone, in blocks from anywhere, keys in runs of any
	 * length: the same bits */
	for (int len = 1; len <= NQ; len += 6)
		for (int i = 0; i < NQ; i++) {
			n = split(runs, i + 1, len, 0);
			ouro_attend(one, HD, q + i * STRIDE, STRIDE, 1, i, runs, n, HD, scores, work);
			CHECK(!memcmp(one, out + i * HD, sizeof one));
		}
	for (int start = 0; start < NQ; start += 5) {
		static float part[NQ * HD];
		n = split(runs, NQ, 16, 0);
		ouro_attend(part, HD, q + start * STRIDE, STRIDE, NQ - start, start, runs, n, HD,
			    scores, work);
		CHECK(!memcmp(part, out + start * HD, (size_t)(NQ - start) * HD * sizeof(float)));
	}

	/* 3: bf16 keys and values against float32 of the same values */
	ouro_from_f32(kb, k, OURO_BF16, NQ * STRIDE);
	ouro_from_f32(vb, v, OURO_BF16, NQ * STRIDE);
	ouro_to_f32(k, kb, OURO_BF16, NQ * STRIDE);
	ouro_to_f32(v, vb, OURO_BF16, NQ * STRIDE);
	static float f32[NQ * HD], b16[NQ * HD];
	n = split(runs, NQ, 5, 0);
	ouro_attend(f32, HD, q, STRIDE, NQ, 0, runs, n, HD, scores, work);
	n = split(runs, NQ, 7, 1);
	ouro_attend(b16, HD, q, STRIDE, NQ, 0, runs, n, HD, scores, work);
	CHECK(!memcmp(f32, b16, sizeof f32));

	printf("ouro_attend vs float64: max relative error %.3g (tol 1e-5)\n", worst);
	return unit_done("test_attend");
}
