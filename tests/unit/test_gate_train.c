/*
 * test_gate_train - Stage II gate training (gate_train.c) on random
 * states and step losses, with no model:
 *   - the gradient against central finite differences of the loss, in
 *     every coordinate of w and in b (relative error under 2e-5);
 *   - the targets against the formula of ouro-model.md section 6, read
 *     back through the bias gradient at w = 0, b = 0, where it is the
 *     mean of (w[t] - 1/2) over the labeled tokens and steps 1..T-1;
 *   - epochs lower the loss, and two runs with the same seed end with the
 *     same gate to the bit (another seed does not);
 *   - sequences with another step count, and non-finite step losses, are
 *     refused.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "unit.h"

#define D 13
#define T 4

static uint64_t rng_state = 777;

/* uniform in [-1, 1) */
static double uniform(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(rng_state >> 11) * 0x1.0p-52 - 1;
}

/* n tokens of random states [T, n, D] and step losses [T, n-1]
 * (decreasing on average, so the targets spread over (0, 1)). */
static void random_sequence(float *h, float *loss, int64_t n)
{
	for (int64_t i = 0; i < T * n * D; i++)
		h[i] = (float)uniform();
	for (int64_t i = 0; i < n - 1; i++)
		for (int t = 0; t < T; t++)
			loss[t * (n - 1) + i] = (float)(3 - 0.01 * t + 0.02 * uniform());
}

static struct ouro_gate random_gate(void)
{
	struct ouro_gate g = {D, malloc(D * sizeof(float)), (float)(0.3 * uniform())};

	for (int j = 0; j < D; j++)
		g.w[j] = (float)(0.5 * uniform());
	return g;
}

static struct ouro_gate_trainer *filled(const int64_t *lens, int nseq, float *h, float *loss,
					int32_t *tokens)
{
	struct ouro_gate_trainer *tr;

	CHECK(ouro_gate_trainer_new(&tr, D) == OURO_OK);
	for (int s = 0; s < nseq; s++) {
		random_sequence(h, loss, lens[s]);
		CHECK(ouro_gate_trainer_add(tr, NULL, h, T, lens[s], tokens, loss, "seq") == OURO_OK);
	}
	return tr;
}

int main(void)
{
	static const int64_t lens[] = {5, 1, 9, 2};
	float h[T * 9 * D], loss[T * 8];
	int32_t tokens[9] = {0};
	struct ouro_gate_trainer *tr = filled(lens, 4, h, loss, tokens);
	int64_t ntok, nlab;
	int steps;
	long computed;

	ouro_gate_trainer_counts(tr, &ntok, &nlab, &steps, &computed);
	CHECK(ntok == 17 && nlab == 13 && steps == T && computed == 0);

	/* the gradient against finite differences: Richardson-extrapolated
	 * central differences (steps h and h/2, so the h^2 term cancels),
	 * divided by the steps the float parameters really took. The loss
	 * is summed in double but each gate logit is a float, whose rounding
	 * (~1e-7 relative) divided by the step bounds the agreement near
	 * 1e-5; a wrong gradient is off by far more. */
	struct ouro_gate g = random_gate();
	double grad[D + 1], worst = 0;
	ouro_gate_stage2_loss(tr, &g, grad);
	for (int j = 0; j <= D; j++) {
		float *p = j < D ? &g.w[j] : &g.b, keep = *p;
		double fd[2];
		for (int k = 0; k < 2; k++) {
			float step = k ? 1.0f / 32 : 1.0f / 16;
			*p = keep + step;
			double up = ouro_gate_stage2_loss(tr, &g, NULL), hi = *p;
			*p = keep - step;
			double down = ouro_gate_stage2_loss(tr, &g, NULL), lo = *p;
			fd[k] = (up - down) / (hi - lo);
		}
		*p = keep;
		double err = fabs((4 * fd[1] - fd[0]) / 3 - grad[j]) / (fabs(grad[j]) + 1e-3);
		worst = err > worst ? err : worst;
	}
	printf("test_gate_train: gradient vs finite differences: worst relative error %.2e\n", worst);
	CHECK(worst < 2e-5);

	/* the targets, through the bias gradient at w = 0, b = 0 */
	struct ouro_gate zero = {D, calloc(D, sizeof(float)), 0};
	struct ouro_gate_trainer *one;
	CHECK(ouro_gate_trainer_new(&one, D) == OURO_OK);
	random_sequence(h, loss, 6);
	CHECK(ouro_gate_trainer_add(one, NULL, h, T, 6, tokens, loss, "seq") == OURO_OK);
	double want = 0;
	for (int i = 0; i < 5; i++)
		for (int t = 1; t < T; t++) {
			double gain = (double)loss[(t - 1) * 5 + i] - loss[t * 5 + i];
			float w = (float)(1 / (1 + exp(-50 * ((gain > 0 ? gain : 0) - 0.005))));
			want += (double)w - 0.5;
		}
	want /= 5.0 * T;
	ouro_gate_stage2_loss(one, &zero, grad);
	printf("test_gate_train: bias gradient at 0: %.9f, from the formula %.9f\n", grad[D], want);
	CHECK(fabs(grad[D] - want) < 1e-12);
	CHECK(fabs(ouro_gate_stage2_loss(one, &zero, NULL) - (T - 1) * log(2.0) / T) < 1e-12);

	/* training lowers the loss, and is reproducible */
	struct ouro_gate a = random_gate(), b, c;
	b = (struct ouro_gate){D, malloc(D * sizeof(float)), a.b};
	c = (struct ouro_gate){D, malloc(D * sizeof(float)), a.b};
	memcpy(b.w, a.w, D * sizeof(float));
	memcpy(c.w, a.w, D * sizeof(float));
	/* three trainers with the same data */
	struct ouro_gate_trainer *tb, *tc;
	ouro_gate_trainer_free(tr);
	rng_state = 777;
	tr = filled(lens, 4, h, loss, tokens);
	rng_state = 777;
	tb = filled(lens, 4, h, loss, tokens);
	rng_state = 777;
	tc = filled(lens, 4, h, loss, tokens);
	const struct ouro_gate_train_opts o = {0.05, 4, 9}, other = {0.05, 4, 10};
	double before = ouro_gate_stage2_loss(tr, &a, NULL);
	for (int e = 0; e < 5; e++) {
		CHECK(ouro_gate_train_epoch(tr, &a, &o) == OURO_OK);
		CHECK(ouro_gate_train_epoch(tb, &b, &o) == OURO_OK);
		CHECK(ouro_gate_train_epoch(tc, &c, &other) == OURO_OK);
	}
	double after = ouro_gate_stage2_loss(tr, &a, NULL);
	printf("test_gate_train: loss %.6f -> %.6f after 5 epochs\n", before, after);
	CHECK(after < before);
	CHECK(memcmp(a.w, b.w, D * sizeof(float)) == 0 && a.b == b.b);
	CHECK(memcmp(a.w, c.w, D * sizeof(float)) != 0);

	/* refusals */
	float h3[3 * 4 * D] = {0}, l3[3 * 3] = {0};
	CHECK(ouro_gate_trainer_add(tr, NULL, h3, 3, 4, tokens, l3, "seq3") == OURO_EINPUT);
	loss[2] = NAN;
	CHECK(ouro_gate_trainer_add(tr, NULL, h, T, 4, tokens, loss, "nan") == OURO_EINPUT);
	CHECK(strstr(ouro_errmsg(), "nan: step_loss[") != NULL);
	struct ouro_gate_trainer *empty;
	CHECK(ouro_gate_trainer_new(&empty, D) == OURO_OK);
	CHECK(ouro_gate_train_epoch(empty, &a, &o) == OURO_EINPUT);

	ouro_gate_trainer_free(empty);
	ouro_gate_trainer_free(one);
	ouro_gate_trainer_free(tr);
	ouro_gate_trainer_free(tb);
	ouro_gate_trainer_free(tc);
	ouro_gate_free(&g);
	ouro_gate_free(&zero);
	ouro_gate_free(&a);
	ouro_gate_free(&b);
	ouro_gate_free(&c);
	return unit_done("test_gate_train");
}
