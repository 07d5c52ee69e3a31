/*
 * sampler.h - logits -> next token (part of the public interface;
 * included by ouro.h).
 *
 * The order of the filters is that of Hugging Face generate: temperature,
 * then top-k, top-p, min-p on the resulting distribution. Temperature 0
 * is greedy (the lowest id among equal maxima).
 *
 * Randomness is counter-based: the token that follows a sequence of n
 * tokens is drawn with one uniform number that depends only on the seed
 * and n. So a pipeline that samples one token per process
 * (ouro-forward | ouro-gate | ouro-sample, repeated) and ouro-generate
 * give the same tokens for the same seed.
 */
#ifndef OURO_SAMPLER_H
#define OURO_SAMPLER_H

#include <stdint.h>

struct ouro_sampler_opts {
	double temperature;   /* 0: greedy */
	int64_t top_k;        /* 0: off */
	double top_p;         /* 1: off */
	double min_p;         /* 0: off */
	uint64_t seed;
};

struct ouro_sampler;

int ouro_sampler_new(struct ouro_sampler **s, const struct ouro_sampler_opts *o,
		     int64_t vocab);
void ouro_sampler_free(struct ouro_sampler *s);
/* The next token after a sequence of n tokens, from logits [V]. */
int32_t ouro_sample(struct ouro_sampler *s, const float *logits, int64_t n);

/* For speculative sampling (the engine's spec.c): the distribution
 * ouro_sample draws from for logits [V], after the temperature and the
 * filters, into p [V], summing to 1 (greedy: all on the token it picks). */
void ouro_sampler_dist(struct ouro_sampler *s, const float *logits, double *p);
/* The token that the uniform number u picks from weights p [V] (>= 0, not
 * all 0; not necessarily normalised), as ouro_sample's draw picks: the
 * first in id order whose cumulative weight exceeds u times the total. */
int32_t ouro_sample_from(const double *p, int64_t V, double u);
/* The uniform number in [0, 1) of stream k for the token after n tokens:
 * stream 0 is ouro_sample's; the others are other functions of the seed
 * and n. */
double ouro_sampler_uniform(const struct ouro_sampler *s, int64_t n, int stream);

/* The k most likely tokens of logits [V] and their log-probabilities
 * (log-softmax at temperature 1), most likely first; ties by lower id. */
void ouro_logprobs_topk(const float *logits, int64_t V, int k, int32_t *ids,
			float *logprobs);

#endif
