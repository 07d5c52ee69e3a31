/*
 * spec.c - self-speculative decoding in the batch engine: the first S of
 * a token's T loops draft the next tokens, the loops left verify them all
 * in one item, and the tokens are those of decoding without it.
 *
 * A round of a sequence starts at its newest position a (its token is
 * final). Drafting: position a runs loops 0..S-1 alone, exit decisions
 * taken after each loop as in plain decoding; lm_head over its state
 * after loop S-1 gives the draft of the next token (greedy: its most
 * likely one), which enters at
 * position a+1, and so on, up to k positions a..a+k-1 (k adaptive, at
 * most K = draft_tokens, and no more than the tokens left to make). A
 * position whose exit rule fires before loop S is final after drafting:
 * its token is sampled from its exit state and is the next position's
 * input. Verifying: the positions not yet decided run loops S..T-1
 * together as one item of rows (from the first undecided one to the
 * last), causal attention among them as in a prompt chunk, each row's
 * exit decision taken after each loop; a row that exits stops storing
 * keys and values (it is "frozen": its later slots keep the copies of its
 * exit loop that ouro_eng_exit_cache put there), and the item ends when
 * every row has exited. Under a rule reading the logits of each loop
 * (--kl, --entropy, --stable) every row has its own lm buffer of its last
 * two loops, moved with its exit decision (swap_row), and the engine's
 * exit_logits fills those of the live rows. Accepting: the rows' tokens
 * are sampled in order; row i's token is kept, and the next row is looked
 * at only if this token is the draft that row i+1 was run on. So every round makes at
 * least one token, and the rejected positions' blocks go back to the
 * pool (their slots are written again by the next round).
 *
 * Why it is exact. Under the full policy a position's loop t reads slot
 * (t, l) of every earlier position, and a decoded position's slots of
 * the loops after its exit repeat its exit loop's. While drafting, the
 * positions before a are final and each drafted position's loops 0..S-1
 * read only loops < S of the positions before it: those are computed
 * already (or are the copies of an exit before S), exactly what full
 * depth would hold there if the drafts are right. In the verify item
 * every row computes loop t after all rows finished loop t-1, and a row
 * that exited is frozen with its copies, so each row at loop t reads
 * what full depth would. The rows' arithmetic does not depend on the
 * other rows of the pass (engine.c's batch invariance), so a kept row's
 * states, exit loop and token are bit for bit those of plain decoding.
 * Under last and mean a decoded position leaves one slot per layer, its
 * exit loop's or its mean, which every later position reads at every
 * loop: position a+1 cannot run its loop 0 exactly before a has exited,
 * so no two positions can run together and there is nothing to gain;
 * those sequences decode without speculation.
 *
 * Sampled sequences (temperature > 0): a draft is drawn from q, the
 * distribution of the draft loops' logits after the sampler's filters,
 * with the sampler's stream-1 number of its position; row i keeps it with
 * probability min(1, p/q) of its own distribution p (stream 2), else its
 * token is drawn from max(0, p - q) normalised (stream 3): speculative
 * sampling, whose tokens follow p exactly, as decoding without it. A row
 * final after drafting, and a round's last row, draw from p with the
 * sampler's own number (stream 0). Each number depends on the seed and
 * the position alone, so runs are reproducible; a position's numbers
 * decide only its own token, and a round that drops a position drops all
 * they decided there, so the kept tokens' draws are independent.
 *
 * The adaptive length: k starts at K; after a round whose drafts were all
 * accepted k grows by one (up to K), otherwise it becomes the number of
 * tokens the round kept, but at least 2 (1 when K is 1).
 */
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

int ouro_spec_wanted(const struct ouro_engine *e, const struct seq *s)
{
	return e->o.draft_tokens > 0 && e->o.kv == OURO_KV_FULL;
}

int ouro_spec_new(struct ouro_engine *e, struct seq *s)
{
	int K = e->o.draft_tokens;
	size_t D = (size_t)e->D, V = (size_t)e->V;
	struct spec *sp = calloc(1, sizeof *sp + (size_t)K * sizeof sp->row[0]);
	float *f = sp ? malloc((size_t)K * (5 * D + 2 * V) * sizeof *f) : NULL;

	if (sp && s->o.samp.temperature > 0)
		sp->q = malloc((size_t)(K + 1) * V * sizeof *sp->q);
	if (sp && s->lm)
		sp->lmblk = malloc((size_t)K * 2 * V * sizeof *sp->lmblk);
	if (!f || (s->o.samp.temperature > 0 && !sp->q) || (s->lm && !sp->lmblk)) {
		if (sp) {
			free(sp->q);
			free(sp->lmblk);
		}
		free(f);
		free(sp);
		return ouro_fail(OURO_ENOMEM, "out of memory for speculative decoding");
	}
	sp->p = sp->q ? sp->q + (size_t)K * V : NULL;
	sp->own = s->hout;
	sp->S = e->o.draft_steps;
	sp->K = sp->k = K;
	sp->hx = f;
	sp->lx = f + (size_t)K * D;
	sp->dl = sp->lx + (size_t)K * V;
	f = sp->dl + (size_t)K * V;
	for (int i = 0; i < K; i++, f += 4 * D) {
		sp->row[i].hprev = f;
		sp->row[i].hmix = f + D;
		sp->row[i].hout = f + 2 * D;
		sp->row[i].h = f + 3 * D;
		sp->row[i].lm = sp->lmblk ? sp->lmblk + (size_t)i * 2 * V : NULL;
	}
	s->sp = sp;
	return OURO_OK;
}

/* Exchanges the exit decision of s's position with that of row r: the
 * engine's decision code works on the sequence's own. The buffers move
 * together, so they go round among s and the rows. */
static void swap_row(struct seq *s, struct spec_row *r)
{
	struct ouro_exit_state ex = s->ex;
	int decided = s->decided, exit_t = s->exit_t;
	float *hprev = s->hprev, *hmix = s->hmix, *hout = s->hout, *lm = s->lm;

	s->ex = r->ex;
	s->decided = r->decided;
	s->exit_t = r->exit_t;
	s->hprev = r->hprev;
	s->hmix = r->hmix;
	s->hout = r->hout;
	s->lm = r->lm;
	r->ex = ex;
	r->decided = decided;
	r->exit_t = exit_t;
	r->hprev = hprev;
	r->hmix = hmix;
	r->hout = hout;
	r->lm = lm;
}

void ouro_spec_free(struct seq *s)
{
	struct spec *sp = s->sp;

	if (!sp)
		return;
	/* s gets back the buffers that seq_free frees */
	for (int i = 0; i < sp->K; i++)
		if (sp->row[i].hout == sp->own)
			swap_row(s, &sp->row[i]);
	free(sp->hx);
	free(sp->q);
	free(sp->lmblk);
	free(sp);
	s->sp = NULL;
}

/* The drafting is over: the rows still undecided go to the verify item,
 * from the first to the last of them; with none, the round is ready. */
static void verify_begin(struct ouro_engine *e, struct seq *s, int *out)
{
	struct spec *sp = s->sp;
	int first = -1, last = -1;

	sp->live = 0;
	for (int i = 0; i < sp->n; i++)
		if (sp->row[i].live) {
			sp->live++;
			last = i;
			if (first < 0)
				first = i;
		}
	if (!sp->live) {
		*out = 1;
		return;
	}
	sp->verify = 1;
	s->p0 = sp->a + first;
	s->rows = last - first + 1;
	s->t = sp->S;
	for (int i = first; i <= last; i++)
		memcpy(s->h + (i - first) * e->D, sp->row[i].h, (size_t)e->D * sizeof *s->h);
}

/* After a draft pass of position s->p0 with state h [D]. */
static int draft_done(struct ouro_engine *e, struct seq *s, const float *h, int *out)
{
	struct spec *sp = s->sp;
	int64_t pos = s->p0, left = s->o.max_tokens - s->made;
	int rc;

	if (!sp->n)
		sp->a = pos;
	ouro_eng_exit_feed(e, s, h);
	if (!s->decided && s->t < sp->S - 1) {
		memcpy(s->h, h, (size_t)e->D * sizeof *h);
		s->t++;
		return OURO_OK;
	}
	if (s->decided && (rc = ouro_eng_exit_cache(e, s, pos)))
		return rc;
	struct spec_row *r = &sp->row[sp->n++];
	swap_row(s, r);   /* the row keeps the position's decision */
	r->live = !r->decided;
	r->logits = NULL;
	r->from_q = 0;
	r->draft = -1;
	memcpy(r->h, h, (size_t)e->D * sizeof *h);
	if (s->cap - s->n < left)
		left = s->cap - s->n;
	if (sp->n < sp->k && sp->n < left) {
		float *l = sp->dl + (size_t)(sp->n - 1) * (size_t)e->V;

		ouro_matmul(l, r->decided ? r->hout : h, &e->m->lm_head, 1, e->wbuf);
		if (r->decided)
			r->logits = l;
		int32_t next;
		if (sp->q && !r->decided) {   /* sampled: a draw from q, the draft's distribution */
			double *q = sp->q + (size_t)(sp->n - 1) * (size_t)e->V;
			r->from_q = 1;
			ouro_sampler_dist(s->samp, l, q);
			next = ouro_sample_from(q, e->V, ouro_sampler_uniform(s->samp, pos + 1, 1));
		} else {
			next = ouro_sample(s->samp, l, pos + 1);
		}
		/* a stop id ends the drafting, but is this row's draft all the
		 * same: speculative sampling needs every draft q gives */
		r->draft = next;
		if (!ouro_eng_is_stop(s, next)) {
			s->ids[pos + 1] = next;
			s->p0 = pos + 1;
			ouro_eng_position_begin(e, s);
			return OURO_OK;
		}
	}
	verify_begin(e, s, out);
	return OURO_OK;
}

/* After a verify pass with states h [rows, D]: the exit decisions of the
 * rows still running. */
static int verify_done(struct ouro_engine *e, struct seq *s, const float *h, int *out)
{
	struct spec *sp = s->sp;
	int64_t D = e->D;
	int rc = OURO_OK;

	for (int64_t j = 0; j < s->rows && !rc; j++) {
		int64_t pos = s->p0 + j;
		struct spec_row *r = &sp->row[pos - sp->a];

		if (!r->live)
			continue;
		swap_row(s, r);
		ouro_eng_exit_feed(e, s, h + j * D);
		if (s->decided)
			rc = ouro_eng_exit_cache(e, s, pos);
		swap_row(s, r);
		if (r->decided) {
			r->live = 0;
			sp->live--;
		}
	}
	if (rc || !sp->live) {
		*out = !rc;
		return rc;
	}
	memcpy(s->h, h, (size_t)(s->rows * D) * sizeof *h);
	s->t++;
	return OURO_OK;
}

float *ouro_spec_lm_row(const struct seq *s, int64_t j)
{
	const struct spec_row *r = &s->sp->row[s->p0 + j - s->sp->a];

	return r->live ? r->lm : NULL;
}

int ouro_spec_pass_done(struct ouro_engine *e, struct seq *s, const float *h, int *out)
{
	e->st.spec_passes++;
	if (s->sp->verify) {
		e->st.spec_vpasses++;
		e->st.spec_vrows += (uint64_t)s->rows;
	}
	return s->sp->verify ? verify_done(e, s, h, out) : draft_done(e, s, h, out);
}

/* The token of row i (after s->n tokens), given its draft (the token
 * the next row ran on, or a stop id that ended the drafting; -1: none).
 * A draft drawn from the draft loops' distribution q is kept with
 * probability min(1, p/q) of the row's own distribution p, else the
 * token is drawn from max(0, p - q) normalised: speculative sampling,
 * whose tokens follow p exactly. Otherwise the sampler's own draw:
 * greedy, or a row final after drafting, whose draft was that draw. */
static int32_t row_token(struct ouro_engine *e, struct seq *s, int i, int32_t draft)
{
	struct spec *sp = s->sp;
	const struct spec_row *r = &sp->row[i];
	double *p = sp->p, *q = sp->q + (size_t)i * (size_t)e->V, rest = 0;

	if (!r->from_q || draft < 0)
		return ouro_sample(s->samp, r->logits, s->n);
	ouro_sampler_dist(s->samp, r->logits, p);
	if (ouro_sampler_uniform(s->samp, s->n, 2) * q[draft] < p[draft])
		return draft;
	for (int64_t j = 0; j < e->V; j++) {
		p[j] = p[j] > q[j] ? p[j] - q[j] : 0;
		rest += p[j];
	}
	/* nothing left: p is q, whose draft is kept with probability 1 */
	return rest > 0 ? ouro_sample_from(p, e->V, ouro_sampler_uniform(s->samp, s->n, 3)) : draft;
}

int ouro_spec_accept(struct ouro_engine *e, struct seq *s)
{
	struct spec *sp = s->sp;
	int64_t D = e->D, V = e->V;
	int n = sp->n, nh = 0, kept = 0, rc = OURO_OK;

	for (int i = 0; i < n; i++)
		if (!sp->row[i].logits)
			memcpy(sp->hx + nh++ * D, sp->row[i].hout, (size_t)D * sizeof *sp->hx);
	if (nh)
		ouro_matmul(sp->lx, sp->hx, &e->m->lm_head, nh, e->wbuf);
	for (int i = 0, j = 0; i < n; i++)
		if (!sp->row[i].logits)
			sp->row[i].logits = sp->lx + j++ * V;
	while (kept < n) {
		struct spec_row *r = &sp->row[kept];
		int32_t draft = r->draft;
		const float *hout = r->hout;

		e->st.decoded_tokens++;
		e->st.decoded_loops += (uint64_t)(r->exit_t + 1);
		e->st.spec_loops += (uint64_t)(r->exit_t + 1);
		swap_row(s, r);
		rc = ouro_eng_advance(e, s, row_token(e, s, kept, draft), hout);
		swap_row(s, r);
		kept++;
		if (rc || s->state == GONE || s->ids[s->n - 1] != draft)
			break;
	}
	e->st.spec_rounds++;
	e->st.spec_drafted += (uint64_t)(n - 1);
	e->st.spec_accepted += (uint64_t)(kept - 1);
	if (kept == n)
		sp->k = sp->k < sp->K ? sp->k + 1 : sp->K;
	else
		sp->k = kept > 2 || sp->K < 2 ? kept : 2;
	sp->n = 0;
	sp->verify = 0;
	if (rc || s->state == GONE)
		return rc;
	/* advance began the next position on the last row's decision */
	ouro_eng_position_begin(e, s);
	while (s->npblk > 0 && (s->npblk - 1) * BLOCK_POS >= s->n)
		ouro_kvpool_put(&e->pool, s->pblk[--s->npblk]);
	return OURO_OK;
}
