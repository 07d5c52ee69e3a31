/*
 * gate_train.c - Stage II training of the exit gate (ouro-model.md
 * section 6): the language model stays frozen and the gate alone is fitted
 * to how much each loop step improved each token's prediction.
 *
 * For token i at step t >= 1 the target is
 *     w[t] = sigmoid(k * (max(0, L[t-1] - L[t]) - gamma)),  k = 50, gamma = 0.005
 * from the cross-entropy L of the next token after steps t-1 and t, and
 * the loss is the binary cross-entropy -[w log(1 - lambda) + (1 - w)
 * log(lambda)] of the gate's lambda = sigmoid(z) at step t, averaged over
 * the labeled tokens and steps 1..T-1: "go on" is wanted where the step
 * still helped. Training is Adam over mini-batches of tokens, shuffled each
 * epoch by Fisher-Yates with splitmix64 numbers from the seed, so a run is
 * reproducible to the bit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Stage II constants (ouro-model.md section 6). */
#define STAGE2_K 50.0
#define STAGE2_GAMMA 0.005

struct ouro_gate_trainer {
	int T;
	int64_t D;
	int64_t ntok, cap;     /* tokens held, and room */
	float *h;              /* [ntok, T, D] */
	float *target;         /* [ntok, T] w at steps 1..T-1 (0-based); [.., 0] unused */
	int64_t *labeled;      /* [nlab] tokens with a next token */
	int64_t nlab;
	long computed;         /* sequences whose step losses came from lm_head */
	/* Adam and the shuffle, set up by the first epoch */
	double *grad, *mom, *vel;   /* [D + 1] each: w, then b */
	int64_t *order;             /* [nlab] */
	uint64_t rng;
	long steps;
};

int ouro_gate_trainer_new(struct ouro_gate_trainer **tr, int64_t dim)
{
	if (!(*tr = calloc(1, sizeof **tr)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	(*tr)->D = dim;
	return OURO_OK;
}

void ouro_gate_trainer_free(struct ouro_gate_trainer *tr)
{
	if (!tr)
		return;
	free(tr->h);
	free(tr->target);
	free(tr->labeled);
	free(tr->grad);
	free(tr->mom);
	free(tr->vel);
	free(tr->order);
	free(tr);
}

void ouro_gate_trainer_counts(const struct ouro_gate_trainer *tr, int64_t *tokens,
			      int64_t *labeled, int *T, long *computed)
{
	*tokens = tr->ntok;
	*labeled = tr->nlab;
	*T = tr->T;
	*computed = tr->computed;
}

static int grow(struct ouro_gate_trainer *s, int64_t more)
{
	if (s->ntok + more <= s->cap)
		return OURO_OK;
	int64_t cap = s->cap ? s->cap : 1024;
	while (cap < s->ntok + more)
		cap *= 2;
	float *h = realloc(s->h, (size_t)cap * (size_t)s->T * (size_t)s->D * sizeof *h);
	if (h)
		s->h = h;
	float *tg = realloc(s->target, (size_t)cap * (size_t)s->T * sizeof *tg);
	if (tg)
		s->target = tg;
	int64_t *lab = realloc(s->labeled, (size_t)cap * sizeof *lab);
	if (lab)
		s->labeled = lab;
	if (!h || !tg || !lab)
		return ouro_fail(OURO_ENOMEM, "out of memory for %lld tokens of training data (%.1f MiB of states)",
				 (long long)(s->ntok + more), (double)cap * s->T * s->D * 4 / (1 << 20));
	s->cap = cap;
	return OURO_OK;
}

int ouro_step_loss(struct ouro_model *m, const float *h, int T, int64_t n,
		   const int32_t *tokens, const char *where, float *loss)
{
	const struct ouro_config *cfg = ouro_model_config(m);
	int64_t V = cfg->vocab_size, D = cfg->hidden_size, chunk = 64;
	float *lg;
	int rc = OURO_OK;

	for (int64_t i = 1; i < n; i++)
		if (tokens[i] < 0 || tokens[i] >= V)
			return ouro_fail(OURO_EINPUT, "%s: token %lld: id %d is outside the vocabulary (0..%lld)",
					 where, (long long)i, tokens[i], (long long)(V - 1));
	if (!(lg = malloc((size_t)(chunk * V) * sizeof *lg)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory for logits", where);
	for (int t = 0; t < T && !rc; t++) {
		for (int64_t i0 = 0; i0 < n - 1 && !rc; i0 += chunk) {
			int64_t cnt = n - 1 - i0 < chunk ? n - 1 - i0 : chunk;
			if ((rc = ouro_logits(m, h + ((int64_t)t * n + i0) * D, cnt, lg)))
				break;
			for (int64_t k = 0; k < cnt; k++) {
				const float *row = lg + k * V;
				double mx = row[0], z = 0;
				for (int64_t v = 1; v < V; v++)
					mx = row[v] > mx ? row[v] : mx;
				for (int64_t v = 0; v < V; v++)
					z += exp((double)row[v] - mx);
				loss[(int64_t)t * (n - 1) + i0 + k] = (float)(mx + log(z) - row[tokens[i0 + k + 1]]);
			}
		}
	}
	free(lg);
	return rc;
}

int ouro_gate_trainer_add(struct ouro_gate_trainer *s, struct ouro_model *m, const float *h,
			  int T, int64_t n, const int32_t *tokens, const float *step_loss,
			  const char *where)
{
	int64_t D = s->D;
	float *loss;
	int rc;

	if (s->T == 0)
		s->T = T;
	else if (T != s->T)
		return ouro_fail(OURO_EINPUT, "%s: hidden has %d steps, earlier records %d", where, T, s->T);
	if (!(loss = malloc((size_t)((int64_t)T * n) * sizeof *loss)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", where);
	if (step_loss)
		memcpy(loss, step_loss, (size_t)((int64_t)T * (n - 1)) * sizeof *loss);
	else if ((rc = ouro_step_loss(m, h, T, n, tokens, where, loss)))
		goto out;
	s->computed += !step_loss;
	if ((rc = grow(s, n)))
		goto out;
	for (int64_t i = 0; i < n; i++) {
		int64_t tok = s->ntok + i;
		float *tg = s->target + tok * T;
		for (int t = 0; t < T; t++)
			memcpy(s->h + (tok * T + t) * D, h + ((int64_t)t * n + i) * D, (size_t)D * sizeof(float));
		tg[0] = 0;
		if (i == n - 1)
			continue;
		for (int t = 1; t < T; t++) {
			double prev = loss[(int64_t)(t - 1) * (n - 1) + i], cur = loss[(int64_t)t * (n - 1) + i];
			if (!isfinite(prev) || !isfinite(cur)) {
				rc = ouro_fail(OURO_EINPUT, "%s: step_loss[%d, %lld] is not finite",
					       where, isfinite(prev) ? t : t - 1, (long long)i);
				goto out;
			}
			double gain = prev - cur > 0 ? prev - cur : 0;
			tg[t] = (float)(1.0 / (1.0 + exp(-STAGE2_K * (gain - STAGE2_GAMMA))));
		}
		s->labeled[s->nlab++] = tok;
	}
	s->ntok += n;
out:
	free(loss);
	return rc;
}

static double softplus(double x)
{
	return (x > 0 ? x : 0) + log1p(exp(-fabs(x)));
}

/* The Stage II loss over the labeled tokens idx[0..cnt), and, if grad is
 * not NULL, its gradient [D + 1] (w, then b). */
static double stage2(const struct ouro_gate_trainer *s, const struct ouro_gate *g,
		     const int64_t *idx, int64_t cnt, double *grad)
{
	int T = s->T;
	int64_t D = s->D;
	double total = 0;

	if (grad)
		memset(grad, 0, (size_t)(D + 1) * sizeof *grad);
	for (int64_t k = 0; k < cnt; k++) {
		int64_t tok = idx[k];
		for (int t = 1; t < T; t++) {
			const float *h = s->h + (tok * T + t) * D;
			double z = ouro_gate_logit(g, h), w = s->target[tok * T + t];
			/* -[w log(1 - lambda) + (1 - w) log(lambda)], lambda = sigmoid(z) */
			total += w * softplus(z) + (1 - w) * softplus(-z);
			if (grad) {
				double dz = 1.0 / (1.0 + exp(-z)) - (1 - w);
				for (int64_t j = 0; j < D; j++)
					grad[j] += dz * h[j];
				grad[D] += dz;
			}
		}
	}
	double scale = 1.0 / ((double)T * (double)cnt);
	if (grad)
		for (int64_t j = 0; j <= D; j++)
			grad[j] *= scale;
	return total * scale;
}

double ouro_gate_stage2_loss(const struct ouro_gate_trainer *tr, const struct ouro_gate *g,
			     double *grad)
{
	return stage2(tr, g, tr->labeled, tr->nlab, grad);
}

double ouro_gate_mean_exit(const struct ouro_gate_trainer *s, const struct ouro_gate *g,
			   const struct ouro_exit_rule *r)
{
	double sum = 0;

	for (int64_t tok = 0; tok < s->ntok; tok++) {
		struct ouro_exit_state st;
		ouro_exit_begin(&st);
		for (int t = 0; t < s->T; t++) {
			struct ouro_exit_loop in = {.gate = ouro_gate_logit(g, s->h + (tok * s->T + t) * s->D)};
			if (ouro_exit_update(&st, r, t, s->T, &in)) {
				sum += t;
				break;
			}
		}
	}
	return sum / (double)s->ntok;
}

/* splitmix64: the shuffling's random numbers. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

int ouro_gate_train_epoch(struct ouro_gate_trainer *s, struct ouro_gate *g,
			  const struct ouro_gate_train_opts *o)
{
	const double beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
	int64_t D = s->D;

	if (s->nlab == 0)
		return ouro_fail(OURO_EINPUT, "no training data: no token has a next token");
	if (g->dim != D)
		return ouro_fail(OURO_EINPUT, "the gate has width %lld, the training data %lld",
				 (long long)g->dim, (long long)D);
	if (!s->order) {
		s->grad = calloc((size_t)(D + 1), sizeof *s->grad);
		s->mom = calloc((size_t)(D + 1), sizeof *s->mom);
		s->vel = calloc((size_t)(D + 1), sizeof *s->vel);
		s->order = malloc((size_t)s->nlab * sizeof *s->order);
		if (!s->grad || !s->mom || !s->vel || !s->order) {
			free(s->order);
			s->order = NULL;
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		memcpy(s->order, s->labeled, (size_t)s->nlab * sizeof *s->order);
		s->rng = o->seed;
	}
	for (int64_t i = s->nlab - 1; i > 0; i--) {
		int64_t j = (int64_t)(((unsigned __int128)next_random(&s->rng) * (uint64_t)(i + 1)) >> 64);
		int64_t tmp = s->order[i];
		s->order[i] = s->order[j];
		s->order[j] = tmp;
	}
	for (int64_t b0 = 0; b0 < s->nlab; b0 += o->batch) {
		int64_t cnt = s->nlab - b0 < o->batch ? s->nlab - b0 : o->batch;
		stage2(s, g, s->order + b0, cnt, s->grad);
		s->steps++;
		double c1 = 1 - pow(beta1, (double)s->steps), c2 = 1 - pow(beta2, (double)s->steps);
		for (int64_t j = 0; j <= D; j++) {
			s->mom[j] = beta1 * s->mom[j] + (1 - beta1) * s->grad[j];
			s->vel[j] = beta2 * s->vel[j] + (1 - beta2) * s->grad[j] * s->grad[j];
			double upd = o->lr * (s->mom[j] / c1) / (sqrt(s->vel[j] / c2) + adam_eps);
			if (j < D)
				g->w[j] = (float)(g->w[j] - upd);
			else
				g->b = (float)(g->b - upd);
		}
	}
	return OURO_OK;
}
