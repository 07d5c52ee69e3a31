/*
 * test_eval - the evaluation pieces of the library (eval.h) without a
 * program around them:
 *   - exact sums: 40 examples' random per-example double sums, fixed and
 *     added in order, in reverse, and as 3 shards merged, give the same
 *     integers and the same report, byte for byte; a sum that is not
 *     finite, and one that overflows 64 bits, are refused;
 *   - the results against hand-computed values: perplexity, bits per byte
 *     and word perplexity from known sums; acc, acc_norm with
 *     lm-evaluation-harness's standard error sqrt(p(1-p)/(n-1)), greedy
 *     and the gold perplexity;
 *   - the sums' JSON read back, and refused with a field missing or of
 *     the wrong length;
 *   - a log resumed: a header, two example lines and a last line cut
 *     short give two examples done, their sums, and the intact length; a
 *     log of another configuration is refused naming what differs;
 *   - multiple choice scored on the fixture model: acc and acc_norm at
 *     every loop are the argmax (first of equal maxima) of the logged
 *     log-likelihoods, raw and divided by the choice's length in
 *     characters, checked on a question whose choices differ in length;
 *   - batches: documents (one empty, the others cut into windows that
 *     straddle passes) and questions scored 1, 2, 3 and 16 windows at a
 *     time give the examples in order with the same sums and
 *     log-likelihoods, bit for bit, under a threshold, a hidden-state
 *     difference and a KL rule.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval.h"
#include "unit.h"

static uint64_t rng_state = 99;

static double uniform(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(rng_state >> 11) * 0x1.0p-53;
}

static json_t *ppl_config(int T, int R)
{
	json_t *rules = json_array();

	for (int q = 0; q < R; q++)
		json_array_append_new(rules, json_string(q ? "eps 0.5" : "threshold 0.5"));
	return json_pack("{s:s, s:s, s:s, s:i, s:o, s:f}", "task", "ppl", "model", "m", "gate", "model",
			 "steps", T, "rules", rules, "beta", 0.1);
}

static char *dump(json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
}

static double member(json_t *report, const char *list, int k, const char *key)
{
	json_t *x = json_array_get(json_object_get(json_object_get(report, "results"), list), (size_t)k);
	return json_number_value(json_object_get(x, key));
}

static void exact_sums(void)
{
	enum { NEX = 40, T = 3, R = 2 };
	struct ouro_eval_layout L;
	json_t *config = ppl_config(T, R);
	int64_t ex[NEX][64], fwd[64] = {0}, rev[64] = {0}, merged[64] = {0};
	double d[64];

	CHECK(ouro_eval_config_layout(config, &L, "cfg") == OURO_OK);
	CHECK(L.total == 4 + T + 3 + 2 * R && L.total <= 64);
	for (int i = 0; i < NEX; i++) {
		for (int k = 0; k < L.total; k++)
			d[k] = uniform() * 1000 + 1e-9 * uniform();
		CHECK(ouro_eval_fix(&L, d, ex[i], "ex") == OURO_OK);
	}
	for (int i = 0; i < NEX; i++) {
		CHECK(ouro_eval_sums_add(&L, fwd, ex[i], "ex") == OURO_OK);
		CHECK(ouro_eval_sums_add(&L, rev, ex[NEX - 1 - i], "ex") == OURO_OK);
	}
	for (int s = 0; s < 3; s++) {
		int64_t shard[64] = {0};
		for (int i = 0; i < NEX; i++)
			if (ouro_eval_in_shard(i, s, 3))
				CHECK(ouro_eval_sums_add(&L, shard, ex[i], "ex") == OURO_OK);
		CHECK(ouro_eval_sums_add(&L, merged, shard, "shard") == OURO_OK);
	}
	CHECK(memcmp(fwd, rev, sizeof fwd) == 0 && memcmp(fwd, merged, sizeof fwd) == 0);
	json_t *a = ouro_eval_report(config, 0, 0, NEX, &L, fwd), *b = ouro_eval_report(config, 0, 0, NEX, &L, merged);
	char *sa = dump(a), *sb = dump(b);
	CHECK(strcmp(sa, sb) == 0);
	free(sa);
	free(sb);
	json_decref(a);
	json_decref(b);

	/* the JSON of the sums, read back and refused */
	json_t *j = ouro_eval_sums_json(&L, fwd);
	int64_t back[64];
	CHECK(ouro_eval_sums_parse(&L, j, back, "s") == OURO_OK && memcmp(back, fwd, (size_t)L.total * 8) == 0);
	json_array_remove(json_object_get(j, "nll"), 0);
	CHECK(ouro_eval_sums_parse(&L, j, back, "s") == OURO_EINPUT);
	CHECK(strstr(ouro_errmsg(), "sums.nll is not an array of 3 integers") != NULL);
	json_object_del(j, "tokens");
	CHECK(ouro_eval_sums_parse(&L, j, back, "s") == OURO_EINPUT);
	json_decref(j);

	/* refusals */
	d[L.off[OURO_EVAL_P_NLL]] = INFINITY;
	CHECK(ouro_eval_fix(&L, d, ex[0], "ex") == OURO_EINPUT && strstr(ouro_errmsg(), "ex: nll is inf"));
	int64_t big[64] = {0};
	big[0] = INT64_MAX;
	CHECK(ouro_eval_sums_add(&L, big, fwd, "sum") == OURO_EINPUT && strstr(ouro_errmsg(), "overflow"));
	json_decref(config);
}

static void hand_results(void)
{
	struct ouro_eval_layout L;
	json_t *config = ppl_config(2, 1);
	int64_t v[64] = {0};
	double d[64] = {0};

	/* ppl: 10 tokens, 40 bytes, 8 words; loop 1 sums 23 nats, loop 2 20 */
	CHECK(ouro_eval_config_layout(config, &L, "cfg") == OURO_OK);
	d[L.off[OURO_EVAL_P_EXAMPLES]] = 2;
	d[L.off[OURO_EVAL_P_TOKENS]] = 10;
	d[L.off[OURO_EVAL_P_BYTES]] = 40;
	d[L.off[OURO_EVAL_P_WORDS]] = 8;
	d[L.off[OURO_EVAL_P_NLL]] = 23;
	d[L.off[OURO_EVAL_P_NLL] + 1] = 20;
	d[L.off[OURO_EVAL_P_RULE_LOOPS]] = 15;
	CHECK(ouro_eval_fix(&L, d, v, "ex") == OURO_OK);
	json_t *r = ouro_eval_report(config, 0, 0, 2, &L, v);
	CHECK(fabs(member(r, "loops", 0, "nll") - 2.3) < 1e-12);
	CHECK(fabs(member(r, "loops", 1, "ppl") - exp(2.0)) < 1e-12);
	CHECK(fabs(member(r, "loops", 1, "bits_per_byte") - 20 / 40.0 / log(2.0)) < 1e-12);
	CHECK(fabs(member(r, "loops", 0, "word_ppl") - exp(23 / 8.0)) < 1e-12);
	CHECK(fabs(member(r, "exit_rules", 0, "avg_loops") - 1.5) < 1e-12);
	json_decref(r);
	json_decref(config);

	/* choice: 4 examples; at loop 1 acc 3/4, acc_norm 1/4, greedy 2/4,
	 * gold log-likelihood -6 in all */
	config = json_pack("{s:s, s:s, s:s, s:i, s:[s]}", "task", "choice", "model", "m", "gate", "model",
			   "steps", 1, "rules", "threshold 0.9");
	CHECK(ouro_eval_config_layout(config, &L, "cfg") == OURO_OK);
	memset(d, 0, sizeof d);
	d[L.off[OURO_EVAL_C_EXAMPLES]] = 4;
	d[L.off[OURO_EVAL_C_ACC]] = 3;
	d[L.off[OURO_EVAL_C_ACC_NORM]] = 1;
	d[L.off[OURO_EVAL_C_GREEDY]] = 2;
	d[L.off[OURO_EVAL_C_GOLD_LL]] = -6;
	CHECK(ouro_eval_fix(&L, d, v, "ex") == OURO_OK);
	r = ouro_eval_report(config, 0, 0, 4, &L, v);
	CHECK(member(r, "loops", 0, "acc") == 0.75);
	CHECK(fabs(member(r, "loops", 0, "acc_stderr") - sqrt(0.75 * 0.25 / 3)) < 1e-15);
	CHECK(member(r, "loops", 0, "acc_norm") == 0.25);
	CHECK(fabs(member(r, "loops", 0, "acc_norm_stderr") - sqrt(0.25 * 0.75 / 3)) < 1e-15);
	CHECK(member(r, "loops", 0, "greedy") == 0.5);
	CHECK(fabs(member(r, "loops", 0, "ppl") - exp(1.5)) < 1e-12);
	json_decref(r);
	json_decref(config);
}

static void resume(void)
{
	struct ouro_eval_layout L;
	json_t *config = ppl_config(2, 0), *header = ouro_eval_log_header(config, 0, 0, 5);
	struct ouro_eval_example e = {.where = "doc"};
	int64_t v[2][64], acc[64] = {0};
	double d[64];
	char path[] = "/tmp/test_eval.XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	CHECK(ouro_eval_config_layout(config, &L, "cfg") == OURO_OK);
	char *h = dump(header);
	fprintf(f, "%s\n", h);
	free(h);
	for (int i = 0; i < 2; i++) {
		for (int k = 0; k < L.total; k++)
			d[k] = uniform() * 10;
		CHECK(ouro_eval_fix(&L, d, v[i], "ex") == OURO_OK);
		json_t *line = ouro_eval_log_line(i == 0 ? 3 : 1, &e, &L, v[i], NULL);
		char *s = dump(line);
		fprintf(f, "%s\n", s);
		free(s);
		json_decref(line);
	}
	long intact = ftell(f);
	fprintf(f, "{\"example\": 4, \"sou");
	fclose(f);

	unsigned char done[5] = {0};
	int64_t ndone;
	off_t keep;
	CHECK((f = fopen(path, "r")) != NULL);
	CHECK(ouro_eval_log_resume(f, path, header, 0, 0, &L, 5, done, acc, &ndone, &keep) == OURO_OK);
	CHECK(ndone == 2 && done[3] && done[1] && !done[0] && !done[4] && keep == intact);
	for (int k = 0; k < L.total; k++)
		CHECK(acc[k] == v[0][k] + v[1][k]);

	json_t *other = ppl_config(2, 0);
	json_object_set_new(other, "beta", json_real(0.2));
	json_t *h2 = ouro_eval_log_header(other, 0, 0, 5);
	memset(done, 0, sizeof done);
	CHECK((f = fopen(path, "r")) != NULL);
	CHECK(ouro_eval_log_resume(f, path, h2, 0, 0, &L, 5, done, acc, &ndone, &keep) == OURO_EINPUT);
	CHECK(strstr(ouro_errmsg(), "the log is of another run: its beta differs") != NULL);
	unlink(path);
	json_decref(h2);
	json_decref(other);
	json_decref(header);
	json_decref(config);
}

/* What ouro_eval_score handed over: examples in order, their sums and
 * log-likelihoods. */
struct got {
	const struct ouro_eval_corpus *c;
	int64_t n, i[8];
	double d[8][64], ll[8][32];
	int nd, cols;   /* sums, and log-likelihoods per choice */
};

static int collect(void *ctx, int64_t i, const double *d, const double *ll)
{
	struct got *g = ctx;

	CHECK(g->n < 8);
	g->i[g->n] = i;
	memcpy(g->d[g->n], d, (size_t)g->nd * sizeof *d);
	if (ll)
		memcpy(g->ll[g->n], ll, (size_t)(g->c->ex[i].npairs * g->cols) * sizeof *ll);
	g->n++;
	return OURO_OK;
}

static void choice_on_fixture(void)
{
	static const char task[] =
		"{\"context\": \"The capital of France is\", \"choices\": [\"Paris\", \"a much longer answer\", \"London\"], \"gold\": 1, \"delimiter\": \" \"}\n"
		"{\"context\": \"Question: 2 + 2 = \", \"choices\": [\"4\", \"five\", \"twenty-two\"], \"gold\": 0}\n";
	struct ouro_eval_corpus c = {0};
	struct ouro_eval_run r = {.task = OURO_EVAL_CHOICE};
	struct ouro_tok *tok;
	struct got g = {0};
	char *buf = strdup(task);
	int64_t idx[2] = {0, 1};
	int T = 3;

	CHECK(ouro_model_load(&r.m, "models/ouro-fixture") == OURO_OK);
	CHECK(ouro_tok_load_dir(&tok, "models/ouro-fixture") == OURO_OK);
	CHECK(ouro_eval_read_choice_jsonl(&c, "task", buf, strlen(buf)) == OURO_OK && c.n == 2);
	r.T = T;
	r.window = 64;
	r.prefix = 0;
	r.batch = 1;
	ouro_eval_layout_init(&r.L, OURO_EVAL_CHOICE, T, 0);
	CHECK(ouro_scorer_new(&r.scorer, r.m, NULL, T, NULL, 0) == OURO_OK);
	for (int64_t i = 0; i < c.n; i++)
		CHECK(ouro_eval_tokenize(&c.ex[i], tok, OURO_EVAL_CHOICE, r.prefix, r.window) == OURO_OK);
	g.c = &c;
	g.nd = r.L.total;
	g.cols = T;
	CHECK(ouro_eval_score(&r, &c, idx, 2, collect, &g) == OURO_OK && g.n == 2);
	for (int64_t i = 0; i < c.n; i++) {
		struct ouro_eval_example *e = &c.ex[i];
		const double *d = g.d[i], *ll = g.ll[i];
		CHECK(g.i[i] == i);
		CHECK(e->pairs[1].chars == (i == 0 ? 20 : 4));   /* without the delimiter */
		for (int t = 0; t < T; t++) {
			int best = 0, best_norm = 0;
			for (int k = 1; k < e->npairs; k++) {
				if (ll[k * T + t] > ll[best * T + t])
					best = k;
				if (ll[k * T + t] / (double)e->pairs[k].chars >
				    ll[best_norm * T + t] / (double)e->pairs[best_norm].chars)
					best_norm = k;
			}
			CHECK(d[r.L.off[OURO_EVAL_C_ACC] + t] == (best == e->gold));
			CHECK(d[r.L.off[OURO_EVAL_C_ACC_NORM] + t] == (best_norm == e->gold));
			CHECK(d[r.L.off[OURO_EVAL_C_GOLD_LL] + t] == ll[e->gold * T + t]);
		}
	}
	ouro_scorer_free(r.scorer);
	ouro_eval_corpus_free(&c);
	ouro_tok_free(tok);
	ouro_model_free(r.m);
	free(buf);
}

/* Scores the examples of c (all of them) b windows at a time into g. */
static void score_batched(struct ouro_eval_run *r, const struct ouro_eval_corpus *c, int b,
			  struct got *g)
{
	int64_t idx[8];

	for (int64_t i = 0; i < c->n; i++)
		idx[i] = i;
	memset(g, 0, sizeof *g);
	g->c = c;
	g->nd = r->L.total;
	g->cols = r->T + r->R;
	r->batch = b;
	CHECK(ouro_eval_score(r, c, idx, c->n, collect, g) == OURO_OK);
}

static void batches(void)
{
	static const char docs[] =
		"{\"text\": \"In the beginning God created the heaven and the earth.\"}\n"
		"{\"text\": \"\"}\n"
		"{\"text\": \"And the earth was without form, and void; and darkness was upon the face of the deep.\"}\n"
		"{\"text\": \"Light.\"}\n"
		"{\"text\": \"And God said, Let there be light: and there was light. And God saw the light.\"}\n";
	static const char task[] =
		"{\"context\": \"The capital of France is\", \"choices\": [\"Paris\", \"a much longer answer\", \"London\"], \"gold\": 1, \"delimiter\": \" \"}\n"
		"{\"context\": \"\", \"choices\": [\"yes\", \"no\"], \"gold\": 1}\n"
		"{\"context\": \"Question: 2 + 2 = \", \"choices\": [\"4\", \"five\", \"twenty-two\"], \"gold\": 0}\n";
	struct ouro_exit_rule rules[3] = {{.kind = OURO_EXIT_THRESHOLD, .q = 0.5},
					  {.kind = OURO_EXIT_DIFF, .eps = 3},
					  {.kind = OURO_EXIT_KL, .kl = 0.05}};
	enum ouro_eval_task tasks[2] = {OURO_EVAL_PPL, OURO_EVAL_CHOICE};
	static struct got one, g;
	struct ouro_model *m;
	struct ouro_tok *tok;
	int T = 3;

	CHECK(ouro_model_load(&m, "models/ouro-fixture") == OURO_OK);
	CHECK(ouro_tok_load_dir(&tok, "models/ouro-fixture") == OURO_OK);
	for (int k = 0; k < 2; k++) {
		struct ouro_eval_corpus c = {0};
		struct ouro_eval_run r = {.task = tasks[k], .m = m, .T = T, .R = 3, .window = 7,
					  .context = 2, .prefix = 0};
		char *buf = strdup(k ? task : docs);

		CHECK(k ? ouro_eval_read_choice_jsonl(&c, "task", buf, strlen(buf)) == OURO_OK
			: ouro_eval_read_ppl_jsonl(&c, "docs", buf, strlen(buf), "text") == OURO_OK);
		for (int64_t i = 0; i < c.n; i++)
			CHECK(ouro_eval_tokenize(&c.ex[i], tok, tasks[k], r.prefix, r.window) == OURO_OK);
		ouro_eval_layout_init(&r.L, tasks[k], T, 3);
		CHECK(ouro_scorer_new(&r.scorer, m, NULL, T, rules, 3) == OURO_OK);
		score_batched(&r, &c, 1, &one);
		CHECK(one.n == c.n);
		for (int64_t i = 0; i < c.n; i++)
			CHECK(one.i[i] == i);
		CHECK(k || one.d[1][r.L.off[OURO_EVAL_P_TOKENS]] == 0);
		int64_t inputs = r.input_tokens;
		for (int b = 2; b <= 16; b = b == 3 ? 16 : b + 1) {
			r.input_tokens = 0;
			score_batched(&r, &c, b, &g);
			CHECK(g.n == one.n && r.input_tokens == inputs);
			CHECK(memcmp(g.i, one.i, sizeof g.i) == 0);
			CHECK(memcmp(g.d, one.d, sizeof g.d) == 0);
			CHECK(memcmp(g.ll, one.ll, sizeof g.ll) == 0);
		}
		ouro_scorer_free(r.scorer);
		ouro_eval_corpus_free(&c);
		free(buf);
	}
	ouro_tok_free(tok);
	ouro_model_free(m);
}

int main(void)
{
	exact_sums();
	hand_results();
	resume();
	choice_on_fixture();
	batches();
	return unit_done("test_eval");
}
