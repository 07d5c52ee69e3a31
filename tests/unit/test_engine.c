/*
 * test_engine.c - the batch engine and its KV block pool.
 *
 *   1. The pool: reservations never exceed the budget, blocks come back
 *      and are reused, the peak is counted.
 *   2. On the bundled fixture model, greedy generation with a static exit
 *      at step s: every new token ran s+1 loops and the state it was
 *      sampled from equals the state ouro_forward computes over the whole
 *      sequence with s+1 loops (float32 KV, relative error below 1e-4).
 *   3. Batch invariance: one sequence's tokens, loops and states (bit for
 *      bit) are the same run alone and run among others that arrive
 *      before and after it, with prompt chunks of 3 positions instead of
 *      64, with a KV budget that lets only one sequence run at a time, and
 *      with 1 or 2 threads; under full, last and mean, float32 and
 *      bfloat16 KV, greedy and sampled, with an exit threshold.
 *   4. bfloat16 KV against float32 KV: the relative error of the states
 *      (printed) stays below 1e-2.
 *   5. A sequence whose KV cannot fit in the budget even alone is refused
 *      up front; the others still run.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unit.h"

#define MAXNEW 12

static struct ouro_model *m;
static int64_t D;

/* What one sequence produced. */
struct run {
	int n;
	int32_t tok[MAXNEW];
	int loops[MAXNEW];
	float *h;          /* [MAXNEW, D] */
	int finish;
};

static double rel_err(const float *a, const float *b, int64_t n)
{
	double d = 0, r = 0;

	for (int64_t i = 0; i < n; i++) {
		d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		r += (double)b[i] * b[i];
	}
	return sqrt(d / r);
}

static void pool_test(void)
{
	struct ouro_kvpool p;
	void *a, *b, *c;

	CHECK(ouro_kvpool_init(&p, 100, 3) == OURO_OK);
	CHECK(ouro_kvpool_reserve(&p, 2));
	CHECK(!ouro_kvpool_reserve(&p, 2));      /* 4 > 3 */
	CHECK(ouro_kvpool_reserve(&p, 1));
	CHECK(!ouro_kvpool_reserve(&p, 1));
	a = ouro_kvpool_take(&p);
	b = ouro_kvpool_take(&p);
	CHECK(a && b && a != b && p.used == 2 && p.peak == 2);
	memset(a, 1, 100);
	ouro_kvpool_put(&p, a);
	c = ouro_kvpool_take(&p);
	CHECK(c == a);                           /* reused, not allocated again */
	CHECK(p.used == 2 && p.peak == 2);
	ouro_kvpool_put(&p, b);
	ouro_kvpool_put(&p, c);
	ouro_kvpool_unreserve(&p, 3);
	CHECK(p.used == 0 && p.reserved == 0 && ouro_kvpool_reserve(&p, 3));
	ouro_kvpool_free(&p);
	CHECK(ouro_kvpool_init(&p, 100, 0) == OURO_EUSAGE);
	ouro_kvpool_free(&p);
}

struct spec {
	const int32_t *ids;
	int64_t n;
	int delay;          /* steps before it is added */
};

/* Runs the sequences of spec [ns] on one engine, each added after its
 * delay in steps; out[i] gets what sequence i produced. */
static void run_engine(const struct ouro_engine_opts *eo, const struct ouro_seq_opts *so,
		       const struct spec *spec, int ns, struct run *out)
{
	struct ouro_engine *e;
	int64_t id[8];
	int added = 0, step = 0;

	CHECK(ouro_engine_new(&e, m, eo) == OURO_OK);
	for (int i = 0; i < ns; i++) {
		out[i].n = 0;
		out[i].finish = 0;
		id[i] = -1;
	}
	while (added < ns || ouro_engine_pending(e)) {
		for (int i = 0; i < ns; i++)
			if (id[i] < 0 && spec[i].delay <= step) {
				CHECK(ouro_engine_add(e, spec[i].ids, spec[i].n, so, &id[i]) == OURO_OK);
				added++;
			}
		const struct ouro_engine_event *ev;
		int nev;
		CHECK(ouro_engine_step(e, &ev, &nev) == OURO_OK);
		step++;
		for (int k = 0; k < nev; k++) {
			int i = 0;
			while (id[i] != ev[k].seq)
				i++;
			struct run *r = &out[i];
			if (ev[k].token >= 0) {
				r->tok[r->n] = ev[k].token;
				r->loops[r->n] = ev[k].loops;
				memcpy(r->h + r->n * D, ev[k].h, (size_t)D * sizeof(float));
				r->n++;
			}
			r->finish = ev[k].finish;
		}
		CHECK(step < 10000);
		if (step >= 10000)
			break;
	}
	CHECK(ouro_engine_stats(e)->kv_peak_blocks * ouro_engine_stats(e)->kv_block_bytes <=
	      (eo->kv_memory ? eo->kv_memory : UINT64_MAX));
	ouro_engine_free(e);
}

static int same_run(const struct run *a, const struct run *b)
{
	return a->n == b->n && a->finish == b->finish &&
	       !memcmp(a->tok, b->tok, (size_t)a->n * sizeof *a->tok) &&
	       !memcmp(a->loops, b->loops, (size_t)a->n * sizeof *a->loops) &&
	       !memcmp(a->h, b->h, (size_t)(a->n * D) * sizeof(float));
}

/* 2: static exits against the whole-sequence forward pass. */
static void against_forward(const int32_t *prompt, int64_t P)
{
	double worst = 0;

	for (int s = 0; s < 4; s++) {
		struct ouro_engine_opts eo = {.steps = 4, .kv = OURO_KV_FULL, .kv_dtype = OURO_F32,
					      .max_seqs = 1};
		struct ouro_seq_opts so = {.rule = {.kind = OURO_EXIT_STATIC, .step = s},
					   .samp = {.top_p = 1}, .max_tokens = MAXNEW};
		struct spec sp = {prompt, P, 0};
		struct run r = {.h = malloc((size_t)(MAXNEW * D) * sizeof(float))};
		int32_t ids[64];

		run_engine(&eo, &so, &sp, 1, &r);
		CHECK(r.n == MAXNEW && r.finish == OURO_FINISH_LENGTH);
		memcpy(ids, prompt, (size_t)P * sizeof *ids);
		memcpy(ids + P, r.tok, (size_t)r.n * sizeof *ids);
		int64_t n = P + r.n - 1;   /* the last token was never run */
		float *hidden = malloc((size_t)((s + 1) * n * D) * sizeof *hidden);
		CHECK(ouro_forward(m, ids, n, s + 1, hidden) == OURO_OK);
		for (int k = 0; k < r.n; k++) {
			double err = rel_err(r.h + k * D, hidden + ((size_t)s * n + P - 1 + k) * D, D);
			worst = err > worst ? err : worst;
			CHECK(r.loops[k] == s + 1);
		}
		free(hidden);
		free(r.h);
	}
	CHECK(worst < 1e-4);
	printf("engine vs forward, static exits: max relative error of states %.3g (tol 1e-4)\n", worst);
}

int main(void)
{
	int32_t a[29], b[5], c[41];
	struct run alone[1], mixed[3];
	double bf16_err = 0;

	pool_test();
	if (ouro_model_load(&m, "models/ouro-fixture") != OURO_OK) {
		fprintf(stderr, "%s\n", ouro_errmsg());
		return 1;
	}
	D = ouro_model_config(m)->hidden_size;
	srand(11);
	for (int i = 0; i < 29; i++)
		a[i] = rand() % 49152;
	for (int i = 0; i < 5; i++)
		b[i] = rand() % 49152;
	for (int i = 0; i < 41; i++)
		c[i] = rand() % 49152;
	against_forward(a, 20);

	alone[0].h = malloc((size_t)(MAXNEW * D) * sizeof(float));
	for (int i = 0; i < 3; i++)
		mixed[i].h = malloc((size_t)(MAXNEW * D) * sizeof(float));
	struct run f32 = {.h = malloc((size_t)(MAXNEW * D) * sizeof(float))};
	int cases = 0, same = 0;
	for (int kv = 0; kv < 3; kv++)
		for (int sampled = 0; sampled < 2; sampled++)
			for (int dt = 0; dt < 2; dt++) {
				struct ouro_engine_opts eo = {.steps = 4, .kv = (enum ouro_kv_policy)kv,
							      .kv_dtype = dt ? OURO_BF16 : OURO_F32,
							      .max_seqs = 1, .kv_memory = 1 << 30};
				struct ouro_seq_opts so = {
					.rule = {.kind = OURO_EXIT_THRESHOLD, .q = 0.5},
					.samp = {.temperature = sampled ? 1.0 : 0, .top_p = 1, .seed = 5},
					.max_tokens = MAXNEW};
				struct spec one = {a, 29, 0};
				struct spec three[3] = {{c, 41, 0}, {a, 29, 2}, {b, 5, 3}};

				ouro_set_threads(1);
				run_engine(&eo, &so, &one, 1, alone);
				if (!dt) {
					memcpy(f32.h, alone[0].h, (size_t)(alone[0].n * D) * sizeof(float));
					memcpy(f32.tok, alone[0].tok, sizeof f32.tok);
					f32.n = alone[0].n;
				} else if (!sampled && f32.n) {   /* the first state: same prompt */
					double err = rel_err(alone[0].h, f32.h, D);
					bf16_err = err > bf16_err ? err : bf16_err;
				}
				ouro_set_threads(2);
				eo.max_seqs = 3;
				eo.chunk = 3;
				run_engine(&eo, &so, three, 3, mixed);
				cases++;
				same += same_run(&alone[0], &mixed[1]);
				CHECK(same_run(&alone[0], &mixed[1]));
				/* room for one sequence at a time: they run in turn */
				struct ouro_engine *probe;
				CHECK(ouro_engine_new(&probe, m, &eo) == OURO_OK);
				eo.kv_memory = 5 * ouro_engine_stats(probe)->kv_block_bytes;
				ouro_engine_free(probe);
				eo.chunk = 0;
				run_engine(&eo, &so, three, 3, mixed);
				CHECK(same_run(&alone[0], &mixed[1]));
				same += same_run(&alone[0], &mixed[1]);
				cases++;
			}
	CHECK(alone[0].n > 0);
	CHECK(bf16_err < 1e-2);
	printf("batch invariance: %d of %d runs identical to the sequence alone; "
	       "bf16 KV vs f32 KV: relative error of the first state %.3g (tol 1e-2)\n",
	       same, cases, bf16_err);

	/* a sequence that cannot fit alone is refused; the engine goes on */
	struct ouro_engine *e;
	struct ouro_engine_opts eo = {.steps = 4, .kv_dtype = OURO_F32, .max_seqs = 2};
	struct ouro_seq_opts so = {.rule = {.kind = OURO_EXIT_STATIC, .step = 3}, .samp = {.top_p = 1},
				   .max_tokens = 1000};
	CHECK(ouro_engine_new(&e, m, &eo) == OURO_OK);
	eo.kv_memory = 4 * ouro_engine_stats(e)->kv_block_bytes;
	ouro_engine_free(e);
	CHECK(ouro_engine_new(&e, m, &eo) == OURO_OK);
	int64_t id;
	CHECK(ouro_engine_add(e, a, 29, &so, &id) == OURO_ENOMEM);
	CHECK(strstr(ouro_errmsg(), "more than the KV memory budget") != NULL);
	so.max_tokens = 3;
	CHECK(ouro_engine_add(e, a, 29, &so, &id) == OURO_OK);
	CHECK(ouro_engine_add(e, a, 0, &so, &id) == OURO_EINPUT);
	int steps = 0;
	while (ouro_engine_pending(e) && steps++ < 100) {
		const struct ouro_engine_event *ev;
		int nev;
		CHECK(ouro_engine_step(e, &ev, &nev) == OURO_OK);
	}
	CHECK(ouro_engine_stats(e)->new_tokens == 3);
	ouro_engine_free(e);

	free(alone[0].h);
	for (int i = 0; i < 3; i++)
		free(mixed[i].h);
	free(f32.h);
	ouro_model_free(m);
	return unit_done("test_engine");
}
