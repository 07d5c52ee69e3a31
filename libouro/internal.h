/*
 * internal.h - what the library's modules share and programs never see:
 * the loaded model's weight views and the numerical kernels.
 */
#ifndef OURO_INTERNAL_H
#define OURO_INTERNAL_H

#include "ouro.h"

/* 1 where the x86 kernels (AVX2, AVX-512, AMX) are compiled in; other
 * CPUs run the portable ones, which compute the same bits. */
#if defined(__x86_64__) || defined(__i386__)
#define OURO_X86 1
#else
#define OURO_X86 0
#endif

/* A weight matrix [out, in] (PyTorch Linear layout) as stored: F32,
 * BF16 or F16 in t; or q8_0, written by ouro-quantize: t is I8 [out, in]
 * and scale F16 [out, in/32], one scale per block of 32 along a row, the
 * weight being q * scale; or q4 (q4 set; see q4.c): t is U8 [out, nsb*128]
 * of 4-bit values and scale U8 [out, nsb*16] of super-block headers, nsb =
 * ouro_q4_blocks(in). */
struct ouro_weight {
	const struct ouro_tensor *t;
	const struct ouro_tensor *scale;  /* q8_0 and q4, else NULL */
	int64_t out, in;
	int q4;                           /* 1: q4, else 0 */
};

#define OURO_Q8_BLOCK 32
#define OURO_Q4_BLOCK 256   /* weights per q4 super-block */
#define OURO_Q4_QBYTES 128  /* bytes of 4-bit values per super-block */
#define OURO_Q4_HBYTES 16   /* header bytes per super-block */

/* Super-blocks of a q4 row of `in` weights (the last one padded). */
int64_t ouro_q4_blocks(int64_t in);
/* Quantizes one row w [in] to q4: values q [nsb*128], headers h [nsb*16]. */
void ouro_q4_quantize(const float *w, int64_t in, uint8_t *q, uint8_t *h);
/* ouro_weight_rows for q4 weights (exact), with the kernels of a CPU
 * level as ouro_q4_dot. */
void ouro_q4_rows(int level, float *dst, const struct ouro_weight *w, int64_t r0, int64_t r);
/* The dot product of one q4 row (q [nsb*128], h [nsb*16]) with x [in]. */
typedef float (*ouro_q4_dot_fn)(const uint8_t *q, const uint8_t *h, const float *x, int64_t in);
/* The q4 dot kernel of a CPU level (0 portable, 1 AVX2, 2 AVX-512; a level
 * this CPU lacks, or -1, gives its best); all give the same bits. */
ouro_q4_dot_fn ouro_q4_dot(int level);
/* y[r] = row r of the q4 matrix w . x [in] for rows begin..end-1, with
 * the kernels of a CPU level as ouro_q4_dot (AVX-512: four rows at a time,
 * each summed as alone). */
void ouro_q4_matvec_rows(int level, const struct ouro_weight *w, const float *x, float *y,
			 int64_t begin, int64_t end);
/* ouro_matmul for q4 weights: every row of y as ouro_q4_matvec_rows
 * computes it, so the same bits whatever n and the thread count. */
void ouro_q4_matmul(float *y, const float *x, const struct ouro_weight *w, int64_t n);

/* Widens rows r0..r0+r-1 of w into dst [r, in] floats. */
void ouro_weight_rows(float *dst, const struct ouro_weight *w, int64_t r0, int64_t r);

/* One decoder layer's weights; matrices are views in the stored format;
 * norm weights converted to float. */
struct ouro_layer {
	struct ouro_weight wq;     /* [H*hd, D] */
	struct ouro_weight wk;     /* [KV*hd, D] */
	struct ouro_weight wv;     /* [KV*hd, D] */
	struct ouro_weight wo;     /* [D, H*hd] */
	struct ouro_weight wgate;  /* [F, D] */
	struct ouro_weight wup;    /* [F, D] */
	struct ouro_weight wdown;  /* [D, F] */
	float *attn_norm;                 /* [D] input_layernorm */
	float *attn_out_norm;             /* [D] input_layernorm_2 */
	float *mlp_norm;                  /* [D] post_attention_layernorm */
	float *mlp_out_norm;              /* [D] post_attention_layernorm_2 */
};

struct ouro_mapping {
	char *path;
	void *addr;
	size_t len;
	struct ouro_st *st;
};

struct ouro_model {
	char *dir;
	struct ouro_config cfg;
	int nmaps;
	struct ouro_mapping *maps;        /* [nmaps] mapped safetensors files */
	const struct ouro_tensor *embed;  /* [V, D] */
	struct ouro_weight lm_head;       /* [V, D]; the embedding when tied */
	struct ouro_layer *layers;        /* [N] */
	float *final_norm;                /* [D] model.norm */
	float *gate_w;                    /* [D] early_exit_gate.weight */
	float gate_b;                     /* early_exit_gate.bias */
};

/* Rows handled as one unit: rows of W widened and multiplied together on
 * AMX and in quantization (whatever the thread count, so the result is the
 * same for any number of threads), and, per thread, rows of x in
 * ouro_matmul's scratch. */
#define OURO_CHUNK 256

/* Bytes of W the matrix kernels take as one chunk of rows: it stays in the
 * L2 cache (1 MiB on Zen 4) while every row of x passes over it, so x
 * streams from the L3 cache, and W from memory, once per chunk. 512 KiB
 * measured 3-6% faster than 256 KiB (one thread, Ouro-1.4B layer shapes,
 * 256 positions; 768 KiB about as 512). */
#define OURO_CHUNK_BYTES (512 << 10)

/* A decoding kernel's software prefetch of the weights at p, ahead of its
 * loads, into the L2 cache (locality 2: prefetcht1 on x86). Into the L1
 * (T0), as first tuned on an Intel machine with AMX, the prefetches held
 * up a Zen 4's loads: Ouro-1.4B shapes, 2 threads, weights read in,
 * interleaved runs on a shared machine, BF16 decode 2.01-2.36 tokens/s
 * with T0 against 2.15-2.64 with T1 (no prefetch 2.02-2.07; T2 as T1). */
#define OURO_PREFETCH(p) __builtin_prefetch((p), 0, 2)

/* Floats of scratch ouro_matmul takes for inputs of width `in`: x
 * rearranged, threads * OURO_CHUNK rows of it at a time. */
size_t ouro_wbuf_floats(int64_t in);

/* y[n, out] = x[n, in] * W^T (matmul.c), each element in the one order
 * of operations of W's format: row i of y depends on row i of x only,
 * bit for bit, whatever n and the thread count. wbuf has
 * ouro_wbuf_floats(in) floats, or is NULL (then n * in floats are
 * allocated, and when they cannot be, the portable kernels run). */
void ouro_matmul(float *y, const float *x, const struct ouro_weight *w,
		 int64_t n, float *wbuf);
/* The vector unit the kernels use: 2 AVX-512F and BW, 1 AVX2 with FMA and
 * F16C, 0 portable C; the best the CPU has unless OURO_CPU asks for less
 * (avx2, portable; other values are ignored). */
int ouro_cpu_level(void);
/* 1 when BF16-stored matrices get BF16 products: OURO_MATMUL=bf16 on a
 * CPU with AVX512-BF16 and without AMX in use. */
int ouro_bf16_products(void);
/* Tests: the kernels of `level` (at most the CPU's) and BF16 products
 * (bf16 1, where the CPU has AVX512-BF16) or float32 (0) from now on;
 * returns 2 * level + whether BF16 products are on. */
int ouro_kernels_use(int level, int bf16);
/* The lanes S [16] of a dot product summed in the dot order's fixed tree
 * (S[l] += S[l+8] for l < 8, then +4, +2, then S[0] + S[1]); S is
 * overwritten. */
float ouro_tree16(float *S);
/* 1 when OURO_MATMUL=bf16 asks for BF16 products and AMX is usable
 * (never off x86). */
int ouro_amx_enabled(void);
#if OURO_X86
/* ouro_matmul on AMX tiles with x rounded to BF16 (amx.c). */
int ouro_amx_matmul(float *y, const float *x, const struct ouro_weight *w, int64_t n);
#endif

/* The number of threads the kernels use (ouro_set_threads, default: all
 * cores). Set it before anything else: buffers are sized by it. */
int ouro_threads(void);
/* The machine's physical memory in bytes, 0 when unknown: requests larger
 * than this fail up front with the size they need. */
uint64_t ouro_phys_bytes(void);
/* The memory available to new allocations (MemAvailable), else half the
 * physical memory. */
uint64_t ouro_avail_bytes(void);
/* Like ouro_parallel, and fn learns which thread's range it runs (0 is
 * the caller), to use that thread's slice of a scratch buffer. */
void ouro_parallel_parts(void (*fn)(void *ctx, int part, int64_t begin, int64_t end),
			 void *ctx, int64_t n);
/* Runs fn(ctx, begin, end) over [0, n) split into one contiguous range per
 * thread, the same split for the same thread count; returns when all are
 * done. */
void ouro_parallel(void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx, int64_t n);

/* y[D] = x / rms(x) * weight for one row; y may equal x. */
void ouro_rmsnorm_row(float *y, const float *x, const float *weight, int64_t d, float eps);
/* The same for n rows, shared out among the threads (not to be called
 * from inside a parallel job). */
void ouro_rmsnorm(float *y, const float *x, const float *weight, int64_t n,
		  int64_t d, float eps);

/* ---- the pieces of the forward pass (forward.c), shared by the prefill
 * and the batch engine (engine.c) ---- */

#define QBLOCK 64   /* query rows per attention block */

/* Working buffers for n positions. */
struct ouro_fwd_buf {
	float *h;      /* [n, D] residual stream */
	float *xn;     /* [n, D] normed input of a sub-layer */
	float *q;      /* [n, H*hd] */
	float *k;      /* [n, KV*hd] */
	float *v;      /* [n, KV*hd] */
	float *att;    /* [n, H*hd] attention output before o_proj */
	float *out;    /* [n, D] sub-layer output */
	float *g;      /* [n, F] gate_proj, then the MLP activation */
	float *u;      /* [n, F] up_proj */
	float *s;      /* [threads, ouro_scores_floats(n, hd)] attention scratch */
	float *cos;    /* [n, hd/2] */
	float *sin;    /* [n, hd/2] */
	float *w;      /* [ouro_wbuf_floats(max in)] weight rows widened to float */
};

int ouro_fwd_alloc(struct ouro_fwd_buf *b, const struct ouro_config *c, int64_t n);
void ouro_fwd_free(struct ouro_fwd_buf *b);
/* Checks ids [n] placed at positions p0.. against vocabulary and length. */
int ouro_check_ids(const struct ouro_config *c, const int32_t *ids, int64_t n, int64_t p0);
/* h [n, D] = embedding rows of ids. */
void ouro_embed(const struct ouro_model *m, const int32_t *ids, int64_t n, float *h);
/* b->cos, b->sin [n, hd/2] for positions p0..p0+n-1. */
void ouro_rope_tables(struct ouro_fwd_buf *b, const struct ouro_config *c, int64_t p0, int64_t n);
/* From b->h [n, D]: b->q, b->k, b->v, rotated with b's RoPE tables. */
void ouro_layer_qkv(const struct ouro_model *m, const struct ouro_layer *L,
		    struct ouro_fwd_buf *b, int64_t n);
/* From b->att [n, H*hd]: o_proj, the normed residual add, and the MLP
 * sub-layer, updating b->h. */
void ouro_layer_finish(const struct ouro_model *m, const struct ouro_layer *L,
		       struct ouro_fwd_buf *b, int64_t n);
/* A run of consecutive cached positions of one head: key row j at
 * k + j*stride, value row j at v + j*stride, [hd] elements of dtype
 * (OURO_F32 or OURO_BF16) each. */
struct ouro_kv_run {
	const void *k, *v;
	int64_t n, stride;
	enum ouro_dtype dtype;
};

/* Causal attention of m queries of one head: query i, q + i*qstride [hd],
 * attends to keys and values 0..n0+i of the runs (n0+m positions in
 * order), and att + i*astride [hd] gets the result: the scores
 * q . k[r] / sqrt(hd) as dot products in a fixed order, their softmax,
 * the values summed position by position in order. Each query's result
 * is the same, bit for bit, as with m = 1: the one attention arithmetic
 * of the forward pass and the batch engine, whatever the chunking.
 * scores has m*(n0+m) floats, work m + hd. */
void ouro_attend(float *att, int64_t astride, const float *q, int64_t qstride, int64_t m,
		 int64_t n0, const struct ouro_kv_run *runs, int nruns, int64_t hd, float *scores,
		 float *work);
/* Floats of one thread's scratch for ouro_attend over QBLOCK queries and
 * up to n positions: scores and work. */
static inline size_t ouro_scores_floats(int64_t n, int64_t hd)
{
	return (size_t)QBLOCK * (size_t)n + QBLOCK + (size_t)hd;
}

struct ouro_kvpool {
	size_t block_bytes;
	int64_t blocks;      /* the budget */
	int64_t reserved;    /* blocks promised to sequences (in use or to come) */
	int64_t used, peak;  /* blocks handed out now, and at most */
	void **free;         /* [blocks] allocated blocks not in use */
	int64_t nfree;
};

int ouro_kvpool_init(struct ouro_kvpool *p, size_t block_bytes, int64_t blocks);
void ouro_kvpool_free(struct ouro_kvpool *p);
/* Promises n more blocks; 0 (nothing promised) when the budget would be
 * exceeded. */
int ouro_kvpool_reserve(struct ouro_kvpool *p, int64_t n);
void ouro_kvpool_unreserve(struct ouro_kvpool *p, int64_t n);
/* A block of a reservation (its contents undefined); NULL when memory
 * cannot be had. */
void *ouro_kvpool_take(struct ouro_kvpool *p);
void ouro_kvpool_put(struct ouro_kvpool *p, void *b);

#endif
