/*
 * sampler.c - logits -> next token: greedy, temperature, top-k, top-p,
 * min-p, and the top-K log-probabilities.
 *
 * The filters follow Hugging Face generate, in its order, on the
 * distribution p[i] ~ w[i] = exp((logit[i] - max) / temperature):
 *   top-k   keeps the tokens whose logit is at least the k-th largest
 *           (all tokens tied with the k-th stay, as in HF);
 *   top-p   of what is left, ranked by logit (ties: lower id first), keeps
 *           each token whose predecessors' mass is below top_p of the
 *           total: the smallest head reaching top_p, at least one token;
 *   min-p   of what is left, keeps p[i] >= min_p * max p, i.e.
 *           w[i] >= min_p, since the most likely token has w = 1.
 * The survivors are then scanned in increasing id order and the first
 * whose cumulative weight exceeds u * (total weight) is the token, u being
 * the uniform number of uniform() below.
 *
 * No step sorts the vocabulary: top-k finds its threshold by selection
 * (O(V)), top-p heapifies its candidates (O(V)) and pops only the head it
 * keeps, greedy is one scan. NaN logits count as -inf: never chosen.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ouro.h"

struct ouro_sampler {
	struct ouro_sampler_opts o;
	int64_t vocab;     /* V */
	double *w;         /* [V] unnormalised probabilities */
	float *sel;        /* [V] scratch of the top-k selection */
	int32_t *heap;     /* [V] candidate ids of the top-p heap */
};

/* splitmix64's output function (Steele, Lea, Flood 2014). */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
	return z ^ (z >> 31);
}

/* The uniform number in [0, 1) for the token after n tokens: the n-th
 * output (from 0) of splitmix64 started at state `seed`, i.e.
 * mix64(seed + (n + 1) * golden), its top 53 bits scaled by 2^-53. */
static double uniform(uint64_t seed, int64_t n)
{
	uint64_t z = mix64(seed + ((uint64_t)n + 1) * 0x9E3779B97F4A7C15u);

	return (double)(z >> 11) * 0x1p-53;
}

static float nan_to_neg_inf(float x)
{
	return isnan(x) ? -INFINITY : x;
}

int ouro_sampler_new(struct ouro_sampler **out, const struct ouro_sampler_opts *o,
		     int64_t vocab)
{
	struct ouro_sampler *s;

	*out = NULL;
	if (!(isfinite(o->temperature) && o->temperature >= 0))
		return ouro_fail(OURO_EUSAGE, "temperature %g is not a finite number >= 0",
				 o->temperature);
	if (o->top_k < 0)
		return ouro_fail(OURO_EUSAGE, "top-k %lld is negative", (long long)o->top_k);
	if (!(o->top_p > 0 && o->top_p <= 1))
		return ouro_fail(OURO_EUSAGE, "top-p %g is not in (0, 1]", o->top_p);
	if (!(o->min_p >= 0 && o->min_p <= 1))
		return ouro_fail(OURO_EUSAGE, "min-p %g is not in [0, 1]", o->min_p);
	if (vocab < 1 || (uint64_t)vocab > SIZE_MAX / sizeof(double))
		return ouro_fail(OURO_EUSAGE, "vocabulary of %lld tokens", (long long)vocab);
	if (!(s = calloc(1, sizeof *s)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	s->o = *o;
	s->vocab = vocab;
	if (o->temperature > 0 &&
	    (!(s->w = malloc((size_t)vocab * sizeof *s->w)) ||
	     !(s->sel = malloc((size_t)vocab * sizeof *s->sel)) ||
	     !(s->heap = malloc((size_t)vocab * sizeof *s->heap)))) {
		ouro_sampler_free(s);
		return ouro_fail(OURO_ENOMEM, "out of memory for a sampler over %lld tokens",
				 (long long)vocab);
	}
	*out = s;
	return OURO_OK;
}

void ouro_sampler_free(struct ouro_sampler *s)
{
	if (!s)
		return;
	free(s->w);
	free(s->sel);
	free(s->heap);
	free(s);
}

/* The lowest id among the largest logits of [V]. */
static int32_t argmax(const float *logits, int64_t V)
{
	int32_t best = 0;
	float bv = nan_to_neg_inf(logits[0]);

	for (int64_t i = 1; i < V; i++)
		if (logits[i] > bv) {   /* NaN compares false */
			bv = logits[i];
			best = (int32_t)i;
		}
	return best;
}

/* The k-th largest (1-based) of a[0..n), which it reorders (Hoare
 * selection with a median-of-three pivot). */
static float kth_largest(float *a, int64_t n, int64_t k)
{
	int64_t lo = 0, hi = n - 1, want = k - 1;

	while (lo < hi) {
		int64_t mid = lo + (hi - lo) / 2, i = lo, j = hi;
		float x = a[lo], y = a[mid], z = a[hi], pivot, t;

		pivot = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
		while (i <= j) {        /* descending: big values to the left */
			while (a[i] > pivot)
				i++;
			while (a[j] < pivot)
				j--;
			if (i <= j) {
				t = a[i], a[i] = a[j], a[j] = t;
				i++, j--;
			}
		}
		if (want <= j)
			hi = j;
		else if (want >= i)
			lo = i;
		else
			return a[want];
	}
	return a[want];
}

/* Ranking of the top-p filter: a before b if a's logit is larger, or
 * equal and a's id lower. */
static int ranks_before(const float *l, int32_t a, int32_t b)
{
	float la = nan_to_neg_inf(l[a]), lb = nan_to_neg_inf(l[b]);

	return la > lb || (la == lb && a < b);
}

static void heap_down(int32_t *h, int64_t n, int64_t i, const float *l)
{
	for (;;) {
		int64_t c = 2 * i + 1, best = i;
		if (c < n && ranks_before(l, h[c], h[best]))
			best = c;
		if (c + 1 < n && ranks_before(l, h[c + 1], h[best]))
			best = c + 1;
		if (best == i)
			return;
		int32_t t = h[i];
		h[i] = h[best];
		h[best] = t;
		i = best;
	}
}

/* s->w [V] = the weights of the draw for logits [V], whose largest is
 * lmax (finite; temperature > 0), after the filters; returns their sum. */
static double weights(struct ouro_sampler *s, const float *logits, float lmax)
{
	const struct ouro_sampler_opts *o = &s->o;
	int64_t V = s->vocab;
	float kth = -INFINITY;
	double total = 0;

	/* temperature and top-k: candidates are logit >= kth */
	if (o->top_k > 0 && o->top_k < V) {
		for (int64_t i = 0; i < V; i++)
			s->sel[i] = nan_to_neg_inf(logits[i]);
		kth = kth_largest(s->sel, V, o->top_k);
	}
	for (int64_t i = 0; i < V; i++) {
		float l = nan_to_neg_inf(logits[i]);
		s->w[i] = l >= kth && l > -INFINITY ? exp(((double)l - lmax) / o->temperature) : 0;
		total += s->w[i];
	}

	/* top-p: pop the candidates in rank order while the mass before the
	 * next one is below top_p * total; `last` is the last token kept */
	int32_t last = -1;
	if (o->top_p < 1) {
		int64_t m = 0;
		double before = 0;
		for (int64_t i = 0; i < V; i++)
			if (s->w[i] > 0)
				s->heap[m++] = (int32_t)i;
		for (int64_t i = m / 2 - 1; i >= 0; i--)
			heap_down(s->heap, m, i, logits);
		while (m > 0 && (last < 0 || before < o->top_p * total)) {
			last = s->heap[0];
			before += s->w[last];
			s->heap[0] = s->heap[--m];
			heap_down(s->heap, m, 0, logits);
		}
	}

	/* min-p */
	double kept = 0;
	for (int64_t i = 0; i < V; i++) {
		if (s->w[i] == 0 || s->w[i] < o->min_p ||
		    (last >= 0 && !ranks_before(logits, (int32_t)i, last) && i != last))
			s->w[i] = 0;
		kept += s->w[i];
	}
	return kept;
}

/* The draw over weights w [V] in id order: the first token whose
 * cumulative weight exceeds target, else the last with a weight (where
 * rounding runs out), else `pick`. */
static int32_t draw(const double *w, int64_t V, double target, int32_t pick)
{
	double cum = 0;

	for (int64_t i = 0; i < V; i++) {
		if (w[i] == 0)
			continue;
		pick = (int32_t)i;
		cum += w[i];
		if (target < cum)
			break;
	}
	return pick;
}

int32_t ouro_sample(struct ouro_sampler *s, const float *logits, int64_t n)
{
	int32_t top = argmax(logits, s->vocab);
	float lmax = nan_to_neg_inf(logits[top]);

	if (s->o.temperature == 0 || lmax == -INFINITY || lmax == INFINITY)
		return top;
	double kept = weights(s, logits, lmax);
	return draw(s->w, s->vocab, uniform(s->o.seed, n) * kept, top);
}

void ouro_sampler_dist(struct ouro_sampler *s, const float *logits, double *p)
{
	int64_t V = s->vocab;
	int32_t top = argmax(logits, V);
	float lmax = nan_to_neg_inf(logits[top]);

	if (s->o.temperature == 0 || lmax == -INFINITY || lmax == INFINITY) {
		memset(p, 0, (size_t)V * sizeof *p);
		p[top] = 1;
		return;
	}
	double kept = weights(s, logits, lmax);
	for (int64_t i = 0; i < V; i++)
		p[i] = s->w[i] / kept;
}

int32_t ouro_sample_from(const double *p, int64_t V, double u)
{
	double total = 0;

	for (int64_t i = 0; i < V; i++)
		total += p[i];
	return draw(p, V, u * total, 0);
}

double ouro_sampler_uniform(const struct ouro_sampler *s, int64_t n, int stream)
{
	/* stream k > 0 is splitmix64 from another state that the seed gives */
	return uniform(stream ? mix64(s->o.seed ^ (uint64_t)stream * 0xD1B54A32D192ED03u)
			      : s->o.seed, n);
}

/* Ranking of ouro_logprobs_topk: 1 if a is worse than b (smaller logit,
 * or equal and higher id). */
static int worse(const float *l, int32_t a, int32_t b)
{
	return ranks_before(l, b, a);
}

/* Sift-down in a heap whose root is its worst element. */
static void worst_down(int32_t *h, int64_t n, int64_t i, const float *l)
{
	for (;;) {
		int64_t c = 2 * i + 1, w = i;
		if (c < n && worse(l, h[c], h[w]))
			w = c;
		if (c + 1 < n && worse(l, h[c + 1], h[w]))
			w = c + 1;
		if (w == i)
			return;
		int32_t t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

void ouro_logprobs_topk(const float *logits, int64_t V, int k, int32_t *ids,
			float *logprobs)
{
	double lmax = -INFINITY, sum = 0, lse;
	int64_t m = 0;

	if (k <= 0)
		return;
	if (k > V)
		k = (int)V;
	/* the k best in a heap of size k rooted at its worst: O(V log k) */
	for (int64_t i = 0; i < V; i++) {
		float l = nan_to_neg_inf(logits[i]);
		lmax = l > lmax ? l : lmax;
		if (m < k) {
			ids[m++] = (int32_t)i;
			if (m == k)
				for (int64_t j = k / 2 - 1; j >= 0; j--)
					worst_down(ids, k, j, logits);
		} else if (k > 0 && worse(logits, ids[0], (int32_t)i)) {
			ids[0] = (int32_t)i;
			worst_down(ids, k, 0, logits);
		}
	}
	/* heapsort: the worst goes to the end, leaving the best first */
	for (int64_t end = k - 1; end > 0; end--) {
		int32_t t = ids[0];
		ids[0] = ids[end];
		ids[end] = t;
		worst_down(ids, end, 0, logits);
	}
	if (lmax == -INFINITY) {
		for (int i = 0; i < k; i++)
			logprobs[i] = -INFINITY;
		return;
	}
	for (int64_t i = 0; i < V; i++) {
		float l = nan_to_neg_inf(logits[i]);
		sum += exp((double)l - lmax);
	}
	lse = lmax + log(sum);
	for (int i = 0; i < k; i++)
		logprobs[i] = (float)((double)nan_to_neg_inf(logits[ids[i]]) - lse);
}
