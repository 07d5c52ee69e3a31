/*
 * eval_score.c - examples scored into their sums: a document through its
 * rolling windows (per-loop and per-rule negative log-likelihood, the
 * exit distribution's entropy, expected loss and loops), a multiple-choice
 * question through one request per choice (acc, acc_norm, greedy and the
 * gold log-likelihood at every loop and under every rule, as
 * lm-evaluation-harness defines them); optionally every window's states
 * and losses as records for ouro-gate train.
 *
 * The windows of all the examples form one stream, in example order;
 * each forward pass takes the next ones while it has room (r->batch
 * windows, OURO_EVAL_PASS_ROWS positions), whichever examples they belong
 * to, and its scores are then added up window by window in that same
 * order. So an example's sums are added in the one order of a pass per
 * window, and, the scores of a window not depending on its pass, they are
 * the same bit for bit whatever the batch. Only one example is ever half
 * summed: the windows of the next begin after its last.
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

/* One window of a pass: which example and which of its windows. */
struct slot {
	int64_t k;              /* the example's place in the list */
	int64_t w;              /* its window, or its choice */
	struct ouro_window win; /* in the coordinates of the example's x; len 0: an
				 * empty document (no window) */
	int last;               /* the example's last window */
	size_t tok;             /* where its len + 1 tokens are in the pass's */
};

/* The working memory of ouro_eval_score. */
struct scratch {
	struct slot *slot;            /* [batch] the windows of a pass */
	struct ouro_score_req *req;   /* [batch] those with positions */
	int32_t *tok;                 /* [tok_cap] their tokens, back to back */
	size_t tok_cap;
	struct ouro_window *win;      /* [win_cap] the rolling windows of a document */
	int64_t win_cap;
	double *d;                    /* [L.total] the sums of the example being summed */
	double *ll;                   /* [pairs_cap, T + R] its choices' log-likelihoods */
	unsigned char *greedy;        /* [pairs_cap, T + R] */
	int pairs_cap;
	float *loss_buf;              /* [T, n-1] step_loss of a --per-token record */
	size_t loss_cap;
};

static int nomem(const struct ouro_eval_example *e)
{
	return ouro_fail(OURO_ENOMEM, "%s: out of memory", e->where);
}

/* Writes one window as a record for ouro-gate train. */
static int write_per_token(struct ouro_eval_run *r, struct scratch *sc,
			   const struct ouro_eval_example *e, int64_t idx, const struct ouro_window *w,
			   const int32_t *ids, const struct ouro_scores *s)
{
	int64_t n = w->len, T = r->T, D = s->D;
	size_t need = (size_t)(T * (n - 1 > 0 ? n - 1 : 0));
	char first[32], window[32];
	int rc, steps[OURO_MAX_STEPS];

	if (need > sc->loss_cap) {
		float *p = realloc(sc->loss_buf, need * sizeof *p);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		sc->loss_buf = p;
		sc->loss_cap = need;
	}
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i + 1 < n; i++)
			sc->loss_buf[t * (n - 1) + i] = s->loss[t * n + i];
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
	    !(rc = ouro_record_add(rec, "step_loss", OURO_F32, 2, lshape, sc->loss_buf)))
		rc = ouro_record_write(rec, r->per_token, r->per_token_name);
	ouro_record_free(rec);
	return rc;
}

/* ---- documents ---------------------------------------------------------- */

static void document_begin(struct ouro_eval_run *r, const struct ouro_eval_example *e, double *d)
{
	const struct ouro_eval_layout *L = &r->L;

	memset(d, 0, (size_t)L->total * sizeof *d);
	d[L->off[OURO_EVAL_P_EXAMPLES]] = 1;
	d[L->off[OURO_EVAL_P_TOKENS]] = (double)e->ids.n;
	d[L->off[OURO_EVAL_P_BYTES]] = e->text ? (double)e->len : 0;
	d[L->off[OURO_EVAL_P_WORDS]] = e->text ? (double)count_words(e->text, e->len) : 0;
}

/* Adds the scored positions of one window w to d. */
static void document_window(struct ouro_eval_run *r, const struct ouro_window *w,
			    const struct ouro_scores *s, double *d)
{
	const struct ouro_eval_layout *L = &r->L;
	int64_t n = w->len;

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
}

/* ---- multiple choice ---------------------------------------------------- */

/* The first index of the largest value (numpy's argmax). */
static int argmax(const double *v, int n)
{
	int best = 0;

	for (int k = 1; k < n; k++)
		if (v[k] > v[best])
			best = k;
	return best;
}

/* The window of choice c: lm-evaluation-harness's
 * (context + continuation)[-(W+1):][:-1], scored over the continuation. */
static struct ouro_window choice_window(const struct ouro_eval_run *r,
					const struct ouro_eval_pair *p)
{
	int64_t total = (int64_t)(p->cids.n + p->kids.n);
	int64_t n = total - 1 < r->window ? total - 1 : r->window;

	return (struct ouro_window){total - 1 - n, n, n - (int64_t)p->kids.n};
}

/* Choice c's log-likelihood and greedy flag at every loop and rule, and
 * its tokens and loops in d. */
static void choice_add(struct ouro_eval_run *r, struct scratch *sc, int64_t c,
		       const struct ouro_window *w, const struct ouro_scores *s)
{
	const struct ouro_eval_layout *L = &r->L;
	int T = r->T, cols = T + r->R;
	int64_t n = w->len, lo = w->first;
	double *d = sc->d;

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
		sc->ll[c * cols + k] = sum;
		sc->greedy[c * cols + k] = (unsigned char)all;
	}
}

/* acc, acc_norm, greedy and the gold log-likelihood at every loop and
 * rule, from every choice's. */
static int choice_finish(struct ouro_eval_run *r, struct scratch *sc,
			 const struct ouro_eval_example *e)
{
	const struct ouro_eval_layout *L = &r->L;
	int T = r->T, C = e->npairs, cols = T + r->R;
	double *row = malloc((size_t)C * 2 * sizeof *row), *d = sc->d, *ll = sc->ll;

	if (!row)
		return nomem(e);
	for (int k = 0; k < cols; k++) {
		for (int c = 0; c < C; c++) {
			row[c] = ll[c * cols + k];
			row[C + c] = ll[c * cols + k] / (double)e->pairs[c].chars;
		}
		int acc = argmax(row, C) == e->gold, acc_norm = argmax(row + C, C) == e->gold;
		int g = sc->greedy[e->gold * cols + k];
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
	free(row);
	return OURO_OK;
}

/* ---- the stream of windows ---------------------------------------------- */

/* The number of windows of example e in *nw; a document's are kept in
 * sc->win. */
static int windows_of(struct ouro_eval_run *r, struct scratch *sc,
		      const struct ouro_eval_example *e, int64_t *nw)
{
	if (r->task == OURO_EVAL_CHOICE) {
		*nw = e->npairs;
		return OURO_OK;
	}
	*nw = ouro_rolling_windows((int64_t)e->ids.n, r->window, r->context, NULL, 0);
	if (*nw > sc->win_cap) {
		struct ouro_window *p = realloc(sc->win, (size_t)*nw * sizeof *p);
		if (!p)
			return nomem(e);
		sc->win = p;
		sc->win_cap = *nw;
	}
	ouro_rolling_windows((int64_t)e->ids.n, r->window, r->context, sc->win, *nw);
	return OURO_OK;
}

/* Copies tokens x[from .. from+count) of x = a [na] + b to dst: for a
 * document the prefix token and its tokens, for a choice its context
 * and continuation. */
static void copy_x(int32_t *dst, const int32_t *a, int64_t na, const int32_t *b, int64_t from,
		   int64_t count)
{
	for (int64_t j = from; j < from + count; j++)
		*dst++ = j < na ? a[j] : b[j - na];
}

/* Appends window w of example e to the pass as slot ns. */
static int slot_add(struct ouro_eval_run *r, struct scratch *sc, int ns, size_t *ntok, int64_t k,
		    const struct ouro_eval_example *e, int64_t w, int64_t nw)
{
	const struct ouro_eval_pair *p = r->task == OURO_EVAL_CHOICE ? &e->pairs[w] : NULL;
	struct slot *sl = &sc->slot[ns];

	*sl = (struct slot){.k = k, .w = w, .last = w + 1 >= nw, .tok = *ntok};
	if (!nw)
		return OURO_OK;
	sl->win = p ? choice_window(r, p) : sc->win[w];
	size_t need = *ntok + (size_t)sl->win.len + 1;
	if (need > sc->tok_cap) {
		size_t cap = need > 2 * sc->tok_cap ? need : 2 * sc->tok_cap;
		int32_t *t = realloc(sc->tok, cap * sizeof *t);
		if (!t)
			return nomem(e);
		sc->tok = t;
		sc->tok_cap = cap;
	}
	if (p)
		copy_x(sc->tok + *ntok, p->cids.v, (int64_t)p->cids.n, p->kids.v, sl->win.start,
		       sl->win.len + 1);
	else
		copy_x(sc->tok + *ntok, &r->prefix, 1, e->ids.v, sl->win.start, sl->win.len + 1);
	*ntok = need;
	return OURO_OK;
}

/* Starts summing example e. */
static int example_begin(struct ouro_eval_run *r, struct scratch *sc,
			 const struct ouro_eval_example *e)
{
	int cols = r->T + r->R;

	if (r->task == OURO_EVAL_PPL) {
		document_begin(r, e, sc->d);
		return OURO_OK;
	}
	if (e->npairs > sc->pairs_cap) {
		free(sc->ll);
		free(sc->greedy);
		sc->ll = malloc((size_t)e->npairs * (size_t)cols * sizeof *sc->ll);
		sc->greedy = malloc((size_t)e->npairs * (size_t)cols);
		sc->pairs_cap = sc->ll && sc->greedy ? e->npairs : 0;
		if (!sc->pairs_cap)
			return nomem(e);
	}
	memset(sc->d, 0, (size_t)r->L.total * sizeof *sc->d);
	sc->d[r->L.off[OURO_EVAL_C_EXAMPLES]] = 1;
	return OURO_OK;
}

/* Scores the pass's slots [ns] that have positions into *s; a failure is
 * named by the first one's example. */
static int pass_score(struct ouro_eval_run *r, struct scratch *sc,
		      const struct ouro_eval_corpus *c, const int64_t *idx, int ns,
		      const struct ouro_scores **s)
{
	const struct slot *first = NULL;
	char where[340];
	int nreq = 0, rc;

	*s = NULL;
	for (int j = 0; j < ns; j++) {
		const struct slot *sl = &sc->slot[j];
		if (!sl->win.len)
			continue;
		first = first ? first : sl;
		sc->req[nreq++] = (struct ouro_score_req){
			sc->tok + sl->tok, sc->tok + sl->tok + 1, sl->win.len,
			r->task == OURO_EVAL_PPL && r->per_token ? 0 : sl->win.first};
	}
	if (!nreq)
		return OURO_OK;
	if (!(rc = ouro_score_batch(r->scorer, sc->req, nreq, s))) {
		r->windows += nreq;
		r->passes++;
		return OURO_OK;
	}
	if (r->task == OURO_EVAL_CHOICE)
		snprintf(where, sizeof where, "%s: choice %lld", c->ex[idx[first->k]].where,
			 (long long)first->w);
	else
		snprintf(where, sizeof where, "%s", c->ex[idx[first->k]].where);
	return ouro_refail(rc, where);
}

/* The scores s of the pass's slots with positions, summed in slot order;
 * every example whose last window this is goes to done(). */
static int pass_sum(struct ouro_eval_run *r, struct scratch *sc, const struct ouro_eval_corpus *c,
		    const int64_t *idx, int ns, const struct ouro_scores *s, ouro_eval_done_fn done,
		    void *ctx)
{
	int rc;

	for (int j = 0; j < ns; j++) {
		const struct slot *sl = &sc->slot[j];
		const struct ouro_eval_example *e = &c->ex[idx[sl->k]];

		if (sl->w == 0 && (rc = example_begin(r, sc, e)))
			return rc;
		if (sl->win.len) {
			r->input_tokens += sl->win.len;
			if (r->task == OURO_EVAL_CHOICE) {
				choice_add(r, sc, sl->w, &sl->win, s);
			} else {
				document_window(r, &sl->win, s, sc->d);
				if (r->per_token && (rc = write_per_token(r, sc, e, idx[sl->k], &sl->win,
									  sc->tok + sl->tok, s)))
					return rc;
			}
			s++;
		}
		if (!sl->last)
			continue;
		if (r->task == OURO_EVAL_CHOICE && (rc = choice_finish(r, sc, e)))
			return rc;
		if ((rc = done(ctx, idx[sl->k], sc->d, r->task == OURO_EVAL_CHOICE ? sc->ll : NULL)))
			return rc;
	}
	return OURO_OK;
}

int ouro_eval_score(struct ouro_eval_run *r, const struct ouro_eval_corpus *c, const int64_t *idx,
		    int64_t n, ouro_eval_done_fn done, void *ctx)
{
	struct scratch sc = {0};
	int64_t k = 0, w = 0, nw = 0;   /* the next window: window w of example k's nw */
	int rc = OURO_OK;

	if (r->batch < 1)
		return ouro_fail(OURO_EUSAGE, "%d windows at once, at least 1 needed", r->batch);
	sc.slot = malloc((size_t)r->batch * sizeof *sc.slot);
	sc.req = malloc((size_t)r->batch * sizeof *sc.req);
	sc.d = malloc((size_t)r->L.total * sizeof *sc.d);
	if (!sc.slot || !sc.req || !sc.d)
		rc = ouro_fail(OURO_ENOMEM, "out of memory for %d windows at once", r->batch);
	while (!rc && k < n) {
		int64_t rows = 0;
		size_t ntok = 0;
		int ns = 0;

		/* the next windows while the pass has room; an empty document
		 * takes a slot without positions */
		while (k < n && ns < r->batch) {
			const struct ouro_eval_example *e = &c->ex[idx[k]];
			int64_t len;

			if (w == 0 && (rc = windows_of(r, &sc, e, &nw)))
				break;
			len = !nw ? 0 : r->task == OURO_EVAL_CHOICE ? choice_window(r, &e->pairs[w]).len
								   : sc.win[w].len;
			if (ns && len && rows + len > OURO_EVAL_PASS_ROWS)
				break;
			if ((rc = slot_add(r, &sc, ns++, &ntok, k, e, w, nw)))
				break;
			rows += len;
			if (++w >= nw) {
				w = 0;
				k++;
			}
		}
		const struct ouro_scores *s;
		if (!rc && !(rc = pass_score(r, &sc, c, idx, ns, &s)))
			rc = pass_sum(r, &sc, c, idx, ns, s, done, ctx);
	}
	free(sc.slot);
	free(sc.req);
	free(sc.tok);
	free(sc.win);
	free(sc.d);
	free(sc.ll);
	free(sc.greedy);
	free(sc.loss_buf);
	return rc;
}
