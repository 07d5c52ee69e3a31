/*
 * test_gate - the exit distribution and the exit rules of gate.c against
 * a direct transcription of ouro-model.md section 4, on random gate
 * logits; and the gate file round trip.
 *
 * The direct form computes p[t] = lambda[t] * prod_{s<t} (1 - lambda[s])
 * (the last step: the whole product) with a fresh product per t, and the
 * cdf as a sum, in long double, so it shares no code or evaluation order
 * with the library's running state. The rules of the next-token
 * distribution (KL, entropy, stable argmax) are checked the same way on
 * random logits, against sums in long double.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ouro.h"
#include "unit.h"

#define TMAX 8
#define NTOK 500

static uint64_t rng_state = 12345;

/* uniform in [0, 1) */
static double uniform(void)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (double)(rng_state >> 11) * 0x1.0p-53;
}

/* The direct formula: pdf and cdf [T] of one token from its logits [T]. */
static void direct(const float *logit, int T, long double *pdf, long double *cdf)
{
	long double acc = 0;

	for (int t = 0; t < T; t++) {
		long double prod = 1;
		for (int s = 0; s < t; s++)
			prod *= 1 - 1 / (1 + expl(-(long double)logit[s]));
		pdf[t] = t < T - 1 ? 1 / (1 + expl(-(long double)logit[t])) * prod : prod;
		acc += pdf[t];
		cdf[t] = acc;
	}
}

/* The exit step of one token by the rule's words, from the direct cdf and
 * the per-step differences diff[t] (t >= 1). */
static int direct_step(const struct ouro_exit_rule *r, const long double *cdf, const double *diff, int T)
{
	for (int t = 0; t < T; t++) {
		switch (r->kind) {
		case OURO_EXIT_THRESHOLD: if (cdf[t] >= r->q) return t; break;
		case OURO_EXIT_STATIC: if (t == r->step) return t; break;
		case OURO_EXIT_DIFF: if (t >= 1 && diff[t] < r->eps) return t; break;
		default: break;
		}
	}
	return T - 1;
}

/* Feeds one token's loops to ouro_exit_update until it says stop. */
static int library_step(const struct ouro_exit_rule *r, const float *logits, int64_t n, int64_t i,
			const double *diff, int T)
{
	struct ouro_exit_state s;

	ouro_exit_begin(&s);
	for (int t = 0; t < T; t++) {
		struct ouro_exit_loop in = {.gate = logits[(int64_t)t * n + i], .diff = diff[t]};
		if (ouro_exit_update(&s, r, t, T, &in))
			return t;
	}
	return -1;   /* never stopped, not even at T-1: a bug */
}

static double max_pdf_err, max_cdf_err;

static void check_dist(int T)
{
	static float logits[TMAX * NTOK], pdf[TMAX * NTOK], cdf[TMAX * NTOK];
	static double diff[NTOK][TMAX];
	int64_t n = NTOK;

	for (int64_t k = 0; k < T * n; k++) {
		/* mostly moderate logits, some saturating ones */
		double u = uniform();
		logits[k] = (float)(u < 0.05 ? (uniform() - 0.5) * 200 : (uniform() - 0.5) * 12);
	}
	for (int64_t i = 0; i < n; i++)
		for (int t = 0; t < T; t++)
			diff[i][t] = t == 0 ? 1e300 : uniform();   /* t = 0: must be ignored */
	ouro_exit_dist(logits, T, n, pdf, cdf);

	for (int64_t i = 0; i < n; i++) {
		float lg[TMAX];
		long double dp[TMAX], dc[TMAX];
		double sum = 0;

		for (int t = 0; t < T; t++)
			lg[t] = logits[t * n + i];
		direct(lg, T, dp, dc);
		for (int t = 0; t < T; t++) {
			double pe = fabs((double)(pdf[t * n + i] - dp[t]));
			double ce = fabs((double)(cdf[t * n + i] - dc[t]));
			max_pdf_err = pe > max_pdf_err ? pe : max_pdf_err;
			max_cdf_err = ce > max_cdf_err ? ce : max_cdf_err;
			CHECK(pdf[t * n + i] >= 0 && pdf[t * n + i] <= 1);
			if (t > 0)
				CHECK(cdf[t * n + i] >= cdf[(t - 1) * n + i]);   /* monotone */
			sum += pdf[t * n + i];
		}
		CHECK(fabs(sum - 1) < 1e-6);
		CHECK(fabs(cdf[(T - 1) * n + i] - 1) < 1e-6);

		/* every rule, against the words of the rule */
		struct ouro_exit_rule rules[] = {
			{.kind = OURO_EXIT_THRESHOLD, .q = uniform()},
			{.kind = OURO_EXIT_THRESHOLD, .q = 0.9},
			{.kind = OURO_EXIT_THRESHOLD, .q = 0.0},
			{.kind = OURO_EXIT_STATIC, .step = (int)(uniform() * T)},
			{.kind = OURO_EXIT_STATIC, .step = T - 1},
			{.kind = OURO_EXIT_DIFF, .eps = uniform()},
			{.kind = OURO_EXIT_DIFF, .eps = 0.0},
			{.kind = OURO_EXIT_WEIGHTED},
		};
		for (size_t k = 0; k < sizeof rules / sizeof *rules; k++) {
			int step = library_step(&rules[k], logits, n, i, diff[i], T);
			int want = direct_step(&rules[k], dc, diff[i], T);
			/* a cdf within rounding of q may go either way */
			int tie = rules[k].kind == OURO_EXIT_THRESHOLD && want < T &&
				  fabsl(dc[want] - rules[k].q) < 1e-12L;
			CHECK(step == want || tie);
			if (rules[k].kind == OURO_EXIT_THRESHOLD && rules[k].q == 0.0)
				CHECK(step == 0);
			if (rules[k].kind == OURO_EXIT_DIFF && rules[k].eps == 0.0)
				CHECK(step == T - 1);
			if (rules[k].kind == OURO_EXIT_WEIGHTED)
				CHECK(step == T - 1);
		}
	}
}

/* q = 1.0 with moderate logits: the cdf reaches 1 only at the last step
 * ("never reached -> last"); the running state matches ouro_exit_dist. */
static void check_q1(void)
{
	enum { T = 4 };
	float logits[T] = {2.5f, -1.0f, 3.0f, 0.5f}, pdf[T], cdf[T];
	struct ouro_exit_rule r = {.kind = OURO_EXIT_THRESHOLD, .q = 1.0};
	struct ouro_exit_state s;
	int step = -1;

	ouro_exit_dist(logits, T, 1, pdf, cdf);
	ouro_exit_begin(&s);
	for (int t = 0; t < T && step < 0; t++) {
		struct ouro_exit_loop in = {.gate = logits[t]};
		if (ouro_exit_update(&s, &r, t, T, &in))
			step = t;
		CHECK((float)s.pdf == pdf[t]);
		CHECK((float)s.cdf == cdf[t]);
		CHECK(t == T - 1 || s.cdf < 1.0);
	}
	CHECK(step == T - 1);

	/* one loop: the only step takes everything */
	ouro_exit_dist(logits, 1, 1, pdf, cdf);
	CHECK(pdf[0] == 1.0f && cdf[0] == 1.0f);
	ouro_exit_begin(&s);
	CHECK(ouro_exit_update(&s, &r, 0, 1, &(struct ouro_exit_loop){.gate = logits[0]}) == 1);
}

#define NV 37

/* The KL divergence to the previous loop, the entropy and the argmax (the
 * lowest id of the largest logit) of softmax(x [NV]), in long double. */
static void direct_dist(const float *x, const float *prev, long double *kl, long double *ent, int *arg)
{
	long double zx = 0, zp = 0;

	*arg = 0;
	for (int v = 0; v < NV; v++) {
		zx += expl((long double)x[v]);
		if (prev)
			zp += expl((long double)prev[v]);
		if (x[v] > x[*arg])
			*arg = v;
	}
	*kl = *ent = 0;
	for (int v = 0; v < NV; v++) {
		long double lp = (long double)x[v] - logl(zx), p = expl(lp);
		*ent -= p * lp;
		if (prev)
			*kl += p * (lp - ((long double)prev[v] - logl(zp)));
	}
}

/* --kl, --entropy and --stable on random logits [T, NV] per token (some
 * loops repeating the previous one's, some with tied maxima), against the
 * words of the rules: first t >= 1 with KL < eps, first t >= 1 with
 * entropy < H, first t whose argmax held K loops; else the last. */
static void check_lm_rules(void)
{
	static float x[TMAX][NV];
	double max_err = 0;

	for (int tok = 0; tok < NTOK; tok++) {
		int T = 2 + (int)(uniform() * (TMAX - 1));
		long double kl[TMAX], ent[TMAX];
		int arg[TMAX];

		for (int t = 0; t < T; t++) {
			double u = uniform(), scale = 1 + uniform() * 6;
			for (int v = 0; v < NV; v++)
				x[t][v] = t > 0 && u < 0.15 ? x[t - 1][v] :
					  u < 0.3 ? (float)(int)(uniform() * 3) : (float)((uniform() - 0.5) * scale);
			direct_dist(x[t], t ? x[t - 1] : NULL, &kl[t], &ent[t], &arg[t]);
		}
		struct ouro_exit_rule rules[] = {
			{.kind = OURO_EXIT_KL, .kl = uniform() * 0.3},
			{.kind = OURO_EXIT_KL, .kl = 0},
			{.kind = OURO_EXIT_ENTROPY, .entropy = uniform() * log(NV)},
			{.kind = OURO_EXIT_STABLE, .stable = 2},
			{.kind = OURO_EXIT_STABLE, .stable = 3},
		};
		for (size_t k = 0; k < sizeof rules / sizeof *rules; k++) {
			const struct ouro_exit_rule *r = &rules[k];
			struct ouro_exit_state s;
			int step = -1, want = T - 1, run = 0, tie = 0;

			for (int t = 0; t < T && want == T - 1; t++) {
				run = t > 0 && arg[t] == arg[t - 1] ? run + 1 : 1;
				long double val = r->kind == OURO_EXIT_KL ? kl[t] : ent[t];
				double lim = r->kind == OURO_EXIT_KL ? r->kl : r->entropy;
				if (r->kind == OURO_EXIT_STABLE ? run >= r->stable : t >= 1 && val < lim)
					want = t;
				tie |= r->kind != OURO_EXIT_STABLE && t >= 1 && fabsl(val - lim) < 1e-9L;
			}
			ouro_exit_begin(&s);
			for (int t = 0; t < T && step < 0; t++) {
				struct ouro_exit_loop in = {.logits = x[t], .prev = t ? x[t - 1] : NULL, .V = NV};
				if (ouro_exit_update(&s, r, t, T, &in))
					step = t;
				double e = fmax(fabs((double)(s.entropy - ent[t])),
						t ? fabs((double)(s.kl - kl[t])) : fabs(s.kl));
				max_err = e > max_err ? e : max_err;
				CHECK(s.argmax == arg[t]);
			}
			CHECK(step == want || tie);
			if (r->kind == OURO_EXIT_KL && r->kl == 0)
				CHECK(step == T - 1);
		}
	}
	printf("KL and entropy: max abs error vs long double %.3e\n", max_err);
	CHECK(max_err < 1e-12);
}

/* ouro_gate_logit, and a gate file written and read back. */
static void check_gate_file(void)
{
	enum { D = 37 };
	float w[D], h[D];
	struct ouro_gate g = {D, w, -0.375f}, back;
	char path[] = "/tmp/test_gate.XXXXXX";
	double want = -0.375;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	close(fd);
	for (int j = 0; j < D; j++) {
		w[j] = (float)(uniform() - 0.5);
		h[j] = (float)(uniform() * 4 - 2);
		want += (double)w[j] * h[j];
	}
	CHECK(fabs(ouro_gate_logit(&g, h) - want) < 1e-6);
	CHECK(ouro_gate_save(&g, path) == OURO_OK);
	CHECK(ouro_gate_load(&back, path, D) == OURO_OK);
	CHECK(back.dim == D && back.b == g.b && back.w && memcmp(back.w, w, sizeof w) == 0);
	ouro_gate_free(&back);
	CHECK(back.w == NULL);
	CHECK(ouro_gate_load(&back, path, D + 1) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "expected [1, 38]") != NULL);
	unlink(path);
	CHECK(ouro_gate_load(&back, path, D) == OURO_EMODEL);
}

int main(void)
{
	for (int T = 1; T <= TMAX; T++)
		check_dist(T);
	check_q1();
	check_lm_rules();
	check_gate_file();
	printf("max abs error vs the direct formula: pdf %.3e, cdf %.3e\n", max_pdf_err, max_cdf_err);
	CHECK(max_pdf_err < 1e-6 && max_cdf_err < 1e-6);
	return unit_done("test_gate");
}
