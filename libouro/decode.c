/*
 * decode.c - generation: prefill of a prompt, then one token at a time
 * with a KV cache and real early exit.
 *
 * The cache has one slot per (loop t, layer l), index t*N + l: layer l in
 * loop t attends only to keys and values that layer l produced in loop t.
 * The prefill runs all T loops over the whole prompt and keeps every slot.
 * A decoded token runs loops until its exit rule fires (ouro_exit_update,
 * the same decision ouro-gate makes afterwards); loops after the exit are
 * not computed. What later tokens then find for it depends on the policy:
 *
 *   full  every (t, l) slot per token; the slots of loops a token skipped
 *         hold the keys and values of its exit loop, as if its state had
 *         stopped changing there. Without early exit this is exactly the
 *         reference's cache.
 *   last  one cache per layer for decoded tokens, holding the keys and
 *         values of the token's last computed loop; every loop reads it.
 *   mean  the same, holding their mean over the computed loops.
 *
 * last and mean need 1/T of the decode-time cache memory of full (the
 * paper's decode-time KV sharing); prompt tokens keep all slots in every
 * policy.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct ouro_gen {
	struct ouro_model *m;
	struct ouro_gen_opts o;
	struct ouro_gate own_gate;  /* the model's, unless opts give one */
	const struct ouro_gate *gate;
	int T;
	int64_t N, D, KD, cap;
	int64_t prompt;             /* P: prompt tokens, all slots kept */
	int64_t pos;                /* next position */
	float **kslot, **vslot;     /* [T*N] -> [rows, KD]: cap rows (full) or P rows */
	float **kshare, **vshare;   /* [N] -> [cap - P, KD] (last, mean) */
	struct ouro_fwd_buf b;      /* buffers for one position */
	float *scores;              /* [threads, cap] */
	float *hprev;               /* [D] state after the previous loop */
	float *hmix;                /* [D] pdf-weighted mixture (weighted exit) */
	float *kacc, *vacc;         /* [N, KD] sums over loops (mean) */
	struct ouro_gen_stats st;
};

static uint64_t kv_bytes(const struct ouro_gen *g, int64_t prompt)
{
	uint64_t per = 2 * (uint64_t)g->KD * sizeof(float) * (uint64_t)g->N;

	if (g->o.kv == OURO_KV_FULL)
		return per * (uint64_t)g->T * (uint64_t)g->cap;
	return per * ((uint64_t)g->T * (uint64_t)prompt + (uint64_t)(g->cap - prompt));
}

int ouro_gen_new(struct ouro_gen **out, struct ouro_model *m, const struct ouro_gen_opts *o)
{
	const struct ouro_config *c = ouro_model_config(m);
	struct ouro_gen *g;
	int rc;

	*out = NULL;
	if (o->steps < 1)
		return ouro_fail(OURO_EUSAGE, "%d loop steps requested, at least 1 needed", o->steps);
	if (o->capacity < 1 || o->capacity > c->max_position_embeddings)
		return ouro_fail(OURO_EINPUT, "%lld tokens requested; max_position_embeddings is %lld",
				 (long long)o->capacity, (long long)c->max_position_embeddings);
	if (o->rule.kind == OURO_EXIT_STATIC && (o->rule.step < 0 || o->rule.step >= o->steps))
		return ouro_fail(OURO_EUSAGE, "exit step %d is outside 0..%d", o->rule.step, o->steps - 1);
	if (!(g = calloc(1, sizeof *g)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	g->m = m;
	g->o = *o;
	g->T = o->steps;
	g->N = c->num_hidden_layers;
	g->D = c->hidden_size;
	g->KD = c->num_key_value_heads * c->head_dim;
	g->cap = o->capacity;
	g->gate = o->gate ? o->gate : &g->own_gate;
	if ((!o->gate && (rc = ouro_gate_from_model(&g->own_gate, m))) ||
	    (rc = ouro_fwd_alloc(&g->b, c, 1)))
		goto fail;
	g->scores = malloc((size_t)ouro_threads() * (size_t)g->cap * sizeof *g->scores);
	g->hprev = malloc((size_t)g->D * sizeof *g->hprev);
	g->hmix = malloc((size_t)g->D * sizeof *g->hmix);
	g->kacc = malloc((size_t)(g->N * g->KD) * sizeof *g->kacc);
	g->vacc = malloc((size_t)(g->N * g->KD) * sizeof *g->vacc);
	g->kslot = calloc((size_t)(g->T * g->N), sizeof *g->kslot);
	g->vslot = calloc((size_t)(g->T * g->N), sizeof *g->vslot);
	g->kshare = calloc((size_t)g->N, sizeof *g->kshare);
	g->vshare = calloc((size_t)g->N, sizeof *g->vshare);
	if (!g->scores || !g->hprev || !g->hmix || !g->kacc || !g->vacc || !g->kslot ||
	    !g->vslot || !g->kshare || !g->vshare) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto fail;
	}
	*out = g;
	return OURO_OK;
fail:
	ouro_gen_free(g);
	return rc;
}

void ouro_gen_free(struct ouro_gen *g)
{
	if (!g)
		return;
	for (int64_t i = 0; g->kslot && i < g->T * g->N; i++) {
		free(g->kslot[i]);
		free(g->vslot[i]);
	}
	for (int64_t l = 0; g->kshare && l < g->N; l++) {
		free(g->kshare[l]);
		free(g->vshare[l]);
	}
	free(g->kslot);
	free(g->vslot);
	free(g->kshare);
	free(g->vshare);
	free(g->scores);
	free(g->hprev);
	free(g->hmix);
	free(g->kacc);
	free(g->vacc);
	ouro_fwd_free(&g->b);
	ouro_gate_free(&g->own_gate);
	free(g);
}

/* Allocates the cache for a prompt of P tokens, failing up front with the
 * size when it cannot fit in this machine's memory. */
static int cache_alloc(struct ouro_gen *g, int64_t P)
{
	uint64_t need = kv_bytes(g, P);
	uint64_t phys = ouro_phys_bytes();
	int shared = g->o.kv != OURO_KV_FULL;
	size_t rows = (size_t)(shared ? P : g->cap), drows = (size_t)(g->cap - P);

	if (phys && need > phys)
		return ouro_fail(OURO_ENOMEM, "the KV cache for %lld tokens needs %.1f MiB, more than this machine's %.1f MiB of memory",
				 (long long)g->cap, (double)need / (1 << 20), (double)phys / (1 << 20));
	for (int64_t i = 0; i < g->T * g->N; i++)
		if (!(g->kslot[i] = malloc(rows * (size_t)g->KD * sizeof(float))) ||
		    !(g->vslot[i] = malloc(rows * (size_t)g->KD * sizeof(float))))
			goto nomem;
	for (int64_t l = 0; shared && l < g->N; l++)
		if (!(g->kshare[l] = malloc((drows ? drows : 1) * (size_t)g->KD * sizeof(float))) ||
		    !(g->vshare[l] = malloc((drows ? drows : 1) * (size_t)g->KD * sizeof(float))))
			goto nomem;
	g->st.kv_bytes = need;
	return OURO_OK;
nomem:
	return ouro_fail(OURO_ENOMEM, "the KV cache for %lld tokens needs %.1f MiB, which is not available",
			 (long long)g->cap, (double)need / (1 << 20));
}

/* Runs the exit rule over the T states of one token (all computed), as
 * ouro-gate does; *h gets the chosen state, or the pdf-weighted mixture. */
static int select_exit(struct ouro_gen *g, const float *states, int64_t stride, float *h)
{
	struct ouro_exit_state s;
	int t;

	ouro_exit_begin(&s);
	memset(g->hmix, 0, (size_t)g->D * sizeof *g->hmix);
	for (t = 0; t < g->T; t++) {
		const float *ht = states + t * stride;
		double diff = t ? ouro_exit_diff(ht, states + (t - 1) * stride, g->D) : 0;
		int stop = ouro_exit_update(&s, &g->o.rule, t, g->T, ouro_gate_logit(g->gate, ht), diff);

		for (int64_t j = 0; j < g->D; j++)
			g->hmix[j] += (float)s.pdf * ht[j];
		if (stop)
			break;
	}
	memcpy(h, g->o.rule.kind == OURO_EXIT_WEIGHTED ? g->hmix : states + t * stride,
	       (size_t)g->D * sizeof *h);
	return t;
}

int ouro_gen_prefill(struct ouro_gen *g, const int32_t *ids, int64_t n, float *h, int *exit_step)
{
	float *hidden;
	int rc;

	if (g->pos)
		return ouro_fail(OURO_EINPUT, "the prompt was already given");
	if (n > g->cap)
		return ouro_fail(OURO_EINPUT, "a prompt of %lld tokens exceeds the %lld tokens requested",
				 (long long)n, (long long)g->cap);
	if ((rc = ouro_check_ids(ouro_model_config(g->m), ids, n, 0)) || (rc = cache_alloc(g, n)))
		return rc;
	if (!(hidden = malloc((size_t)g->T * (size_t)(n * g->D) * sizeof *hidden)))
		return ouro_fail(OURO_ENOMEM, "out of memory for the prompt's hidden states");
	rc = ouro_forward_kv(g->m, ids, n, g->T, hidden, g->kslot, g->vslot);
	if (rc == OURO_OK) {
		*exit_step = select_exit(g, hidden + (n - 1) * g->D, n * g->D, h);
		g->prompt = g->pos = n;
		g->st.prefill_tokens = (uint64_t)n;
	}
	free(hidden);
	return rc;
}

struct attend_job {
	struct ouro_gen *g;
	const float *seg_k[3], *seg_v[3];   /* prompt rows, decoded rows, own */
	int64_t seg_n[3];
};

/* Heads [begin, end) of the one query in g->b.q, on thread `part`: the
 * scores and the weighted sum of values as matrix-vector products over
 * each segment's rows (OpenBLAS, one thread). */
static void attend_heads(void *ctx, int part, int64_t begin, int64_t end)
{
	const struct attend_job *a = ctx;
	struct ouro_gen *g = a->g;
	const struct ouro_config *c = ouro_model_config(g->m);
	int64_t hd = c->head_dim, group = c->num_attention_heads / c->num_key_value_heads;
	float scale = 1.0f / sqrtf((float)hd), *scores = g->scores + (size_t)part * (size_t)g->cap;

	for (int64_t h = begin; h < end; h++) {
		const float *q = g->b.q + h * hd;
		int64_t off = (h / group) * hd, j = 0;
		float mx = -INFINITY, sum = 0, *att = g->b.att + h * hd;

		for (int s = 0; s < 3; s++) {
			if (a->seg_n[s])
				cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)a->seg_n[s], (blasint)hd,
					    scale, a->seg_k[s] + off, (blasint)g->KD, q, 1, 0.0f,
					    scores + j, 1);
			j += a->seg_n[s];
		}
		for (int64_t r = 0; r < j; r++)
			mx = scores[r] > mx ? scores[r] : mx;
		for (int64_t r = 0; r < j; r++)
			sum += scores[r] = expf(scores[r] - mx);
		for (int64_t r = 0; r < j; r++)
			scores[r] /= sum;
		j = 0;
		for (int s = 0; s < 3; s++) {
			if (a->seg_n[s])
				cblas_sgemv(CblasRowMajor, CblasTrans, (blasint)a->seg_n[s], (blasint)hd,
					    1.0f, a->seg_v[s] + off, (blasint)g->KD, scores + j, 1,
					    j ? 1.0f : 0.0f, att, 1);
			j += a->seg_n[s];
		}
	}
}

/* Attention of the one query in g->b.q over the keys of slot (t, l):
 * the prompt's rows, the decoded tokens' rows (the slot itself under
 * full, the layer's shared cache otherwise), and the token's own; the
 * heads are shared out among the threads. */
static void attend(struct ouro_gen *g, int t, int64_t l)
{
	int64_t slot = t * g->N + l, KD = g->KD, P = g->prompt;
	int full = g->o.kv == OURO_KV_FULL;
	struct attend_job a = {
		.g = g,
		.seg_k = {g->kslot[slot], full ? g->kslot[slot] + P * KD : g->kshare[l], g->b.k},
		.seg_v = {g->vslot[slot], full ? g->vslot[slot] + P * KD : g->vshare[l], g->b.v},
		.seg_n = {P, g->pos - P, 1},
	};

	ouro_parallel_parts(attend_heads, &a, ouro_model_config(g->m)->num_attention_heads);
}

int ouro_gen_step(struct ouro_gen *g, int32_t id, float *h, int *exit_step)
{
	const struct ouro_config *c = ouro_model_config(g->m);
	struct ouro_fwd_buf *b = &g->b;
	struct ouro_exit_state s;
	size_t kbytes = (size_t)g->KD * sizeof(float);
	int64_t row = g->pos - g->prompt;
	int full = g->o.kv == OURO_KV_FULL, rc, t;

	if (!g->prompt)
		return ouro_fail(OURO_EINPUT, "no prompt was given");
	if (g->pos >= g->cap)
		return ouro_fail(OURO_EINPUT, "all %lld requested tokens are used", (long long)g->cap);
	if ((rc = ouro_check_ids(c, &id, 1, g->pos)))
		return rc;
	ouro_embed(g->m, &id, 1, b->h);
	ouro_rope_tables(b, c, g->pos, 1);
	ouro_exit_begin(&s);
	memset(g->hmix, 0, (size_t)g->D * sizeof *g->hmix);
	memset(g->kacc, 0, (size_t)(g->N * g->KD) * sizeof *g->kacc);
	memset(g->vacc, 0, (size_t)(g->N * g->KD) * sizeof *g->vacc);
	for (t = 0; t < g->T; t++) {
		for (int64_t l = 0; l < g->N; l++) {
			const struct ouro_layer *L = &g->m->layers[l];

			ouro_layer_qkv(g->m, L, b, 1);
			attend(g, t, l);
			if (full) {
				memcpy(g->kslot[t * g->N + l] + g->pos * g->KD, b->k, kbytes);
				memcpy(g->vslot[t * g->N + l] + g->pos * g->KD, b->v, kbytes);
			} else {
				for (int64_t i = 0; i < g->KD; i++) {
					g->kacc[l * g->KD + i] += b->k[i];
					g->vacc[l * g->KD + i] += b->v[i];
				}
				if (g->o.kv == OURO_KV_LAST) {
					memcpy(g->kshare[l] + row * g->KD, b->k, kbytes);
					memcpy(g->vshare[l] + row * g->KD, b->v, kbytes);
				}
			}
			ouro_layer_finish(g->m, L, b, 1);
		}
		ouro_rmsnorm(b->h, b->h, g->m->final_norm, 1, g->D, (float)c->rms_norm_eps);
		g->st.layer_evals += (uint64_t)g->N;
		int stop = ouro_exit_update(&s, &g->o.rule, t, g->T, ouro_gate_logit(g->gate, b->h),
					    t ? ouro_exit_diff(b->h, g->hprev, g->D) : 0);
		for (int64_t j = 0; j < g->D; j++)
			g->hmix[j] += (float)s.pdf * b->h[j];
		memcpy(g->hprev, b->h, (size_t)g->D * sizeof *g->hprev);
		if (stop)
			break;
	}
	/* the loops this token skipped: under full, their slots repeat the
	 * exit loop's keys and values; under mean, average what was computed */
	for (int64_t l = 0; full && l < g->N; l++)
		for (int u = t + 1; u < g->T; u++) {
			memcpy(g->kslot[u * g->N + l] + g->pos * g->KD,
			       g->kslot[t * g->N + l] + g->pos * g->KD, kbytes);
			memcpy(g->vslot[u * g->N + l] + g->pos * g->KD,
			       g->vslot[t * g->N + l] + g->pos * g->KD, kbytes);
		}
	if (g->o.kv == OURO_KV_MEAN)
		for (int64_t i = 0; i < g->N * g->KD; i++) {
			int64_t l = i / g->KD, k = i % g->KD;
			g->kshare[l][row * g->KD + k] = g->kacc[i] / (float)(t + 1);
			g->vshare[l][row * g->KD + k] = g->vacc[i] / (float)(t + 1);
		}
	memcpy(h, g->o.rule.kind == OURO_EXIT_WEIGHTED ? g->hmix : b->h, (size_t)g->D * sizeof *h);
	*exit_step = t;
	g->pos++;
	g->st.decoded_tokens++;
	g->st.decoded_loops += (uint64_t)(t + 1);
	return OURO_OK;
}

const struct ouro_gen_stats *ouro_gen_stats(const struct ouro_gen *g)
{
	return &g->st;
}
