/*
 * matmul.c - y[n, out] = x[n, in] * W^T with W read in its stored format,
 * for one row of x (decoding) or many (prompts, scoring, batches), with
 * one order of float32 operations per output element: a row of y is the
 * same, bit for bit, whatever n is, whatever the other rows of x are,
 * whatever the thread count, and whichever vector unit runs it.
 *
 * The dot order. y[i][j], the dot product of row j of W with row i of x,
 * is computed so, for every weight format:
 *   - each weight is made an exact float32: F32 as it is, BF16 and F16
 *     widened, q8_0 as q * d, the int8 times its block's F16 scale (at
 *     most 8 x 11 significant bits, so the product is exact);
 *   - the row is cut into blocks of 32; two accumulators of 16 lanes, A0
 *     and A1, start at +0; for each whole block b in order and each lane
 *     l, A0[l] = fma(w[32b+2l], x[32b+2l], A0[l]) and
 *     A1[l] = fma(w[32b+2l+1], x[32b+2l+1], A1[l]): even elements in A0,
 *     odd ones in A1;
 *   - the lanes are summed by a fixed tree: S[l] = A0[l] + A1[l], then
 *     S[l] += S[l+8] for l < 8, S[l] += S[l+4] for l < 4, S[l] += S[l+2]
 *     for l < 2, and s = S[0] + S[1];
 *   - the in % 32 elements after the last whole block follow one by one,
 *     s = fma(w[k], x[k], s).
 * AVX-512F holds A0 and A1 in one register each, AVX2 in two halves each,
 * portable C in arrays updated with fmaf: the three give the same bits.
 * (The even/odd split is what a 64-byte load of 32 BF16 weights gives
 * with a shift and a mask, without shuffles; x is rearranged to match
 * once per product, each whole block as its 16 even then its 16 odd
 * elements, into the caller's scratch.)
 *
 * BF16 products (OURO_MATMUL=bf16 on a CPU with AVX512-BF16 and no AMX;
 * AMX has its own path, amx.c): for BF16-stored matrices x is rounded to
 * BF16 (nearest, ties to even) and one accumulator A of 16 lanes takes,
 * for each whole block b and lane l, the pair w[32b+2l], w[32b+2l+1] times
 * x's pair as VDPBF16PS adds them (exact products, each addition rounded,
 * denormals flushed); then the tree above from S = A, and the tail with
 * fma of the rounded x. Twice the products per instruction, at the
 * precision cost ouro(7) states. Other formats keep the float32 order.
 *
 * The work: rows of W in tiles of R, rows of x in tiles of C, each tile
 * keeping its R x C accumulators in registers for the whole row, weights
 * widened in registers (never a widened copy of W in memory). The rows of
 * W are cut into chunks, small enough to stay in the L2 cache while every
 * tile of x passes over them, and the threads take the next chunk as they
 * become free (so a thread that the system holds up does not hold up the
 * others). Decoding, n = 1, takes one row of W at a time, prefetching the
 * weights 4 KiB ahead of its loads into the L2 cache; its chunks as the
 * threads become free, rather than a fixed share each, made BF16 decode
 * 2.43-2.45 -> 2.52-2.68 tokens/s (Ouro-1.4B shapes, 2 threads, weights
 * read in, interleaved runs on a shared Zen 4; q8_0 2.97 -> 3.10, q4 3.31
 * -> 3.54 with the prefetch hint, medians of 3).
 * Tried and left out, measured on a 2-core Zen 4 shared with other work
 * (bench-kernels matvec, one thread): four BF16 rows side by side, eight
 * independent sums instead of two, ran faster on aligned weights held in
 * the L3 cache (36-48 against 25-34 GB/s) but slower in the decode of the
 * bench's checkpoint, whose tensors start 16 or 18 bytes past a cache line
 * (6.2-7.8 against 4.5-5.1 processor seconds for 8 tokens at T = 4, one
 * thread, 3 runs each); and for q8_0 two sign extensions a block with x
 * in its natural order (the lanes put back in place before the tree)
 * instead of the even/odd split: 19 against 17 GB/s aligned in cache, no
 * faster with the weights 18 bytes past a line nor in that decode.
 *
 * OpenBLAS (before: rows of W widened to float, then sgemm) is no longer
 * used here: sgemm gives no per-row order, and decoding used another one.
 * Per core the float32 kernels run at its rate (82 against 83 GFLOP/s,
 * one thread, processor time, Ouro-1.4B layer shapes, 256 positions); on
 * a machine crowded with other work its smaller cache blocks did better
 * in wall time (these kernels at 0.46 to 0.79 of it over 5 interleaved
 * 512-token prompts), which blocking over k with the accumulators kept in
 * memory between blocks (the same order) would address.
 *
 * A new weight format provides a row loader per vector unit: block b of a
 * row, given the row's data and scale pointers (struct mm's q and s plus
 * b * bytes per block), as 32 exact float32 weights, the even ones in
 * lanes 0-15 of the first vector and the odd ones in the second (ld_*_512:
 * two __m512; ld_*_256: four __m256, even 0-7, even 8-15, odd 0-7, odd
 * 8-15; a case of ld_c: float[32] in natural order), then a line in
 * KERNS512, KERNS256 and the tables of pick().
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if OURO_X86
#include <cpuid.h>
#include <immintrin.h>
#endif

#define BLK 32                 /* the block of the dot order */

enum fmt { F_F32, F_BF16, F_F16, F_Q8, NFMT };

struct mm;
/* Computes the tile y[i0..i0+C) x [r0..r0+R) of a product. */
typedef void (*tile_fn)(const struct mm *m, int64_t r0, int64_t i0);

/* The kernels of one format on one vector unit: R x C tiles and the edge
 * tiles R x 1, 1 x C and 1 x 1. */
struct kern {
	int R, C;
	tile_fn rc, r1, oc, o1;
	int scratch;           /* x read from scratch: 1 rearranged (even/odd),
				* 2 rounded to BF16; 0: x as it is */
	const tile_fn *part;   /* [c]: R x c tiles for the c < C rows of x
				* left over; NULL: an R x 1 tile for each */
};

struct mm {
	float *y;              /* [n, out] */
	const float *x;        /* [n, in] as given */
	float *xs;             /* [n, in] x as the kernels read it */
	uint16_t *xb;          /* BF16 products: [n, in] x rounded */
	const char *q, *s;     /* W's data, and its scales (q8_0) or NULL */
	size_t qrow, srow;     /* bytes per row of each */
	int64_t n, in, out, chunk;
	int64_t next;          /* many rows: the next chunk a thread takes */
	enum fmt f;
	const struct kern *k;
};

static const char *row_q(const struct mm *m, int64_t r)
{
	return m->q + (size_t)r * m->qrow;
}

static const char *row_s(const struct mm *m, int64_t r)
{
	return m->s ? m->s + (size_t)r * m->srow : NULL;
}

static float f16(const char *p)
{
	float f;

	ouro_to_f32(&f, p, OURO_F16, 1);
	return f;
}

/* Weight k of a row as float32 (the tail; q8_0 rows have none). */
static float weight_at(const struct mm *m, const char *q, int64_t k)
{
	static const enum ouro_dtype dt[] = {OURO_F32, OURO_BF16, OURO_F16};
	float f;

	ouro_to_f32(&f, q + (size_t)k * ouro_dtype_size(dt[m->f]), dt[m->f], 1);
	return f;
}

static float tail_of(const struct mm *m, const char *q, const float *x, float s)
{
	for (int64_t k = m->in / BLK * BLK; k < m->in; k++)
		s = fmaf(weight_at(m, q, k), x[k], s);
	return s;
}

/* The elements after the last whole block, when there are any (a call
 * per output element was 2% of a prefill). */
static inline float tail(const struct mm *m, const char *q, const float *x, float s)
{
	return m->in % BLK ? tail_of(m, q, x, s) : s;
}

float ouro_tree16(float *S)
{
	for (int w = 8; w >= 2; w /= 2)
		for (int l = 0; l < w; l++)
			S[l] += S[l + w];
	return S[0] + S[1];
}

/* ---- portable C: the dot order as written -------------------------- */

static void ld_c(const struct mm *m, const char *q, const char *s, int64_t b, float *w)
{
	switch (m->f) {
	case F_F32:
		ouro_to_f32(w, q + b * BLK * 4, OURO_F32, BLK);
		break;
	case F_BF16:
		ouro_to_f32(w, q + b * BLK * 2, OURO_BF16, BLK);
		break;
	case F_F16:
		ouro_to_f32(w, q + b * BLK * 2, OURO_F16, BLK);
		break;
	default: {
		float d = f16(s + 2 * b);
		for (int i = 0; i < BLK; i++)
			w[i] = (float)(int8_t)q[b * BLK + i] * d;
		break;
	}
	}
}

static void k_c(const struct mm *m, int64_t r0, int64_t i0)
{
	const char *q = row_q(m, r0), *s = row_s(m, r0);
	const float *x = m->xs + (size_t)i0 * (size_t)m->in;
	float a0[16] = {0}, a1[16] = {0}, w[BLK], S[16];

	for (int64_t b = 0; b < m->in / BLK; b++) {
		ld_c(m, q, s, b, w);
		for (int l = 0; l < 16; l++) {
			a0[l] = fmaf(w[2 * l], x[b * BLK + 2 * l], a0[l]);
			a1[l] = fmaf(w[2 * l + 1], x[b * BLK + 2 * l + 1], a1[l]);
		}
	}
	for (int l = 0; l < 16; l++)
		S[l] = a0[l] + a1[l];
	m->y[(size_t)i0 * (size_t)m->out + (size_t)r0] = tail(m, q, x, ouro_tree16(S));
}

static const struct kern kern_c = {1, 1, k_c, k_c, k_c, k_c, 0, NULL};

/* x rounded to BF16 as VCVTNE2PS2BF16 rounds it (nearest, ties to even;
 * denormals to zero; NaN made quiet), as a float. */
static float round_bf16(float x)
{
	uint32_t u;

	memcpy(&u, &x, 4);
	if ((u & 0x7f800000u) == 0)
		u &= 0x80000000u;
	else if ((u & 0x7fffffffu) > 0x7f800000u)
		u |= 0x00400000u;
	else
		u += 0x7fffu + ((u >> 16) & 1);
	u &= 0xffff0000u;
	memcpy(&x, &u, 4);
	return x;
}

/* Denormals to zero, as VDPBF16PS treats its inputs and results. */
static float ftz(float v)
{
	return fpclassify(v) == FP_SUBNORMAL ? copysignf(0.0f, v) : v;
}

/* BF16 products in C: what the AVX512-BF16 kernels compute, for CPUs
 * asked to run without them (OURO_CPU) and for a failed allocation. */
static void k_bf_c(const struct mm *m, int64_t r0, int64_t i0)
{
	const char *q = row_q(m, r0);
	const float *x = m->x + (size_t)i0 * (size_t)m->in;
	float a[16] = {0}, w[BLK];

	for (int64_t b = 0; b < m->in / BLK; b++) {
		ld_c(m, q, NULL, b, w);
		for (int l = 0; l < 16; l++) {
			const float *xp = x + b * BLK + 2 * l;
			a[l] = ftz(a[l] + ftz(ftz(w[2 * l + 1]) * round_bf16(xp[1])));
			a[l] = ftz(a[l] + ftz(ftz(w[2 * l]) * round_bf16(xp[0])));
		}
	}
	float s = ouro_tree16(a);
	for (int64_t k = m->in / BLK * BLK; k < m->in; k++)
		s = fmaf(weight_at(m, q, k), round_bf16(x[k]), s);
	m->y[(size_t)i0 * (size_t)m->out + (size_t)r0] = s;
}

static const struct kern kern_bf_c = {1, 1, k_bf_c, k_bf_c, k_bf_c, k_bf_c, 0, NULL};

/* ---- AVX-512F ------------------------------------------------------- */

/* How far ahead of its loads a decoding kernel asks for the weights, in
 * bytes: the hardware prefetchers stop at every 4 KiB page, and with two
 * threads decoding, waiting for the next page was most of the time. */
#define PREFETCH 4096
#define INL __attribute__((always_inline)) inline

/* What to prefetch for the row at q, at byte p of it, in an R-row tile
 * (which reads its R rows side by side): PREFETCH / R bytes further along
 * the row, PREFETCH ahead of the loads in all, else the same distance
 * into the row of the next tile (a thread's tiles follow one another). */
static INL const char *ahead(const struct mm *m, const char *q, int64_t p, int R)
{
	int64_t a = p + PREFETCH / R, len = (int64_t)m->qrow;

	return q + (a < len ? a : (int64_t)(R - 1) * len + a);
}

#if OURO_X86
#define T512 __attribute__((target("avx512f,avx512bw,fma,f16c")))

T512 static INL void ld_bf16_512(const char *q, const char *s, int64_t b, __m512 *e, __m512 *o)
{
	__m512i v = _mm512_loadu_si512((const void *)(q + 64 * b));

	*e = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
	*o = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
}

/* The same for the tiles of many rows of W, with the 64 bytes loaded once:
 * left to itself the compiler loads them twice, once into the shift and
 * once into the mask, and such a tile (6 x 2: 24 products a block) waits
 * on its 16 loads; loaded once into a register (the empty asm keeps it
 * there) and the odd elements taken by a zeroing masked move, it issues
 * 10. One thread, Ouro-1.4B layer shapes, 16 and 32 rows of x: 72 -> 81
 * and 68 -> 83 GFLOP/s (medians of 7-9 interleaved runs, processor time,
 * on a shared machine). */
T512 static INL void ld_bf16_512_tile(const char *q, const char *s, int64_t b, __m512 *e,
				      __m512 *o)
{
	__m512i v = _mm512_loadu_si512((const void *)(q + 64 * b));

	__asm__("" : "+v"(v));
	*e = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
	*o = _mm512_castsi512_ps(_mm512_maskz_mov_epi16(0xaaaaaaaau, v));
}

T512 static INL void ld_f16_512(const char *q, const char *s, int64_t b, __m512 *e, __m512 *o)
{
	__m512i v = _mm512_loadu_si512((const void *)(q + 64 * b));

	*e = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
	*o = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
}

T512 static INL void ld_f32_512(const char *q, const char *s, int64_t b, __m512 *e, __m512 *o)
{
	const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
	const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
	__m512 lo = _mm512_loadu_ps((const void *)(q + 128 * b));
	__m512 hi = _mm512_loadu_ps((const void *)(q + 128 * b + 64));

	*e = _mm512_permutex2var_ps(lo, ie, hi);
	*o = _mm512_permutex2var_ps(lo, io, hi);
}

T512 static INL void ld_q8_512(const char *q, const char *s, int64_t b, __m512 *e, __m512 *o)
{
	uint16_t h;

	memcpy(&h, s + 2 * b, 2);
	__m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)h));
	__m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const void *)(q + 32 * b)));

	*e = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 16), 16)), d);
	*o = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(v, 16)), d);
}

/* The tree of the dot order over the 16 lanes of S. */
T512 static INL float tree512(__m512 S)
{
	__m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(S),
				  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(S), 1)));
	__m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
	__m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));

	return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* An R x C tile in float32; BPB: bytes of W per block (for prefetching,
 * done when C is 1: decoding streams W from memory). */
#define K512(name, LD, BPB, R, C)                                              \
	T512 static void name(const struct mm *m, int64_t r0, int64_t i0)      \
	{                                                                      \
		const char *q[R], *s[R];                                       \
		const float *x[C];                                             \
		__m512 a[R][C][2];                                             \
		int64_t nb = m->in / BLK;                                      \
		_Pragma("GCC unroll 16")                                       \
		for (int r = 0; r < R; r++) {                                  \
			q[r] = row_q(m, r0 + r);                               \
			s[r] = row_s(m, r0 + r);                               \
			_Pragma("GCC unroll 16")                               \
			for (int c = 0; c < C; c++)                            \
				a[r][c][0] = a[r][c][1] = _mm512_setzero_ps(); \
		}                                                              \
		_Pragma("GCC unroll 16")                                       \
		for (int c = 0; c < C; c++)                                    \
			x[c] = m->xs + (size_t)(i0 + c) * (size_t)m->in;      \
		for (int64_t b = 0; b < nb; b++) {                             \
			__m512 xe[C], xo[C];                                   \
			_Pragma("GCC unroll 16")                               \
			for (int c = 0; c < C; c++) {                          \
				xe[c] = _mm512_loadu_ps(x[c] + b * BLK);       \
				xo[c] = _mm512_loadu_ps(x[c] + b * BLK + 16);  \
			}                                                      \
			_Pragma("GCC unroll 16")                               \
			for (int r = 0; r < R; r++) {                          \
				__m512 e, o;                                   \
				if (C == 1)                                    \
					OURO_PREFETCH(ahead(m, q[r], b * BPB, R)); \
				LD(q[r], s[r], b, &e, &o);                     \
				_Pragma("GCC unroll 16")                       \
				for (int c = 0; c < C; c++) {                  \
					a[r][c][0] = _mm512_fmadd_ps(e, xe[c], a[r][c][0]); \
					a[r][c][1] = _mm512_fmadd_ps(o, xo[c], a[r][c][1]); \
				}                                              \
			}                                                      \
		}                                                              \
		for (int r = 0; r < R; r++)                                    \
			for (int c = 0; c < C; c++)                            \
				m->y[(size_t)(i0 + c) * (size_t)m->out + (size_t)(r0 + r)] = \
					tail(m, q[r], x[c], tree512(_mm512_add_ps(a[r][c][0], a[r][c][1]))); \
	}

#define R512 6
#define C512 2
#ifndef RDEC
#define RDEC 1
#endif
/* LDT: the loader of the R512-row tiles, LD: of the others */
#define KERNS512(f, LD, LDT, BPB)                                              \
	K512(f##_rc_512, LDT, BPB, R512, C512)                                 \
	K512(f##_r1_512, LDT, BPB, R512, 1)                                    \
	K512(f##_oc_512, LD, BPB, 1, C512)                                     \
	K512(f##_o1_512, LD, BPB, 1, 1)                                        \
	K512(f##_d_512, LD, BPB, RDEC, 1)                                      \
	static const struct kern f##_512 = {R512, C512, f##_rc_512, f##_r1_512, \
					    f##_oc_512, f##_o1_512, 1, NULL}; \
	static const struct kern f##_dec_512 = {RDEC, 1, f##_d_512, f##_d_512, \
						f##_o1_512, f##_o1_512, 1, NULL};
KERNS512(bf16, ld_bf16_512, ld_bf16_512_tile, 64)
KERNS512(f16, ld_f16_512, ld_f16_512, 64)
KERNS512(f32, ld_f32_512, ld_f32_512, 128)
KERNS512(q8, ld_q8_512, ld_q8_512, 32)

/* ---- AVX2 + FMA + F16C: each 16-lane accumulator as two halves ------- */

#define T256 __attribute__((target("avx2,fma,f16c")))

/* Block b of a row: v[0], v[1] the even weights (lanes 0-7, 8-15), v[2],
 * v[3] the odd ones. */
T256 static INL void ld_bf16_256(const char *q, const char *s, int64_t b, __m256 *v)
{
	const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
	__m256i lo = _mm256_loadu_si256((const void *)(q + 64 * b));
	__m256i up = _mm256_loadu_si256((const void *)(q + 64 * b + 32));

	v[0] = _mm256_castsi256_ps(_mm256_slli_epi32(lo, 16));
	v[1] = _mm256_castsi256_ps(_mm256_slli_epi32(up, 16));
	v[2] = _mm256_castsi256_ps(_mm256_and_si256(lo, hi));
	v[3] = _mm256_castsi256_ps(_mm256_and_si256(up, hi));
}

/* The low 16 bits of the 8 + 8 32-bit lanes of lo and up, packed in order. */
T256 static INL __m256i pack16(__m256i lo, __m256i up)
{
	const __m256i m = _mm256_set1_epi32(0xffff);

	return _mm256_permute4x64_epi64(_mm256_packus_epi32(_mm256_and_si256(lo, m),
							    _mm256_and_si256(up, m)), 0xd8);
}

T256 static INL void ld_f16_256(const char *q, const char *s, int64_t b, __m256 *v)
{
	__m256i lo = _mm256_loadu_si256((const void *)(q + 64 * b));
	__m256i up = _mm256_loadu_si256((const void *)(q + 64 * b + 32));
	__m256i e = pack16(lo, up);
	__m256i o = pack16(_mm256_srli_epi32(lo, 16), _mm256_srli_epi32(up, 16));

	v[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(e));
	v[1] = _mm256_cvtph_ps(_mm256_extracti128_si256(e, 1));
	v[2] = _mm256_cvtph_ps(_mm256_castsi256_si128(o));
	v[3] = _mm256_cvtph_ps(_mm256_extracti128_si256(o, 1));
}

/* The even (sel 0x88) or odd (0xdd) elements of a then b, in order. */
#define PICK(a, b, sel) _mm256_castpd_ps(_mm256_permute4x64_pd( \
	_mm256_castps_pd(_mm256_shuffle_ps(a, b, sel)), 0xd8))

T256 static INL void ld_f32_256(const char *q, const char *s, int64_t b, __m256 *v)
{
	const float *p = (const float *)(const void *)(q + 128 * b);
	__m256 w0 = _mm256_loadu_ps(p), w1 = _mm256_loadu_ps(p + 8);
	__m256 w2 = _mm256_loadu_ps(p + 16), w3 = _mm256_loadu_ps(p + 24);

	v[0] = PICK(w0, w1, 0x88);
	v[1] = PICK(w2, w3, 0x88);
	v[2] = PICK(w0, w1, 0xdd);
	v[3] = PICK(w2, w3, 0xdd);
}

T256 static INL void ld_q8_256(const char *q, const char *s, int64_t b, __m256 *v)
{
	uint16_t h;

	memcpy(&h, s + 2 * b, 2);
	__m256 d = _mm256_cvtph_ps(_mm_set1_epi16((short)h));
	__m256i lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(q + 32 * b)));
	__m256i up = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(q + 32 * b + 16)));

	v[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(lo, 16), 16)), d);
	v[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(up, 16), 16)), d);
	v[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(lo, 16)), d);
	v[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(up, 16)), d);
}

/* The tree over S's two halves lo (lanes 0-7) and up (8-15). */
T256 static INL float tree256(__m256 lo, __m256 up)
{
	__m256 s8 = _mm256_add_ps(lo, up);
	__m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
	__m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));

	return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* An R x 1 tile: 4R accumulators (the AVX2 unit has 16 registers). */
#define K256(name, LD, BPB, R)                                                 \
	T256 static void name(const struct mm *m, int64_t r0, int64_t i0)      \
	{                                                                      \
		const char *q[R], *s[R];                                       \
		const float *x = m->xs + (size_t)i0 * (size_t)m->in;           \
		__m256 a[R][4];                                                \
		int64_t nb = m->in / BLK;                                      \
		_Pragma("GCC unroll 16")                                       \
		for (int r = 0; r < R; r++) {                                  \
			q[r] = row_q(m, r0 + r);                               \
			s[r] = row_s(m, r0 + r);                               \
			a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm256_setzero_ps(); \
		}                                                              \
		for (int64_t b = 0; b < nb; b++) {                             \
			_Pragma("GCC unroll 16")                               \
			for (int r = 0; r < R; r++) {                          \
				__m256 v[4];                                   \
				OURO_PREFETCH(ahead(m, q[r], b * BPB, R)); \
				LD(q[r], s[r], b, v);                          \
				_Pragma("GCC unroll 4")                        \
				for (int h = 0; h < 4; h++)                    \
					a[r][h] = _mm256_fmadd_ps(v[h],        \
						_mm256_loadu_ps(x + b * BLK + 8 * h), a[r][h]); \
			}                                                      \
		}                                                              \
		for (int r = 0; r < R; r++)                                    \
			m->y[(size_t)i0 * (size_t)m->out + (size_t)(r0 + r)] = \
				tail(m, q[r], x, tree256(_mm256_add_ps(a[r][0], a[r][2]), \
							 _mm256_add_ps(a[r][1], a[r][3]))); \
	}

#define R256 3
#define KERNS256(f, LD, BPB)                                                   \
	K256(f##_r_256, LD, BPB, R256)                                         \
	K256(f##_o_256, LD, BPB, 1)                                            \
	static const struct kern f##_256 = {R256, 1, f##_r_256, f##_r_256,    \
					    f##_o_256, f##_o_256, 1, NULL};
KERNS256(bf16, ld_bf16_256, 64)
KERNS256(f16, ld_f16_256, 64)
KERNS256(f32, ld_f32_256, 128)
KERNS256(q8, ld_q8_256, 32)

/* ---- BF16 products: AVX512-BF16 ------------------------------------- */

#define TBF __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,fma,f16c")))

TBF static INL float tail_bf(const struct mm *m, const char *q, const uint16_t *x, float s)
{
	for (int64_t k = m->in / BLK * BLK; k < m->in; k++) {
		float xf;
		ouro_to_f32(&xf, x + k, OURO_BF16, 1);
		s = fmaf(weight_at(m, q, k), xf, s);
	}
	return s;
}

#define KBF(name, R, C)                                                        \
	TBF static void name(const struct mm *m, int64_t r0, int64_t i0)       \
	{                                                                      \
		const char *q[R];                                              \
		const uint16_t *x[C];                                          \
		__m512 a[R][C];                                                \
		int64_t nb = m->in / BLK;                                      \
		_Pragma("GCC unroll 16")                                       \
		for (int r = 0; r < R; r++) {                                  \
			q[r] = row_q(m, r0 + r);                               \
			_Pragma("GCC unroll 16")                               \
			for (int c = 0; c < C; c++)                            \
				a[r][c] = _mm512_setzero_ps();                 \
		}                                                              \
		_Pragma("GCC unroll 16")                                       \
		for (int c = 0; c < C; c++)                                    \
			x[c] = m->xb + (size_t)(i0 + c) * (size_t)m->in;      \
		for (int64_t b = 0; b < nb; b++) {                             \
			__m512bh xv[C];                                        \
			_Pragma("GCC unroll 16")                               \
			for (int c = 0; c < C; c++)                            \
				xv[c] = (__m512bh)_mm512_loadu_si512((const void *)(x[c] + b * BLK)); \
			_Pragma("GCC unroll 16")                               \
			for (int r = 0; r < R; r++) {                          \
				if (C == 1)                                    \
					OURO_PREFETCH(ahead(m, q[r], b * 64, R)); \
				__m512bh wv = (__m512bh)_mm512_loadu_si512((const void *)(q[r] + b * 64)); \
				_Pragma("GCC unroll 16")                       \
				for (int c = 0; c < C; c++)                    \
					a[r][c] = _mm512_dpbf16_ps(a[r][c], wv, xv[c]); \
			}                                                      \
		}                                                              \
		for (int r = 0; r < R; r++)                                    \
			for (int c = 0; c < C; c++)                            \
				m->y[(size_t)(i0 + c) * (size_t)m->out + (size_t)(r0 + r)] = \
					tail_bf(m, q[r], x[c], tree512(a[r][c])); \
	}

#define RBF 4
#define CBF 6
KBF(bf_rc, RBF, CBF)
KBF(bf_r1, RBF, 1)
KBF(bf_r2, RBF, 2)
KBF(bf_r3, RBF, 3)
KBF(bf_r4, RBF, 4)
KBF(bf_r5, RBF, 5)
KBF(bf_oc, 1, CBF)
KBF(bf_o1, 1, 1)
KBF(bf_d, RDEC, 1)
/* The rows of x left over after the whole tiles of 6 go through W as
 * many at once, not one by one: a 512-token prompt leaves 2, which one
 * by one had 8.8% of its prefill's profile samples; with them together,
 * that prefill (Ouro-1.4B shapes, 2 threads) took 28.4 s against
 * 28.7-30.1 (2 interleaved runs each, a shared machine). */
static const tile_fn bf_part[CBF] = {NULL, bf_r1, bf_r2, bf_r3, bf_r4, bf_r5};
static const struct kern kern_bf = {RBF, CBF, bf_rc, bf_r1, bf_oc, bf_o1, 2, bf_part};
static const struct kern kern_bf_dec = {RDEC, 1, bf_d, bf_d, bf_o1, bf_o1, 2, NULL};

/* Rows [i0, i1) of x rounded to BF16 into xb (VCVTNE2PS2BF16: nearest,
 * ties to even, denormals flushed), the tail through a masked load. */
TBF static void round_rows(const struct mm *m, int64_t i0, int64_t i1)
{
	int64_t in = m->in, k;

	for (int64_t i = i0; i < i1; i++) {
		const float *x = m->x + (size_t)i * (size_t)in;
		uint16_t *d = m->xb + (size_t)i * (size_t)in;
		for (k = 0; k + BLK <= in; k += BLK)
			_mm512_storeu_si512((void *)(d + k), (__m512i)_mm512_cvtne2ps_pbh(
				_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k)));
		for (; k < in; k += 16) {
			__mmask16 mk = in - k >= 16 ? 0xffff : (__mmask16)((1u << (in - k)) - 1);
			__m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, x + k));
			_mm256_mask_storeu_epi16(d + k, mk, (__m256i)h);
		}
	}
}

#endif /* OURO_X86 */

/* ---- choosing the kernels ------------------------------------------- */

static int level = -1;     /* 2: AVX-512F(+BW), 1: AVX2+FMA+F16C, 0: portable */
static int bf16_mode = -1; /* 1: BF16 products for BF16 matrices */

#if OURO_X86
static int cpu_best(void)
{
	unsigned a, b, c, d;

	__builtin_cpu_init();
	/* F16C from CPUID itself: clang before 16 does not know
	 * __builtin_cpu_supports("f16c") */
	int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
	int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;

	return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
	       ? 2 : avx2;
}

static int cpu_bf16(void)
{
	unsigned a, b, c, d;

	return cpu_best() == 2 && __builtin_cpu_supports("avx512vl") &&
	       __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
}
#else
/* Elsewhere the portable kernels run, in the same order of operations. */
static int cpu_best(void)
{
	return 0;
}

static int cpu_bf16(void)
{
	return 0;
}
#endif

int ouro_cpu_level(void)
{
	if (level < 0) {
		const char *e = getenv("OURO_CPU");
		int best = cpu_best(), want = best;
		if (e && strcmp(e, "avx2") == 0)
			want = 1;
		else if (e && strcmp(e, "portable") == 0)
			want = 0;
		level = want < best ? want : best;
	}
	return level;
}

int ouro_bf16_products(void)
{
	if (bf16_mode < 0) {
		const char *e = getenv("OURO_MATMUL");
		bf16_mode = e && strcmp(e, "bf16") == 0 && cpu_bf16() && !ouro_amx_enabled();
	}
	return bf16_mode;
}

int ouro_kernels_use(int lvl, int bf16)
{
	int best = cpu_best();

	level = lvl < best ? lvl : best;
	bf16_mode = bf16 && cpu_bf16();
	return level * 2 + bf16_mode;
}

/* The kernels for n rows of format f: decoding (n = 1) has tiles of its
 * own, R x 1; the order of operations is the same. */
static const struct kern *pick(enum fmt f, int64_t n)
{
#if OURO_X86
	static const struct kern *const table[2][NFMT] = {
		{&f32_256, &bf16_256, &f16_256, &q8_256},
		{&f32_512, &bf16_512, &f16_512, &q8_512},
	};
	static const struct kern *const dec512[NFMT] = {
		&f32_dec_512, &bf16_dec_512, &f16_dec_512, &q8_dec_512,
	};
	int lvl = ouro_cpu_level();

	if (f == F_BF16 && ouro_bf16_products())
		return lvl < 2 ? &kern_bf_c : n == 1 ? &kern_bf_dec : &kern_bf;
	if (lvl == 2 && n == 1)
		return dec512[f];
	return lvl ? table[lvl - 1][f] : &kern_c;
#else
	return f == F_BF16 && ouro_bf16_products() ? &kern_bf_c : &kern_c;
#endif
}

/* ---- the product ---------------------------------------------------- */

/* Rows [i0, i1) of x into xs, each whole block as its even then its odd
 * elements, the tail as it is. */
static void split_rows(const struct mm *m, int64_t i0, int64_t i1)
{
	int64_t in = m->in;

	for (int64_t i = i0; i < i1; i++) {
		const float *x = m->x + (size_t)i * (size_t)in;
		float *d = m->xs + (size_t)i * (size_t)in;
		int64_t k = 0;
		for (; k + BLK <= in; k += BLK)
			for (int l = 0; l < 16; l++) {
				d[k + l] = x[k + 2 * l];
				d[k + 16 + l] = x[k + 2 * l + 1];
			}
		memcpy(d + k, x + k, (size_t)(in - k) * sizeof *d);
	}
}

static void prepare_rows(void *ctx, int64_t i0, int64_t i1)
{
	const struct mm *m = ctx;

#if OURO_X86
	if (m->xb) {
		round_rows(m, i0, i1);
		return;
	}
#endif
	split_rows(m, i0, i1);
}

/* Groups [g0, g1) of R rows of W, against every row of x. */
static void groups(void *ctx, int64_t g0, int64_t g1)
{
	const struct mm *m = ctx;
	const struct kern *k = m->k;
	int64_t end = g1 * k->R < m->out ? g1 * k->R : m->out;

	for (int64_t c0 = g0 * k->R; c0 < end; c0 += m->chunk) {
		int64_t c1 = c0 + m->chunk < end ? c0 + m->chunk : end;
		for (int64_t i = 0; i < m->n; i += k->C) {
			int full = m->n - i >= k->C;
			int64_t r = c0;
			for (; r + k->R <= c1; r += k->R) {
				if (full)
					k->rc(m, r, i);
				else if (k->part)
					k->part[m->n - i](m, r, i);
				else
					for (int64_t ii = i; ii < m->n; ii++)
						k->r1(m, r, ii);
			}
			for (; r < c1; r++) {
				if (full)
					k->oc(m, r, i);
				else
					for (int64_t ii = i; ii < m->n; ii++)
						k->o1(m, r, ii);
			}
		}
	}
}

/* Chunks of W a thread takes at least, on average, when they are shared
 * out as threads become free: the last one to finish leaves the others
 * idle for at most about 1/CHUNKS_PER_THREAD of the product. */
#define CHUNKS_PER_THREAD 16

/* Chunks of W, each against every row of x, one after another as long as
 * chunks are left; the range is that of the thread, unused. */
static void take_chunks(void *ctx, int part, int64_t begin, int64_t end)
{
	struct mm *m = ctx;
	int64_t per = m->chunk / m->k->R, ngroups = (m->out + m->k->R - 1) / m->k->R;

	for (;;) {
		int64_t g = __atomic_fetch_add(&m->next, 1, __ATOMIC_RELAXED) * per;
		if (g >= ngroups)
			return;
		groups(m, g, g + per < ngroups ? g + per : ngroups);
	}
}

/* The product for n rows of x with scratch for them (n * in floats). */
static void product(struct mm *m, float *scratch)
{
	const struct kern *k = m->k;
	int64_t rows = (int64_t)(OURO_CHUNK_BYTES / (m->qrow ? m->qrow : 1));
	int64_t shared = m->out / (CHUNKS_PER_THREAD * ouro_threads());
	int big = m->out * m->in >= (1 << 16);   /* worth waking the threads for */

	if (shared < rows)
		rows = shared;
	rows = rows / k->R * k->R;
	m->chunk = rows > k->R ? rows : k->R;
	m->next = 0;
	m->xs = k->scratch == 1 ? scratch : (float *)(void *)m->x;
	m->xb = k->scratch == 2 ? (uint16_t *)(void *)scratch : NULL;
	if (k->scratch) {
		if (m->n > 1 && big)
			ouro_parallel(prepare_rows, m, m->n);
		else
			prepare_rows(m, 0, m->n);
	}
	if (big)
		ouro_parallel_parts(take_chunks, m, ouro_threads());
	else
		groups(m, 0, (m->out + k->R - 1) / k->R);
}

size_t ouro_wbuf_floats(int64_t in)
{
	return (size_t)ouro_threads() * OURO_CHUNK * (size_t)in;
}

void ouro_matmul(float *y, const float *x, const struct ouro_weight *w,
		 int64_t n, float *wbuf)
{
	if (w->q4) {   /* q4 keeps its own order, also the same for any n */
		ouro_q4_matmul(y, x, w, n);
		return;
	}
	enum ouro_dtype dt = w->t->dtype;
	struct mm m = {
		.y = y, .x = x, .q = w->t->data,
		.s = w->scale ? w->scale->data : NULL,
		.qrow = (size_t)w->in * ouro_dtype_size(dt),
		.srow = w->scale ? (size_t)(w->in / BLK) * 2 : 0,
		.in = w->in, .out = w->out,
		.f = w->scale ? F_Q8 : dt == OURO_F32 ? F_F32 : dt == OURO_BF16 ? F_BF16 : F_F16,
	};
	int64_t cap = n;
	float *own = NULL;

	/* long inputs on AMX tiles when asked for (a failed allocation there
	 * falls back to the kernels here) */
#if OURO_X86
	if (n >= 16 && ouro_amx_enabled() && ouro_amx_matmul(y, x, w, n) == OURO_OK)
		return;
#endif
	m.k = pick(m.f, n);
	if (wbuf)
		cap = (int64_t)(ouro_wbuf_floats(w->in) / (size_t)w->in);
	else if (m.k->scratch)
		wbuf = own = malloc((size_t)n * (size_t)w->in * sizeof *wbuf);
	if (!wbuf && m.k->scratch)   /* the same sums in portable C */
		m.k = m.k->scratch == 2 ? &kern_bf_c : &kern_c;
	for (int64_t i0 = 0; i0 < n; i0 += cap) {
		m.n = n - i0 < cap ? n - i0 : cap;
		m.y = y + (size_t)i0 * (size_t)w->out;
		m.x = x + (size_t)i0 * (size_t)w->in;
		product(&m, wbuf);
	}
	free(own);
}
