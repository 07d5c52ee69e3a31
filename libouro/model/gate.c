/*
 * gate.c - the exit gate and the exit rules.
 *
 * The gate is one linear unit over the normed state after a loop; its
 * sigmoid is the probability of stopping at that loop given that no
 * earlier loop stopped. The exit distribution and every exit rule are
 * computed by one step function, advance(), fed one loop at a time: so
 * ouro_exit_dist (which sees all loops at once) and ouro_exit_update
 * (which a program that really stops early calls loop by loop) agree to
 * the last bit, and a threshold decision never depends on which of the two
 * made it. The arithmetic is in double; pdf and cdf are stored as float.
 * The rules of the next-token distribution (KL between consecutive
 * loops, entropy, a stable argmax) read each loop's lm_head logits, given
 * by the caller, and keep of the previous loop only what the next needs.
 *
 * Gate files are safetensors files holding model.early_exit_gate.weight
 * [1, D] and model.early_exit_gate.bias [1], the checkpoint's own names,
 * so a trained gate can also be pasted into a checkpoint.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define GATE_W "model.early_exit_gate.weight"
#define GATE_B "model.early_exit_gate.bias"

int ouro_gate_from_model(struct ouro_gate *g, const struct ouro_model *m)
{
	int64_t D = m->cfg.hidden_size;

	g->dim = D;
	g->b = m->gate_b;
	if (!(g->w = malloc((size_t)D * sizeof *g->w)))
		return ouro_fail(OURO_ENOMEM, "out of memory for the exit gate");
	memcpy(g->w, m->gate_w, (size_t)D * sizeof *g->w);
	return OURO_OK;
}

static int is_float(enum ouro_dtype dt)
{
	return dt == OURO_F32 || dt == OURO_BF16 || dt == OURO_F16;
}

int ouro_gate_load(struct ouro_gate *g, const char *path, int64_t dim)
{
	const struct ouro_tensor *w, *b;
	struct ouro_st *st = NULL;
	FILE *f;
	int rc;

	g->w = NULL;
	g->dim = 0;
	if ((rc = ouro_file_open(&f, NULL, path, OURO_EMODEL)))
		return rc;
	rc = ouro_st_read(&st, f, path);
	fclose(f);
	if (rc == OURO_EINPUT)
		rc = OURO_EMODEL;
	if (rc)
		return rc;
	if (!st) {
		rc = ouro_fail(OURO_EMODEL, "%s: empty file; expected a safetensors file", path);
		goto out;
	}
	w = ouro_st_find(st, GATE_W);
	b = ouro_st_find(st, GATE_B);
	if (!w || !b) {
		rc = ouro_fail(OURO_EMODEL, "%s: no tensor %s", path, w ? GATE_B : GATE_W);
		goto out;
	}
	if (!is_float(w->dtype) || w->ndim != 2 || w->shape[0] != 1 || w->shape[1] != dim) {
		if (is_float(w->dtype) && w->ndim == 2 && w->shape[0] == 1)
			rc = ouro_fail(OURO_EMODEL, "%s: tensor %s has shape [1, %lld], expected [1, %lld] (the model's hidden_size)",
				       path, GATE_W, (long long)w->shape[1], (long long)dim);
		else
			rc = ouro_fail(OURO_EMODEL, "%s: tensor %s is %s with %d dimensions, expected F32, BF16 or F16 [1, %lld]",
				       path, GATE_W, ouro_dtype_name(w->dtype), w->ndim, (long long)dim);
		goto out;
	}
	if (!is_float(b->dtype) || b->ndim != 1 || b->shape[0] != 1) {
		rc = ouro_fail(OURO_EMODEL, "%s: tensor %s is %s with %d dimensions, expected F32, BF16 or F16 [1]",
			       path, GATE_B, ouro_dtype_name(b->dtype), b->ndim);
		goto out;
	}
	if (!(g->w = malloc((size_t)dim * sizeof *g->w))) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory for the exit gate");
		goto out;
	}
	ouro_to_f32(g->w, w->data, w->dtype, (size_t)dim);
	ouro_to_f32(&g->b, b->data, b->dtype, 1);
	g->dim = dim;
	for (int64_t i = 0; i < dim && rc == OURO_OK; i++)
		if (!isfinite(g->w[i]))
			rc = ouro_fail(OURO_EMODEL, "%s: %s[0, %lld] is not finite", path, GATE_W, (long long)i);
	if (rc == OURO_OK && !isfinite(g->b))
		rc = ouro_fail(OURO_EMODEL, "%s: %s is not finite", path, GATE_B);
	if (rc)
		ouro_gate_free(g);
out:
	ouro_st_free(st);
	return rc;
}

int ouro_gate_save(const struct ouro_gate *g, const char *path)
{
	int64_t wshape[2] = {1, g->dim}, bshape[1] = {1};
	struct ouro_record *r = ouro_record_new();
	struct ouro_output *o;
	FILE *f;
	int rc;

	if (!r)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if ((rc = ouro_record_meta(r, "format", "pt")) ||
	    (rc = ouro_record_add(r, GATE_W, OURO_F32, 2, wshape, g->w)) ||
	    (rc = ouro_record_add(r, GATE_B, OURO_F32, 1, bshape, &g->b)) ||
	    (rc = ouro_output_open(&o, &f, path)))
		goto out;
	if ((rc = ouro_record_write(r, f, strcmp(path, "-") ? path : "stdout")))
		ouro_output_abort(o);
	else
		rc = ouro_output_commit(o);
out:
	ouro_record_free(r);
	return rc;
}

void ouro_gate_free(struct ouro_gate *g)
{
	free(g->w);
	g->w = NULL;
	g->dim = 0;
}

float ouro_gate_logit(const struct ouro_gate *g, const float *h)
{
	double acc = g->b;

	for (int64_t j = 0; j < g->dim; j++)
		acc += (double)g->w[j] * h[j];
	return (float)acc;
}

/* One loop of the exit distribution: p[t] from the gate logit of loop t
 * of T; the last loop takes what is left. */
static void advance(struct ouro_exit_state *s, int t, int T, float logit)
{
	double lambda = 1.0 / (1.0 + exp(-(double)logit));

	s->pdf = t < T - 1 ? lambda * s->remaining : s->remaining;
	s->remaining *= 1.0 - lambda;
	s->cdf += s->pdf;
}

void ouro_exit_dist(const float *logits, int T, int64_t n, float *pdf, float *cdf)
{
	for (int64_t i = 0; i < n; i++) {
		struct ouro_exit_state s;

		ouro_exit_begin(&s);
		for (int t = 0; t < T; t++) {
			advance(&s, t, T, logits[(int64_t)t * n + i]);
			pdf[(int64_t)t * n + i] = (float)s.pdf;
			cdf[(int64_t)t * n + i] = (float)s.cdf;
		}
	}
}

int ouro_exit_needs_logits(const struct ouro_exit_rule *r)
{
	return r->kind == OURO_EXIT_KL || r->kind == OURO_EXIT_ENTROPY || r->kind == OURO_EXIT_STABLE;
}

void ouro_exit_begin(struct ouro_exit_state *s)
{
	memset(s, 0, sizeof *s);
	s->remaining = 1.0;
	s->argmax = -1;
}

/* The next-token distribution p_t = softmax(x) of loop t from its logits
 * x [V]: its log sum exp, entropy, argmax and, for t >= 1, KL(p_t ||
 * p_{t-1}) against the previous loop's logits y and their log sum exp
 * (still in s). Sums run over the ids in order, in double. */
static void measure(struct ouro_exit_state *s, int t, const float *x, const float *y, int64_t V)
{
	double mx = -INFINITY, sum = 0, h = 0, kl = 0, lse;
	int32_t arg = 0;

	for (int64_t v = 0; v < V; v++)
		if (x[v] > mx) {
			mx = x[v];
			arg = (int32_t)v;
		}
	for (int64_t v = 0; v < V; v++)
		sum += exp((double)x[v] - mx);
	lse = mx + log(sum);
	for (int64_t v = 0; v < V; v++) {
		double lp = (double)x[v] - lse, p = exp(lp);
		h -= p * lp;
		if (t > 0)
			kl += p * (lp - ((double)y[v] - s->lse));
	}
	s->run = t > 0 && arg == s->argmax ? s->run + 1 : 1;
	s->argmax = arg;
	s->lse = lse;
	s->entropy = h;
	s->kl = kl;
}

int ouro_exit_update(struct ouro_exit_state *s, const struct ouro_exit_rule *r,
		     int t, int T, const struct ouro_exit_loop *in)
{
	advance(s, t, T, in->gate);
	if (in->logits)
		measure(s, t, in->logits, in->prev, in->V);
	if (t >= T - 1)
		return 1;
	switch (r->kind) {
	case OURO_EXIT_THRESHOLD:
		return s->cdf >= r->q;
	case OURO_EXIT_STATIC:
		return t >= r->step;
	case OURO_EXIT_DIFF:
		return t >= 1 && in->diff < r->eps;
	case OURO_EXIT_WEIGHTED:
		return 0;
	case OURO_EXIT_KL:
		return t >= 1 && s->kl < r->kl;
	case OURO_EXIT_ENTROPY:
		return t >= 1 && s->entropy < r->entropy;
	case OURO_EXIT_STABLE:
		return s->run >= r->stable;
	}
	return 0;
}

#define LM_ROWS 64   /* positions whose lm_head logits are computed together */

int ouro_exit_steps(struct ouro_model *m, const float *h, int T, int64_t n,
		    const float *gate_logits, const struct ouro_exit_rule *rules, int nrules,
		    int32_t *step)
{
	int64_t D = m->cfg.hidden_size, V = m->cfg.vocab_size;
	int lm = 0;
	float *buf = NULL;   /* [2, LM_ROWS, V]: loops t and t-1 by parity */
	struct ouro_exit_state *s = malloc((size_t)nrules * LM_ROWS * sizeof *s);   /* [nrules, LM_ROWS] */
	int rc = OURO_OK;

	for (int r = 0; r < nrules; r++)
		lm |= ouro_exit_needs_logits(&rules[r]);
	if (!s || (lm && !(buf = malloc(2 * (size_t)LM_ROWS * (size_t)V * sizeof *buf)))) {
		free(s);
		return ouro_fail(OURO_ENOMEM, "out of memory for the exit decisions");
	}
	for (int64_t i0 = 0; i0 < n && !rc; i0 += LM_ROWS) {
		int64_t rows = n - i0 < LM_ROWS ? n - i0 : LM_ROWS, left = rows * nrules;
		for (int r = 0; r < nrules; r++)
			for (int64_t k = 0; k < rows; k++) {
				ouro_exit_begin(&s[r * LM_ROWS + k]);
				step[r * n + i0 + k] = -1;
			}
		for (int t = 0; t < T && left; t++) {
			float *cur = buf + (size_t)(t & 1) * LM_ROWS * V;
			float *prev = buf + (size_t)((t + 1) & 1) * LM_ROWS * V;
			if (lm && (rc = ouro_logits(m, h + ((int64_t)t * n + i0) * D, rows, cur)))
				break;
			for (int64_t k = 0, i = i0; k < rows; k++, i++) {
				struct ouro_exit_loop in = {.gate = gate_logits[(int64_t)t * n + i], .V = V};
				int have_diff = 0;   /* in.diff, once a live -e rule needs it */
				if (lm) {
					in.logits = cur + k * V;
					in.prev = prev + k * V;
				}
				for (int r = 0; r < nrules; r++) {
					if (step[r * n + i] >= 0)
						continue;
					if (t > 0 && rules[r].kind == OURO_EXIT_DIFF && !have_diff) {
						in.diff = ouro_exit_diff(h + ((int64_t)t * n + i) * D,
									 h + ((int64_t)(t - 1) * n + i) * D, D);
						have_diff = 1;
					}
					if (ouro_exit_update(&s[r * LM_ROWS + k], &rules[r], t, T, &in)) {
						step[r * n + i] = t;
						left--;
					}
				}
			}
		}
	}
	free(buf);
	free(s);
	return rc;
}

double ouro_exit_diff(const float *a, const float *b, int64_t D)
{
	double s = 0;

	for (int64_t j = 0; j < D; j++) {
		double d = (double)a[j] - b[j];
		s += d * d;
	}
	return sqrt(s);
}
