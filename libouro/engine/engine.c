/*
 * engine.c - the batch engine: many sequences generated at once, each
 * pass over the N layers serving work items of different sequences at
 * different loops.
 *
 * Every loop of a looped model uses the same weights, so one pass over the
 * layers can carry token A's first loop and token B's third together. A
 * work item is one sequence's positions p0..p0+rows-1 at loop t: one
 * position being decoded, or a chunk of its prompt. Each pass (one
 * ouro_engine_step) runs every ready item through the N layers once, all
 * rows of all items as one [rows, D] block through the matrix products;
 * attention stays per sequence: each row reads its own sequence's keys and
 * values of slot (t, l), positions 0..its own. After the pass a decoded
 * position takes its exit decision (ouro_exit_update, the decision
 * ouro-gate makes); if it exits, its state goes through lm_head and the
 * sequence's sampler and the new token enters at loop 0 in the next pass,
 * otherwise the position goes on to loop t+1 in the next pass. A prompt is
 * prefilled one chunk at a time, every loop of it (prompt positions keep
 * all T*N slots), its last position's exit taken as for a decoded one; the
 * chunks of all sequences together hold at most `chunk` positions a pass,
 * so a long prompt never stalls the decoding of the others. A rule that
 * reads each loop's next-token distribution (--kl, --entropy, --stable)
 * has the lm_head logits of its rows computed after every pass, all such
 * rows in one product (exit_logits), and the exit loop's are sampled from.
 * A sequence may decode speculatively (spec.c): its item is then a draft
 * position's loop, or several drafted positions verified together.
 *
 * Batch invariance: what a row computes does not depend on the other rows
 * of the pass, nor on how a prompt was chunked, nor on the thread count.
 * The matrix products are row-invariant (ouro_matmul); norms, RoPE, the
 * gate and the sampler work on one row; attention is one arithmetic for
 * prompt and decoded positions alike (ouro_attend, also that of the
 * forward pass): a row's keys and values are first stored in the cache,
 * then every row computes its scores as dot products in a fixed order
 * over the cached keys 0..pos, the softmax, and the weighted sum of values
 * key by key, each (row, head) on one thread.
 * Sampling is keyed by the sequence's seed and the position. So a
 * sequence's tokens, exit loops and states are the same whatever runs with
 * it, and ouro-generate of one prompt (the same engine) gives them too.
 *
 * The KV cache lives in fixed-size blocks of a shared pool (kvpool.c), in
 * float32 or bfloat16 (keys and values are rounded to the cache's type as
 * soon as they are computed, so a row reads back its own values exactly as
 * later rows do). A full-layout block holds BLOCK_POS positions' keys and
 * values for all T*N slots: [2][T*N][BLOCK_POS][KD]. Prompt positions
 * keep every slot in every policy; a decoded position's loops after its
 * exit are never computed, and what later positions find for it is, by
 * the policy:
 *   full  decoded positions in full-layout blocks too; the slots of loops
 *         a token skipped repeat its exit loop's keys and values (without
 *         early exit this is exactly the reference's cache);
 *   last  decoded positions in shared-layout blocks, [2][N][BLOCK_POS*T][KD]
 *         (the same size), one row per layer: the last computed loop's;
 *   mean  the same, holding the mean over the computed loops.
 * last and mean need 1/T of full's decode-time memory (the paper's
 * decode-time KV sharing).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"

#define DEFAULT_CHUNK 64  /* prompt positions of one pass, all sequences */

static int nomem(void)
{
	return ouro_fail(OURO_ENOMEM, "out of memory");
}

int ouro_engine_new(struct ouro_engine **out, struct ouro_model *m,
		    const struct ouro_engine_opts *o)
{
	const struct ouro_config *c = ouro_model_config(m);
	struct ouro_engine *e;
	int rc;

	*out = NULL;
	if (o->steps < 1)
		return ouro_fail(OURO_EUSAGE, "%d loop steps requested, at least 1 needed", o->steps);
	if (o->max_seqs < 1)
		return ouro_fail(OURO_EUSAGE, "%d sequences at once requested, at least 1 needed",
				 o->max_seqs);
	if (o->kv_dtype != OURO_F32 && o->kv_dtype != OURO_BF16)
		return ouro_fail(OURO_EUSAGE, "the KV cache is F32 or BF16, not %s",
				 ouro_dtype_name(o->kv_dtype));
	if (o->chunk < 0)
		return ouro_fail(OURO_EUSAGE, "prompt chunks of %lld positions", (long long)o->chunk);
	if (o->draft_tokens < 0 || o->draft_tokens > OURO_MAX_DRAFT ||
	    (o->draft_tokens && (o->draft_steps < 1 || o->draft_steps >= o->steps)))
		return ouro_fail(OURO_EUSAGE, "speculation drafts 1..%d tokens with 1..%d loops, not %d with %d",
				 OURO_MAX_DRAFT, o->steps - 1, o->draft_tokens, o->draft_steps);
	if (!(e = calloc(1, sizeof *e)))
		return nomem();
	e->m = m;
	e->o = *o;
	if (!e->o.chunk)
		e->o.chunk = DEFAULT_CHUNK;
	e->T = o->steps;
	e->N = c->num_hidden_layers;
	e->D = c->hidden_size;
	e->KD = c->num_key_value_heads * c->head_dim;
	e->V = c->vocab_size;
	e->hd = c->head_dim;
	e->H = c->num_attention_heads;
	e->slots = (int64_t)e->T * e->N;
	e->esize = ouro_dtype_size(o->kv_dtype);
	e->gate = o->gate ? o->gate : &e->own_gate;
	/* a speculating sequence's verify item has up to draft_tokens rows */
	e->hrows = e->o.chunk > o->draft_tokens ? e->o.chunk : o->draft_tokens;
	e->rmax = (int64_t)o->max_seqs * (o->draft_tokens ? o->draft_tokens : 1) + e->o.chunk;

	uint64_t block = (uint64_t)BLOCK_POS * (uint64_t)e->slots * 2 * (uint64_t)e->KD * e->esize;
	uint64_t budget = o->kv_memory ? o->kv_memory : ouro_avail_bytes() / 2;
	e->st.kv_block_bytes = block;
	e->st.kv_budget = budget;
	if (budget / block < 1) {
		rc = ouro_fail(OURO_ENOMEM, "a KV memory budget of %.1f MiB is less than one block of %.1f MiB",
			       (double)budget / (1 << 20), (double)block / (1 << 20));
		goto fail;
	}
	if ((rc = ouro_kvpool_init(&e->pool, (size_t)block, (int64_t)(budget / block))) ||
	    (!o->gate && (rc = ouro_gate_from_model(&e->own_gate, m))) ||
	    (rc = ouro_fwd_alloc(&e->b, c, e->rmax)))
		goto fail;
	e->item = malloc((size_t)o->max_seqs * sizeof *e->item);
	e->row_seq = malloc((size_t)e->rmax * sizeof *e->row_seq);
	e->row_pos = malloc((size_t)e->rmax * sizeof *e->row_pos);
	e->kvtmp = malloc((size_t)(e->rmax * e->KD) * sizeof *e->kvtmp);
	e->blk_seq = malloc((size_t)e->rmax * sizeof *e->blk_seq);
	e->blk_row = malloc((size_t)e->rmax * sizeof *e->blk_row);
	e->blk_m = malloc((size_t)e->rmax * sizeof *e->blk_m);
	e->nexit_max = (int64_t)o->max_seqs * (o->draft_tokens ? o->draft_tokens : 1);
	e->hexit = malloc((size_t)e->nexit_max * (size_t)e->D * sizeof *e->hexit);
	e->logits = malloc((size_t)e->nexit_max * (size_t)e->V * sizeof *e->logits);
	e->lmdst = malloc((size_t)e->nexit_max * sizeof *e->lmdst);
	e->wbuf = malloc(ouro_wbuf_floats(e->D) * sizeof *e->wbuf);
	e->kvmean = malloc(2 * (size_t)e->KD * sizeof *e->kvmean);
	if (!e->item || !e->row_seq || !e->row_pos || !e->kvtmp || !e->blk_seq || !e->blk_row ||
	    !e->blk_m || !e->hexit || !e->logits || !e->lmdst || !e->wbuf || !e->kvmean) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory for a batch of %d sequences", o->max_seqs);
		goto fail;
	}
	*out = e;
	return OURO_OK;
fail:
	ouro_engine_free(e);
	return rc;
}

/* Returns s's blocks and reservation to the pool and frees it. */
static void seq_free(struct ouro_engine *e, struct seq *s)
{
	for (int64_t i = 0; i < s->npblk; i++)
		ouro_kvpool_put(&e->pool, s->pblk[i]);
	for (int64_t i = 0; i < s->ndblk; i++)
		ouro_kvpool_put(&e->pool, s->dblk[i]);
	if (s->state == PREFILL || s->state == DECODE) {
		ouro_kvpool_unreserve(&e->pool, s->need);
		e->running--;
	}
	ouro_sampler_free(s->samp);
	ouro_spec_free(s);
	free(s->pblk);
	free(s->dblk);
	free(s->stop);
	free(s->ids);
	free(s->h);
	free(s->hprev);
	free(s->hmix);
	free(s->hout);
	free(s->lm);
	free(s->kacc);
	free(s->vacc);
	free(s);
}

void ouro_engine_free(struct ouro_engine *e)
{
	if (!e)
		return;
	for (int64_t i = 0; i < e->nseqs; i++)
		seq_free(e, e->seqs[i]);
	free(e->seqs);
	ouro_kvpool_free(&e->pool);
	ouro_gate_free(&e->own_gate);
	ouro_fwd_free(&e->b);
	free(e->item);
	free(e->row_seq);
	free(e->row_pos);
	free(e->kvtmp);
	free(e->scores);
	free(e->runs);
	free(e->blk_seq);
	free(e->blk_row);
	free(e->blk_m);
	free(e->hexit);
	free(e->logits);
	free(e->lmdst);
	free(e->wbuf);
	free(e->kvmean);
	free(e->ev);
	free(e);
}

/* Blocks a sequence of P prompt tokens and cap tokens in all can need. */
static int64_t blocks_needed(const struct ouro_engine *e, int64_t P, int64_t cap)
{
	if (e->o.kv == OURO_KV_FULL)
		return (cap + BLOCK_POS - 1) / BLOCK_POS;
	return (P + BLOCK_POS - 1) / BLOCK_POS +
	       (cap - P + BLOCK_POS * e->T - 1) / (BLOCK_POS * e->T);
}

int ouro_engine_add(struct ouro_engine *e, const int32_t *ids, int64_t n,
		    const struct ouro_seq_opts *o, int64_t *id)
{
	const struct ouro_config *c = ouro_model_config(e->m);
	struct ouro_sampler *probe;
	struct seq *s;
	int rc;

	if ((rc = ouro_check_ids(c, ids, n, 0)))
		return rc;
	if (o->max_tokens < 0)
		return ouro_fail(OURO_EUSAGE, "%lld new tokens requested", (long long)o->max_tokens);
	if (o->nstop < 0 || (o->nstop && !o->stop))
		return ouro_fail(OURO_EUSAGE, "%d stop ids", o->nstop);
	if (o->rule.kind == OURO_EXIT_STATIC && (o->rule.step < 0 || o->rule.step >= e->T))
		return ouro_fail(OURO_EUSAGE, "exit step %d is outside 0..%d", o->rule.step, e->T - 1);
	if (o->rule.kind == OURO_EXIT_STABLE && o->rule.stable < 2)
		return ouro_fail(OURO_EUSAGE, "a stable argmax over %d loops; at least 2", o->rule.stable);
	if ((rc = ouro_sampler_new(&probe, &o->samp, e->V)))
		return rc;
	ouro_sampler_free(probe);

	int64_t cap = o->max_tokens > c->max_position_embeddings - n ? c->max_position_embeddings
								       : n + o->max_tokens;
	int64_t need = blocks_needed(e, n, cap);
	if (need > e->pool.blocks)
		return ouro_fail(OURO_ENOMEM, "the KV cache for %lld tokens (a prompt of %lld and %lld new) needs %.1f MiB, more than the KV memory budget of %.1f MiB",
				 (long long)cap, (long long)n, (long long)(cap - n),
				 (double)need * (double)e->pool.block_bytes / (1 << 20),
				 (double)e->pool.blocks * (double)e->pool.block_bytes / (1 << 20));
	if (e->nseqs == e->seqs_cap) {
		int64_t nc = e->seqs_cap ? 2 * e->seqs_cap : 16;
		struct seq **p = realloc(e->seqs, (size_t)nc * sizeof *p);
		if (!p)
			return nomem();
		e->seqs = p;
		e->seqs_cap = nc;
	}
	if (!(s = calloc(1, sizeof *s)))
		return nomem();
	s->o = *o;
	s->P = s->n = n;
	s->cap = cap;
	s->need = need;
	if (!(s->ids = malloc((size_t)cap * sizeof *s->ids)) ||
	    (o->nstop && !(s->stop = malloc((size_t)o->nstop * sizeof *s->stop)))) {
		seq_free(e, s);
		return nomem();
	}
	memcpy(s->ids, ids, (size_t)n * sizeof *ids);
	if (o->nstop)
		memcpy(s->stop, o->stop, (size_t)o->nstop * sizeof *s->stop);
	s->o.stop = s->stop;
	s->id = *id = e->next_id++;
	e->seqs[e->nseqs++] = s;
	return OURO_OK;
}

int64_t ouro_engine_pending(const struct ouro_engine *e)
{
	return e->nseqs;
}

/* Drops the sequences that are gone from the list, keeping the order. */
static void compact(struct ouro_engine *e)
{
	int64_t k = 0;

	for (int64_t i = 0; i < e->nseqs; i++) {
		if (e->seqs[i]->state == GONE)
			seq_free(e, e->seqs[i]);
		else
			e->seqs[k++] = e->seqs[i];
	}
	e->nseqs = k;
}

int ouro_engine_cancel(struct ouro_engine *e, int64_t id)
{
	for (int64_t i = 0; i < e->nseqs; i++)
		if (e->seqs[i]->id == id) {
			seq_free(e, e->seqs[i]);
			memmove(e->seqs + i, e->seqs + i + 1, (size_t)(e->nseqs - i - 1) * sizeof *e->seqs);
			e->nseqs--;
			return OURO_OK;
		}
	return ouro_fail(OURO_EUSAGE, "no sequence %lld in the engine", (long long)id);
}

static int emit(struct ouro_engine *e, struct seq *s, int32_t token, int loops, int finish,
		const float *h)
{
	if (e->nev == e->ev_cap) {
		int nc = e->ev_cap ? 2 * e->ev_cap : 16;
		struct ouro_engine_event *p = realloc(e->ev, (size_t)nc * sizeof *p);
		if (!p)
			return nomem();
		e->ev = p;
		e->ev_cap = nc;
	}
	e->ev[e->nev++] = (struct ouro_engine_event){
		.seq = s->id, .token = token, .loops = loops, .finish = finish, .h = h};
	if (finish) {
		/* the blocks go back now; the record of s at the next compact() */
		for (int64_t i = 0; i < s->npblk; i++)
			ouro_kvpool_put(&e->pool, s->pblk[i]);
		for (int64_t i = 0; i < s->ndblk; i++)
			ouro_kvpool_put(&e->pool, s->dblk[i]);
		s->npblk = s->ndblk = 0;
		if (s->state == PREFILL || s->state == DECODE) {
			ouro_kvpool_unreserve(&e->pool, s->need);
			e->running--;
		}
		s->state = GONE;
	}
	return OURO_OK;
}

/* A new position enters at loop 0: its exit decision starts afresh. */
void ouro_eng_position_begin(struct ouro_engine *e, struct seq *s)
{
	ouro_exit_begin(&s->ex);
	s->decided = 0;
	s->t = 0;
	memset(s->hmix, 0, (size_t)e->D * sizeof *s->hmix);
	if (s->kacc) {
		memset(s->kacc, 0, (size_t)(e->N * e->KD) * sizeof *s->kacc);
		memset(s->vacc, 0, (size_t)(e->N * e->KD) * sizeof *s->vacc);
	}
}

/* Starts waiting sequences in arrival order while there is room: a free
 * place among max_seqs and their blocks in the pool. */
static int admit(struct ouro_engine *e)
{
	int rc;

	for (int64_t i = 0; i < e->nseqs && e->running < e->o.max_seqs; i++) {
		struct seq *s = e->seqs[i];
		size_t D = (size_t)e->D, NK = (size_t)(e->N * e->KD);

		if (s->state != WAITING)
			continue;
		if (s->cap == s->n) {   /* nothing to make: no pass needed */
			if ((rc = emit(e, s, -1, 0, OURO_FINISH_LENGTH, NULL)))
				return rc;
			continue;
		}
		if (!ouro_kvpool_reserve(&e->pool, s->need))
			break;
		s->state = PREFILL;
		e->running++;
		int mean = e->o.kv == OURO_KV_MEAN;
		if ((rc = ouro_sampler_new(&s->samp, &s->o.samp, e->V)))
			return rc;
		if (!(s->pblk = malloc((size_t)s->need * sizeof *s->pblk)) ||
		    !(s->dblk = malloc((size_t)s->need * sizeof *s->dblk)) ||
		    !(s->h = malloc((size_t)e->hrows * D * sizeof *s->h)) ||
		    !(s->hprev = malloc(D * sizeof *s->hprev)) ||
		    !(s->hmix = malloc(D * sizeof *s->hmix)) ||
		    !(s->hout = malloc(D * sizeof *s->hout)) ||
		    (ouro_exit_needs_logits(&s->o.rule) &&
		     !(s->lm = malloc(2 * (size_t)e->V * sizeof *s->lm))) ||
		    (mean && !(s->kacc = malloc(NK * sizeof *s->kacc))) ||
		    (mean && !(s->vacc = malloc(NK * sizeof *s->vacc))))
			return nomem();
		if (ouro_spec_wanted(e, s) && (rc = ouro_spec_new(e, s)))
			return rc;
		s->p0 = s->rows = 0;
		ouro_eng_position_begin(e, s);
	}
	return OURO_OK;
}

/* The cached row of keys (kv 0) or values (kv 1) of position r in slot
 * (t, l) of s, growing s's blocks up to it when `grow`. */
static char *cache_row(struct ouro_engine *e, struct seq *s, int kv, int t, int64_t l,
		       int64_t r, int grow)
{
	int64_t KD = e->KD;

	if (r < s->P || e->o.kv == OURO_KV_FULL) {
		int64_t b = r / BLOCK_POS;
		while (grow && s->npblk <= b)
			if (!(s->pblk[s->npblk++] = ouro_kvpool_take(&e->pool)))
				return s->npblk--, NULL;
		return (char *)s->pblk[b] +
		       (size_t)(((kv * e->slots + t * e->N + l) * BLOCK_POS + r % BLOCK_POS) * KD) * e->esize;
	}
	int64_t d = r - s->P, per = BLOCK_POS * e->T, b = d / per;
	while (grow && s->ndblk <= b)
		if (!(s->dblk[s->ndblk++] = ouro_kvpool_take(&e->pool)))
			return s->ndblk--, NULL;
	return (char *)s->dblk[b] + (size_t)(((kv * e->N + l) * per + d % per) * KD) * e->esize;
}

static void to_cache(const struct ouro_engine *e, char *dst, const float *src)
{
	if (e->esize == sizeof(float))
		memcpy(dst, src, (size_t)e->KD * sizeof(float));
	else
		ouro_from_f32(dst, src, OURO_BF16, (size_t)e->KD);
}

/* Stores the keys and values of every row of the pass for layer l, as the
 * policy says; a decoded row under mean adds them to its sums instead. */
static int store_kv(struct ouro_engine *e, int64_t l)
{
	struct ouro_fwd_buf *b = &e->b;
	int64_t KD = e->KD;

	for (int64_t r = 0; r < e->rows; r++) {
		struct seq *s = e->row_seq[r];
		int64_t pos = e->row_pos[r];
		const float *k = b->k + r * KD, *v = b->v + r * KD;

		if (pos >= s->P && e->o.kv == OURO_KV_MEAN) {
			for (int64_t i = 0; i < KD; i++) {
				s->kacc[l * KD + i] += k[i];
				s->vacc[l * KD + i] += v[i];
			}
			continue;
		}
		if (ouro_spec_frozen(s, pos))
			continue;
		char *kd = cache_row(e, s, 0, s->t, l, pos, 1), *vd;
		if (!kd || !(vd = cache_row(e, s, 1, s->t, l, pos, 1)))
			return ouro_fail(OURO_ENOMEM, "out of memory for a KV block of %.1f MiB",
					 (double)e->pool.block_bytes / (1 << 20));
		to_cache(e, kd, k);
		to_cache(e, vd, v);
	}
	return OURO_OK;
}

/* Rounds the pass's keys and values to the cache's type, so that a row
 * reads its own exactly as the rows after it will. */
static void round_kv(struct ouro_engine *e, int64_t rows)
{
	size_t n = (size_t)(rows * e->KD);

	if (e->esize == sizeof(float))
		return;
	ouro_from_f32(e->kvtmp, e->b.k, OURO_BF16, n);
	ouro_to_f32(e->b.k, e->kvtmp, OURO_BF16, n);
	ouro_from_f32(e->kvtmp, e->b.v, OURO_BF16, n);
	ouro_to_f32(e->b.v, e->kvtmp, OURO_BF16, n);
}

/* The runs of cached positions that query block b of the pass attends
 * to at layer l, head offset off, into runs; returns their number. */
static int block_runs(struct ouro_engine *e, int64_t b, int64_t l, int64_t off,
		      struct ouro_kv_run *runs)
{
	struct seq *s = e->blk_seq[b];
	int64_t row = e->blk_row[b], m = e->blk_m[b], nk = e->row_pos[row] + m, KD = e->KD;
	int64_t slot = s->t * e->N + l, per = BLOCK_POS * e->T;
	/* a decoded row under last or mean: its own keys are the pass's */
	int own = e->row_pos[row] >= s->P && e->o.kv != OURO_KV_FULL;
	int64_t full = e->o.kv == OURO_KV_FULL ? nk : (nk < s->P ? nk : s->P);
	size_t es = e->esize, kvoff = (size_t)off * es;
	int n = 0;

	for (int64_t blk = 0; blk * BLOCK_POS < full; blk++) {
		const char *base = s->pblk[blk];
		int64_t cnt = full - blk * BLOCK_POS;
		runs[n++] = (struct ouro_kv_run){
			base + (size_t)(slot * BLOCK_POS * KD) * es + kvoff,
			base + (size_t)((e->slots + slot) * BLOCK_POS * KD) * es + kvoff,
			cnt < BLOCK_POS ? cnt : BLOCK_POS, KD, e->o.kv_dtype};
	}
	int64_t shared = nk - full - own;
	for (int64_t blk = 0; blk * per < shared; blk++) {
		const char *base = s->dblk[blk];
		int64_t cnt = shared - blk * per;
		runs[n++] = (struct ouro_kv_run){
			base + (size_t)(l * per * KD) * es + kvoff,
			base + (size_t)((e->N + l) * per * KD) * es + kvoff,
			cnt < per ? cnt : per, KD, e->o.kv_dtype};
	}
	if (own)
		runs[n++] = (struct ouro_kv_run){e->b.k + row * KD + off, e->b.v + row * KD + off,
						 1, KD, OURO_F32};
	return n;
}

struct attend_job {
	struct ouro_engine *e;
	int64_t l;
};

/* Attention of (query block, head) pairs [begin, end) of the pass at
 * layer l, on thread `part`: each block's rows over their sequence's
 * keys and values of slot (t, l), positions 0..each row's own. */
static void attend(void *ctx, int part, int64_t begin, int64_t end)
{
	const struct attend_job *j = ctx;
	struct ouro_engine *e = j->e;
	int64_t hd = e->hd, QD = e->H * hd;
	int64_t group = e->H / ouro_model_config(e->m)->num_key_value_heads;
	float *sc = e->scores + (size_t)part * ouro_scores_floats(e->scores_len, hd);
	struct ouro_kv_run *runs = e->runs + (size_t)part * (size_t)e->runs_len;

	for (int64_t i = begin; i < end; i++) {
		int64_t b = i / e->H, head = i % e->H, row = e->blk_row[b];
		int n = block_runs(e, b, j->l, (head / group) * hd, runs);

		ouro_attend(e->b.att + row * QD + head * hd, QD, e->b.q + row * QD + head * hd, QD,
			    e->blk_m[b], e->row_pos[row], runs, n, hd, sc,
			    sc + (size_t)QBLOCK * (size_t)e->scores_len);
	}
}

/* Whether s's item of this pass ends in an exit decision: a decoded
 * position, or the prompt's last before its exit. */
static int deciding(const struct seq *s)
{
	return s->state == DECODE || (s->p0 + s->rows == s->P && !s->decided);
}

/* The lm buffer of row j of s's item, if that row takes an exit decision
 * by a rule reading the logits in this pass: a decoded position, the
 * prompt's last, or a live row of a speculative verify item. */
static float *lm_row(const struct seq *s, int64_t j)
{
	if (!s->lm || !deciding(s))
		return NULL;
	if (s->sp && s->sp->verify)
		return ouro_spec_lm_row(s, j);
	return j == s->rows - 1 ? s->lm : NULL;
}

/* The lm_head logits of the states of this pass that a rule reading them
 * decides on, into their lm buffer's row of loop s->t: all in one product
 * (its rows are computed independently of each other, so batch invariance
 * holds). */
static void exit_logits(struct ouro_engine *e)
{
	int64_t D = e->D, V = e->V, r0 = 0, n = 0;

	for (int i = 0; i < e->nitems; i++) {
		struct seq *s = e->item[i];
		for (int64_t j = 0; j < s->rows; j++) {
			float *lm = lm_row(s, j);
			if (!lm)
				continue;
			memcpy(e->hexit + n * D, e->b.h + (r0 + j) * D, (size_t)D * sizeof *e->hexit);
			e->lmdst[n++] = lm + (s->t & 1) * V;
		}
		r0 += s->rows;
	}
	if (!n)
		return;
	ouro_matmul(e->logits, e->hexit, &e->m->lm_head, n, e->wbuf);
	for (int64_t k = 0; k < n; k++)
		memcpy(e->lmdst[k], e->logits + k * V, (size_t)V * sizeof *e->logits);
}

/* Feeds the state h [D] after loop s->t of the position s decides on to
 * its exit rule; when the rule fires, hout gets the state lm_head reads
 * (and, for a rule reading the logits, s->lm's row of exit_t holds them). */
void ouro_eng_exit_feed(struct ouro_engine *e, struct seq *s, const float *h)
{
	struct ouro_exit_loop in = {.gate = ouro_gate_logit(e->gate, h), .V = e->V};

	in.diff = s->t ? ouro_exit_diff(h, s->hprev, e->D) : 0;
	if (s->lm) {
		in.logits = s->lm + (s->t & 1) * e->V;
		in.prev = s->lm + ((s->t + 1) & 1) * e->V;
	}
	int stop = ouro_exit_update(&s->ex, &s->o.rule, s->t, e->T, &in);

	for (int64_t j = 0; j < e->D; j++)
		s->hmix[j] += (float)s->ex.pdf * h[j];
	memcpy(s->hprev, h, (size_t)e->D * sizeof *h);
	if (stop) {
		s->decided = 1;
		s->exit_t = s->t;
		memcpy(s->hout, s->o.rule.kind == OURO_EXIT_WEIGHTED ? s->hmix : h,
		       (size_t)e->D * sizeof *h);
	}
}

/* What the later loops of a decoded position that exited at loop t find:
 * under full its exit loop's keys and values in the skipped slots, under
 * mean the mean over the loops it ran. */
int ouro_eng_exit_cache(struct ouro_engine *e, struct seq *s, int64_t pos)
{
	int64_t KD = e->KD;
	size_t bytes = (size_t)KD * e->esize;
	float *mk = e->kvmean, *mv = e->kvmean + KD;

	for (int64_t l = 0; l < e->N; l++) {
		if (e->o.kv == OURO_KV_FULL) {
			for (int u = s->exit_t + 1; u < e->T; u++)
				for (int kv = 0; kv < 2; kv++)
					memcpy(cache_row(e, s, kv, u, l, pos, 0),
					       cache_row(e, s, kv, s->exit_t, l, pos, 0), bytes);
		} else if (e->o.kv == OURO_KV_MEAN) {
			char *kd = cache_row(e, s, 0, 0, l, pos, 1), *vd;
			if (!kd || !(vd = cache_row(e, s, 1, 0, l, pos, 1)))
				return ouro_fail(OURO_ENOMEM, "out of memory for a KV block of %.1f MiB",
						 (double)e->pool.block_bytes / (1 << 20));
			for (int64_t i = 0; i < KD; i++) {
				mk[i] = s->kacc[l * KD + i] / (float)(s->exit_t + 1);
				mv[i] = s->vacc[l * KD + i] / (float)(s->exit_t + 1);
			}
			to_cache(e, kd, mk);
			to_cache(e, vd, mv);
		}
	}
	return OURO_OK;
}

int ouro_eng_is_stop(const struct seq *s, int32_t id)
{
	for (int i = 0; i < s->o.nstop; i++)
		if (s->o.stop[i] == id)
			return 1;
	return 0;
}

/* Reports s's next token, sampled from state h; the sequence ends, or
 * the token enters at loop 0. */
int ouro_eng_advance(struct ouro_engine *e, struct seq *s, int32_t next, const float *h)
{
	int loops = s->exit_t + 1;

	if (ouro_eng_is_stop(s, next))
		return emit(e, s, -1, loops, OURO_FINISH_EOS, h);
	s->ids[s->n++] = next;
	s->made++;
	e->st.new_tokens++;
	if (s->made >= s->o.max_tokens || s->n >= s->cap)
		return emit(e, s, next, loops, OURO_FINISH_LENGTH, h);
	s->state = DECODE;
	s->p0 = s->n - 1;
	s->rows = 1;
	ouro_eng_position_begin(e, s);
	return emit(e, s, next, loops, OURO_FINISH_NONE, h);
}

/* Chooses the items of the next pass: every decoding sequence's position,
 * every prefilling sequence's chunk in flight, and new chunks while the
 * pass has room for prompt positions. Returns the number of rows. */
static int64_t plan(struct ouro_engine *e)
{
	int64_t rows = 0, inflight = 0;

	for (int64_t i = 0; i < e->nseqs; i++)
		if (e->seqs[i]->state == PREFILL)
			inflight += e->seqs[i]->rows;
	e->nitems = 0;
	e->nblk = 0;
	for (int64_t i = 0; i < e->nseqs; i++) {
		struct seq *s = e->seqs[i];

		if (s->state != PREFILL && s->state != DECODE)
			continue;
		if (s->state == PREFILL && !s->rows) {
			int64_t room = e->o.chunk - inflight, left = s->P - s->p0;
			if (room <= 0)
				continue;
			s->rows = left < room ? left : room;
			s->t = 0;
			inflight += s->rows;
		}
		e->item[e->nitems++] = s;
		for (int64_t r = 0; r < s->rows; r++) {
			e->row_seq[rows + r] = s;
			e->row_pos[rows + r] = s->p0 + r;
		}
		for (int64_t r = 0; r < s->rows; r += QBLOCK) {
			e->blk_seq[e->nblk] = s;
			e->blk_row[e->nblk] = rows + r;
			e->blk_m[e->nblk++] = s->rows - r < QBLOCK ? s->rows - r : QBLOCK;
		}
		rows += s->rows;
	}
	return rows;
}

/* One pass over the layers for the planned rows. */
static int pass(struct ouro_engine *e, int64_t rows)
{
	const struct ouro_config *c = ouro_model_config(e->m);
	struct ouro_fwd_buf *b = &e->b;
	int64_t D = e->D, half = e->hd / 2, r0 = 0, maxpos = 0;
	int rc;

	for (int i = 0; i < e->nitems; i++) {
		struct seq *s = e->item[i];
		struct ouro_fwd_buf tb = {.cos = b->cos + r0 * half, .sin = b->sin + r0 * half};

		if (s->t == 0)
			ouro_embed(e->m, s->ids + s->p0, s->rows, b->h + r0 * D);
		else
			memcpy(b->h + r0 * D, s->h, (size_t)(s->rows * D) * sizeof *b->h);
		ouro_rope_tables(&tb, c, s->p0, s->rows);
		if (s->p0 + s->rows > maxpos)
			maxpos = s->p0 + s->rows;
		r0 += s->rows;
	}
	if (maxpos > e->scores_len) {
		size_t th = (size_t)ouro_threads(), nruns = (size_t)(maxpos / BLOCK_POS + 3);
		float *p = realloc(e->scores, th * ouro_scores_floats(maxpos, e->hd) * sizeof *p);
		if (p)
			e->scores = p;
		struct ouro_kv_run *q = realloc(e->runs, th * nruns * sizeof *q);
		if (q)
			e->runs = q;
		if (!p || !q)
			return nomem();
		e->scores_len = maxpos;
		e->runs_len = (int64_t)nruns;
	}
	e->rows = rows;
	for (int64_t l = 0; l < e->N; l++) {
		const struct ouro_layer *L = &e->m->layers[l];
		struct attend_job j = {e, l};

		ouro_layer_qkv(e->m, L, b, rows);
		round_kv(e, rows);
		if ((rc = store_kv(e, l)))
			return rc;
		ouro_parallel_parts(attend, &j, e->nblk * e->H);
		ouro_layer_finish(e->m, L, b, rows);
	}
	ouro_rmsnorm(b->h, b->h, e->m->final_norm, rows, D, (float)c->rms_norm_eps);
	return OURO_OK;
}

/* After a pass: exit decisions, lm_head over the states that exit, the
 * samplers, and the items' next loops. */
static int finish_pass(struct ouro_engine *e)
{
	struct ouro_fwd_buf *b = &e->b;
	int64_t D = e->D, r0 = 0;
	int nexit = 0, nmat = 0, rc;
	struct seq **exits = e->item;   /* in place: entry k is read before it is written */

	exit_logits(e);
	for (int i = 0; i < e->nitems; i++) {
		struct seq *s = e->item[i];
		int64_t rows = s->rows;
		const float *h = b->h + r0 * D, *last = h + (rows - 1) * D;
		int out = 0, spec = s->sp && s->state == DECODE;

		if (spec) {
			if ((rc = ouro_spec_pass_done(e, s, h, &out)))
				return rc;
		} else if (s->state == PREFILL) {
			if (deciding(s))
				ouro_eng_exit_feed(e, s, last);
			if (s->t == e->T - 1) {
				s->p0 += rows;
				s->rows = 0;
				out = s->p0 == s->P;
				e->st.prefill_tokens += (uint64_t)rows;
			}
		} else {
			ouro_eng_exit_feed(e, s, last);
			if (s->decided) {
				if ((rc = ouro_eng_exit_cache(e, s, s->p0)))
					return rc;
				e->st.decoded_tokens++;
				e->st.decoded_loops += (uint64_t)(s->exit_t + 1);
				out = 1;
			}
		}
		if (s->rows && !out && !spec) {
			memcpy(s->h, h, (size_t)(s->rows * D) * sizeof *h);
			s->t++;
		}
		/* a rule reading the logits has them already */
		if (out && !spec && !s->lm)
			memcpy(e->hexit + nmat++ * D, s->hout, (size_t)D * sizeof *e->hexit);
		if (out)
			exits[nexit++] = s;
		r0 += rows;
	}
	if (nmat)
		ouro_matmul(e->logits, e->hexit, &e->m->lm_head, nmat, e->wbuf);
	nmat = 0;
	for (int i = 0; i < nexit; i++) {
		struct seq *s = exits[i];

		if (s->sp && s->state == DECODE) {
			rc = ouro_spec_accept(e, s);
		} else if (s->lm) {
			rc = ouro_eng_advance(e, s, ouro_sample(s->samp, s->lm + (s->exit_t & 1) * e->V, s->n),
					      s->hout);
		} else {
			rc = ouro_eng_advance(e, s, ouro_sample(s->samp, e->logits + nmat * e->V, s->n),
					      e->hexit + nmat * D);
			nmat++;
		}
		if (rc)
			return rc;
	}
	return OURO_OK;
}

int ouro_engine_step(struct ouro_engine *e, const struct ouro_engine_event **ev, int *nev)
{
	int rc;

	e->nev = 0;
	*ev = NULL;
	*nev = 0;
	compact(e);
	if ((rc = admit(e)))
		return rc;
	int64_t rows = plan(e);
	if (rows) {
		e->st.steps++;
		e->st.items += (uint64_t)e->nitems;
		e->st.rows += (uint64_t)rows;
		if ((rc = pass(e, rows)) || (rc = finish_pass(e)))
			return rc;
	}
	if (e->pool.peak > e->st.kv_peak_blocks)
		e->st.kv_peak_blocks = e->pool.peak;
	*ev = e->ev;
	*nev = e->nev;
	return OURO_OK;
}

const struct ouro_engine_stats *ouro_engine_stats(const struct ouro_engine *e)
{
	return &e->st;
}
