/*
 * test_sampler - unit tests of libouro/model/sampler.c.
 *
 * The sampler is checked against a direct implementation written here
 * from the definitions in sampler.h and ouro-sample(1): a full sort for
 * the filters, the documented splitmix64 uniform for the draw. Both are
 * deterministic, so the exact-agreement checks compare token for token.
 * Empirical frequencies over many seeds are compared with the filtered
 * softmax by a chi-square statistic whose bound (far beyond the 1e-9
 * quantile) cannot flake; the seeds are fixed anyway.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "unit.h"

/* ---- the direct implementation ---------------------------------------- */

static double ref_uniform(uint64_t seed, int64_t n)
{
	uint64_t z = seed + (uint64_t)(n + 1) * 0x9E3779B97F4A7C15u;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
	z ^= z >> 31;
	return (double)(z >> 11) / 9007199254740992.0;
}

static const float *cmp_logits;

/* Rank order: larger logit first, then lower id. */
static int by_rank(const void *a, const void *b)
{
	int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
	float x = cmp_logits[i], y = cmp_logits[j];

	if (x != y)
		return x > y ? -1 : 1;
	return (i > j) - (i < j);
}

/* keep [V] gets the mask of the filters; returns the unnormalised weights
 * in w [V] (0 outside the mask). */
static void ref_filter(const float *l, int V, const struct ouro_sampler_opts *o,
		       unsigned char *keep, double *w)
{
	int32_t *order = malloc((size_t)V * sizeof *order);
	double total = 0, before = 0;
	int i;

	for (i = 0; i < V; i++)
		order[i] = i;
	cmp_logits = l;
	qsort(order, (size_t)V, sizeof *order, by_rank);
	for (i = 0; i < V; i++) {
		keep[i] = 1;
		if (o->top_k > 0 && o->top_k < V && l[i] < l[order[o->top_k - 1]])
			keep[i] = 0;
	}
	for (i = 0; i < V; i++) {
		w[i] = keep[i] ? exp(((double)l[i] - l[order[0]]) / o->temperature) : 0;
		total += w[i];
	}
	/* top-p: walk the rank order; a token stays while the mass before it
	 * is below top_p (the first always stays) */
	for (i = 0; i < V; i++) {
		int32_t t = order[i];
		if (!keep[t])
			continue;
		if (i > 0 && before >= o->top_p * total)
			keep[t] = 0;
		before += w[t];
	}
	for (i = 0; i < V; i++) {
		if (keep[i] && w[i] < o->min_p)   /* w[i] / max w, max w = 1 */
			keep[i] = 0;
		if (!keep[i])
			w[i] = 0;
	}
	free(order);
}

static int32_t ref_sample(const float *l, int V, const struct ouro_sampler_opts *o, int64_t n)
{
	unsigned char *keep = malloc((size_t)V);
	double *w = malloc((size_t)V * sizeof *w), total = 0, cum = 0, target;
	int32_t pick = -1;

	if (o->temperature == 0) {
		pick = 0;
		for (int i = 1; i < V; i++)
			if (l[i] > l[pick])
				pick = i;
		goto out;
	}
	ref_filter(l, V, o, keep, w);
	for (int i = 0; i < V; i++)
		total += w[i];
	target = ref_uniform(o->seed, n) * total;
	for (int i = 0; i < V; i++) {
		if (!keep[i])
			continue;
		pick = i;
		cum += w[i];
		if (target < cum)
			break;
	}
out:
	free(keep);
	free(w);
	return pick;
}

/* ---- helpers ---------------------------------------------------------- */

static uint64_t rng_state = 12345;

static double rnd(void)   /* uniform [0, 1), xorshift64* */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (double)((rng_state * 2685821657736338717u) >> 11) / 9007199254740992.0;
}

static double gauss(void)
{
	double u = rnd() + 1e-300, v = rnd();
	return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static struct ouro_sampler *make(double temp, int64_t k, double p, double minp, uint64_t seed,
				 int64_t V)
{
	struct ouro_sampler_opts o = {temp, k, p, minp, seed};
	struct ouro_sampler *s = NULL;

	CHECK(ouro_sampler_new(&s, &o, V) == OURO_OK);
	return s;
}

/* Chi-square of counts [V] (over `draws`) against probabilities w/total;
 * tokens outside the mask must never be drawn. */
static double chi_square(const int64_t *counts, const double *w, int V, int64_t draws,
			 int *outside)
{
	double total = 0, chi = 0;

	*outside = 0;
	for (int i = 0; i < V; i++)
		total += w[i];
	for (int i = 0; i < V; i++) {
		if (w[i] == 0) {
			*outside += counts[i] != 0;
			continue;
		}
		double e = (double)draws * w[i] / total;
		chi += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
	}
	return chi;
}

/* ---- tests ------------------------------------------------------------ */

static void test_greedy(void)
{
	float l[8] = {0.5f, 2.0f, -1.0f, 3.0f, 1.0f, 3.0f, NAN, 3.0f};
	struct ouro_sampler *s = make(0, 0, 1, 0, 7, 8);

	for (int64_t n = 1; n < 50; n++)
		CHECK(ouro_sample(s, l, n) == 3);         /* lowest id among ties; NaN never */
	l[0] = NAN;
	CHECK(ouro_sample(s, l, 1) == 3);
	l[6] = INFINITY;
	CHECK(ouro_sample(s, l, 1) == 6);
	ouro_sampler_free(s);
	/* greedy ignores the filters */
	s = make(0, 2, 0.1, 0.9, 0, 8);
	l[6] = -INFINITY;
	CHECK(ouro_sample(s, l, 3) == 3);
	ouro_sampler_free(s);
}

static void test_options(void)
{
	struct ouro_sampler *s;
	struct ouro_sampler_opts bad[] = {
		{-0.5, 0, 1, 0, 0}, {NAN, 0, 1, 0, 0}, {INFINITY, 0, 1, 0, 0},
		{1, -1, 1, 0, 0}, {1, 0, 0, 0, 0}, {1, 0, 1.5, 0, 0}, {1, 0, NAN, 0, 0},
		{1, 0, 1, -0.1, 0}, {1, 0, 1, 1.01, 0}, {1, 0, 1, NAN, 0},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		s = (struct ouro_sampler *)1;
		CHECK(ouro_sampler_new(&s, &bad[i], 10) == OURO_EUSAGE);
		CHECK(s == NULL);
		CHECK(strlen(ouro_errmsg()) > 0);
	}
	struct ouro_sampler_opts ok = {1, 1000, 1, 1, UINT64_MAX};   /* top-k > V keeps all */
	CHECK(ouro_sampler_new(&s, &ok, 10) == OURO_OK);
	ouro_sampler_free(s);
}

/* The documented uniform, seen through flat logits: token floor(u * V). */
static void test_counter(void)
{
	enum { V = 1024 };
	static float flat[V];
	int distinct_n = 0, distinct_seed = 0, seen[V] = {0}, seen2[V] = {0};
	struct ouro_sampler *s = make(1, 0, 1, 0, 42, V), *s2 = make(1, 0, 1, 0, 42, V);

	for (int64_t n = 0; n < 200; n++) {
		int32_t t = ouro_sample(s, flat, n);
		CHECK(t == (int32_t)floor(ref_uniform(42, n) * V));
		CHECK(ouro_sample(s2, flat, n) == t);      /* same seed and n, same token */
		CHECK(ouro_sample(s, flat, n) == t);       /* no hidden state */
		distinct_n += !seen[t]++;
	}
	CHECK(distinct_n > 150);                           /* different n, different draws */
	for (uint64_t seed = 0; seed < 200; seed++) {
		struct ouro_sampler *r = make(1, 0, 1, 0, seed, V);
		int32_t t = ouro_sample(r, flat, 5);
		distinct_seed += !seen2[t]++;
		ouro_sampler_free(r);
	}
	CHECK(distinct_seed > 150);
	ouro_sampler_free(s);
	ouro_sampler_free(s2);
}

/* Filters on crafted and random logits against the direct implementation,
 * token for token. */
static void test_filters_exact(void)
{
	struct { double t; int64_t k; double p, minp; } cfg[] = {
		{1, 0, 1, 0}, {0.7, 5, 1, 0}, {1, 0, 0.5, 0}, {1.5, 0, 1, 0.1},
		{0.8, 20, 0.9, 0.05}, {2, 1, 1, 0}, {1, 0, 1e-9, 0}, {1, 0, 1, 1},
		{1e-30, 0, 1, 0}, {1e30, 0, 1, 0}, {0.5, 3, 0.3, 0.5},
	};
	enum { V = 300 };
	float l[V];
	int mismatches = 0, total = 0;

	for (int trial = 0; trial < 40; trial++) {
		for (int i = 0; i < V; i++)   /* coarse values make ties common */
			l[i] = trial % 2 ? (float)gauss() * 3 : (float)floor(gauss() * 4) / 2;
		for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
			struct ouro_sampler_opts o = {cfg[c].t, cfg[c].k, cfg[c].p, cfg[c].minp,
						      (uint64_t)trial * 1000003u};
			struct ouro_sampler *s = make(o.temperature, o.top_k, o.top_p, o.min_p, o.seed, V);
			for (int64_t n = 1; n <= 20; n++) {
				total++;
				mismatches += ouro_sample(s, l, n) != ref_sample(l, V, &o, n);
			}
			ouro_sampler_free(s);
		}
	}
	if (mismatches)
		fprintf(stderr, "filters: %d of %d draws differ from the direct implementation\n",
			mismatches, total);
	CHECK(mismatches == 0);

	/* crafted: top-k keeps every token tied with the k-th */
	float tied[6] = {1, 3, 2, 2, 2, 0};
	struct ouro_sampler_opts o = {1, 2, 1, 0, 0};
	unsigned char keep[6];
	double w[6];
	ref_filter(tied, 6, &o, keep, w);
	CHECK(keep[1] && keep[2] && keep[3] && keep[4] && !keep[0] && !keep[5]);
	int hit[6] = {0};
	struct ouro_sampler *s = make(1, 2, 1, 0, 0, 6);
	for (int64_t n = 0; n < 2000; n++)
		hit[ouro_sample(s, tied, n)]++;
	CHECK(hit[0] == 0 && hit[5] == 0 && hit[1] && hit[2] && hit[3] && hit[4]);
	ouro_sampler_free(s);

	/* crafted top-p: probabilities .5 .3 .15 .05; p = .8 keeps the head
	 * up to mass .8: ids 0 and 1 (the mass before id 2 is .8, not < .8);
	 * p = .81 adds id 2 */
	float pl[4] = {(float)log(.5), (float)log(.3), (float)log(.15), (float)log(.05)};
	for (int pass = 0; pass < 2; pass++) {
		int h[4] = {0};
		s = make(1, 0, pass ? 0.81 : 0.79, 0, 3, 4);
		for (int64_t n = 0; n < 4000; n++)
			h[ouro_sample(s, pl, n)]++;
		CHECK(h[0] && h[1] && h[3] == 0);
		CHECK(pass ? h[2] > 0 : h[2] == 0);
		ouro_sampler_free(s);
	}
	/* exact boundary: four equal tokens, p = .5: the mass before id 2 is
	 * exactly .5, so ids 2 and 3 go (as HF's cumsum <= 1 - p drops them) */
	{
		float flat4[4] = {0, 0, 0, 0};
		int h[4] = {0};
		s = make(1, 0, 0.5, 0, 11, 4);
		for (int64_t n = 0; n < 1000; n++)
			h[ouro_sample(s, flat4, n)]++;
		CHECK(h[0] && h[1] && h[2] == 0 && h[3] == 0);
		ouro_sampler_free(s);
	}
	/* crafted min-p: .5 * .5 = .25 keeps ids 0 and 1 only */
	{
		int h[4] = {0};
		s = make(1, 0, 1, 0.5, 9, 4);
		for (int64_t n = 0; n < 4000; n++)
			h[ouro_sample(s, pl, n)]++;
		CHECK(h[0] && h[1] && h[2] == 0 && h[3] == 0);
		ouro_sampler_free(s);
	}
}

/* Empirical frequencies against the filtered softmax. */
static void test_frequencies(void)
{
	enum { V = 12, DRAWS = 60000 };
	float l[V] = {2.0f, 1.5f, 1.5f, 1.0f, 0.7f, 0.3f, 0.0f, -0.5f, -1.0f, -2.0f, -3.0f, 1.2f};
	struct { double t; int64_t k; double p, minp; } cfg[] = {
		{1, 0, 1, 0}, {0.5, 0, 1, 0}, {2, 6, 1, 0}, {1, 0, 0.8, 0},
		{1.3, 8, 0.9, 0.2}, {1e6, 0, 1, 0},
	};
	double worst = 0;

	for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
		struct ouro_sampler_opts o = {cfg[c].t, cfg[c].k, cfg[c].p, cfg[c].minp, 0};
		unsigned char keep[V];
		double w[V];
		int64_t counts[V] = {0};
		int outside, df = -1;

		ref_filter(l, V, &o, keep, w);
		for (int i = 0; i < V; i++)
			df += keep[i];
		/* half the draws vary the seed, half vary n */
		for (int64_t d = 0; d < DRAWS / 2; d++) {
			struct ouro_sampler *s = make(o.temperature, o.top_k, o.top_p, o.min_p,
						      (uint64_t)d, V);
			counts[ouro_sample(s, l, 17)]++;
			ouro_sampler_free(s);
		}
		struct ouro_sampler *s = make(o.temperature, o.top_k, o.top_p, o.min_p, 99, V);
		for (int64_t n = 0; n < DRAWS / 2; n++)
			counts[ouro_sample(s, l, n)]++;
		ouro_sampler_free(s);
		double chi = chi_square(counts, w, V, DRAWS, &outside);
		CHECK(outside == 0);
		/* df <= 11: the 1e-9 upper quantile is below 60 */
		CHECK(chi < 60);
		worst = chi > worst ? chi : worst;
		(void)df;
	}
	printf("# frequencies: largest chi-square %.2f (bound 60, df <= 11)\n", worst);
}

static void test_temperature_limits(void)
{
	float l[5] = {1.0f, 4.0f, 4.0f, 3.999f, -2.0f};
	int h[5] = {0};
	struct ouro_sampler *s = make(1e-30, 0, 1, 0, 5, 5);

	/* a tiny temperature draws only among the exact maxima, evenly */
	for (int64_t n = 0; n < 2000; n++)
		h[ouro_sample(s, l, n)]++;
	CHECK(h[0] == 0 && h[3] == 0 && h[4] == 0 && h[1] > 800 && h[2] > 800);
	ouro_sampler_free(s);
	s = make(5e-324, 0, 1, 0, 5, 5);    /* the smallest positive double */
	for (int64_t n = 0; n < 100; n++) {
		int32_t t = ouro_sample(s, l, n);
		CHECK(t == 1 || t == 2);
	}
	ouro_sampler_free(s);
	/* a huge temperature is uniform; -inf and NaN logits stay impossible */
	float m[6] = {100.0f, -100.0f, 0.0f, -INFINITY, 3.0f, NAN};
	int64_t counts[6] = {0};
	double w[6] = {1, 1, 1, 0, 1, 0};
	int outside;
	s = make(1e300, 0, 1, 0, 1, 6);
	for (int64_t n = 0; n < 20000; n++)
		counts[ouro_sample(s, m, n)]++;
	CHECK(chi_square(counts, w, 6, 20000, &outside) < 50);
	CHECK(outside == 0);
	ouro_sampler_free(s);
}

static void test_logprobs(void)
{
	enum { V = 5000 };
	static float l[V];
	static int32_t ids[V], order[V];
	static float lp[V];
	double lse = 0, mx = -INFINITY;

	for (int i = 0; i < V; i++) {
		l[i] = (float)floor(gauss() * 8) / 4;   /* many ties */
		mx = l[i] > mx ? l[i] : mx;
		order[i] = i;
	}
	for (int i = 0; i < V; i++)
		lse += exp(l[i] - mx);
	lse = mx + log(lse);
	cmp_logits = l;
	qsort(order, V, sizeof *order, by_rank);
	int ks[] = {1, 2, 7, 100, V};
	for (size_t c = 0; c < sizeof ks / sizeof *ks; c++) {
		int k = ks[c], same = 1, sorted = 1;
		double err = 0, mass = 0;
		ouro_logprobs_topk(l, V, k, ids, lp);
		for (int i = 0; i < k; i++) {
			same &= ids[i] == order[i];
			if (i)
				sorted &= lp[i] <= lp[i - 1];
			err = fmax(err, fabs(lp[i] - (l[ids[i]] - lse)));
			mass += exp((double)lp[i]);
		}
		CHECK(same);
		CHECK(sorted);
		CHECK(err < 1e-5);
		CHECK(mass <= 1 + 1e-5);
		if (k == V)
			CHECK(fabs(mass - 1) < 1e-5);
	}
	/* greedy agrees with the first of the top-K */
	struct ouro_sampler *s = make(0, 0, 1, 0, 0, V);
	ouro_logprobs_topk(l, V, 1, ids, lp);
	CHECK(ouro_sample(s, l, 1) == ids[0]);
	ouro_sampler_free(s);
}

int main(void)
{
	test_greedy();
	test_options();
	test_counter();
	test_filters_exact();
	test_frequencies();
	test_temperature_limits();
	test_logprobs();
	return unit_done("test_sampler");
}
