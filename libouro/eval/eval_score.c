/*
 * eval_score.c - one example scored into its sums: a document through its
 * rolling windows (per-loop and per-rule negative log-likelihood, the
 * exit distribution's entropy, expected loss and loops), a multiple-choice
 * question through one request per choice (acc, acc_norm, greedy and the
 * gold log-likelihood at every loop and under every rule, as
 * lm-evaluation-harness defines them); optionally every window's states
 * and losses as records for ouro-gate train.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"

/* Words (runs of non-blank bytes) of a text, for word perplexity. */
static int64_t count_words(const char *s, size_t len)
{
	int64_t n = 0;
	int in = 0;

	for (size_t i = 0; i < len; i++) {
		int sp = s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r');
		n += !sp && !in;
		in = !sp;
	}
	return n;
}

static int grow_ids(struct ouro_eval_run *r, size_t n)
{
	if (n <= r->buf_cap)
		return OURO_OK;
	int32_t *p = realloc(r->buf, n * sizeof *p);
	if (!p)
		return ouro_fail(OURO_ENOMEM, "out of memory for %zu token ids", n);
	r->buf = p;
	r->buf_cap = n;
	return OURO_OK;
}

/* Writes one window as a record for ouro-gate train. */
static int write_per_token(struct ouro_eval_run *r, const struct ouro_eval_example *e, int64_t idx,
			   const struct ouro_window *w, const int32_t *ids, const struct ouro_scores *s)
{
	int64_t n = w->len, T = r->T, D = s->D;
	size_t need = (size_t)(T * (n - 1 > 0 ? n - 1 : 0));
	char first[32], window[32];
	int rc, steps[OURO_MAX_STEPS];

	if (need > r->loss_cap) {
		float *p = realloc(r->loss_buf, need * sizeof *p);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		r->loss_buf = p;
		r->loss_cap = need;
	}
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i + 1 < n; i++)
			r->loss_buf[t * (n - 1) + i] = s->loss[t * n + i];
	for (int t = 0; t < r->T; t++)
		steps[t] = t;
	snprintf(first, sizeof first, "%lld", (long long)w->first);
	char ex[32];
	snprintf(ex, sizeof ex, "%lld", (long long)idx);
	snprintf(window, sizeof window, "%lld", (long long)w->start);

	struct ouro_record *rec = ouro_record_new();
	int64_t tshape[1] = {n}, hshape[3] = {T, n, D}, lshape[2] = {T, n - 1};
	if (!rec)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if (!(rc = ouro_record_meta(rec, "ouro.producer", "ouro-eval")) &&
	    !(rc = ouro_record_meta(rec, "ouro.model", ouro_model_dir(r->m))) &&
	    !(rc = ouro_hidden_meta(rec, steps, r->T, r->T)) &&
	    !(rc = ouro_record_meta(rec, "ouro.example", ex)) &&
	    !(rc = ouro_record_meta(rec, "ouro.source", e->where)) &&
	    !(rc = ouro_record_meta(rec, "ouro.window_start", window)) &&
	    !(rc = ouro_record_meta(rec, "ouro.scored_from", first)) &&
	    !(rc = ouro_record_add(rec, "tokens", OURO_I32, 1, tshape, ids)) &&
	    !(rc = ouro_record_add(rec, "hidden", OURO_F32, 3, hshape, s->hidden)) &&
	    !(rc = ouro_record_add(rec, "step_loss", OURO_F32, 2, lshape, r->loss_buf)))
		rc = ouro_record_write(rec, r->per_token, r->per_token_name);
	ouro_record_free(rec);
	return rc;
}

int ouro_eval_score_document(struct ouro_eval_run *r, const struct ouro_eval_example *e, int64_t idx, double *d)
{
	const struct ouro_eval_layout *L = &r->L;
	int64_t N = (int64_t)e->ids.n, nw;
	struct ouro_window *win;
	int rc = OURO_OK;

	memset(d, 0, (size_t)L->total * sizeof *d);
	d[L->off[OURO_EVAL_P_EXAMPLES]] = 1;
	d[L->off[OURO_EVAL_P_TOKENS]] = (double)N;
	d[L->off[OURO_EVAL_P_BYTES]] = e->text ? (double)e->len : 0;
	d[L->off[OURO_EVAL_P_WORDS]] = e->text ? (double)count_words(e->text, e->len) : 0;
	if (N == 0)
		return OURO_OK;
	nw = ouro_rolling_windows(N, r->window, r->context, NULL, 0);
	if (!(win = malloc((size_t)nw * sizeof *win)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", e->where);
	ouro_rolling_windows(N, r->window, r->context, win, nw);
	/* x = [prefix] + tokens */
	if ((rc = grow_ids(r, (size_t)N + 1)))
		goto out;
	r->buf[0] = r->prefix;
	memcpy(r->buf + 1, e->ids.v, (size_t)N * sizeof *r->buf);
	for (int64_t k = 0; k < nw && !rc; k++) {
		const struct ouro_window *w = &win[k];
		const int32_t *ids = r->buf + w->start;
		const struct ouro_scores *s;
		int64_t n = w->len, lo = r->per_token ? 0 : w->first;

		if ((rc = ouro_score_window(r->scorer, ids, ids + 1, n, lo, &s))) {
			rc = ouro_refail(rc, e->where);
			break;
		}
		r->input_tokens += n;
		for (int64_t i = w->first; i < n; i++) {
			double ent = 0, exp_nll = 0, exp_loops = 0;
			for (int t = 0; t < r->T; t++) {
				double p = s->pdf[(int64_t)t * n + i], l = s->loss[(int64_t)t * n + i];
				d[L->off[OURO_EVAL_P_NLL] + t] += l;
				if (p > 0)
					ent -= p * log(p);
				exp_nll += p * l;
				exp_loops += p * (t + 1);
			}
			d[L->off[OURO_EVAL_P_ENTROPY]] += ent;
			d[L->off[OURO_EVAL_P_EXP_NLL]] += exp_nll;
			d[L->off[OURO_EVAL_P_EXP_LOOPS]] += exp_loops;
			for (int q = 0; q < r->R; q++) {
				int t = s->exit[(int64_t)q * n + i];
				d[L->off[OURO_EVAL_P_RULE_NLL] + q] += s->loss[(int64_t)t * n + i];
				d[L->off[OURO_EVAL_P_RULE_LOOPS] + q] += t + 1;
			}
		}
		if (r->per_token && (rc = write_per_token(r, e, idx, w, ids, s)))
			break;
	}
out:
	free(win);
	return rc;
}

/* The first index of the largest value (numpy's argmax). */
static int argmax(const double *v, int n)
{
	int best = 0;

	for (int k = 1; k < n; k++)
		if (v[k] > v[best])
			best = k;
	return best;
}

int ouro_eval_score_choice(struct ouro_eval_run *r, const struct ouro_eval_example *e, double *d, double *ll)
{
	const struct ouro_eval_layout *L = &r->L;
	int T = r->T, R = r->R, C = e->npairs, rc;
	int cols = T + R;
	unsigned char *greedy = malloc((size_t)C * (size_t)cols);
	double *row = malloc((size_t)C * 2 * sizeof *row);

	memset(d, 0, (size_t)L->total * sizeof *d);
	if (!greedy || !row) {
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", e->where);
		goto out;
	}
	d[L->off[OURO_EVAL_C_EXAMPLES]] = 1;
	for (int c = 0; c < C; c++) {
		const struct ouro_eval_pair *p = &e->pairs[c];
		int64_t total = (int64_t)(p->cids.n + p->kids.n);
		int64_t n = total - 1 < r->window ? total - 1 : r->window;
		int64_t start = total - 1 - n, lo = n - (int64_t)p->kids.n;
		const struct ouro_scores *s;

		/* lm-evaluation-harness: (context + continuation)[-(W+1):][:-1] */
		if ((rc = grow_ids(r, (size_t)total)))
			goto out;
		memcpy(r->buf, p->cids.v, p->cids.n * sizeof *r->buf);
		memcpy(r->buf + p->cids.n, p->kids.v, p->kids.n * sizeof *r->buf);
		if ((rc = ouro_score_window(r->scorer, r->buf + start, r->buf + start + 1, n, lo, &s))) {
			char where[340];
			snprintf(where, sizeof where, "%s: choice %d", e->where, c);
			rc = ouro_refail(rc, where);
			goto out;
		}
		r->input_tokens += n;
		d[L->off[OURO_EVAL_C_TOKENS]] += (double)(n - lo);
		for (int k = 0; k < cols; k++) {
			double sum = 0;
			int all = 1;
			for (int64_t i = lo; i < n; i++) {
				int t = k < T ? k : s->exit[(int64_t)(k - T) * n + i];
				sum -= s->loss[(int64_t)t * n + i];
				all &= s->greedy[(int64_t)t * n + i];
				if (k >= T)
					d[L->off[OURO_EVAL_C_RULE_LOOPS] + k - T] += t + 1;
			}
			ll[c * cols + k] = sum;
			greedy[c * cols + k] = (unsigned char)all;
		}
	}
	for (int k = 0; k < cols; k++) {
		for (int c = 0; c < C; c++) {
			row[c] = ll[c * cols + k];
			row[C + c] = ll[c * cols + k] / (double)e->pairs[c].chars;
		}
		int acc = argmax(row, C) == e->gold, acc_norm = argmax(row + C, C) == e->gold;
		int g = greedy[e->gold * cols + k];
		double gll = ll[e->gold * cols + k];
		if (k < T) {
			d[L->off[OURO_EVAL_C_ACC] + k] = acc;
			d[L->off[OURO_EVAL_C_ACC_NORM] + k] = acc_norm;
			d[L->off[OURO_EVAL_C_GREEDY] + k] = g;
			d[L->off[OURO_EVAL_C_GOLD_LL] + k] = gll;
		} else {
			d[L->off[OURO_EVAL_C_RULE_ACC] + k - T] = acc;
			d[L->off[OURO_EVAL_C_RULE_ACC_NORM] + k - T] = acc_norm;
			d[L->off[OURO_EVAL_C_RULE_GREEDY] + k - T] = g;
			d[L->off[OURO_EVAL_C_RULE_GOLD_LL] + k - T] = gll;
		}
	}
	rc = OURO_OK;
out:
	free(greedy);
	free(row);
	return rc;
}

