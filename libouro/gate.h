/*
 * gate.h - the exit gate and the exit rules (part of the public interface;
 * included by ouro.h).
 *
 * After loop t the gate gives lambda[t] = sigmoid(w . hidden[t] + b), the
 * probability of stopping there given that no earlier loop stopped. The
 * exit distribution over loops is
 *     p[t] = lambda[t] * prod_{s<t} (1 - lambda[s])   for t < T-1
 *     p[T-1] = prod_{s<T-1} (1 - lambda[s])           (the rest)
 * and cdf[t] = p[0] + ... + p[t].
 */
#ifndef OURO_GATE_H
#define OURO_GATE_H

#include <stdint.h>

struct ouro_model;

struct ouro_gate {
	int64_t dim;   /* D */
	float *w;      /* [D] model.early_exit_gate.weight */
	float b;       /* model.early_exit_gate.bias */
};

/* The gate of a loaded model (a copy; free with ouro_gate_free). */
int ouro_gate_from_model(struct ouro_gate *g, const struct ouro_model *m);
/* A gate from a safetensors file holding model.early_exit_gate.weight
 * [1, dim] and model.early_exit_gate.bias [1] (F32, BF16 or F16); a
 * regular file (see ouro_file_open). */
int ouro_gate_load(struct ouro_gate *g, const char *path, int64_t dim);
/* Writes g to path as such a file (F32), atomically. */
int ouro_gate_save(const struct ouro_gate *g, const char *path);
void ouro_gate_free(struct ouro_gate *g);

/* w . h + b for one state h [D]. */
float ouro_gate_logit(const struct ouro_gate *g, const float *h);

/* pdf and cdf [T, n] from gate logits [T, n], as above. */
void ouro_exit_dist(const float *logits, int T, int64_t n, float *pdf, float *cdf);

enum ouro_exit_kind {
	OURO_EXIT_THRESHOLD,  /* first t with cdf[t] >= q, else the last step */
	OURO_EXIT_STATIC,     /* always step s */
	OURO_EXIT_DIFF,       /* first t >= 1 with ||h[t] - h[t-1]||_2 < eps, else last */
	OURO_EXIT_WEIGHTED,   /* all steps, mixed by p[t]; never exits early */
	/* The rules of the next-token distribution p_t = softmax(lm_head
	 * h[t]) of each loop: they need no trained gate, but an lm_head
	 * product per loop, which the gate rules do not. */
	OURO_EXIT_KL,         /* first t >= 1 with KL(p_t || p_{t-1}) < kl, else last */
	OURO_EXIT_ENTROPY,    /* first t >= 1 with H(p_t) < entropy (nats), else last */
	OURO_EXIT_STABLE,     /* first t >= 1 whose argmax is that of the `stable`
			       * loops ending at t, else last */
};

struct ouro_exit_rule {
	enum ouro_exit_kind kind;
	double q;      /* OURO_EXIT_THRESHOLD */
	int step;      /* OURO_EXIT_STATIC, 0-based */
	double eps;    /* OURO_EXIT_DIFF */
	double kl;     /* OURO_EXIT_KL, nats */
	double entropy;/* OURO_EXIT_ENTROPY, nats */
	int stable;    /* OURO_EXIT_STABLE, loops, at least 2 */
};

/* 1 if rule r reads the lm_head logits of every loop (struct
 * ouro_exit_loop's logits), else 0. */
int ouro_exit_needs_logits(const struct ouro_exit_rule *r);

/* The running state of one token's exit decision, so that a program that
 * really stops early (ouro-generate) and one that selects afterwards
 * (ouro-gate) decide identically. */
struct ouro_exit_state {
	double remaining;   /* prod of (1 - lambda) so far */
	double cdf;         /* cdf after the last update */
	double pdf;         /* p[t] of the last update */
	/* of the last update's logits, where given: */
	double lse;         /* log sum exp, to read the next loop's KL */
	double kl;          /* KL(p_t || p_{t-1}), 0 at t = 0 */
	double entropy;     /* H(p_t) */
	int32_t argmax;     /* the first id of the largest logit */
	int run;            /* loops ending at t with that argmax */
};

/* What loop t gives the exit rule. */
struct ouro_exit_loop {
	float gate;            /* its gate logit */
	double diff;           /* t >= 1: ||h[t] - h[t-1]||_2 (OURO_EXIT_DIFF) */
	const float *logits;   /* [V] lm_head of its state, where
				* ouro_exit_needs_logits, else NULL */
	const float *prev;     /* [V] those of loop t-1 (t >= 1, logits given) */
	int64_t V;
};

void ouro_exit_begin(struct ouro_exit_state *s);
/* Feeds loop t (0-based) of T. Returns 1 when the rule exits at t; always
 * 1 at t = T-1. The distribution's numbers are computed in double from
 * the float logits in one fixed order, so every caller of the same
 * logits gets the same decision. */
int ouro_exit_update(struct ouro_exit_state *s, const struct ouro_exit_rule *r,
		     int t, int T, const struct ouro_exit_loop *in);
/* ||a - b||_2 of two states [D]: the diff that OURO_EXIT_DIFF compares
 * with eps. */
double ouro_exit_diff(const float *a, const float *b, int64_t D);

/* step [nrules, n]: the loop at which each of n positions exits under
 * each of rules [nrules] (T-1 for OURO_EXIT_WEIGHTED), from its normed
 * states h [T, n, D] of model m (D its hidden_size) and their gate logits
 * [T, n]; when a rule reads the logits they come from m's lm_head, once
 * for all the rules, a block of positions and one loop at a time, until
 * every position of the block has exited under every rule. */
int ouro_exit_steps(struct ouro_model *m, const float *h, int T, int64_t n,
		    const float *gate_logits, const struct ouro_exit_rule *rules, int nrules,
		    int32_t *step);

/* ---- Stage II training (gate_train.c) ----------------------------------
 * The gate alone is fitted, the model frozen, to targets from how much
 * each loop step lowered each token's next-token loss (ouro-model.md
 * section 6), by Adam over shuffled mini-batches; reproducible to the bit
 * for the same data, options and seed. */

/* loss [T, n-1]: the cross-entropy of tokens[i+1] predicted by m's lm_head
 * from step t of h [T, n, D]; `where` names the data in messages. */
int ouro_step_loss(struct ouro_model *m, const float *h, int T, int64_t n,
		   const int32_t *tokens, const char *where, float *loss);

struct ouro_gate_trainer;

struct ouro_gate_train_opts {
	double lr;        /* Adam's learning rate */
	int64_t batch;    /* tokens per Adam step */
	uint64_t seed;    /* of the order of the tokens */
};

/* A trainer for a gate of width dim, holding no data yet. */
int ouro_gate_trainer_new(struct ouro_gate_trainer **tr, int64_t dim);
void ouro_gate_trainer_free(struct ouro_gate_trainer *tr);
/* Adds one sequence of n tokens: its states h [T, n, D] at every step and
 * its step losses [T, n-1] (NULL: computed from h with m's lm_head). Every
 * sequence must have the same T. */
int ouro_gate_trainer_add(struct ouro_gate_trainer *tr, struct ouro_model *m, const float *h,
			  int T, int64_t n, const int32_t *tokens, const float *step_loss,
			  const char *where);
/* Tokens held, those with a next token (the ones trained on), the steps
 * per token, and how many sequences had their losses computed. */
void ouro_gate_trainer_counts(const struct ouro_gate_trainer *tr, int64_t *tokens,
			      int64_t *labeled, int *T, long *computed);
/* One epoch: the labeled tokens shuffled, then an Adam step on g per
 * batch. The first call sets up Adam and the shuffle from o->seed. */
int ouro_gate_train_epoch(struct ouro_gate_trainer *tr, struct ouro_gate *g,
			  const struct ouro_gate_train_opts *o);
/* The Stage II loss of g over all labeled tokens and, if grad is not
 * NULL, its gradient [D + 1] (w, then b). */
double ouro_gate_stage2_loss(const struct ouro_gate_trainer *tr, const struct ouro_gate *g,
			     double *grad);
/* The mean 0-based exit step of all tokens under rule r, a rule of the
 * gate (threshold or static). */
double ouro_gate_mean_exit(const struct ouro_gate_trainer *tr, const struct ouro_gate *g,
			   const struct ouro_exit_rule *r);

#endif
