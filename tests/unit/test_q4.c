/*
 * test_q4.c - the q4 quantizer, widener and dot kernels (libouro/q4.c)
 * against plain C written here from the format's description.
 *
 * For rows of many widths (1 to 2065: not multiples of 16, 32 or 256, so
 * partial sub-blocks and super-blocks) and value kinds (normal, one-signed,
 * constant, zero, outliers):
 *   - the widener (ouro_weight_rows on a q4 weight, and ouro_q4_rows at
 *     every CPU level) gives exactly the weights this file decodes from
 *     the bytes;
 *   - the quantization error is below 9% relative (12% with outliers
 *     40 times the rest, 1e-3 for constant rows, 0 for zero ones), and on normal rows, with or without
 *     outliers, below that of the plain range grid (scale (max-min)/15 and
 *     minimum in F16 per block of 32, a 5-bit format, which the error
 *     search must improve on with its 6-bit scales); deterministic bytes;
 *   - every dot kernel this CPU has (portable, AVX2, AVX-512) gives the
 *     same bits as the plain C sum in the documented lane order (64
 *     lanes, fused multiply-adds, pairwise), and that is within float
 *     rounding of a float64 dot product;
 *   - so does ouro_q4_matvec_rows at every level (AVX-512 takes rows four
 *     at a time) from first rows 0 to 3, and ouro_matmul on q4
 *     matrices for 1, 2 and 3 threads, for one row of x and for two to
 *     six (AVX-512 takes up to four rows of x per row of W; each row the
 *     same bits as alone: batch invariance).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unit.h"

static double max_err, max_qerr, max_ratio;

/* uniform in [0, 1) from a fixed sequence */
static double unif(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(*s >> 11) * 0x1p-53;
}

static float normal(uint64_t *s)
{
	double u = unif(s), v = unif(s);
	return (float)(sqrt(-2 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

static float f16(const uint8_t *p)
{
	float f;

	ouro_to_f32(&f, (uint16_t[1]){(uint16_t)(p[0] | p[1] << 8)}, OURO_F16, 1);
	return f;
}

static float half_round(float f)
{
	uint16_t h;

	ouro_from_f32(&h, &f, OURO_F16, 1);
	ouro_to_f32(&f, &h, OURO_F16, 1);
	return f;
}

/* Weight i of a q4 row, decoded from its bytes as the format says. */
static float weight(const uint8_t *q, const uint8_t *h, int64_t i)
{
	int64_t b = i / 256;
	int j = (int)(i % 256 / 32), k = (int)(i % 32);
	const uint8_t *hb = h + b * 16;
	int sc = hb[4 + j] & 63;
	int mn = (hb[4 + j] >> 6) + 4 * ((j % 2 ? hb[12 + j / 2] >> 4 : hb[12 + j / 2]) & 15);
	uint8_t byte = q[b * 128 + j * 16 + k % 16];
	int v = k < 16 ? byte & 15 : byte >> 4;
	float ds = f16(hb) * (float)sc, ms = f16(hb + 2) * (float)mn;

	return (float)v * ds - ms;
}

/* The documented sum: lane (sub-block mod 2) * 32 + position, then pairwise. */
static float dot_ref(const float *w, const float *x, int64_t in)
{
	float lane[64] = {0};

	for (int64_t i = 0; i < in; i++) {
		float *a = &lane[(i / 32 % 2) * 32 + i % 32];
		*a = fmaf(w[i], x[i], *a);
	}
	for (int n = 32; n >= 1; n /= 2)
		for (int l = 0; l < n; l++)
			lane[l] += lane[l + n];
	return lane[0];
}

/* Squared error of the plain range grid: per block of 32, scale
 * (max - min)/15 and minimum -min (min <= 0), both as F16. */
static double range_sse(const float *x, int64_t in)
{
	double e = 0;

	for (int64_t b = 0; b < in; b += 32) {
		int n = in - b < 32 ? (int)(in - b) : 32;
		float lo = 0, hi = x[b], s, m;
		for (int i = 0; i < n; i++) {
			lo = x[b + i] < lo ? x[b + i] : lo;
			hi = x[b + i] > hi ? x[b + i] : hi;
		}
		s = half_round((hi - lo) / 15);
		m = half_round(-lo);
		for (int i = 0; i < n; i++) {
			float v = s > 0 ? rintf((x[b + i] + m) / s) : 0;
			v = v < 0 ? 0 : v > 15 ? 15 : v;
			e += ((double)v * s - m - x[b + i]) * ((double)v * s - m - x[b + i]);
		}
	}
	return e;
}

static void check_rows(int64_t out, int64_t in, int kind, uint64_t seed)
{
	int64_t nb = ouro_q4_blocks(in);
	size_t n = (size_t)(out * in);
	float *wf = malloc(n * sizeof *wf), *wq = malloc(n * sizeof *wq), *wd = malloc(n * sizeof *wd);
	float *x = malloc((size_t)in * sizeof *x), *y = malloc((size_t)out * sizeof *y);
	uint8_t *q = malloc((size_t)(out * nb * 128)), *h = malloc((size_t)(out * nb * 16));
	uint8_t *q2 = malloc((size_t)(nb * 128)), *h2 = malloc((size_t)(nb * 16));
	struct ouro_tensor tq = {.name = "w.q4", .dtype = OURO_U8, .ndim = 2,
				 .shape = {out, nb * 128}, .data = q};
	struct ouro_tensor th = {.name = "w.q4_scale", .dtype = OURO_U8, .ndim = 2,
				 .shape = {out, nb * 16}, .data = h};
	struct ouro_weight w = {&tq, &th, out, in, 1};
	uint64_t s = seed;

	for (size_t i = 0; i < n; i++) {
		float v = normal(&s) / sqrtf((float)in);
		wf[i] = kind == 0 ? v : kind == 1 ? fabsf(v) + 0.01f : kind == 2 ? -fabsf(v) - 0.5f
			: kind == 3 ? 0.25f : kind == 4 ? 0 : (i % 97 == 3 ? 40 * v : v);
	}
	for (int64_t i = 0; i < in; i++)
		x[i] = normal(&s);
	for (int64_t r = 0; r < out; r++)
		ouro_q4_quantize(wf + r * in, in, q + r * nb * 128, h + r * nb * 16);
	ouro_q4_quantize(wf, in, q2, h2);      /* the same row again: the same bytes */
	CHECK(memcmp(q2, q, (size_t)(nb * 128)) == 0 && memcmp(h2, h, (size_t)(nb * 16)) == 0);

	ouro_weight_rows(wq, &w, 0, out);
	double se = 0, ss = 0, base = 0;
	for (int64_t r = 0; r < out; r++) {
		for (int64_t i = 0; i < in; i++) {
			wd[r * in + i] = weight(q + r * nb * 128, h + r * nb * 16, i);
			double d = (double)wd[r * in + i] - wf[r * in + i];
			se += d * d;
			ss += (double)wf[r * in + i] * wf[r * in + i];
		}
		base += range_sse(wf + r * in, in);
	}
	CHECK(memcmp(wq, wd, n * sizeof *wq) == 0);
	for (int level = 0; level <= ouro_cpu_level(); level++) {
		memset(wq, 0, n * sizeof *wq);
		ouro_q4_rows(level, wq, &w, 0, out);
		CHECK(memcmp(wq, wd, n * sizeof *wq) == 0);
	}
	if (kind == 4) {
		CHECK(se == 0);
	} else {
		double e = sqrt(se / ss);
		CHECK(e < (kind == 3 ? 1e-3 : kind == 5 ? 0.12 : 0.09));
		if (kind == 0)
			max_qerr = e > max_qerr ? e : max_qerr;
	}
	if ((kind == 0 || kind == 5) && in >= 32) {
		CHECK(se <= base);
		max_ratio = sqrt(se / base) > max_ratio ? sqrt(se / base) : max_ratio;
	}

	for (int64_t r = 0; r < out; r++) {
		float want = dot_ref(wd + r * in, x, in);
		double exact = 0, mag = 0;
		for (int64_t i = 0; i < in; i++) {
			exact += (double)wd[r * in + i] * x[i];
			mag += fabs((double)wd[r * in + i] * x[i]);
		}
		double e = fabs(want - exact) / (mag > 0 ? mag : 1);
		CHECK(e < 1e-5);
		max_err = e > max_err ? e : max_err;
		for (int level = 0; level <= ouro_cpu_level(); level++) {
			float got = ouro_q4_dot(level)(q + r * nb * 128, h + r * nb * 16, x, in);
			CHECK(memcmp(&got, &want, sizeof got) == 0);
		}
	}
	for (int level = 0; level <= ouro_cpu_level(); level++)   /* rows by fours, any range */
		for (int64_t b = 0; b < 4 && b < out; b++) {
			memset(y, 0, (size_t)out * sizeof *y);
			ouro_q4_matvec_rows(level, &w, x, y, b, out);
			for (int64_t r = b; r < out; r++) {
				float want = dot_ref(wd + r * in, x, in);
				CHECK(memcmp(&y[r], &want, sizeof want) == 0);
			}
		}
	float *x6 = malloc(6 * sizeof(float) * (size_t)in), *y6 = malloc(6 * sizeof(float) * (size_t)out);
	for (int64_t i = 0; i < 6 * in; i++)
		x6[i] = i < in ? x[i] : (float)((i * 7919 % 1000) - 500) / 250.0f;
	for (int threads = 1; threads <= 3; threads++) {
		ouro_set_threads(threads);
		ouro_matmul(y, x, &w, 1, NULL);
		for (int64_t r = 0; r < out; r++) {
			float want = dot_ref(wd + r * in, x, in);
			CHECK(memcmp(&y[r], &want, sizeof want) == 0);
		}
		for (int64_t rows = 2; rows <= 6; rows++) {   /* x by fours, and the rest */
			ouro_matmul(y6, x6, &w, rows, NULL);
			for (int64_t i = 0; i < rows; i++)
				for (int64_t r = 0; r < out; r++) {
					float want = dot_ref(wd + r * in, x6 + i * in, in);
					CHECK(memcmp(&y6[i * out + r], &want, sizeof want) == 0);
				}
		}
	}
	free(x6);
	free(y6);
	free(wf);
	free(wq);
	free(wd);
	free(x);
	free(y);
	free(q);
	free(h);
	free(q2);
	free(h2);
}

int main(void)
{
	static const int64_t widths[] = {1, 5, 16, 31, 32, 33, 100, 255, 256, 257, 511, 688, 1000, 2065};
	uint64_t seed = 1;

	for (size_t i = 0; i < sizeof widths / sizeof *widths; i++)
		for (int kind = 0; kind < 6; kind++)
			check_rows(kind == 0 ? 67 : 5, widths[i], kind, seed++);
	check_rows(300, 2048, 0, seed++);   /* enough for ouro_matvec's threads */
	printf("q4: CPU level %d; quantization error (normal rows) at most %.4f relative, "
	       "at most %.3f of the range grid's; dot products within %.2g of float64\n",
	       ouro_cpu_level(), max_qerr, max_ratio, max_err);
	return unit_done("test_q4");
}
