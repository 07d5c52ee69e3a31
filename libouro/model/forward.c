/*
 * forward.c - the looped forward pass over one sequence, all positions at
 * once (prefill style), as ouro(7) describes the loop:
 *
 *   h = embed[ids]
 *   for t in 0..T-1:
 *       for l in 0..N-1:
 *           h += norm2(attn_l(norm1(h)))     slot t*N+l: its own keys/values
 *           h += norm4(mlp_l(norm3(h)))
 *       h = norm(h); hidden[t] = h
 *
 * Within one pass each (loop, layer) attends only to the keys and values it
 * computed itself, so no cache is kept across loops. Attention is computed
 * one query row at a time with ouro_attend, the arithmetic the batch
 * engine uses for every position, so a prompt's states here and there are
 * the same bit for bit; its scratch is one row of scores a thread.
 *
 * Several sequences go through one pass together (ouro_forward_batch):
 * their positions are the rows of one block through the matrix products,
 * whose rows do not depend on each other (ouro_matmul), and attention
 * stays within each sequence, so a sequence's states are the same bit for
 * bit as when it runs alone. Short sequences (the windows of an
 * evaluation) fill the products together.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if OURO_X86
#include <immintrin.h>
#endif


void ouro_fwd_free(struct ouro_fwd_buf *b)
{
	float **p = (float **)b;

	for (size_t i = 0; i < sizeof *b / sizeof(float *); i++)
		free(p[i]);
}

/* Allocates every buffer for n positions, failing up front with the size
 * when they cannot fit in this machine's memory (Linux grants more than
 * there is, and the pass would be killed while it runs). The sizes cannot
 * overflow: the configuration bounds each dimension by 2^20 and n by 2^24. */
int ouro_fwd_alloc(struct ouro_fwd_buf *b, const struct ouro_config *c, int64_t n)
{
	uint64_t D = (uint64_t)c->hidden_size, F = (uint64_t)c->intermediate_size;
	uint64_t QD = (uint64_t)(c->num_attention_heads * c->head_dim);
	uint64_t KD = (uint64_t)(c->num_key_value_heads * c->head_dim);
	uint64_t half = (uint64_t)c->head_dim / 2, un = (uint64_t)n;
	uint64_t in = D > QD ? D : QD, wmax = ouro_wbuf_floats((int64_t)(in > F ? in : F));
	uint64_t threads = (uint64_t)ouro_threads();
	uint64_t sizes[] = {un * D, un * D, un * QD, un * KD, un * KD, un * QD, un * D,
			    un * F, un * F, threads * ouro_scores_floats(n, c->head_dim), un * half,
			    un * half, wmax};
	float **p = (float **)b;
	uint64_t total = 0;

	_Static_assert(sizeof sizes / sizeof *sizes == sizeof *b / sizeof(float *),
		       "one size per buffer");
	memset(b, 0, sizeof *b);
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
		total += sizes[i];
	uint64_t phys = ouro_phys_bytes();
	if (phys && total * sizeof(float) > phys)
		return ouro_fail(OURO_ENOMEM, "a forward pass over %lld tokens needs %.1f MiB of working memory, more than this machine's %.1f MiB",
				 (long long)n, (double)total * 4 / (1 << 20), (double)phys / (1 << 20));
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
		if (!(p[i] = malloc(sizes[i] * sizeof(float)))) {
			ouro_fwd_free(b);
			return ouro_fail(OURO_ENOMEM, "a forward pass over %lld tokens needs %.1f MiB of working memory, which is not available",
					 (long long)n, (double)total * 4 / (1 << 20));
		}
	return OURO_OK;
}

/* RoPE tables for positions p0..p0+n-1 as Hugging Face computes them:
 * inv_freq and angles in float32, cos and sin of the float32 angle. */
void ouro_rope_tables(struct ouro_fwd_buf *b, const struct ouro_config *c, int64_t p0, int64_t n)
{
	int64_t half = c->head_dim / 2;

	for (int64_t i = 0; i < half; i++) {
		float inv = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->head_dim));
		for (int64_t p = 0; p < n; p++) {
			float a = (float)(p0 + p) * inv;
			b->cos[p * half + i] = (float)cos((double)a);
			b->sin[p * half + i] = (float)sin((double)a);
		}
	}
}

/* Rotates each head of x [heads*hd] of position p in place, rotate-half
 * form. */
static void rope_row(float *x, const struct ouro_fwd_buf *b, int64_t p, int64_t heads, int64_t hd)
{
	int64_t half = hd / 2;
	const float *cs = b->cos + p * half, *sn = b->sin + p * half;

	for (int64_t h = 0; h < heads; h++) {
		float *v = x + h * hd;
		for (int64_t i = 0; i < half; i++) {
			float x1 = v[i], x2 = v[i + half];
			v[i] = x1 * cs[i] - x2 * sn[i];
			v[i + half] = x2 * cs[i] + x1 * sn[i];
		}
	}
}

/* The element-wise steps of a layer, a range of positions at a time on
 * the pool's threads (each position's values are computed the same way
 * on any thread). */
struct rows_job {
	struct ouro_fwd_buf *b;
	const struct ouro_config *c;
	const float *weight;    /* add_normed: the norm's weight */
};

static void rope_rows(void *ctx, int64_t begin, int64_t end)
{
	const struct rows_job *j = ctx;
	int64_t H = j->c->num_attention_heads, KV = j->c->num_key_value_heads, hd = j->c->head_dim;

	for (int64_t p = begin; p < end; p++) {
		rope_row(j->b->q + p * H * hd, j->b, p, H, hd);
		rope_row(j->b->k + p * KV * hd, j->b, p, KV, hd);
	}
}

/* h += rmsnorm(out) */
static void add_normed_rows(void *ctx, int64_t begin, int64_t end)
{
	const struct rows_job *j = ctx;
	int64_t D = j->c->hidden_size;

	for (int64_t p = begin; p < end; p++) {
		float *h = j->b->h + p * D, *out = j->b->out + p * D;

		ouro_rmsnorm_row(out, out, j->weight, D, (float)j->c->rms_norm_eps);
		for (int64_t i = 0; i < D; i++)
			h[i] += out[i];
	}
}

/* g = silu(g) * u */
static void swiglu_rows(void *ctx, int64_t begin, int64_t end)
{
	const struct rows_job *j = ctx;
	int64_t F = j->c->intermediate_size;

	for (int64_t i = begin * F; i < end * F; i++) {
		float g = j->b->g[i];
		j->b->g[i] = g / (1.0f + expf(-g)) * j->b->u[i];
	}
}

/* The inner steps of attention, in a portable version and one for
 * AVX-512F, chosen by the kernels' vector unit (ouro_cpu_level), both
 * with the same order of operations, so a position's result depends on
 * nothing else, not even the CPU:
 *   dot    a . b over n floats: 16 lanes (lane l takes the elements
 *          l, l+16, ... by fused multiply-adds), summed by the dot
 *          order's tree (ouro_tree16), then the tail one by one;
 *   axpy   y[n] += p * x[n], fused;
 *   widen  bf16 [n] to floats, exactly. */
static float dot_c(const float *a, const float *b, int64_t n)
{
	float S[16] = {0}, s;
	int64_t i = 0;

	for (; i + 16 <= n; i += 16)
		for (int l = 0; l < 16; l++)
			S[l] = fmaf(a[i + l], b[i + l], S[l]);
	s = ouro_tree16(S);
	for (; i < n; i++)
		s = fmaf(a[i], b[i], s);
	return s;
}

static void axpy_c(float *y, float p, const float *x, int64_t n)
{
	for (int64_t d = 0; d < n; d++)
		y[d] = fmaf(p, x[d], y[d]);
}

static void widen_c(float *dst, const uint16_t *src, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)src[i] << 16;
		memcpy(dst + i, &u, sizeof u);
	}
}

#if OURO_X86
#define T512 __attribute__((target("avx512f")))

T512 static void widen_512(float *dst, const uint16_t *src, int64_t n)
{
	int64_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
		_mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
	}
	widen_c(dst + i, src + i, n - i);
}

T512 static float dot_512(const float *a, const float *b, int64_t n)
{
	__m512 acc = _mm512_setzero_ps();
	int64_t i = 0;

	float S[16], s;

	for (; i + 16 <= n; i += 16)
		acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
	_mm512_storeu_ps(S, acc);
	s = ouro_tree16(S);
	for (; i < n; i++)
		s = fmaf(a[i], b[i], s);
	return s;
}

T512 static void axpy_512(float *y, float p, const float *x, int64_t n)
{
	__m512 pv = _mm512_set1_ps(p);
	int64_t d = 0;

	for (; d + 16 <= n; d += 16)
		_mm512_storeu_ps(y + d, _mm512_fmadd_ps(pv, _mm512_loadu_ps(x + d),
							 _mm512_loadu_ps(y + d)));
	for (; d < n; d++)
		y[d] = fmaf(p, x[d], y[d]);
}
#endif

/* Row j of a run's keys (kv 0) or values (kv 1) as floats (tmp [hd]
 * when widened). */
static inline __attribute__((always_inline)) const float *
run_row(const struct ouro_kv_run *run, int kv, int64_t j, int64_t hd, float *tmp,
	void (*widen)(float *, const uint16_t *, int64_t))
{
	const void *base = kv ? run->v : run->k;

	if (run->dtype == OURO_F32)
		return (const float *)base + j * run->stride;
	widen(tmp, (const uint16_t *)base + j * run->stride, hd);
	return tmp;
}

static inline __attribute__((always_inline)) void
attend_with(float *att, int64_t astride, const float *q, int64_t qstride, int64_t m, int64_t n0,
	    const struct ouro_kv_run *runs, int nruns, int64_t hd, float *scores, float *work,
	    float (*dot)(const float *, const float *, int64_t),
	    void (*axpy)(float *, float, const float *, int64_t),
	    void (*widen)(float *, const uint16_t *, int64_t))
{
	float scale = 1.0f / sqrtf((float)hd), *sum = work, *tmp = work + m;
	int64_t nk = n0 + m, r = 0;

	/* scores[i, r] = q_i . k_r / sqrt(hd), each key read once for all
	 * the queries that see it (query i sees keys 0..n0+i) */
	for (int u = 0; u < nruns; u++)
		for (int64_t j = 0; j < runs[u].n; j++, r++) {
			const float *k = run_row(&runs[u], 0, j, hd, tmp, widen);
			for (int64_t i = r > n0 ? r - n0 : 0; i < m; i++)
				scores[i * nk + r] = dot(q + i * qstride, k, hd) * scale;
		}
	for (int64_t i = 0; i < m; i++) {
		float *sc = scores + i * nk, mx = -INFINITY;

		sum[i] = 0;
		for (int64_t k = 0; k <= n0 + i; k++)
			mx = sc[k] > mx ? sc[k] : mx;
		for (int64_t k = 0; k <= n0 + i; k++)
			sum[i] += sc[k] = expf(sc[k] - mx);
		memset(att + i * astride, 0, (size_t)hd * sizeof *att);
	}
	r = 0;
	for (int u = 0; u < nruns; u++)
		for (int64_t j = 0; j < runs[u].n; j++, r++) {
			const float *v = run_row(&runs[u], 1, j, hd, tmp, widen);
			for (int64_t i = r > n0 ? r - n0 : 0; i < m; i++)
				axpy(att + i * astride, scores[i * nk + r] / sum[i], v, hd);
		}
}

#if OURO_X86
T512 static void attend_512(float *att, int64_t astride, const float *q, int64_t qstride,
			    int64_t m, int64_t n0, const struct ouro_kv_run *runs, int nruns,
			    int64_t hd, float *scores, float *work)
{
	attend_with(att, astride, q, qstride, m, n0, runs, nruns, hd, scores, work, dot_512,
		    axpy_512, widen_512);
}
#endif

void ouro_attend(float *att, int64_t astride, const float *q, int64_t qstride, int64_t m,
		 int64_t n0, const struct ouro_kv_run *runs, int nruns, int64_t hd, float *scores,
		 float *work)
{
#if OURO_X86
	if (ouro_cpu_level() == 2)
		attend_512(att, astride, q, qstride, m, n0, runs, nruns, hd, scores, work);
	else
#endif
		attend_with(att, astride, q, qstride, m, n0, runs, nruns, hd, scores, work, dot_c,
			    axpy_c, widen_c);
}

struct att_job {
	struct ouro_fwd_buf *b;
	const struct ouro_config *c;
	const int64_t *lens;    /* [nseq] positions of each sequence */
	const int64_t *first;   /* [nseq] its first row */
	int64_t rows;           /* of all sequences: b's scratch is sized for them */
};

/* Causal attention of (sequence, head) pairs [begin, end) on thread
 * `part`, QBLOCK query rows at a time (ouro_attend: the batch engine's
 * arithmetic), each sequence's rows over its own keys and values. */
static void attention_heads(void *ctx, int part, int64_t begin, int64_t end)
{
	const struct att_job *j = ctx;
	const struct ouro_config *c = j->c;
	struct ouro_fwd_buf *b = j->b;
	int64_t H = c->num_attention_heads, KV = c->num_key_value_heads, hd = c->head_dim;
	int64_t QD = H * hd, KD = KV * hd, group = H / KV;
	float *sbuf = b->s + (size_t)part * ouro_scores_floats(j->rows, hd);

	for (int64_t i = begin; i < end; i++) {
		int64_t h = i % H, n = j->lens[i / H], r0 = j->first[i / H], off = (h / group) * hd;

		for (int64_t i0 = 0; i0 < n; i0 += QBLOCK) {
			int64_t m = n - i0 < QBLOCK ? n - i0 : QBLOCK;
			struct ouro_kv_run run = {b->k + r0 * KD + off, b->v + r0 * KD + off, i0 + m, KD,
						  OURO_F32};

			ouro_attend(b->att + (r0 + i0) * QD + h * hd, QD, b->q + (r0 + i0) * QD + h * hd,
				    QD, m, i0, &run, 1, hd, sbuf, sbuf + QBLOCK * (size_t)n);
		}
	}
}

void ouro_layer_qkv(const struct ouro_model *m, const struct ouro_layer *L,
		    struct ouro_fwd_buf *b, int64_t n)
{
	const struct ouro_config *c = &m->cfg;
	struct rows_job j = {b, c, NULL};

	ouro_rmsnorm(b->xn, b->h, L->attn_norm, n, c->hidden_size, (float)c->rms_norm_eps);
	ouro_matmul(b->q, b->xn, &L->wq, n, b->w);
	ouro_matmul(b->k, b->xn, &L->wk, n, b->w);
	ouro_matmul(b->v, b->xn, &L->wv, n, b->w);
	ouro_parallel(rope_rows, &j, n);
}

void ouro_layer_finish(const struct ouro_model *m, const struct ouro_layer *L,
		       struct ouro_fwd_buf *b, int64_t n)
{
	const struct ouro_config *c = &m->cfg;
	struct rows_job j = {b, c, L->attn_out_norm};

	ouro_matmul(b->out, b->att, &L->wo, n, b->w);
	ouro_parallel(add_normed_rows, &j, n);
	ouro_rmsnorm(b->xn, b->h, L->mlp_norm, n, c->hidden_size, (float)c->rms_norm_eps);
	ouro_matmul(b->g, b->xn, &L->wgate, n, b->w);
	ouro_matmul(b->u, b->xn, &L->wup, n, b->w);
	ouro_parallel(swiglu_rows, &j, n);
	ouro_matmul(b->out, b->g, &L->wdown, n, b->w);
	j.weight = L->mlp_out_norm;
	ouro_parallel(add_normed_rows, &j, n);
}

void ouro_embed(const struct ouro_model *m, const int32_t *ids, int64_t n, float *h)
{
	int64_t D = m->cfg.hidden_size;
	size_t esize = ouro_dtype_size(m->embed->dtype);

	for (int64_t i = 0; i < n; i++)
		ouro_to_f32(h + i * D, (const char *)m->embed->data + (size_t)ids[i] * (size_t)D * esize,
			    m->embed->dtype, (size_t)D);
}

int ouro_check_ids(const struct ouro_config *c, const int32_t *ids, int64_t n, int64_t p0)
{
	if (n < 1)
		return ouro_fail(OURO_EINPUT, "empty sequence");
	if (p0 + n > c->max_position_embeddings)
		return ouro_fail(OURO_EINPUT, "sequence of %lld tokens exceeds max_position_embeddings %lld",
				 (long long)(p0 + n), (long long)c->max_position_embeddings);
	for (int64_t i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= c->vocab_size)
			return ouro_fail(OURO_EINPUT, "token %lld: id %d is outside the vocabulary (0..%lld)",
					 (long long)(p0 + i + 1), ids[i], (long long)c->vocab_size - 1);
	return OURO_OK;
}

int ouro_forward_batch(struct ouro_model *m, const int32_t *ids, const int64_t *lens, int nseq,
		       int steps, float *hidden)
{
	const struct ouro_config *c = &m->cfg;
	int64_t D = c->hidden_size, N = c->num_hidden_layers, half = c->head_dim / 2, rows = 0;
	struct ouro_fwd_buf b;
	int64_t *first;
	int rc;

	if (steps < 1)
		return ouro_fail(OURO_EINPUT, "%d loop steps requested, at least 1 needed", steps);
	if (nseq < 1)
		return ouro_fail(OURO_EINPUT, "no sequences to run");
	for (int j = 0; j < nseq; j++) {
		if ((rc = ouro_check_ids(c, ids + rows, lens[j], 0))) {
			if (nseq > 1) {
				char where[48];
				snprintf(where, sizeof where, "sequence %d", j + 1);
				rc = ouro_refail(rc, where);
			}
			return rc;
		}
		rows += lens[j];
	}
	/* one sequence is at most max_position_embeddings <= 2^24 positions
	 * (config.c), which the sizes of ouro_fwd_alloc rely on; a pass of
	 * several keeps to the same bound */
	if (rows > (1 << 24))
		return ouro_fail(OURO_ENOMEM, "%lld positions in one pass, at most %d", (long long)rows,
				 1 << 24);
	if (!(first = malloc((size_t)nseq * sizeof *first)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if ((rc = ouro_fwd_alloc(&b, c, rows))) {
		free(first);
		return rc;
	}
	ouro_embed(m, ids, rows, b.h);
	for (int j = 0; j < nseq; j++) {
		first[j] = j ? first[j - 1] + lens[j - 1] : 0;
		struct ouro_fwd_buf tb = {.cos = b.cos + first[j] * half, .sin = b.sin + first[j] * half};
		ouro_rope_tables(&tb, c, 0, lens[j]);
	}
	struct att_job aj = {&b, c, lens, first, rows};
	for (int t = 0; t < steps; t++) {
		for (int64_t l = 0; l < N; l++) {
			ouro_layer_qkv(m, &m->layers[l], &b, rows);
			ouro_parallel_parts(attention_heads, &aj, (int64_t)nseq * c->num_attention_heads);
			ouro_layer_finish(m, &m->layers[l], &b, rows);
		}
		ouro_rmsnorm(b.h, b.h, m->final_norm, rows, D, (float)c->rms_norm_eps);
		for (int j = 0; j < nseq; j++)
			memcpy(hidden + (size_t)((steps * first[j] + t * lens[j]) * D), b.h + first[j] * D,
			       (size_t)(lens[j] * D) * sizeof(float));
	}
	ouro_fwd_free(&b);
	free(first);
	return OURO_OK;
}

int ouro_forward(struct ouro_model *m, const int32_t *ids, int64_t n, int steps,
		 float *hidden)
{
	return ouro_forward_batch(m, ids, &n, 1, steps, hidden);
}

int ouro_logits(struct ouro_model *m, const float *h, int64_t n, float *logits)
{
	float *wbuf = NULL;

	/* one row needs no scratch buffer */
	if (n > 1 && !(wbuf = malloc(ouro_wbuf_floats(m->cfg.hidden_size) * sizeof *wbuf)))
		return ouro_fail(OURO_ENOMEM, "out of memory for the lm_head scratch buffer");
	ouro_matmul(logits, h, &m->lm_head, n, wbuf);
	free(wbuf);
	return OURO_OK;
}
