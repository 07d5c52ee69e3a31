/*
 * test_decode.c - the KV-cache decoder against the full forward pass.
 *
 * On the bundled fixture model, a prompt is prefilled and more tokens are
 * decoded one at a time; the state each token exits with must equal what
 * ouro_forward computes over the whole sequence at once (relative error
 * below 1e-4). With a static exit at step s every token runs s+1 loops,
 * which is exactly a forward pass with T = s+1, so real early exit is
 * checked exactly too. The shared-cache policies must use 1/T of full's
 * decode-time cache.
 */
#include <math.h>
#include <stdlib.h>

#include "ouro.h"
#include "unit.h"

#define P 7
#define G 12

static double max_err;

static double rel_err(const float *a, const float *b, int64_t n)
{
	double d = 0, r = 0;

	for (int64_t i = 0; i < n; i++) {
		d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		r += (double)b[i] * b[i];
	}
	return sqrt(d / r);
}

/* Decodes ids [P+G] with the rule and compares every decoded token's state
 * with hidden[ref_step] of a full forward pass of ref_step+1 loops. */
static void check_against_forward(struct ouro_model *m, const int32_t *ids,
				  struct ouro_exit_rule rule, int steps, int ref_step)
{
	const struct ouro_config *c = ouro_model_config(m);
	int64_t D = c->hidden_size, n = P + G;
	struct ouro_gen_opts o = {.steps = steps, .kv = OURO_KV_FULL, .rule = rule, .capacity = n};
	float *hidden = malloc(sizeof(float) * (size_t)((ref_step + 1) * n * D));
	float *h = malloc(sizeof(float) * (size_t)D);
	struct ouro_gen *g;
	int exit_step;

	CHECK(ouro_forward(m, ids, n, ref_step + 1, hidden) == OURO_OK);
	CHECK(ouro_gen_new(&g, m, &o) == OURO_OK);
	CHECK(ouro_gen_prefill(g, ids, P, h, &exit_step) == OURO_OK);
	CHECK(exit_step == ref_step);
	for (int64_t i = P; i < n; i++) {
		CHECK(ouro_gen_step(g, ids[i], h, &exit_step) == OURO_OK);
		CHECK(exit_step == ref_step);
		double e = rel_err(h, hidden + ((size_t)ref_step * n + i) * D, D);
		CHECK(e < 1e-4);
		max_err = e > max_err ? e : max_err;
	}
	CHECK(ouro_gen_stats(g)->decoded_loops == (uint64_t)G * (ref_step + 1));
	CHECK(ouro_gen_stats(g)->layer_evals ==
	      (uint64_t)G * (ref_step + 1) * (uint64_t)c->num_hidden_layers);
	CHECK(ouro_gen_step(g, ids[0], h, &exit_step) == OURO_EINPUT);   /* capacity used */
	ouro_gen_free(g);
	free(hidden);
	free(h);
}

static uint64_t kv_bytes(struct ouro_model *m, enum ouro_kv_policy kv, const int32_t *ids)
{
	struct ouro_gen_opts o = {.steps = 4, .kv = kv, .capacity = P + G,
				  .rule = {.kind = OURO_EXIT_THRESHOLD, .q = 0.5}};
	float h[4096];
	struct ouro_gen *g;
	uint64_t bytes;
	int exit_step;

	CHECK(ouro_gen_new(&g, m, &o) == OURO_OK);
	CHECK(ouro_gen_prefill(g, ids, P, h, &exit_step) == OURO_OK);
	for (int i = P; i < P + G; i++)
		CHECK(ouro_gen_step(g, ids[i], h, &exit_step) == OURO_OK);
	for (int j = 0; j < ouro_model_config(m)->hidden_size; j++)
		CHECK(isfinite(h[j]));
	bytes = ouro_gen_stats(g)->kv_bytes;
	ouro_gen_free(g);
	return bytes;
}

int main(void)
{
	struct ouro_model *m;
	int32_t ids[P + G];

	if (ouro_model_load(&m, "models/ouro-fixture") != OURO_OK) {
		fprintf(stderr, "%s\n", ouro_errmsg());
		return 1;
	}
	srand(7);
	for (int i = 0; i < P + G; i++)
		ids[i] = rand() % 49152;
	for (int s = 0; s < 4; s++)
		check_against_forward(m, ids, (struct ouro_exit_rule){.kind = OURO_EXIT_STATIC, .step = s},
				      4, s);
	check_against_forward(m, ids, (struct ouro_exit_rule){.kind = OURO_EXIT_STATIC, .step = 5}, 6, 5);
	check_against_forward(m, ids, (struct ouro_exit_rule){.kind = OURO_EXIT_THRESHOLD, .q = 2.0}, 4, 3);

	/* decode-time cache: prompt rows are kept per slot, decoded rows once
	 * per layer under last and mean */
	uint64_t full = kv_bytes(m, OURO_KV_FULL, ids), last = kv_bytes(m, OURO_KV_LAST, ids);
	uint64_t mean = kv_bytes(m, OURO_KV_MEAN, ids);
	uint64_t prompt = full / (P + G) * P;
	CHECK(last == mean);
	CHECK((full - prompt) == 4 * (last - prompt));
	printf("max relative error of decoded states %.3g; KV bytes full %llu, last %llu\n", max_err,
	       (unsigned long long)full, (unsigned long long)last);
	ouro_model_free(m);
	return unit_done("test_decode");
}
