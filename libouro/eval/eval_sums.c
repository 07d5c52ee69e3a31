/*
 * eval_sums.c - what makes evaluation reports exact and mergeable: each
 * example's scores reduced to a fixed set of sums, sums of losses kept as
 * integers in units of 2^-28 nats (each example's double sum rounded
 * once), so that adding them is exact and order-free; the report as a
 * function of the summed sums alone; and the log of a run, from which an
 * interrupted run resumes. Shards merged, or a run resumed, give byte for
 * byte the report of one uninterrupted run. The layouts of the sums, the
 * report and the log are described in ouro-eval(1).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"

#define FIX_SCALE 268435456.0        /* 2^28 fixed-point units per nat */
#define FIX_LIMIT 4611686018427387904.0   /* 2^62: bound on one fixed value */

/* A JSON number, or null when v is not finite (JSON has no inf/nan). */
static json_t *jreal(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

/* ---- the sums ------------------------------------------------------------
 * Each task has a fixed list of sums; a field is one number, one per loop
 * or one per exit rule. Fixed-point fields hold nats in units of
 * 2^-28, the others counts. */

enum per { SCALAR, PER_LOOP, PER_RULE };

struct ouro_eval_field {
	const char *name;
	enum per per;
	int fixed;
};

static const struct ouro_eval_field ppl_fields[OURO_EVAL_P_NFIELDS] = {
	{"examples", SCALAR, 0}, {"tokens", SCALAR, 0}, {"bytes", SCALAR, 0},
	{"words", SCALAR, 0}, {"nll", PER_LOOP, 1}, {"entropy", SCALAR, 1},
	{"expected_nll", SCALAR, 1}, {"expected_loops", SCALAR, 1},
	{"rule_nll", PER_RULE, 1}, {"rule_loops", PER_RULE, 0},
};

static const struct ouro_eval_field choice_fields[OURO_EVAL_C_NFIELDS] = {
	{"examples", SCALAR, 0}, {"tokens", SCALAR, 0}, {"acc", PER_LOOP, 0},
	{"acc_norm", PER_LOOP, 0}, {"greedy", PER_LOOP, 0}, {"gold_ll", PER_LOOP, 1},
	{"rule_acc", PER_RULE, 0}, {"rule_acc_norm", PER_RULE, 0},
	{"rule_greedy", PER_RULE, 0}, {"rule_gold_ll", PER_RULE, 1},
	{"rule_loops", PER_RULE, 0},
};

/* gen has no per-loop fields: a generation runs under one rule at a time */
static const struct ouro_eval_field gen_fields[OURO_EVAL_G_NFIELDS] = {
	{"examples", SCALAR, 0}, {"failed", SCALAR, 0}, {"prompt_tokens", SCALAR, 0},
	{"rule_correct", PER_RULE, 0}, {"rule_tokens", PER_RULE, 0}, {"rule_loops", PER_RULE, 0},
	{"rule_budget", PER_RULE, 0},
};

void ouro_eval_layout_init(struct ouro_eval_layout *L, enum ouro_eval_task task, int T, int R)
{
	L->f = task == OURO_EVAL_PPL ? ppl_fields : task == OURO_EVAL_CHOICE ? choice_fields : gen_fields;
	L->nfields = task == OURO_EVAL_PPL ? OURO_EVAL_P_NFIELDS
		     : task == OURO_EVAL_CHOICE ? OURO_EVAL_C_NFIELDS : OURO_EVAL_G_NFIELDS;
	L->T = T;
	L->R = R;
	L->total = 0;
	for (int i = 0; i < L->nfields; i++) {
		L->off[i] = L->total;
		L->len[i] = L->f[i].per == SCALAR ? 1 : L->f[i].per == PER_LOOP ? T : R;
		L->total += L->len[i];
	}
}

int ouro_eval_fix(const struct ouro_eval_layout *L, const double *d, int64_t *out, const char *where)
{
	for (int i = 0; i < L->nfields; i++)
		for (int k = 0; k < L->len[i]; k++) {
			double v = d[L->off[i] + k] * (L->f[i].fixed ? FIX_SCALE : 1.0);
			if (!isfinite(v) || fabs(v) >= FIX_LIMIT)
				return ouro_fail(OURO_EINPUT, "%s: %s is %g, which is not finite or too large to sum",
						 where, L->f[i].name, d[L->off[i] + k]);
			out[L->off[i] + k] = (int64_t)llround(v);
		}
	return OURO_OK;
}

int ouro_eval_sums_add(const struct ouro_eval_layout *L, int64_t *acc, const int64_t *v, const char *where)
{
	for (int i = 0; i < L->total; i++)
		if (__builtin_add_overflow(acc[i], v[i], &acc[i]))
			return ouro_fail(OURO_EINPUT, "%s: the sums overflow 64 bits", where);
	return OURO_OK;
}

json_t *ouro_eval_sums_json(const struct ouro_eval_layout *L, const int64_t *v)
{
	json_t *o = json_object();

	for (int i = 0; i < L->nfields; i++) {
		json_t *x;
		if (L->f[i].per == SCALAR) {
			x = json_integer(v[L->off[i]]);
		} else {
			x = json_array();
			for (int k = 0; k < L->len[i]; k++)
				json_array_append_new(x, json_integer(v[L->off[i] + k]));
		}
		json_object_set_new(o, L->f[i].name, x);
	}
	return o;
}

/* Reads sums written by sums_json, checking every field and length. */
int ouro_eval_sums_parse(const struct ouro_eval_layout *L, json_t *o, int64_t *v, const char *where)
{
	if (!json_is_object(o))
		return ouro_fail(OURO_EINPUT, "%s: \"sums\" is not an object", where);
	if ((int)json_object_size(o) != L->nfields)
		return ouro_fail(OURO_EINPUT, "%s: \"sums\" has %d fields, expected %d",
				 where, (int)json_object_size(o), L->nfields);
	for (int i = 0; i < L->nfields; i++) {
		json_t *x = json_object_get(o, L->f[i].name);
		if (L->f[i].per == SCALAR) {
			if (!json_is_integer(x))
				return ouro_fail(OURO_EINPUT, "%s: sums.%s is missing or not an integer", where, L->f[i].name);
			v[L->off[i]] = json_integer_value(x);
			continue;
		}
		if (!json_is_array(x) || (int)json_array_size(x) != L->len[i])
			return ouro_fail(OURO_EINPUT, "%s: sums.%s is not an array of %d integers",
					 where, L->f[i].name, L->len[i]);
		for (int k = 0; k < L->len[i]; k++) {
			json_t *e = json_array_get(x, (size_t)k);
			if (!json_is_integer(e))
				return ouro_fail(OURO_EINPUT, "%s: sums.%s[%d] is not an integer", where, L->f[i].name, k);
			v[L->off[i] + k] = json_integer_value(e);
		}
	}
	return OURO_OK;
}

/* ---- the report ---------------------------------------------------------- */

static double ratio(int64_t a, int64_t b, int fixed)
{
	return b > 0 ? (double)a / (fixed ? FIX_SCALE : 1.0) / (double)b : NAN;
}

/* acc's standard error as lm-evaluation-harness gives it: sqrt(p(1-p)/(n-1)). */
static double stderr_of(double p, int64_t n)
{
	return n > 1 ? sqrt(p * (1 - p) / (double)(n - 1)) : NAN;
}

/* The results of a generative task: per rule, accuracy over the examples
 * that ran, loops per generated token, generated tokens per example and
 * the share of examples that ended at their token budget. */
static json_t *gen_results(json_t *config, const struct ouro_eval_layout *L, const int64_t *v)
{
	json_t *res = json_object(), *rules = json_array(), *names = json_object_get(config, "rules");
	const int64_t *F = v;
	int64_t E = F[L->off[OURO_EVAL_G_EXAMPLES]], bad = F[L->off[OURO_EVAL_G_FAILED]], ran = E - bad;

	json_object_set_new(res, "examples", json_integer(E));
	json_object_set_new(res, "failed", json_integer(bad));
	json_object_set_new(res, "prompt_tokens", json_integer(F[L->off[OURO_EVAL_G_PROMPT_TOKENS]]));
	for (int q = 0; q < L->R; q++) {
		json_t *x = json_object();
		int64_t tokens = F[L->off[OURO_EVAL_G_RULE_TOKENS] + q];
		double a = ratio(F[L->off[OURO_EVAL_G_RULE_CORRECT] + q], ran, 0);
		json_object_set_new(x, "rule", json_incref(json_array_get(names, (size_t)q)));
		json_object_set_new(x, "avg_loops", jreal(ratio(F[L->off[OURO_EVAL_G_RULE_LOOPS] + q], tokens, 0)));
		json_object_set_new(x, "acc", jreal(a));
		json_object_set_new(x, "acc_stderr", jreal(stderr_of(a, ran)));
		json_object_set_new(x, "correct", json_integer(F[L->off[OURO_EVAL_G_RULE_CORRECT] + q]));
		json_object_set_new(x, "tokens", json_integer(tokens));
		json_object_set_new(x, "mean_tokens", jreal(ratio(tokens, ran, 0)));
		json_object_set_new(x, "budget_share", jreal(ratio(F[L->off[OURO_EVAL_G_RULE_BUDGET] + q], ran, 0)));
		json_array_append_new(rules, x);
	}
	json_object_set_new(res, "loops", json_array());
	json_object_set_new(res, "exit_rules", rules);
	return res;
}

/* The results of ppl or choice from its sums and configuration. */
static json_t *results(json_t *config, const struct ouro_eval_layout *L, const int64_t *v)
{
	json_t *res = json_object(), *loops = json_array(), *rules = json_array();
	json_t *names = json_object_get(config, "rules");
	int T = L->T, R = L->R;

#define F(idx) (v + L->off[idx])
	if (L->f == ppl_fields) {
		int64_t N = *F(OURO_EVAL_P_TOKENS), B = *F(OURO_EVAL_P_BYTES), Wd = *F(OURO_EVAL_P_WORDS);
		double beta = json_real_value(json_object_get(config, "beta"));

		json_object_set_new(res, "documents", json_integer(*F(OURO_EVAL_P_EXAMPLES)));
		json_object_set_new(res, "tokens", json_integer(N));
		json_object_set_new(res, "bytes", json_integer(B));
		json_object_set_new(res, "words", json_integer(Wd));
		for (int t = 0; t < T; t++) {
			json_t *x = json_object();
			double nll = ratio(F(OURO_EVAL_P_NLL)[t], N, 1);
			json_object_set_new(x, "loop", json_integer(t + 1));
			json_object_set_new(x, "nll", jreal(nll));
			json_object_set_new(x, "ppl", jreal(exp(nll)));
			json_object_set_new(x, "bits_per_byte", jreal(ratio(F(OURO_EVAL_P_NLL)[t], B, 1) / log(2.0)));
			json_object_set_new(x, "word_ppl", jreal(exp(ratio(F(OURO_EVAL_P_NLL)[t], Wd, 1))));
			json_array_append_new(loops, x);
		}
		json_t *ex = json_object();
		double ent = ratio(*F(OURO_EVAL_P_ENTROPY), N, 1), enll = ratio(*F(OURO_EVAL_P_EXP_NLL), N, 1);
		json_object_set_new(ex, "entropy", jreal(ent));
		json_object_set_new(ex, "expected_nll", jreal(enll));
		json_object_set_new(ex, "stage1", jreal(enll - beta * ent));
		json_object_set_new(ex, "expected_loops", jreal(ratio(*F(OURO_EVAL_P_EXP_LOOPS), N, 1)));
		json_object_set_new(res, "loops", loops);
		json_object_set_new(res, "exit", ex);
		for (int q = 0; q < R; q++) {
			json_t *x = json_object();
			double nll = ratio(F(OURO_EVAL_P_RULE_NLL)[q], N, 1);
			json_object_set_new(x, "rule", json_incref(json_array_get(names, (size_t)q)));
			json_object_set_new(x, "avg_loops", jreal(ratio(F(OURO_EVAL_P_RULE_LOOPS)[q], N, 0)));
			json_object_set_new(x, "nll", jreal(nll));
			json_object_set_new(x, "ppl", jreal(exp(nll)));
			json_object_set_new(x, "bits_per_byte", jreal(ratio(F(OURO_EVAL_P_RULE_NLL)[q], B, 1) / log(2.0)));
			json_array_append_new(rules, x);
		}
		json_object_set_new(res, "exit_rules", rules);
		return res;
	}
	int64_t E = *F(OURO_EVAL_C_EXAMPLES);
	json_object_set_new(res, "examples", json_integer(E));
	json_object_set_new(res, "tokens", json_integer(*F(OURO_EVAL_C_TOKENS)));
	for (int k = 0; k < T + R; k++) {
		int rule = k >= T, j = rule ? k - T : k;
		const int64_t *acc = rule ? F(OURO_EVAL_C_RULE_ACC) : F(OURO_EVAL_C_ACC);
		const int64_t *accn = rule ? F(OURO_EVAL_C_RULE_ACC_NORM) : F(OURO_EVAL_C_ACC_NORM);
		const int64_t *gr = rule ? F(OURO_EVAL_C_RULE_GREEDY) : F(OURO_EVAL_C_GREEDY);
		const int64_t *gll = rule ? F(OURO_EVAL_C_RULE_GOLD_LL) : F(OURO_EVAL_C_GOLD_LL);
		json_t *x = json_object();
		double a = ratio(acc[j], E, 0), an = ratio(accn[j], E, 0);
		if (rule) {
			json_object_set_new(x, "rule", json_incref(json_array_get(names, (size_t)j)));
			json_object_set_new(x, "avg_loops", jreal(ratio(F(OURO_EVAL_C_RULE_LOOPS)[j], *F(OURO_EVAL_C_TOKENS), 0)));
		} else {
			json_object_set_new(x, "loop", json_integer(k + 1));
		}
		json_object_set_new(x, "acc", jreal(a));
		json_object_set_new(x, "acc_stderr", jreal(stderr_of(a, E)));
		json_object_set_new(x, "acc_norm", jreal(an));
		json_object_set_new(x, "acc_norm_stderr", jreal(stderr_of(an, E)));
		json_object_set_new(x, "greedy", jreal(ratio(gr[j], E, 0)));
		json_object_set_new(x, "gold_ll", jreal(ratio(gll[j], E, 1)));
		json_object_set_new(x, "ppl", jreal(exp(-ratio(gll[j], E, 1))));
		json_array_append_new(rule ? rules : loops, x);
	}
#undef F
	json_object_set_new(res, "loops", loops);
	json_object_set_new(res, "exit_rules", rules);
	return res;
}

json_t *ouro_eval_report(json_t *config, long shard_k, long shard_n, int64_t total,
			    const struct ouro_eval_layout *L, const int64_t *v)
{
	json_t *r = json_object();

	json_object_set_new(r, "format", json_string(OURO_EVAL_REPORT_FORMAT));
	json_object_set_new(r, "version", json_integer(OURO_EVAL_FORMAT_VERSION));
	json_object_set_new(r, "config", json_incref(config));
	if (shard_n) {
		json_t *s = json_object();
		json_object_set_new(s, "index", json_integer(shard_k));
		json_object_set_new(s, "count", json_integer(shard_n));
		json_object_set_new(r, "shard", s);
	}
	json_object_set_new(r, "examples_total", json_integer(total));
	json_object_set_new(r, "results", L->f == gen_fields ? gen_results(config, L, v) : results(config, L, v));
	json_object_set_new(r, "sums", ouro_eval_sums_json(L, v));
	return r;
}

int ouro_eval_config_layout(json_t *config, struct ouro_eval_layout *L, const char *where)
{
	json_t *task = json_object_get(config, "task"), *steps = json_object_get(config, "steps"), *rules = json_object_get(config, "rules");
	int ppl, gen;

	if (!json_is_object(config) || !json_is_string(task) ||
	    (strcmp(json_string_value(task), "ppl") && strcmp(json_string_value(task), "choice") &&
	     strcmp(json_string_value(task), "gen")))
		return ouro_fail(OURO_EINPUT, "%s: \"config\" lacks a task of ppl, choice or gen", where);
	ppl = strcmp(json_string_value(task), "ppl") == 0;
	gen = strcmp(json_string_value(task), "gen") == 0;
	/* the table prints them */
	if (!json_is_string(json_object_get(config, "model")) || !json_is_string(json_object_get(config, "gate")))
		return ouro_fail(OURO_EINPUT, "%s: config.model or config.gate is not a string", where);
	if (!json_is_integer(steps) || json_integer_value(steps) < 1 || json_integer_value(steps) > OURO_MAX_STEPS)
		return ouro_fail(OURO_EINPUT, "%s: config.steps is not an integer in 1..%d", where, OURO_MAX_STEPS);
	if (!json_is_array(rules) || json_array_size(rules) > OURO_EVAL_MAX_RULES)
		return ouro_fail(OURO_EINPUT, "%s: config.rules is not an array of at most %d rules", where, OURO_EVAL_MAX_RULES);
	for (size_t i = 0; i < json_array_size(rules); i++)
		if (!json_is_string(json_array_get(rules, i)))
			return ouro_fail(OURO_EINPUT, "%s: config.rules[%zu] is not a string", where, i);
	if (ppl && !json_is_real(json_object_get(config, "beta")))
		return ouro_fail(OURO_EINPUT, "%s: config.beta is not a number", where);
	ouro_eval_layout_init(L, ppl ? OURO_EVAL_PPL : gen ? OURO_EVAL_GEN : OURO_EVAL_CHOICE,
			      (int)json_integer_value(steps), (int)json_array_size(rules));
	return OURO_OK;
}

/* ---- the log --------------------------------------------------------------
 * Line 1: {"format": "ouro-eval log", "version": 1, "config": ..., "shard":
 * "K/N" or null, "examples_total": n}; then one line per example:
 * {"example": i, "source": "FILE: line N", "sums": {...}, ...}. */

json_t *ouro_eval_log_header(json_t *config, long shard_k, long shard_n, int64_t total)
{
	json_t *h = json_object();
	char shard[64];

	snprintf(shard, sizeof shard, "%ld/%ld", shard_k, shard_n);
	json_object_set_new(h, "format", json_string(OURO_EVAL_LOG_FORMAT));
	json_object_set_new(h, "version", json_integer(OURO_EVAL_FORMAT_VERSION));
	json_object_set_new(h, "config", json_incref(config));
	json_object_set_new(h, "shard", shard_n ? json_string(shard) : json_null());
	json_object_set_new(h, "examples_total", json_integer(total));
	return h;
}

const char *ouro_eval_first_difference(json_t *a, json_t *b)
{
	const char *key;
	json_t *v;

	json_object_foreach(a, key, v)
		if (!json_equal(v, json_object_get(b, key)))
			return key;
	json_object_foreach(b, key, v)
		if (!json_object_get(a, key))
			return key;
	return "?";
}

int ouro_eval_in_shard(int64_t i, long shard_k, long shard_n)
{
	return !shard_n || i % shard_n == shard_k;
}

int ouro_eval_log_resume(FILE *f, const char *path, json_t *header, long shard_k, long shard_n,
			 const struct ouro_eval_layout *L, int64_t total, unsigned char *done,
			 int64_t *acc, int64_t *ndone, off_t *keep)
{
	char *buf, where[400];
	size_t len;
	long lineno = 0;
	int64_t *v = malloc((size_t)L->total * sizeof *v);
	int rc;

	*ndone = 0;
	*keep = 0;
	if (!v) {
		fclose(f);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if ((rc = ouro_eval_slurp_stream(f, path, &buf, &len))) {
		free(v);
		return rc;
	}
	for (size_t pos = 0; pos < len && !rc;) {
		char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - buf) : len;
		json_error_t err;
		json_t *j;

		lineno++;
		snprintf(where, sizeof where, "%s: line %ld", path, lineno);
		if (!nl)
			break;   /* the line being written when the run stopped */
		j = json_loadb(buf + pos, end - pos, JSON_REJECT_DUPLICATES, &err);
		if (!j) {
			rc = ouro_fail(OURO_EINPUT, "%s: not valid JSON: %s (column %d)", where, err.text, err.column);
			break;
		}
		if (lineno == 1) {
			if (!json_is_object(j) || !json_is_string(json_object_get(j, "format")) ||
			    strcmp(json_string_value(json_object_get(j, "format")), OURO_EVAL_LOG_FORMAT) ||
			    !json_equal(json_object_get(j, "version"), json_object_get(header, "version")))
				rc = ouro_fail(OURO_EINPUT, "%s: not a log of ouro-eval (version %d)", where, OURO_EVAL_FORMAT_VERSION);
			else if (!json_equal(j, header))
				rc = ouro_fail(OURO_EINPUT, "%s: the log is of another run: its %s differs from this one's",
					       where, json_equal(json_object_get(j, "config"), json_object_get(header, "config"))
					       ? ouro_eval_first_difference(j, header)
					       : ouro_eval_first_difference(json_object_get(j, "config"), json_object_get(header, "config")));
		} else {
			json_t *ex = json_object_get(j, "example");
			int64_t i = json_is_integer(ex) ? json_integer_value(ex) : -1;
			if (i < 0 || i >= total || !ouro_eval_in_shard(i, shard_k, shard_n))
				rc = ouro_fail(OURO_EINPUT, "%s: \"example\" is not an example of this run", where);
			else if (done[i])
				rc = ouro_fail(OURO_EINPUT, "%s: example %lld appears twice", where, (long long)i);
			else if (!(rc = ouro_eval_sums_parse(L, json_object_get(j, "sums"), v, where)) && !(rc = ouro_eval_sums_add(L, acc, v, where))) {
				done[i] = 1;
				(*ndone)++;
			}
		}
		json_decref(j);
		pos = end + 1;
		if (!rc)
			*keep = (off_t)pos;
	}
	free(buf);
	free(v);
	return rc;
}


json_t *ouro_eval_log_line(int64_t index, const struct ouro_eval_example *e,
			   const struct ouro_eval_layout *L, const int64_t *v, const double *ll)
{
	json_t *line = json_object();

	json_object_set_new(line, "example", json_integer(index));
	json_object_set_new(line, "source", json_string(e->where));
	json_object_set_new(line, "sums", ouro_eval_sums_json(L, v));
	if (ll) {
		json_t *all = json_array();
		for (int c = 0; c < e->npairs; c++) {
			json_t *row = json_array();
			for (int k = 0; k < L->T + L->R; k++)
				json_array_append_new(row, jreal(ll[c * (L->T + L->R) + k]));
			json_array_append_new(all, row);
		}
		json_object_set_new(line, "gold", json_integer(e->gold));
		json_object_set_new(line, "ll", all);
	}
	return line;
}
