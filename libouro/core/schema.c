/*
 * schema.c - the one owner of what the records between the programs hold
 * beyond plain tensors (ouro-record(5)): the loop-axis tensor `hidden`
 * [K, n, D] with its step metadata, and the float state tensors that
 * ouro-gate adds (exit_hidden [n, D]).
 *
 * `hidden` holds K of the T loops a producer ran: row k is the state
 * after loop steps[k]. Metadata ouro.steps gives T and ouro.hidden_steps
 * the rows' loops as a comma-separated increasing list; without them the
 * rows are loops 0..K-1 of K. Every program that reads or writes `hidden`
 * goes through here, so they all accept, refuse and word the same things.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"

int ouro_state_check(const struct ouro_tensor *t, int ndim, const int64_t *lead, int64_t D,
		     const char *model, const char *where)
{
	if (t->dtype != OURO_F32 && t->dtype != OURO_BF16 && t->dtype != OURO_F16)
		return ouro_fail(OURO_EINPUT, "%s: tensor '%s' has dtype %s, expected F32, BF16 or F16",
				 where, t->name, ouro_dtype_name(t->dtype));
	if (t->ndim != ndim)
		return ouro_fail(OURO_EINPUT, "%s: tensor '%s' has %d dimensions, expected %d (%s)",
				 where, t->name, t->ndim, ndim, ndim == 2 ? "[n, D]" : "[K, n, D]");
	if (D >= 0 && t->shape[ndim - 1] != D)
		return ouro_fail(OURO_EINPUT, "%s: tensor '%s' has D = %lld, but the model %s has hidden_size %lld",
				 where, t->name, (long long)t->shape[ndim - 1], model, (long long)D);
	for (int i = 0; i < ndim; i++) {
		const char *what = i == ndim - 1 ? "width" : i == ndim - 2 ? "positions" : "steps";
		if (i < ndim - 1 && lead && lead[i] >= 0 && t->shape[i] != lead[i])
			return ouro_fail(OURO_EINPUT, "%s: tensor '%s' has %lld %s, expected %lld",
					 where, t->name, (long long)t->shape[i], what, (long long)lead[i]);
		if (t->shape[i] < 1)
			return ouro_fail(OURO_EINPUT, "%s: tensor '%s' has %s 0, expected at least 1",
					 where, t->name, what);
	}
	return OURO_OK;
}

/* The rows' loops from ouro.hidden_steps (list, not NULL) into h->step. */
static int parse_steps(struct ouro_hidden *h, const char *list, const char *where)
{
	const char *p = list;

	for (int64_t k = 0; k < h->K; k++) {
		char *end;
		long v;

		errno = 0;
		v = strtol(p, &end, 10);
		if (end == p || *p < '0' || *p > '9' || errno || v >= OURO_MAX_STEPS ||
		    (k < h->K - 1 ? *end != ',' : *end != '\0'))
			return ouro_fail(OURO_EINPUT, "%s: metadata ouro.hidden_steps '%.60s' is not a list of %lld steps",
					 where, list, (long long)h->K);
		if (k > 0 && v <= h->step[k - 1])
			return ouro_fail(OURO_EINPUT, "%s: metadata ouro.hidden_steps '%.60s' does not increase",
					 where, list);
		h->step[k] = (int)v;
		p = end + 1;
	}
	return OURO_OK;
}

int ouro_hidden_find(struct ouro_hidden *h, const struct ouro_st *rec, int64_t n, int64_t D,
		     const char *model, const char *where)
{
	const char *list = ouro_st_meta(rec, "ouro.hidden_steps");
	const char *steps = ouro_st_meta(rec, "ouro.steps");
	int64_t lead[2] = {-1, n};
	long total;
	int rc;

	if (!(h->t = ouro_st_find(rec, "hidden")))
		return ouro_fail(OURO_EINPUT, "%s: no tensor 'hidden' [K, n, D]", where);
	if ((rc = ouro_state_check(h->t, 3, lead, D, model, where)))
		return rc;
	if (h->t->shape[0] > OURO_MAX_STEPS)
		return ouro_fail(OURO_EINPUT, "%s: tensor 'hidden' has %lld steps, expected 1..%d",
				 where, (long long)h->t->shape[0], OURO_MAX_STEPS);
	h->K = h->t->shape[0];
	if (list && (rc = parse_steps(h, list, where)))
		return rc;
	for (int64_t k = 0; !list && k < h->K; k++)
		h->step[k] = (int)k;
	total = h->step[h->K - 1] + 1;
	if (steps && ouro_parse_int(steps, 1, OURO_MAX_STEPS, &total, "ouro.steps"))
		return ouro_fail(OURO_EINPUT, "%s: metadata %s", where, ouro_errmsg());
	if (total <= h->step[h->K - 1])
		return ouro_fail(OURO_EINPUT, "%s: metadata ouro.steps is %ld, but hidden holds step %d",
				 where, total, h->step[h->K - 1]);
	h->total = (int)total;
	return OURO_OK;
}

/* The rows' loops as ouro.hidden_steps writes them, into buf. */
static void steps_text(char *buf, size_t len, const int *step, int64_t K)
{
	size_t at = 0;

	buf[0] = '\0';
	for (int64_t k = 0; k < K && at < len; k++)
		at += (size_t)snprintf(buf + at, len - at, "%s%d", k ? "," : "", step[k]);
}

int ouro_hidden_complete(const struct ouro_hidden *h, const char *where)
{
	char list[80];

	if (h->K == h->total)
		return OURO_OK;
	steps_text(list, sizeof list, h->step, h->K);
	return ouro_fail(OURO_EINPUT,
			 "%s: hidden holds steps %s of %d; every step 0..%d is needed (run ouro-forward without -k)",
			 where, list, h->total, h->total - 1);
}

int ouro_hidden_row(const struct ouro_hidden *h, long step, const char *where, int64_t *row)
{
	char list[80];

	if (step < 0) {
		*row = h->K - 1;
		return OURO_OK;
	}
	for (int64_t k = 0; k < h->K; k++)
		if (h->step[k] == step) {
			*row = k;
			return OURO_OK;
		}
	steps_text(list, sizeof list, h->step, h->K);
	return ouro_fail(OURO_EINPUT, "%s: step %ld is not in 'hidden', which holds steps %s",
			 where, step, list);
}

int ouro_hidden_meta(struct ouro_record *r, const int *steps, int K, int total)
{
	char list[OURO_MAX_STEPS * 4], num[16];
	int rc;

	steps_text(list, sizeof list, steps, K);
	snprintf(num, sizeof num, "%d", total);
	if ((rc = ouro_record_meta(r, "ouro.steps", num)))
		return rc;
	return ouro_record_meta(r, "ouro.hidden_steps", list);
}
