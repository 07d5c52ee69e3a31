/*
 * matvec.c - y = W x for one vector, reading W in its stored dtype.
 *
 * Decoding one token is bound by how fast the weights stream from memory,
 * so W is never widened into a buffer: each row is converted in registers
 * (BF16 and F16 to float exactly; q8_0 blocks of 32 int8 summed, then
 * scaled) and multiplied in float32 with fused multiply-adds; q4 rows go
 * to the kernels of q4.c. The widest vector unit the CPU has is chosen
 * once, at run time: AVX-512F, else AVX2 with FMA and F16C, else portable
 * C. Rows are split across the library's threads; each row's sum is
 * computed by one thread in a fixed order, so the result does not depend
 * on the thread count.
 */
#include <cpuid.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef float (*dot_fn)(const void *w, const float *x, int64_t n);
/* q8_0: w is int8 [n], scale [n/32] F16 (any alignment) */
typedef float (*dotq_fn)(const void *w, const void *scale, const float *x, int64_t n);

static float load(const char *w, int64_t i, enum ouro_dtype dt)
{
	float f;

	ouro_to_f32(&f, w + (size_t)i * ouro_dtype_size(dt), dt, 1);
	return f;
}

#define PORTABLE(name, dt)                                             \
	static float name(const void *w, const float *x, int64_t n)    \
	{                                                              \
		float s = 0;                                           \
		for (int64_t i = 0; i < n; i++)                        \
			s += load(w, i, dt) * x[i];                    \
		return s;                                              \
	}
PORTABLE(dot_f32_c, OURO_F32)
PORTABLE(dot_bf16_c, OURO_BF16)
PORTABLE(dot_f16_c, OURO_F16)

static float dot_q8_c(const void *w, const void *scale, const float *x, int64_t n)
{
	const int8_t *q = w;
	float s = 0;

	for (int64_t b = 0; b < n / OURO_Q8_BLOCK; b++) {
		float t = 0, d;
		for (int i = 0; i < OURO_Q8_BLOCK; i++)
			t += (float)q[b * OURO_Q8_BLOCK + i] * x[b * OURO_Q8_BLOCK + i];
		ouro_to_f32(&d, (const char *)scale + 2 * b, OURO_F16, 1);
		s += t * d;
	}
	return s;
}

/* The scales of blocks b.. of a row, at most `width` of them, into sc:
 * F16 widened by cvt (exactly) when a whole vector's worth is left. */
#define SCALES(sc, scale, b, nb, width, cvt)                                   \
	do {                                                                   \
		if ((nb) - (b) >= (width))                                     \
			cvt;                                                   \
		else                                                           \
			ouro_to_f32(sc, (const char *)(scale) + 2 * (b), OURO_F16, (size_t)((nb) - (b))); \
	} while (0)

/* ---- AVX-512F: 16 floats a vector, two accumulators ---------------- */

/* How far ahead of its loads a kernel asks for the weights, in bytes: the
 * hardware prefetchers stop at every 4 KiB page, and with two threads
 * decoding, waiting for the next page was most of the time. On the
 * Ouro-1.4B shapes, 2 threads: BF16 2.07 -> 2.56 tokens/s mapped, 2.85
 * read in; q8_0 2.10 -> 3.28 (1024: 2.02 and 3.17; 16384: 2.33). */
#define PREFETCH 4096

#define T512 __attribute__((target("avx512f")))

T512 static __m512 bf16x16(const char *p)
{
	__m256i h = _mm256_loadu_si256((const __m256i *)(const void *)p);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

T512 static __m512 f16x16(const char *p)
{
	return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
}

T512 static __m512 f32x16(const char *p)
{
	return _mm512_loadu_ps((const void *)p);
}

#define AVX512(name, conv, esize, dt)                                          \
	T512 static float name(const void *w, const float *x, int64_t n)       \
	{                                                                      \
		const char *p = w;                                             \
		__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();     \
		int64_t i = 0;                                                 \
		for (; i + 32 <= n; i += 32) {                                 \
			_mm_prefetch(p + i * esize + PREFETCH, _MM_HINT_T0);   \
			if (esize == 4)                                        \
				_mm_prefetch(p + i * esize + PREFETCH + 64, _MM_HINT_T0); \
			a0 = _mm512_fmadd_ps(conv(p + i * esize), _mm512_loadu_ps(x + i), a0); \
			a1 = _mm512_fmadd_ps(conv(p + (i + 16) * esize), _mm512_loadu_ps(x + i + 16), a1); \
		}                                                              \
		for (; i + 16 <= n; i += 16)                                   \
			a0 = _mm512_fmadd_ps(conv(p + i * esize), _mm512_loadu_ps(x + i), a0); \
		float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));         \
		for (; i < n; i++)                                             \
			s += load(p, i, dt) * x[i];                            \
		return s;                                                      \
	}
AVX512(dot_bf16_avx512, bf16x16, 2, OURO_BF16)
AVX512(dot_f16_avx512, f16x16, 2, OURO_F16)
AVX512(dot_f32_avx512, f32x16, 4, OURO_F32)

/* BF16 rows against x rearranged by split_x: each 64-byte load of W
 * holds 32 weights, the even ones in the low halves of its 16 lanes and
 * the odd ones in the high halves, so a shift and a mask make them
 * floats without any shuffle. */
T512 static float dot_bf16_split_avx512(const void *w, const float *xs, const float *x, int64_t n)
{
	const char *p = w;
	const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	int64_t i = 0;

	for (; i + 32 <= n; i += 32) {
		_mm_prefetch(p + i * 2 + PREFETCH, _MM_HINT_T0);
		__m512i v = _mm512_loadu_si512((const void *)(p + i * 2));
		a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)),
				     _mm512_loadu_ps(xs + i), a0);
		a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, hi)),
				     _mm512_loadu_ps(xs + i + 16), a1);
	}
	float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
	for (; i < n; i++)
		s += load(p, i, OURO_BF16) * x[i];
	return s;
}

/* xs [n]: x with each whole block of 32 as its 16 even elements, then its
 * 16 odd ones (the order dot_bf16_split_avx512 reads them in). */
static void split_x(float *xs, const float *x, int64_t n)
{
	for (int64_t b = 0; b + 32 <= n; b += 32)
		for (int i = 0; i < 16; i++) {
			xs[b + i] = x[b + 2 * i];
			xs[b + 16 + i] = x[b + 2 * i + 1];
		}
}

T512 static __m512 i8x16(const char *p)
{
	__m128i b = _mm_loadu_si128((const __m128i *)(const void *)p);
	return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

/* Per block: the 32 products summed in a vector, then scaled once; the
 * F16 scales are widened 16 at a time. */
T512 static float dot_q8_avx512(const void *w, const void *scale, const float *x, int64_t n)
{
	const char *p = w;
	__m512 acc = _mm512_setzero_ps();
	float sc[16];
	int64_t nb = n / OURO_Q8_BLOCK;

	for (int64_t b = 0; b < nb; b++) {
		const char *q = p + b * OURO_Q8_BLOCK;
		const float *xb = x + b * OURO_Q8_BLOCK;
		if (b % 16 == 0)
			SCALES(sc, scale, b, nb, 16, _mm512_storeu_ps(sc, _mm512_cvtph_ps(
				_mm256_loadu_si256((const __m256i *)(const void *)((const char *)scale + 2 * b)))));
		if (b % 2 == 0)
			_mm_prefetch(q + PREFETCH, _MM_HINT_T0);
		__m512 t = _mm512_mul_ps(i8x16(q), _mm512_loadu_ps(xb));
		t = _mm512_fmadd_ps(i8x16(q + 16), _mm512_loadu_ps(xb + 16), t);
		acc = _mm512_fmadd_ps(t, _mm512_set1_ps(sc[b % 16]), acc);
	}
	return _mm512_reduce_add_ps(acc);
}

/* ---- AVX2 + FMA + F16C: 8 floats a vector -------------------------- */

#define T256 __attribute__((target("avx2,fma,f16c")))

T256 static __m256 bf16x8(const char *p)
{
	__m128i h = _mm_loadu_si128((const __m128i *)(const void *)p);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

T256 static __m256 f16x8(const char *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p));
}

T256 static __m256 f32x8(const char *p)
{
	return _mm256_loadu_ps((const void *)p);
}

T256 static float hsum256(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
	return _mm_cvtss_f32(s);
}

#define AVX2(name, conv, esize, dt)                                            \
	T256 static float name(const void *w, const float *x, int64_t n)       \
	{                                                                      \
		const char *p = w;                                             \
		__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();     \
		int64_t i = 0;                                                 \
		for (; i + 16 <= n; i += 16) {                                 \
			if (i * esize % 64 == 0)                               \
				_mm_prefetch(p + i * esize + PREFETCH, _MM_HINT_T0); \
			a0 = _mm256_fmadd_ps(conv(p + i * esize), _mm256_loadu_ps(x + i), a0); \
			a1 = _mm256_fmadd_ps(conv(p + (i + 8) * esize), _mm256_loadu_ps(x + i + 8), a1); \
		}                                                              \
		for (; i + 8 <= n; i += 8)                                     \
			a0 = _mm256_fmadd_ps(conv(p + i * esize), _mm256_loadu_ps(x + i), a0); \
		float s = hsum256(_mm256_add_ps(a0, a1));                      \
		for (; i < n; i++)                                             \
			s += load(p, i, dt) * x[i];                            \
		return s;                                                      \
	}
AVX2(dot_bf16_avx2, bf16x8, 2, OURO_BF16)
AVX2(dot_f16_avx2, f16x8, 2, OURO_F16)
AVX2(dot_f32_avx2, f32x8, 4, OURO_F32)

T256 static __m256 i8x8(const char *p)
{
	__m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);
	return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

T256 static float dot_q8_avx2(const void *w, const void *scale, const float *x, int64_t n)
{
	const char *p = w;
	__m256 acc = _mm256_setzero_ps();
	float sc[8];
	int64_t nb = n / OURO_Q8_BLOCK;

	for (int64_t b = 0; b < nb; b++) {
		const char *q = p + b * OURO_Q8_BLOCK;
		const float *xb = x + b * OURO_Q8_BLOCK;
		if (b % 8 == 0)
			SCALES(sc, scale, b, nb, 8, _mm256_storeu_ps(sc, _mm256_cvtph_ps(
				_mm_loadu_si128((const __m128i *)(const void *)((const char *)scale + 2 * b)))));
		if (b % 2 == 0)
			_mm_prefetch(q + PREFETCH, _MM_HINT_T0);
		__m256 t = _mm256_mul_ps(i8x8(q), _mm256_loadu_ps(xb));
		t = _mm256_fmadd_ps(i8x8(q + 8), _mm256_loadu_ps(xb + 8), t);
		t = _mm256_fmadd_ps(i8x8(q + 16), _mm256_loadu_ps(xb + 16), t);
		t = _mm256_fmadd_ps(i8x8(q + 24), _mm256_loadu_ps(xb + 24), t);
		acc = _mm256_fmadd_ps(t, _mm256_set1_ps(sc[b % 8]), acc);
	}
	return hsum256(acc);
}

/* ---- dispatch ------------------------------------------------------- */

int ouro_cpu_level(void)
{
	static int level = -1;   /* 2: AVX-512F, 1: AVX2, 0: portable */

	if (level < 0) {
		__builtin_cpu_init();
		/* F16C from CPUID itself: clang before 16 does not know
		 * __builtin_cpu_supports("f16c") */
		unsigned a, b, c, d;
		int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
		level = __builtin_cpu_supports("avx512f") ? 2
			: __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c ? 1 : 0;
	}
	return level;
}

static dot_fn pick(enum ouro_dtype dt)
{
	static const dot_fn table[3][3] = {
		{dot_f32_c, dot_bf16_c, dot_f16_c},
		{dot_f32_avx2, dot_bf16_avx2, dot_f16_avx2},
		{dot_f32_avx512, dot_bf16_avx512, dot_f16_avx512},
	};

	return table[ouro_cpu_level()][dt == OURO_F32 ? 0 : dt == OURO_BF16 ? 1 : 2];
}

static dotq_fn pick_q8(void)
{
	static const dotq_fn table[3] = {dot_q8_c, dot_q8_avx2, dot_q8_avx512};

	return table[ouro_cpu_level()];
}

struct job {
	float *y;              /* [out] */
	const float *x;        /* [in] */
	const float *xs;       /* [in] x split for dot_bf16_split_avx512, or NULL */
	const struct ouro_weight *w;
	size_t row_bytes;
	dot_fn dot;
	dotq_fn dotq;          /* q8_0 */
};

static void rows(void *ctx, int64_t begin, int64_t end)
{
	const struct job *j = ctx;
	const char *data = j->w->t->data;
	int64_t in = j->w->in, nb = in / OURO_Q8_BLOCK;

	if (j->w->q4) {
		ouro_q4_matvec_rows(-1, j->w, j->x, j->y, begin, end);
		return;
	}
	for (int64_t r = begin; r < end; r++) {
		if (j->xs) {
			j->y[r] = dot_bf16_split_avx512(data + (size_t)r * j->row_bytes, j->xs, j->x, in);
			continue;
		}
		if (!j->dotq) {
			j->y[r] = j->dot(data + (size_t)r * j->row_bytes, j->x, in);
			continue;
		}
		j->y[r] = j->dotq(data + (size_t)r * j->row_bytes,
				  (const char *)j->w->scale->data + (size_t)(r * nb) * 2, j->x, in);
	}
}

void ouro_matvec(float *y, const float *x, const struct ouro_weight *w)
{
	struct job j = {
		.y = y, .x = x, .w = w,
		.row_bytes = (size_t)w->in * ouro_dtype_size(w->t->dtype),
		.dot = w->scale ? NULL : pick(w->t->dtype),
		.dotq = w->scale ? pick_q8() : NULL,
	};

	float *xs = NULL;

	/* BF16 on AVX-512: x rearranged once for the shuffle-free kernel (when
	 * the few KiB cannot be had, the plain kernel does the same sums) */
	if (!w->scale && w->t->dtype == OURO_BF16 && ouro_cpu_level() == 2 && w->in >= 32 &&
	    (xs = malloc((size_t)w->in * sizeof *xs))) {
		split_x(xs, x, w->in);
		j.xs = xs;
	}
	/* small matrices are not worth waking the threads for */
	if (w->out * w->in < (1 << 16))
		rows(&j, 0, w->out);
	else
		ouro_parallel(rows, &j, w->out);
	free(xs);
}
