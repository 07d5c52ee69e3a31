/*
 * q4.c - q4 weights: 4-bit values in super-blocks of 256 along a row,
 * 144 bytes per 256 weights (4.5 bits a weight, 0.5625 bytes, against 2
 * in BF16): the quantizer, the exact widener and the decode dot kernels.
 *
 * A row of `in` weights is cut into ceil(in/256) super-blocks (the last
 * padded with zero nibbles), each of 8 sub-blocks of 32. Sub-block j of a
 * super-block has a scale ds = d * sc[j] and a minimum ms = dmin * mn[j],
 * where d and dmin are F16 per super-block and sc, mn 6-bit integers, and
 * its weight i is q * ds - ms with q its 4-bit value. ds and ms are exact
 * in float (11 + 6 significant bits) and so is q * ds (21 bits), so a
 * weight widens with one rounding, the same with or without a fused
 * multiply-add: every kernel here sees the same float weights.
 *
 * Stored per row, in two U8 tensors:
 *   NAME.q4        [out, nsb*128]  sub-block j's 32 values in bytes
 *                                   16j..16j+15: weight i < 16 in the low
 *                                   nibble of byte i, weight 16 + i in its
 *                                   high nibble
 *   NAME.q4_scale  [out, nsb*16]   per super-block: d (F16, little-endian)
 *                                   in bytes 0-1, dmin in 2-3; byte 4 + j
 *                                   holds sc[j] in its low 6 bits and the
 *                                   low 2 bits of mn[j] above them, byte
 *                                   12 + j/2 the high 4 bits of mn[j] in
 *                                   its low (j even) or high nibble.
 *
 * The quantizer minimises the squared error: per sub-block it tries a grid
 * of scales, fits scale and minimum to each candidate's values by least
 * squares, and keeps the best; then d and dmin are the largest scale and
 * minimum over 63 (in F16), and each sub-block's sc and mn are chosen
 * among the nearest integers +-1 by the error of the values they give. It
 * is deterministic: each row depends on that row alone.
 *
 * Dot products (decode): a row's sum is kept in 64 lanes; weight i of
 * sub-block k goes to lane (k mod 2) * 32 + i, accumulated with fused
 * multiply-adds in the order of k, and the lanes are then added pairwise
 * (lane l + lane l+32, then l + l+16, ... down to one). The AVX-512
 * kernel widens 16 weights with one permute of a 16-entry table of its
 * sub-block's values and takes rows four at a time, which share the
 * loads of x (on 2048-wide rows held in cache, about 20 Gweights/s a core,
 * against 18 for two rows, 16 for one and 8 for one with the headers
 * decoded in scalar code). It reads the headers of a super-block's four
 * rows first and then runs its eight sub-blocks unrolled (11.2 against
 * 10.9 GB/s, one thread, 1024-wide layers in the L3 cache). At 8 vector
 * operations per 32 weights of a row it is bound by the vector units, not
 * by memory; building the table in one fused operation instead of two, or
 * widening half the weights by conversion, was slower. Several rows of x
 * (sequences decoded together) go through a chunk of W that stays in the
 * L2 cache, and on AVX-512 up to four of them through each row of W at
 * once, sharing the widening of its weights. The AVX2 kernel
 * widens by conversion; the portable one does the same arithmetic with
 * fmaf, so all three give the same bits, and so do the wideners for
 * longer inputs.
 */
#include <math.h>
#include <string.h>

#include "internal.h"

#if OURO_X86
#include <immintrin.h>
#endif

#define SUB 32                        /* weights per sub-block */
#define NSUB (OURO_Q4_BLOCK / SUB)    /* sub-blocks per super-block: 8 */
#define QMAX 15                       /* largest 4-bit value */
#define SMAX 63                       /* largest 6-bit scale or minimum */
#define LANES 64

int64_t ouro_q4_blocks(int64_t in)
{
	return (in + OURO_Q4_BLOCK - 1) / OURO_Q4_BLOCK;
}

/* The F16 at p (little-endian), exactly. */
__attribute__((always_inline)) static inline float half(const uint8_t *p)
{
	uint32_t h = (uint32_t)p[0] | (uint32_t)p[1] << 8, u;
	uint32_t sign = (h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	float f;

	if (exp == 0) {
		f = (float)man * 0x1p-24f;
		return sign ? -f : f;
	}
	u = sign | (exp == 31 ? 0x7f800000 | man << 13 : (exp + 112) << 23 | man << 13);
	memcpy(&f, &u, sizeof f);
	return f;
}

/* The 8 sub-block scales and minima of the super-block header h [16]. */
__attribute__((always_inline)) static inline void scales(const uint8_t *h, float ds[NSUB], float ms[NSUB])
{
	float d = half(h), dmin = half(h + 2);

	for (int j = 0; j < NSUB; j++) {
		int sc = h[4 + j] & 63;
		int mn = h[4 + j] >> 6 | ((h[12 + j / 2] >> 4 * (j & 1)) & 15) << 2;
		ds[j] = d * (float)sc;
		ms[j] = dmin * (float)mn;
	}
}

/* The 4-bit value of weight j of sub-block k of a row's values q. */
static inline int value(const uint8_t *q, int64_t k, int j)
{
	return j < 16 ? q[k * 16 + j] & 15 : q[k * 16 + j - 16] >> 4;
}

/* ---- quantizing --------------------------------------------------------- */

static uint16_t to_half(float f)
{
	uint16_t h;

	ouro_from_f32(&h, &f, OURO_F16, 1);
	return h;
}

/* v rounded to the nearest integer (halves up) and clamped to [0, top];
 * NaN gives 0. */
static int clampi(float v, int top)
{
	return v >= (float)top ? top : v > 0 ? (int)(v + 0.5f) : 0;
}

/* Squared error of x [n] quantized with scale s and minimum m, the
 * values q = round((x + m) / s) in 0..15 (0 where s is 0) going to q[] when it is given. */
static float sse(const float *x, int n, float s, float m, uint8_t *q)
{
	float e = 0, inv = s > 0 ? 1 / s : 0;

	for (int i = 0; i < n; i++) {
		int v = clampi((x[i] + m) * inv, QMAX);
		float r = (float)v * s - m - x[i];
		e += r * r;
		if (q)
			q[i] = (uint8_t)v;
	}
	return e;
}

/* The scale *s and minimum *m (weight = q * s - m, m >= 0) that quantize
 * x [n] with the least squared error found: the range's own grid, and
 * least-squares fits to the values of 21 grids around it. */
static void fit(const float *x, int n, float *s, float *m)
{
	float lo = 0, hi = x[0];

	for (int i = 0; i < n; i++) {
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
	}
	*s = (hi - lo) / QMAX;
	*m = -lo;
	if (!(hi > lo))
		return;
	float best = sse(x, n, *s, *m, NULL);
	for (int step = 0; step <= 20; step++) {
		float iscale = (QMAX - 1 + 0.1f * (float)step) / (hi - lo);
		float sq = 0, sqq = 0, sx = 0, sqx = 0;

		for (int i = 0; i < n; i++) {
			float q = (float)clampi((x[i] - lo) * iscale, QMAX);
			sq += q;
			sqq += q * q;
			sx += x[i];
			sqx += q * x[i];
		}
		double det = n * (double)sqq - (double)sq * sq, a, b;   /* weight ~ a * q + b */
		if (det <= 0)
			continue;
		a = (n * (double)sqx - (double)sq * sx) / det;
		b = ((double)sqq * sx - (double)sq * sqx) / det;
		if (b > 0) {                /* the minimum may not be negative */
			b = 0;
			a = sqx / sqq;
		}
		if (!(a > 0))
			continue;
		float e = sse(x, n, (float)a, (float)-b, NULL);
		if (e < best) {
			best = e;
			*s = (float)a;
			*m = (float)-b;
		}
	}
}

void ouro_q4_quantize(const float *w, int64_t in, uint8_t *q, uint8_t *h)
{
	for (int64_t b = 0; b < ouro_q4_blocks(in); b++) {
		const float *x = w + b * OURO_Q4_BLOCK;
		int64_t left = in - b * OURO_Q4_BLOCK;
		int n = left < OURO_Q4_BLOCK ? (int)left : OURO_Q4_BLOCK;
		uint8_t *qb = q + b * OURO_Q4_QBYTES, *hb = h + b * OURO_Q4_HBYTES;
		float s[NSUB] = {0}, m[NSUB] = {0}, smax = 0, mmax = 0;
		uint8_t vals[OURO_Q4_BLOCK] = {0};

		for (int j = 0; j < NSUB && j * SUB < n; j++) {
			fit(x + j * SUB, n - j * SUB < SUB ? n - j * SUB : SUB, &s[j], &m[j]);
			smax = s[j] > smax ? s[j] : smax;
			mmax = m[j] > mmax ? m[j] : mmax;
		}
		/* d, dmin in F16, the largest finite one where they would overflow */
		uint16_t hd = to_half(fminf(smax / SMAX, 65504.0f)), hm = to_half(fminf(mmax / SMAX, 65504.0f));
		memset(hb, 0, OURO_Q4_HBYTES);
		memcpy(hb, (uint8_t[4]){(uint8_t)hd, (uint8_t)(hd >> 8), (uint8_t)hm, (uint8_t)(hm >> 8)}, 4);
		float d = half(hb), dmin = half(hb + 2);
		for (int j = 0; j < NSUB && j * SUB < n; j++) {
			int cnt = n - j * SUB < SUB ? n - j * SUB : SUB;
			int sc0 = d > 0 ? clampi(s[j] / d, SMAX) : 0, mn0 = dmin > 0 ? clampi(m[j] / dmin, SMAX) : 0;
			int sc = sc0, mn = mn0;
			float best = -1;

			for (int i = -1; i <= 1; i++)
				for (int l = -1; l <= 1; l++) {
					int a = sc0 + i, c = mn0 + l;
					if (a < 0 || a > SMAX || c < 0 || c > SMAX)
						continue;
					float e = sse(x + j * SUB, cnt, d * (float)a, dmin * (float)c, NULL);
					if (best < 0 || e < best) {
						best = e;
						sc = a;
						mn = c;
					}
				}
			sse(x + j * SUB, cnt, d * (float)sc, dmin * (float)mn, vals + j * SUB);
			hb[4 + j] = (uint8_t)(sc | (mn & 3) << 6);
			hb[12 + j / 2] |= (uint8_t)((mn >> 2) << 4 * (j & 1));
		}
		for (int j = 0; j < NSUB; j++)
			for (int i = 0; i < SUB / 2; i++)
				qb[j * 16 + i] = (uint8_t)(vals[j * SUB + i] | vals[j * SUB + 16 + i] << 4);
	}
}

/* ---- widening ----------------------------------------------------------- */

/* Row (q, h) widened into y [in], in plain C. */
static void widen_c(const uint8_t *q, const uint8_t *h, float *y, int64_t in)
{
	float ds[NSUB], ms[NSUB];

	for (int64_t k = 0; k * SUB < in; k++) {
		int n = in - k * SUB < SUB ? (int)(in - k * SUB) : SUB;
		if (k % NSUB == 0)
			scales(h + k / NSUB * OURO_Q4_HBYTES, ds, ms);
		for (int j = 0; j < n; j++)
			y[k * SUB + j] = (float)value(q, k, j) * ds[k % NSUB] - ms[k % NSUB];
	}
}

/* ---- dot products ------------------------------------------------------- */

static float dot_c(const uint8_t *q, const uint8_t *h, const float *x, int64_t in)
{
	float acc[LANES] = {0}, ds[NSUB], ms[NSUB];

	for (int64_t k = 0; k * SUB < in; k++) {
		int n = in - k * SUB < SUB ? (int)(in - k * SUB) : SUB;
		if (k % NSUB == 0)
			scales(h + k / NSUB * OURO_Q4_HBYTES, ds, ms);
		for (int j = 0; j < n; j++) {
			float wv = (float)value(q, k, j) * ds[k % NSUB] - ms[k % NSUB];
			float *a = &acc[(k & 1) * SUB + j];
			*a = fmaf(wv, x[k * SUB + j], *a);
		}
	}
	for (int n = LANES / 2; n >= 1; n /= 2)
		for (int l = 0; l < n; l++)
			acc[l] += acc[l + n];
	return acc[0];
}

#if OURO_X86
/* How far ahead each row's values are asked for, in bytes; the headers
 * the same distance ahead in weights. With four rows in flight, twice
 * matvec.c's distance: Ouro-1.4B shapes, weights read in, 2 threads, 5.3
 * tokens/s at 4096, 6.1-6.3 at 8192, 5.8-6.2 at 16384, 4.6-4.8 at 2048. */
#define PREFETCH 8192

#define T256 __attribute__((target("avx2,fma,f16c")))
#define T512 __attribute__((target("avx512f,avx2,fma,f16c")))

/* scales() in vector registers (the same products, so the same bits):
 * the 8 scales into ds and the 8 minima into ms. */
T256 __attribute__((always_inline)) static inline void scales8(const uint8_t *h, float ds[NSUB],
								  float ms[NSUB])
{
	const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)h);
	const __m128 dd = _mm_cvtph_ps(b);                             /* d, dmin */
	__m256i lo = _mm256_cvtepu8_epi32(_mm_srli_si128(b, 4));       /* bytes 4 + j */
	__m256i hi = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(              /* bytes 12 + j/2 */
		b, _mm_setr_epi8(12, 12, 13, 13, 14, 14, 15, 15, 0, 0, 0, 0, 0, 0, 0, 0)));
	hi = _mm256_and_si256(_mm256_srlv_epi32(hi, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4)),
			      _mm256_set1_epi32(15));
	__m256i sc = _mm256_and_si256(lo, _mm256_set1_epi32(63));
	__m256i mn = _mm256_or_si256(_mm256_srli_epi32(lo, 6), _mm256_slli_epi32(hi, 2));

	_mm256_storeu_ps(ds, _mm256_mul_ps(_mm256_broadcastss_ps(dd), _mm256_cvtepi32_ps(sc)));
	_mm256_storeu_ps(ms, _mm256_mul_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
					   _mm256_cvtepi32_ps(mn)));
}

/* ---- AVX-512F: rows four at a time, sharing the loads of x ----------- */

/* The table of sub-block j's 16 weights: v * ds - ms for v = 0..15. */
#define TABLE(ds, ms, j) \
	_mm512_sub_ps(_mm512_mul_ps(iota, _mm512_set1_ps((ds)[j])), _mm512_set1_ps((ms)[j]))

/* Sub-block k of the row (q, ds, ms) into the lanes lo (its weights 0-15)
 * and hi (16-31), lanes past `in` left alone (masks ml, mh; xl, xh are
 * x's 32 elements there): the values' bytes widen to int32 lanes whose
 * low 4 bits, all the permute reads, are weights 0..15, and after a shift
 * weights 16..31. Accumulators are named variables so that they stay in
 * registers. */
#define STEP512(q, ds, ms, k, lo, hi, ml, mh, xl, xh)                                           \
	do {                                                                                   \
		__m512 t_ = TABLE(ds, ms, (k) % NSUB);                                          \
		__m512i v_ = _mm512_cvtepu8_epi32(                                              \
			_mm_loadu_si128((const __m128i *)(const void *)((q) + (k) * 16)));       \
		lo = _mm512_mask3_fmadd_ps(_mm512_permutexvar_ps(v_, t_), xl, lo, ml);          \
		hi = _mm512_mask3_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v_, 4), t_), \
					   xh, hi, mh);                                         \
	} while (0)

/* The pairwise sum of 64 lanes a0..a3 (lanes 0-15, ..., 48-63). */
T512 static inline float lanes512(__m512 a0, __m512 a1, __m512 a2, __m512 a3)
{
	__m512 s = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3));
	__m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(s),
				  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
	__m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
	__m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
	return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* Sub-block k of the n rows into their lanes: lo and hi of row 0 in
 * a*, of row 1 in b*, 2 in c*, 3 in d* (P is 0 for an even k, 2 for an
 * odd one: a0/a1 or a2/a3). */
#define STEPS512(k, P, ml, mh, xl, xh)                                                          \
	do {                                                                                   \
		STEP512(q[0], ds[0], ms[0], k, a##P, a##P##1, ml, mh, xl, xh);                    \
		if (n > 1)                                                                     \
			STEP512(q[1], ds[1], ms[1], k, b##P, b##P##1, ml, mh, xl, xh);            \
		if (n > 2) {                                                                   \
			STEP512(q[2], ds[2], ms[2], k, c##P, c##P##1, ml, mh, xl, xh);            \
			STEP512(q[3], ds[3], ms[3], k, d##P, d##P##1, ml, mh, xl, xh);            \
		}                                                                              \
	} while (0)

/* y[r] = row (q[r], h[r]) . x for r < n, n 1, 2 or 4 (a constant where
 * inlined): the rows share the loads of x, each is summed as alone. */
T512 __attribute__((always_inline)) static inline void rows512(
	const uint8_t *const q[4], const uint8_t *const h[4], const float *x, int64_t in, float *y,
	const int n)
{
	const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const __mmask16 all = 0xffff;
	/* lanes 0-15, 16-31 (even sub-blocks: *0, *01), 32-47, 48-63 (odd: *2, *21) */
	__m512 a0 = _mm512_setzero_ps(), a01 = a0, a2 = a0, a21 = a0, b0 = a0, b01 = a0, b2 = a0,
	       b21 = a0, c0 = a0, c01 = a0, c2 = a0, c21 = a0, d0 = a0, d01 = a0, d2 = a0, d21 = a0;
	float ds[4][NSUB], ms[4][NSUB];
	int64_t full = in / SUB, k = 0;

	/* whole super-blocks: the headers of all n rows first, then the 8
	 * sub-blocks unrolled, so that nothing but the steps is left inside */
	for (; k + NSUB <= full; k += NSUB) {
		for (int r = 0; r < n; r++) {
			const char *qa = (const char *)q[r] + k * 16 + PREFETCH;
			scales8(h[r] + k / NSUB * OURO_Q4_HBYTES, ds[r], ms[r]);
			OURO_PREFETCH((const char *)h[r] + k / NSUB * OURO_Q4_HBYTES + PREFETCH / 8);
			OURO_PREFETCH(qa);
			OURO_PREFETCH(qa + 64);
		}
		_Pragma("GCC unroll 4")
		for (int j = 0; j < NSUB; j += 2) {
			const float *xk = x + (k + j) * SUB;
			__m512 x0 = _mm512_loadu_ps(xk), x1 = _mm512_loadu_ps(xk + 16);
			STEPS512(k + j, 0, all, all, x0, x1);
			x0 = _mm512_loadu_ps(xk + 32);
			x1 = _mm512_loadu_ps(xk + 48);
			STEPS512(k + j + 1, 2, all, all, x0, x1);
		}
	}
	for (; k * SUB < in; k++) {     /* an odd last sub-block, and a partial one */
		int left = in - k * SUB < SUB ? (int)(in - k * SUB) : SUB;
		__mmask16 ml = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
		__mmask16 mh = (__mmask16)(left > 16 ? (1u << (left - 16)) - 1 : 0);
		__m512 xl = _mm512_maskz_loadu_ps(ml, x + k * SUB);
		__m512 xh = mh ? _mm512_maskz_loadu_ps(mh, x + k * SUB + 16) : _mm512_setzero_ps();
		if (k % NSUB == 0)
			for (int r = 0; r < n; r++)
				scales8(h[r] + k / NSUB * OURO_Q4_HBYTES, ds[r], ms[r]);
		if (k & 1)
			STEPS512(k, 2, ml, mh, xl, xh);
		else
			STEPS512(k, 0, ml, mh, xl, xh);
	}
	y[0] = lanes512(a0, a01, a2, a21);
	if (n > 1)
		y[1] = lanes512(b0, b01, b2, b21);
	if (n > 2) {
		y[2] = lanes512(c0, c01, c2, c21);
		y[3] = lanes512(d0, d01, d2, d21);
	}
}

T512 static void dot4_avx512(const uint8_t *const q[4], const uint8_t *const h[4], const float *x,
			     int64_t in, float y[4])
{
	rows512(q, h, x, in, y, 4);
}

T512 static float dot_avx512(const uint8_t *q, const uint8_t *h, const float *x, int64_t in)
{
	const uint8_t *const qs[4] = {q}, *const hs[4] = {h};
	float y;

	rows512(qs, hs, x, in, &y, 1);
	return y;
}

/* Sub-block k of the row (q, ds, ms) into the lanes of the C rows of x
 * (P 0 for an even k, 2 for an odd one), lanes past `in` left alone. */
#define CSTEP512(k, P, ml, mh)                                                                  \
	do {                                                                                   \
		__m512 t_ = TABLE(ds, ms, (k) % NSUB);                                          \
		__m512i v_ = _mm512_cvtepu8_epi32(                                              \
			_mm_loadu_si128((const __m128i *)(const void *)(q + (k) * 16)));         \
		__m512 wl_ = _mm512_permutexvar_ps(v_, t_);                                     \
		__m512 wh_ = _mm512_permutexvar_ps(_mm512_srli_epi32(v_, 4), t_);               \
		_Pragma("GCC unroll 4")                                                        \
		for (int c = 0; c < C; c++) {                                                  \
			const float *xk_ = x + c * in + (k) * SUB;                             \
			a[c][P] = _mm512_mask3_fmadd_ps(wl_, _mm512_maskz_loadu_ps(ml, xk_), a[c][P], ml); \
			a[c][P + 1] = _mm512_mask3_fmadd_ps(wh_, _mm512_maskz_loadu_ps(mh, xk_ + 16), \
							    a[c][P + 1], mh);                  \
		}                                                                              \
	} while (0)

/* y[c * ystride] = row (q, h) . x[c * in] for c < C, C 2, 3 or 4 (a
 * constant where inlined): several rows of x decoded together share the
 * widening of each weight (6 of the 8 vector operations per 32 weights),
 * and each sum is the one rows512 makes for that row of x alone. */
T512 __attribute__((always_inline)) static inline void cols512(
	const uint8_t *q, const uint8_t *h, const float *x, int64_t in, float *y, int64_t ystride,
	const int C)
{
	const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const __mmask16 all = 0xffff;
	__m512 a[4][4];        /* [c]: lanes 0-15, 16-31 (even sub-blocks), 32-47, 48-63 */
	float ds[NSUB], ms[NSUB];
	int64_t full = in / SUB, k = 0;

	_Pragma("GCC unroll 4")
	for (int c = 0; c < C; c++)
		a[c][0] = a[c][1] = a[c][2] = a[c][3] = _mm512_setzero_ps();
	for (; k + 2 <= full; k += 2) {
		if (k % NSUB == 0) {
			scales8(h + k / NSUB * OURO_Q4_HBYTES, ds, ms);
			OURO_PREFETCH((const char *)h + k / NSUB * OURO_Q4_HBYTES + PREFETCH / 8);
		}
		if (k % 4 == 0)
			OURO_PREFETCH((const char *)q + k * 16 + PREFETCH);
		CSTEP512(k, 0, all, all);
		CSTEP512(k + 1, 2, all, all);
	}
	for (; k * SUB < in; k++) {     /* an odd last sub-block, and a partial one */
		int left = in - k * SUB < SUB ? (int)(in - k * SUB) : SUB;
		__mmask16 ml = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
		__mmask16 mh = (__mmask16)(left > 16 ? (1u << (left - 16)) - 1 : 0);
		if (k % NSUB == 0)
			scales8(h + k / NSUB * OURO_Q4_HBYTES, ds, ms);
		if (k & 1)
			CSTEP512(k, 2, ml, mh);
		else
			CSTEP512(k, 0, ml, mh);
	}
	_Pragma("GCC unroll 4")
	for (int c = 0; c < C; c++)
		y[c * ystride] = lanes512(a[c][0], a[c][1], a[c][2], a[c][3]);
}

/* Row (q, h) against the rows x [c, in] of x, c from 1 to 4: y[i *
 * ystride] for row i. */
T512 static void cols_avx512(const uint8_t *q, const uint8_t *h, const float *x, int64_t in,
			     float *y, int64_t ystride, int c)
{
	switch (c) {
	case 4: cols512(q, h, x, in, y, ystride, 4); break;
	case 3: cols512(q, h, x, in, y, ystride, 3); break;
	case 2: cols512(q, h, x, in, y, ystride, 2); break;
	default: *y = dot_avx512(q, h, x, in); break;
	}
}

/* widen_c with the table permutes of the AVX-512 kernel. */
T512 static void widen_avx512(const uint8_t *q, const uint8_t *h, float *y, int64_t in)
{
	const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	float ds[NSUB], ms[NSUB];

	for (int64_t k = 0; k * SUB < in; k++) {
		int left = in - k * SUB < SUB ? (int)(in - k * SUB) : SUB;
		if (k % NSUB == 0)
			scales8(h + k / NSUB * OURO_Q4_HBYTES, ds, ms);
		__m512 t = TABLE(ds, ms, k % NSUB);
		__m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(q + k * 16)));
		_mm512_mask_storeu_ps(y + k * SUB, (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1),
				      _mm512_permutexvar_ps(v, t));
		if (left > 16)
			_mm512_mask_storeu_ps(y + k * SUB + 16, (__mmask16)((1u << (left - 16)) - 1),
					      _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), t));
	}
}

/* ---- AVX2 + FMA + F16C ---------------------------------------------- */

/* Sub-block k into the lanes a[0..3] (8 weights each): the values
 * converted to float and widened with one rounding (q * ds is exact). */
T256 static inline void sub256(__m256 a[4], const uint8_t *q, const float *x, float ds, float ms,
			       int n)
{
	const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)q);
	const __m256i low = _mm256_set1_epi32(15), pos = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
	const __m256 vd = _mm256_set1_ps(ds), vm = _mm256_set1_ps(-ms);
	__m256i v[2] = {_mm256_cvtepu8_epi32(b), _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8))};

	for (int g = 0; g < 4; g++) {
		__m256i u = g < 2 ? _mm256_and_si256(v[g], low) : _mm256_srli_epi32(v[g - 2], 4);
		__m256 wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(u), vd, vm);
		if (n >= SUB) {
			a[g] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + 8 * g), a[g]);
		} else if (8 * g < n) {
			__m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8 * g), pos);
			__m256 f = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x + 8 * g, mask), a[g]);
			a[g] = _mm256_blendv_ps(a[g], f, _mm256_castsi256_ps(mask));
		}
	}
}

T256 static float dot_avx2(const uint8_t *q, const uint8_t *h, const float *x, int64_t in)
{
	__m256 a[8];       /* lanes 8i..8i+7 */
	float ds[NSUB], ms[NSUB];

	for (int i = 0; i < 8; i++)
		a[i] = _mm256_setzero_ps();
	for (int64_t k = 0; k * SUB < in; k++) {
		int n = in - k * SUB < SUB ? (int)(in - k * SUB) : SUB;
		if (k % NSUB == 0) {
			scales8(h + k / NSUB * OURO_Q4_HBYTES, ds, ms);
			OURO_PREFETCH((const char *)h + k / NSUB * OURO_Q4_HBYTES + PREFETCH / 8);
		}
		if (k % 4 == 0)
			OURO_PREFETCH((const char *)q + k * 16 + PREFETCH);
		sub256(a + (k & 1) * 4, q + k * 16, x + k * SUB, ds[k % NSUB], ms[k % NSUB], n);
	}
	__m256 c[4], d0, d1;
	for (int i = 0; i < 4; i++)
		c[i] = _mm256_add_ps(a[i], a[i + 4]);
	d0 = _mm256_add_ps(c[0], c[2]);
	d1 = _mm256_add_ps(c[1], c[3]);
	__m256 s8 = _mm256_add_ps(d0, d1);
	__m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
	__m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
	return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* widen_c with the conversions of the AVX2 kernel. */
T256 static void widen_avx2(const uint8_t *q, const uint8_t *h, float *y, int64_t in)
{
	const __m256i low = _mm256_set1_epi32(15);
	float ds[NSUB], ms[NSUB];

	for (int64_t k = 0; k * SUB < in; k++) {
		int left = in - k * SUB < SUB ? (int)(in - k * SUB) : SUB;
		if (k % NSUB == 0)
			scales8(h + k / NSUB * OURO_Q4_HBYTES, ds, ms);
		if (left < SUB) {      /* the row's last, partial sub-block */
			for (int j = 0; j < left; j++)
				y[k * SUB + j] = (float)value(q, k, j) * ds[k % NSUB] - ms[k % NSUB];
			break;
		}
		const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(q + k * 16));
		const __m256 vd = _mm256_set1_ps(ds[k % NSUB]), vm = _mm256_set1_ps(-ms[k % NSUB]);
		__m256i v[2] = {_mm256_cvtepu8_epi32(b), _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8))};
		for (int g = 0; g < 4; g++) {
			__m256i u = g < 2 ? _mm256_and_si256(v[g], low) : _mm256_srli_epi32(v[g - 2], 4);
			_mm256_storeu_ps(y + k * SUB + 8 * g, _mm256_fmadd_ps(_mm256_cvtepi32_ps(u), vd, vm));
		}
	}
}

#endif /* OURO_X86 */

/* ---- dispatch ------------------------------------------------------- */

void ouro_q4_rows(int level, float *dst, const struct ouro_weight *w, int64_t r0, int64_t r)
{
	static void (*const table[])(const uint8_t *, const uint8_t *, float *, int64_t) = {
#if OURO_X86
		widen_c, widen_avx2, widen_avx512};
#else
		widen_c};   /* ouro_cpu_level() is 0 */
#endif
	int64_t nb = ouro_q4_blocks(w->in), in = w->in;
	const uint8_t *q0 = w->t->data, *h0 = w->scale->data;
	int top = ouro_cpu_level();
	void (*widen)(const uint8_t *, const uint8_t *, float *, int64_t) =
		table[level < 0 || level > top ? top : level];

	for (int64_t row = r0; row < r0 + r; row++)
		widen(q0 + (size_t)(row * nb) * OURO_Q4_QBYTES, h0 + (size_t)(row * nb) * OURO_Q4_HBYTES,
		      dst + (row - r0) * in, in);
}

ouro_q4_dot_fn ouro_q4_dot(int level)
{
#if OURO_X86
	static const ouro_q4_dot_fn table[] = {dot_c, dot_avx2, dot_avx512};
#else
	static const ouro_q4_dot_fn table[] = {dot_c};   /* ouro_cpu_level() is 0 */
#endif
	int top = ouro_cpu_level();

	return table[level < 0 || level > top ? top : level];
}

void ouro_q4_matvec_rows(int level, const struct ouro_weight *w, const float *x, float *y,
			 int64_t begin, int64_t end)
{
	int64_t nb = ouro_q4_blocks(w->in), r = begin;
	const uint8_t *q0 = w->t->data, *h0 = w->scale->data;
	ouro_q4_dot_fn dot = ouro_q4_dot(level);

#if OURO_X86
	if (dot == dot_avx512)
		for (; r + 4 <= end; r += 4) {
			const uint8_t *q[4], *h[4];
			for (int i = 0; i < 4; i++) {
				q[i] = q0 + (size_t)((r + i) * nb) * OURO_Q4_QBYTES;
				h[i] = h0 + (size_t)((r + i) * nb) * OURO_Q4_HBYTES;
			}
			dot4_avx512(q, h, x, w->in, y + r);
		}
#endif
	for (; r < end; r++)
		y[r] = dot(q0 + (size_t)(r * nb) * OURO_Q4_QBYTES, h0 + (size_t)(r * nb) * OURO_Q4_HBYTES,
			   x, w->in);
}

struct q4_job {
	float *y;                  /* [n, out] */
	const float *x;            /* [n, in] */
	const struct ouro_weight *w;
	int64_t n;
};

/* Rows [begin, end) of W against every row of x, a chunk at a time; on
 * AVX-512 each row of W against up to four rows of x at once. */
static void q4_rows_job(void *ctx, int64_t begin, int64_t end)
{
	const struct q4_job *j = ctx;
	const struct ouro_weight *w = j->w;
	int64_t nb = ouro_q4_blocks(w->in), rb = nb * (OURO_Q4_QBYTES + OURO_Q4_HBYTES);
	int64_t chunk = OURO_CHUNK_BYTES / rb / 4 * 4;

	if (chunk < 4)
		chunk = 4;
	for (int64_t c0 = begin; c0 < end; c0 += chunk) {
		int64_t c1 = c0 + chunk < end ? c0 + chunk : end;
#if OURO_X86
		if (j->n > 1 && ouro_q4_dot(-1) == dot_avx512) {
			const uint8_t *q0 = w->t->data, *h0 = w->scale->data;
			for (int64_t i = 0; i < j->n; i += 4)
				for (int64_t r = c0; r < c1; r++)
					cols_avx512(q0 + (size_t)(r * nb) * OURO_Q4_QBYTES,
						    h0 + (size_t)(r * nb) * OURO_Q4_HBYTES,
						    j->x + (size_t)i * (size_t)w->in, w->in,
						    j->y + (size_t)i * (size_t)w->out + r, w->out,
						    j->n - i < 4 ? (int)(j->n - i) : 4);
			continue;
		}
#endif
		for (int64_t i = 0; i < j->n; i++)
			ouro_q4_matvec_rows(-1, w, j->x + (size_t)i * (size_t)w->in,
					    j->y + (size_t)i * (size_t)w->out, c0, c1);
	}
}

void ouro_q4_matmul(float *y, const float *x, const struct ouro_weight *w, int64_t n)
{
	struct q4_job j = {y, x, w, n};

	ouro_parallel(q4_rows_job, &j, w->out);
}
