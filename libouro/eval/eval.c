/*
 * eval.c - scoring windows of text at every loop step, and the request
 * layout of lm-evaluation-harness, for ouro-eval.
 *
 * A batch of windows costs one ouro_forward_batch (prefill-style matrix
 * products over all positions of all the windows, every loop's state
 * kept) and passes of lm_head over the scored positions of every window
 * and loop in blocks of LOGIT_ROWS rows: a block of logits
 * [LOGIT_ROWS, V] at a time, reduced at once to a cross-entropy and a
 * greedy flag per row, so that no [T, n, V] tensor is ever held. The
 * row reductions are split across the library's threads; each row is
 * reduced by one thread in a fixed order, so results do not depend on the
 * thread count. Neither do they depend on the other windows of the batch:
 * the forward pass and lm_head compute each row as if it were alone.
 *
 * Exit steps come from ouro_exit_update fed loop by loop, the function
 * ouro-generate uses when it really stops early, so a threshold evaluated
 * here selects exactly the loop that generation would stop at.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "internal.h"

#define LOGIT_ROWS 256  /* positions per lm_head block */

struct ouro_scorer {
	struct ouro_model *m;
	struct ouro_gate gate;          /* a copy: the given gate or the model's */
	int T, nrules;
	struct ouro_exit_rule *rules;   /* [nrules] */
	int64_t cap;                    /* positions the buffers hold, all windows */
	int req_cap;                    /* windows they hold */
	int32_t *ids;                   /* [cap] the windows' inputs back to back */
	int64_t *lens;                  /* [req_cap] */
	float *hidden;                  /* [T, n, D] of each window, back to back */
	float *gate_logits;             /* [T, n] of each window, back to back */
	float *pdf, *cdf;               /* the same */
	float *loss;                    /* the same */
	unsigned char *greedy;          /* the same */
	int32_t *exit;                  /* [nrules, n] of each window, back to back */
	struct ouro_scores *out;        /* [req_cap] */
	float *rows_h;                  /* [LOGIT_ROWS, D] states of an lm_head block */
	int32_t *rows_tgt;              /* [LOGIT_ROWS] their targets */
	int64_t *rows_dst;              /* [LOGIT_ROWS] their places in loss and greedy */
	float *logits;                  /* [LOGIT_ROWS, V] */
};

int ouro_scorer_new(struct ouro_scorer **out, struct ouro_model *m, const struct ouro_gate *gate,
		    int steps, const struct ouro_exit_rule *rules, int nrules)
{
	const struct ouro_config *c = ouro_model_config(m);
	struct ouro_scorer *s;
	int rc;

	*out = NULL;
	if (steps < 1)
		return ouro_fail(OURO_EINPUT, "%d loop steps requested, at least 1 needed", steps);
	if (gate && gate->dim != c->hidden_size)
		return ouro_fail(OURO_EMODEL, "the exit gate has width %lld, the model's hidden_size is %lld",
				 (long long)gate->dim, (long long)c->hidden_size);
	if (!(s = calloc(1, sizeof *s)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	s->m = m;
	s->T = steps;
	s->nrules = nrules;
	if (gate) {
		s->gate.dim = gate->dim;
		s->gate.b = gate->b;
		if ((s->gate.w = malloc((size_t)gate->dim * sizeof *s->gate.w)))
			memcpy(s->gate.w, gate->w, (size_t)gate->dim * sizeof *s->gate.w);
	} else if ((rc = ouro_gate_from_model(&s->gate, m))) {
		free(s);
		return rc;
	}
	s->rules = malloc((size_t)(nrules > 0 ? nrules : 1) * sizeof *s->rules);
	s->logits = malloc((size_t)LOGIT_ROWS * (size_t)c->vocab_size * sizeof *s->logits);
	s->rows_h = malloc((size_t)LOGIT_ROWS * (size_t)c->hidden_size * sizeof *s->rows_h);
	s->rows_tgt = malloc(LOGIT_ROWS * sizeof *s->rows_tgt);
	s->rows_dst = malloc(LOGIT_ROWS * sizeof *s->rows_dst);
	if (!s->gate.w || !s->rules || !s->logits || !s->rows_h || !s->rows_tgt || !s->rows_dst) {
		ouro_scorer_free(s);
		return ouro_fail(OURO_ENOMEM, "out of memory for the scorer");
	}
	if (nrules)
		memcpy(s->rules, rules, (size_t)nrules * sizeof *rules);
	*out = s;
	return OURO_OK;
}

static void free_buffers(struct ouro_scorer *s)
{
	free(s->ids);
	free(s->hidden);
	free(s->gate_logits);
	free(s->pdf);
	free(s->cdf);
	free(s->loss);
	free(s->greedy);
	free(s->exit);
	s->ids = NULL;
	s->hidden = s->gate_logits = s->pdf = s->cdf = s->loss = NULL;
	s->greedy = NULL;
	s->exit = NULL;
	s->cap = 0;
}

void ouro_scorer_free(struct ouro_scorer *s)
{
	if (!s)
		return;
	free_buffers(s);
	ouro_gate_free(&s->gate);
	free(s->rules);
	free(s->lens);
	free(s->out);
	free(s->rows_h);
	free(s->rows_tgt);
	free(s->rows_dst);
	free(s->logits);
	free(s);
}

/* Makes room for nreq windows of n positions in all. */
static int reserve(struct ouro_scorer *s, int64_t n, int nreq)
{
	int64_t D = ouro_model_config(s->m)->hidden_size;
	size_t tn, tnd;

	if (nreq > s->req_cap) {
		int64_t *lens = realloc(s->lens, (size_t)nreq * sizeof *lens);
		if (lens)
			s->lens = lens;
		struct ouro_scores *out = realloc(s->out, (size_t)nreq * sizeof *out);
		if (out)
			s->out = out;
		if (!lens || !out)
			return ouro_fail(OURO_ENOMEM, "out of memory for %d windows", nreq);
		s->req_cap = nreq;
	}
	if (n <= s->cap)
		return OURO_OK;
	free_buffers(s);
	tn = (size_t)s->T * (size_t)n;
	tnd = tn * (size_t)D;
	s->ids = malloc((size_t)n * sizeof *s->ids);
	s->hidden = malloc(tnd * sizeof *s->hidden);
	s->gate_logits = malloc(tn * sizeof(float));
	s->pdf = malloc(tn * sizeof(float));
	s->cdf = malloc(tn * sizeof(float));
	s->loss = malloc(tn * sizeof(float));
	s->greedy = malloc(tn);
	s->exit = malloc((size_t)(s->nrules > 0 ? s->nrules : 1) * (size_t)n * sizeof(int32_t));
	if (!s->ids || !s->hidden || !s->gate_logits || !s->pdf || !s->cdf || !s->loss || !s->greedy ||
	    !s->exit) {
		free_buffers(s);
		return ouro_fail(OURO_ENOMEM, "a window of %lld tokens needs %.1f MiB for the states of %d loops, which is not available",
				 (long long)n, (double)tnd * 4 / (1 << 20), s->T);
	}
	s->cap = n;
	return OURO_OK;
}

/* The reduction of one block of logits rows. */
struct rows_job {
	const float *logits;      /* [rows, V] */
	int64_t V;
	const int32_t *targets;   /* [rows] */
	const int64_t *dst;       /* [rows] where each row's results go in loss and greedy */
	float *loss;
	unsigned char *greedy;
};

#define LANES 8          /* independent partial results, so the loops vectorize */
#define EXP_BLOCK 1024   /* vocabulary entries per vectorized block */

/* exp(x) for x <= 0, float: x = n ln2 + r with |r| <= ln2/2, exp(r) by its
 * Taylor series to r^7 (truncation below 1e-8 relative), 2^n put into the
 * exponent bits. Arguments below -87 count as -87 (about 1.6e-38): a term
 * that small never shows in a sum that holds a term of 1. The clamp is
 * done on the bits, as integers, so that the loops below have no branches
 * and vectorize. */
static inline float exp_nonpositive(float x)
{
	const float log2e = 1.44269504f, ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-6f;
	const float round = 12582912.0f;   /* 1.5 * 2^23: adding it rounds to an integer */
	const uint32_t lim = 0x42ae0000u;  /* the bits of 87.0f */
	uint32_t u;
	int32_t i;
	float s;

	memcpy(&u, &x, sizeof u);
	u &= 0x7fffffffu;
	u = (u < lim ? u : lim) | 0x80000000u;
	memcpy(&x, &u, sizeof x);
	float n = (x * log2e + round) - round;
	float r = (x - n * ln2_hi) - n * ln2_lo;
	float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 +
		  r * (1.0f / 720 + r * (1.0f / 5040)))))));
	i = ((int32_t)n + 127) * (1 << 23);
	memcpy(&s, &i, sizeof s);
	return p * s;
}

/* sum of exp(x[v] - mx) over one block [EXP_BLOCK], in LANES partial sums */
static double exp_block_sum(const float *restrict x, float mx)
{
	float e[EXP_BLOCK], lane[LANES] = {0};
	double z = 0;

	for (int v = 0; v < EXP_BLOCK; v++)
		e[v] = exp_nonpositive(x[v] - mx);
	for (int v = 0; v < EXP_BLOCK; v += LANES)
		for (int k = 0; k < LANES; k++)
			lane[k] += e[v + k];
	for (int k = 0; k < LANES; k++)
		z += lane[k];
	return z;
}

/* the largest of x [n], n a multiple of LANES */
static float max_lanes(const float *restrict x, int64_t n)
{
	float lane[LANES], mx;

	for (int k = 0; k < LANES; k++)
		lane[k] = x[k];
	for (int64_t v = 0; v < n; v += LANES)
		for (int k = 0; k < LANES; k++)
			lane[k] = x[v + k] > lane[k] ? x[v + k] : lane[k];
	mx = lane[0];
	for (int k = 1; k < LANES; k++)
		mx = lane[k] > mx ? lane[k] : mx;
	return mx;
}

/* loss = logsumexp(row) - row[target] (blocks of float terms summed in
 * double), greedy = (the first index of the maximum == target). */
static void reduce_rows(void *ctx, int64_t begin, int64_t end)
{
	const struct rows_job *j = ctx;
	int64_t V = j->V, body = V / LANES * LANES, v;

	for (int64_t r = begin; r < end; r++) {
		const float *x = j->logits + r * V;
		int32_t tgt = j->targets[r];
		float mx = body ? max_lanes(x, body) : x[0];
		double z = 0;

		for (v = body; v < V; v++)
			mx = x[v] > mx ? x[v] : mx;
		for (v = 0; v + EXP_BLOCK <= V; v += EXP_BLOCK)
			z += exp_block_sum(x + v, mx);
		for (; v < V; v++)
			z += exp_nonpositive(x[v] - mx);
		j->loss[j->dst[r]] = (float)((double)mx + log(z) - (double)x[tgt]);

		/* greedy: the target holds the maximum and nothing before it does */
		int greedy = x[tgt] == mx;
		for (v = 0; greedy && v < tgt; v++)
			greedy = x[v] != mx;
		j->greedy[j->dst[r]] = (unsigned char)greedy;
	}
}

/* The gate, the exit distribution and the exit step of every rule at
 * every position of one window: its [T, n] and [nrules, n] tables start
 * at offsets T * off and nrules * off, its states at T * off * D. */
static int window_exits(struct ouro_scorer *s, int64_t off, int64_t n, int64_t D)
{
	int T = s->T;
	const float *hidden = s->hidden + (size_t)(T * off * D);
	float *gl = s->gate_logits + T * off;

	for (int64_t k = 0; k < (int64_t)T * n; k++)
		gl[k] = ouro_gate_logit(&s->gate, hidden + k * D);
	ouro_exit_dist(gl, T, n, s->pdf + T * off, s->cdf + T * off);
	return ouro_exit_steps(s->m, hidden, T, n, gl, s->rules, s->nrules, s->exit + s->nrules * off);
}

/* lm_head over the gathered rows [rows] and their reduction. */
static int logit_block(struct ouro_scorer *s, int64_t rows)
{
	struct rows_job job = {s->logits, ouro_model_config(s->m)->vocab_size, s->rows_tgt,
			       s->rows_dst, s->loss, s->greedy};
	int rc;

	if ((rc = ouro_logits(s->m, s->rows_h, rows, s->logits)))
		return rc;
	ouro_parallel(reduce_rows, &job, rows);
	return OURO_OK;
}

int ouro_score_batch(struct ouro_scorer *s, const struct ouro_score_req *req, int nreq,
		     const struct ouro_scores **out)
{
	const struct ouro_config *c = ouro_model_config(s->m);
	int64_t D = c->hidden_size, V = c->vocab_size, rows = 0, nb = 0, off = 0;
	int T = s->T, rc;

	*out = NULL;
	for (int w = 0; w < nreq; w++) {
		const struct ouro_score_req *q = &req[w];
		if (q->n < 1 || q->lo < 0 || q->lo > q->n)
			return ouro_fail(OURO_EINPUT, "window of %lld tokens scored from %lld",
					 (long long)q->n, (long long)q->lo);
		for (int64_t i = q->lo; i < q->n; i++)
			if (q->targets[i] < 0 || q->targets[i] >= V)
				return ouro_fail(OURO_EINPUT, "token %lld: id %d is outside the vocabulary (0..%lld)",
						 (long long)i + 2, q->targets[i], (long long)V - 1);
		rows += q->n;
	}
	if ((rc = reserve(s, rows, nreq)))
		return rc;
	for (int w = 0; w < nreq; w++) {
		memcpy(s->ids + off, req[w].ids, (size_t)req[w].n * sizeof *s->ids);
		s->lens[w] = req[w].n;
		off += req[w].n;
	}
	if ((rc = ouro_forward_batch(s->m, s->ids, s->lens, nreq, T, s->hidden)))
		return rc;

	/* per window: the exits, and its scored rows of every loop gathered
	 * into blocks for lm_head */
	off = 0;
	for (int w = 0; w < nreq; w++) {
		const struct ouro_score_req *q = &req[w];
		int64_t n = q->n;

		if ((rc = window_exits(s, off, n, D)))
			return rc;
		for (int t = 0; t < T; t++)
			for (int64_t i = q->lo; i < n; i++) {
				int64_t at = T * off + (int64_t)t * n + i;
				memcpy(s->rows_h + nb * D, s->hidden + at * D, (size_t)D * sizeof *s->rows_h);
				s->rows_tgt[nb] = q->targets[i];
				s->rows_dst[nb++] = at;
				if (nb == LOGIT_ROWS) {
					if ((rc = logit_block(s, nb)))
						return rc;
					nb = 0;
				}
			}
		s->out[w] = (struct ouro_scores){
			.T = T, .nrules = s->nrules, .n = n, .D = D,
			.hidden = s->hidden + T * off * D, .gate_logits = s->gate_logits + T * off,
			.pdf = s->pdf + T * off, .loss = s->loss + T * off,
			.greedy = s->greedy + T * off, .exit = s->exit + s->nrules * off,
		};
		off += n;
	}
	if (nb && (rc = logit_block(s, nb)))
		return rc;
	*out = s->out;
	return OURO_OK;
}

/* ---- lm-evaluation-harness request layout ------------------------------- */

int64_t ouro_rolling_windows(int64_t ntokens, int64_t max_len, int64_t context_len,
			     struct ouro_window *out, int64_t cap)
{
	int64_t count = 0, predicted, pred_len = max_len - context_len + 1;

	if (ntokens <= 0 || max_len < 1 || context_len < 1 || context_len > max_len)
		return 0;
	/* the first window: the prefix token and up to max_len - 1 tokens,
	 * predicting up to max_len tokens */
	predicted = ntokens < max_len ? ntokens : max_len;
	if (out && count < cap)
		out[count] = (struct ouro_window){0, predicted, 0};
	count++;
	/* then windows of max_len inputs ending just before the last token
	 * they predict; the last `take` positions are new */
	while (predicted < ntokens) {
		int64_t take = ntokens - predicted < pred_len ? ntokens - predicted : pred_len;
		int64_t end = predicted + take;   /* in x = [prefix] + tokens: predicts x[end] last */

		if (out && count < cap)
			out[count] = (struct ouro_window){end - max_len, max_len, max_len - take};
		count++;
		predicted = end;
	}
	return count;
}

/* Python's str.isspace() for one code point. */
static int py_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
	       c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
	       c == 0x202f || c == 0x205f || c == 0x3000;
}

/* The code point of the well-formed UTF-8 sequence that ends s[0..len),
 * its byte length in *nb; 0 with *nb 0 if the end is not one. */
static uint32_t last_code_point(const unsigned char *s, size_t len, size_t *nb)
{
	size_t k = 1;

	*nb = 0;
	if (len == 0)
		return 0;
	if (s[len - 1] < 0x80) {
		*nb = 1;
		return s[len - 1];
	}
	while (k < 4 && k < len && (s[len - k] & 0xc0) == 0x80)
		k++;
	unsigned char lead = s[len - k];
	size_t want = lead >= 0xf0 && lead < 0xf8 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 0;
	if (want != k)
		return 0;
	uint32_t c = lead & (0x7f >> k);
	for (size_t i = len - k + 1; i < len; i++)
		c = c << 6 | (s[i] & 0x3f);
	*nb = k;
	return c;
}

int64_t ouro_utf8_length(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	int64_t count = 0;

	for (size_t i = 0; i < len;) {
		size_t want = p[i] < 0x80 ? 1 : p[i] >= 0xf0 && p[i] < 0xf8 ? 4 : p[i] >= 0xe0 ? 3
			      : p[i] >= 0xc2 ? 2 : 1;
		size_t k = 1;
		while (k < want && i + k < len && (p[i + k] & 0xc0) == 0x80)
			k++;
		i += k == want ? want : 1;
		count++;
	}
	return count;
}

int ouro_request_encode(struct ouro_tok *tok, const char *ctx, size_t ctx_len,
			const char *cont, size_t cont_len, int32_t prefix,
			struct ouro_ids *ctx_ids, struct ouro_ids *cont_ids)
{
	struct ouro_ids whole = {0};
	char *joined = NULL;
	size_t keep = ctx_len, nb;
	int rc;

	ctx_ids->n = 0;
	cont_ids->n = 0;
	if (cont_len == 0)
		return ouro_fail(OURO_EINPUT, "empty continuation");
	/* trailing whitespace of the context belongs to the continuation */
	while (keep > 0 && py_space(last_code_point((const unsigned char *)ctx, keep, &nb)) && nb)
		keep -= nb;
	if (keep == 0) {
		/* no context: the prefix token stands for it; a context of
		 * only whitespace keeps that whitespace in the continuation */
		if ((rc = ouro_ids_push(ctx_ids, prefix)))
			return rc;
		if (ctx_len == 0) {
			if ((rc = ouro_tok_encode(tok, cont, cont_len, cont_ids)))
				return rc;
			goto check;
		}
	}
	if (!(joined = malloc(ctx_len + cont_len + 1)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	memcpy(joined, ctx, ctx_len);
	memcpy(joined + ctx_len, cont, cont_len);
	if (keep == 0) {
		rc = ouro_tok_encode(tok, joined, ctx_len + cont_len, cont_ids);
		goto out;
	}
	if ((rc = ouro_tok_encode(tok, joined, ctx_len + cont_len, &whole)) ||
	    (rc = ouro_tok_encode(tok, ctx, keep, ctx_ids)))
		goto out;
	for (size_t i = ctx_ids->n; i < whole.n && !rc; i++)
		rc = ouro_ids_push(cont_ids, whole.v[i]);
out:
	free(joined);
	ouro_ids_free(&whole);
check:
	/* a continuation of no tokens would score log-likelihood 0, the best;
	 * a context of none would leave the first continuation token unscored
	 * (lm-evaluation-harness asserts both are non-empty) */
	if (!rc && cont_ids->n == 0)
		rc = ouro_fail(OURO_EINPUT, "the continuation adds no tokens to the context");
	if (!rc && ctx_ids->n == 0)
		rc = ouro_fail(OURO_EINPUT, "the context encodes to no tokens");
	return rc;
}
