/*
 * eval_gen.c - generative evaluation, for ouro-eval gen: every example is
 * generated under every exit rule on the batch engine (one sequence per
 * example and rule, many at once), its text cut at a stop string, its
 * answer extracted (eval_extract.c) and compared with the reference, and
 * the outcome reduced to the sums of the gen layout (eval_sums.c) and a
 * record of what was generated.
 *
 * The engine gives each sequence the tokens and exit loops it would have
 * alone, so the sums do not depend on -P, on the order of the examples or
 * on which shard runs them: merged and resumed runs agree to the byte.
 * An example that cannot run (a bad line, a prompt longer than the
 * model's context) is handed over at once as failed, with its message.
 */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "eval.h"

json_t *ouro_json_text(const char *p, size_t n)
{
	struct ouro_bytes u = {0};
	json_t *s;

	for (size_t i = 0; i < n;) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t len = utf8proc_iterate((const utf8proc_uint8_t *)p + i,
							(utf8proc_ssize_t)(n - i), &cp);
		if (len > 0 ? ouro_bytes_add(&u, p + i, (size_t)len) : ouro_bytes_add(&u, "\xef\xbf\xbd", 3)) {
			ouro_bytes_free(&u);
			return NULL;
		}
		i += len > 0 ? (size_t)len : 1;
	}
	s = json_stringn(u.p ? u.p : "", u.n);
	ouro_bytes_free(&u);
	return s;
}

/* One example being generated. */
struct gen_ex {
	int64_t i;                /* its number in the corpus */
	int left;                 /* rules still running */
	char *const *stop;        /* its stop strings [nstop] */
	int nstop;
	size_t prompt_text;       /* bytes of the prompt's decoding */
	double *d;                /* [L.total] its sums */
	json_t *record, *results;
};

/* One sequence: an example under one rule. */
struct gen_seq {
	struct gen_ex *ex;
	int r;
	struct ouro_ids ids;      /* the prompt, then the new tokens */
	int64_t loops;            /* loops of the new tokens, summed */
};

static const char *finish_name(int finish)
{
	return finish == OURO_FINISH_EOS ? "eos" : finish == OURO_FINISH_STOP ? "stop" : "length";
}

/* The ids of example e's prompt as the options say; an example that
 * cannot run gets OURO_EINPUT and a message that names it. */
static int prompt_ids(const struct ouro_eval_gen *g, const struct ouro_eval_example *e,
		      struct ouro_ids *ids)
{
	int64_t ctx = ouro_model_config(g->m)->max_position_embeddings;
	struct ouro_bytes chat = {0};
	int rc;

	if (g->chat) {
		if (!(rc = ouro_tok_chat(&chat, g->system, e->prompt, e->prompt_len, g->think)))
			rc = ouro_tok_encode(g->tok, chat.p, chat.n, ids);
	} else {
		rc = ouro_tok_encode(g->tok, e->prompt, e->prompt_len, ids);
	}
	ouro_bytes_free(&chat);
	if (rc)
		return ouro_refail(rc, e->where);
	if (ids->n == 0)
		return ouro_fail(OURO_EINPUT, "%s: the prompt is empty", e->where);
	if ((int64_t)ids->n >= ctx)
		return ouro_fail(OURO_EINPUT, "%s: the prompt has %zu tokens; the model's context of %lld leaves no room for an answer",
				 e->where, ids->n, (long long)ctx);
	return OURO_OK;
}

/* A new record for example e. */
static json_t *record_new(int64_t i, const struct ouro_eval_example *e)
{
	json_t *r = json_object();

	json_object_set_new(r, "example", json_integer(i));
	json_object_set_new(r, "source", json_string(e->where));
	if (e->answer)
		json_object_set_new(r, "answer", ouro_json_text(e->answer, e->answer_len));
	return r;
}

/* Hands over an example that cannot run, with the library's last
 * message. */
static int fail_example(const struct ouro_eval_gen *g, int64_t i, const struct ouro_eval_example *e,
			const char *msg, double *d, ouro_eval_gen_fn done, void *ctx)
{
	json_t *r = record_new(i, e);
	int rc;

	memset(d, 0, (size_t)g->L.total * sizeof *d);
	d[g->L.off[OURO_EVAL_G_EXAMPLES]] = 1;
	d[g->L.off[OURO_EVAL_G_FAILED]] = 1;
	json_object_set_new(r, "error", json_string(msg));
	rc = done(ctx, i, d, r);
	json_decref(r);
	return rc;
}

/* The end of sequence s: its text cut at a stop string, the answer
 * extracted and compared, its sums and its part of the record. */
static int seq_finish(const struct ouro_eval_gen *g, const struct ouro_eval_corpus *c,
		      struct gen_seq *s, size_t prompt, int finish)
{
	const struct ouro_eval_example *e = &c->ex[s->ex->i];
	struct ouro_bytes text = {0}, got = {0}, a = {0}, b = {0};
	int64_t tokens = (int64_t)(s->ids.n - prompt);
	int rc, stopped, found = 0, correct = 0;

	if (!(rc = ouro_tok_decode_after(g->tok, s->ids.v, s->ids.n, s->ex->prompt_text, s->ex->stop,
					 s->ex->nstop, &text, &stopped)) &&
	    !(rc = ouro_extract_answer(g->extract, text.p ? text.p : "", text.n, &got, &found)) &&
	    found && !(rc = ouro_answer_normalize(got.p ? got.p : "", got.n, &a)) &&
	    !(rc = ouro_answer_normalize(e->answer, e->answer_len, &b)))
		correct = a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
	if (!rc) {
		const struct ouro_eval_layout *L = &g->L;
		json_t *x = json_object();
		s->ex->d[L->off[OURO_EVAL_G_RULE_CORRECT] + s->r] = correct;
		s->ex->d[L->off[OURO_EVAL_G_RULE_TOKENS] + s->r] = (double)tokens;
		s->ex->d[L->off[OURO_EVAL_G_RULE_LOOPS] + s->r] = (double)s->loops;
		s->ex->d[L->off[OURO_EVAL_G_RULE_BUDGET] + s->r] = finish == OURO_FINISH_LENGTH;
		json_object_set_new(x, "rule", json_string(g->rule_names[s->r]));
		json_object_set_new(x, "text", ouro_json_text(text.p ? text.p : "", text.n));
		json_object_set_new(x, "extracted", found ? ouro_json_text(got.p ? got.p : "", got.n) : json_null());
		json_object_set_new(x, "correct", json_boolean(correct));
		json_object_set_new(x, "tokens", json_integer(tokens));
		json_object_set_new(x, "loops_per_token", tokens ? json_real((double)s->loops / (double)tokens) : json_null());
		json_object_set_new(x, "finish", json_string(finish_name(finish)));
		json_array_set_new(s->ex->results, (size_t)s->r, x);
	}
	ouro_bytes_free(&text);
	ouro_bytes_free(&got);
	ouro_bytes_free(&a);
	ouro_bytes_free(&b);
	return rc;
}

/* Queues example k's sequences, one per rule, numbered from *nseq in
 * seqs (the engine numbers them in the order they are added). */
static int add_example(struct ouro_eval_gen *g, struct ouro_engine *eng, const struct ouro_eval_example *e,
		       struct gen_ex *x, const struct ouro_ids *ids, struct gen_seq *seqs, int64_t *nseq)
{
	struct ouro_bytes b = {0};
	int rc;

	if ((rc = ouro_tok_decode(g->tok, ids->v, ids->n, &b)))
		return rc;
	x->prompt_text = b.n;
	ouro_bytes_free(&b);
	x->stop = e->nuntil >= 0 ? e->until : g->stop;
	x->nstop = e->nuntil >= 0 ? e->nuntil : g->nstop;
	x->left = g->R;
	x->d[g->L.off[OURO_EVAL_G_EXAMPLES]] = 1;
	x->d[g->L.off[OURO_EVAL_G_PROMPT_TOKENS]] = (double)ids->n;
	x->results = json_array();
	for (int r = 0; r < g->R; r++) {
		struct ouro_seq_opts so = {.rule = g->rules[r], .samp = g->samp,
					   .max_tokens = e->max_tokens >= 0 ? e->max_tokens : g->max_tokens,
					   .stop = g->stop_ids, .nstop = g->nstop_ids};
		struct gen_seq *s = &seqs[*nseq];
		int64_t id;
		json_array_append_new(x->results, json_null());
		if ((rc = ouro_engine_add(eng, ids->v, (int64_t)ids->n, &so, &id)))
			return ouro_refail(rc, e->where);
		if (id != *nseq)
			return ouro_fail(OURO_EINPUT, "the engine numbered a sequence %lld, not %lld",
					 (long long)id, (long long)*nseq);
		s->ex = x;
		s->r = r;
		(*nseq)++;
		for (size_t k = 0; k < ids->n; k++)
			if ((rc = ouro_ids_push(&s->ids, ids->v[k])))
				return rc;
	}
	g->prompt_tokens += ids->n;
	return OURO_OK;
}

/* Takes one event of the engine: a new token, the end of a sequence. */
static int take_event(struct ouro_eval_gen *g, struct ouro_engine *eng, const struct ouro_eval_corpus *c,
		      struct gen_seq *seqs, const struct ouro_engine_event *ev, ouro_eval_gen_fn done,
		      void *ctx)
{
	struct gen_seq *s = &seqs[ev->seq];
	struct gen_ex *x = s->ex;
	size_t prompt = (size_t)x->d[g->L.off[OURO_EVAL_G_PROMPT_TOKENS]];
	int finish = ev->finish, rc;

	if (ev->token >= 0) {
		if ((rc = ouro_ids_push(&s->ids, ev->token)))
			return rc;
		s->loops += ev->loops;
		g->new_tokens++;
		if (x->nstop && !finish) {
			struct ouro_bytes text = {0};
			int stopped;
			rc = ouro_tok_decode_after(g->tok, s->ids.v, s->ids.n, x->prompt_text, x->stop,
						   x->nstop, &text, &stopped);
			ouro_bytes_free(&text);
			if (rc)
				return rc;
			if (stopped) {
				if ((rc = ouro_engine_cancel(eng, ev->seq)))
					return rc;
				finish = OURO_FINISH_STOP;
			}
		}
	}
	if (!finish)
		return OURO_OK;
	rc = seq_finish(g, c, s, prompt, finish);
	ouro_ids_free(&s->ids);
	if (rc || --x->left)
		return rc;
	json_object_set_new(x->record, "results", x->results);
	x->results = NULL;
	rc = done(ctx, x->i, x->d, x->record);
	json_decref(x->record);
	x->record = NULL;
	return rc;
}

int ouro_eval_generate(struct ouro_eval_gen *g, const struct ouro_eval_corpus *c, const int64_t *idx,
		       int64_t n, ouro_eval_gen_fn done, void *ctx)
{
	struct ouro_engine_opts eo = {.steps = g->T, .kv = OURO_KV_FULL, .kv_dtype = OURO_BF16,
				      .gate = g->gate, .max_seqs = g->parallel,
				      .draft_tokens = g->draft_tokens, .draft_steps = g->draft_steps};
	struct ouro_engine *eng = NULL;
	struct gen_ex *xs = calloc((size_t)n + 1, sizeof *xs);
	struct gen_seq *seqs = calloc((size_t)n * (size_t)g->R + 1, sizeof *seqs);
	double *d = calloc((size_t)(n + 1) * (size_t)g->L.total, sizeof *d);
	struct ouro_ids ids = {0};
	int64_t nseq = 0;
	int rc;

	if (!xs || !seqs || !d) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory for %lld examples", (long long)n);
		goto out;
	}
	if ((rc = ouro_engine_new(&eng, g->m, &eo)))
		goto out;
	for (int64_t k = 0; k < n && !rc; k++) {
		const struct ouro_eval_example *e = &c->ex[idx[k]];
		struct gen_ex *x = &xs[k];

		x->i = idx[k];
		x->d = d + k * g->L.total;
		ids.n = 0;
		if (e->error) {
			rc = fail_example(g, idx[k], e, e->error, x->d, done, ctx);
		} else if ((rc = prompt_ids(g, e, &ids)) == OURO_EINPUT) {
			rc = fail_example(g, idx[k], e, ouro_errmsg(), x->d, done, ctx);
		} else if (!rc) {
			x->record = record_new(idx[k], e);
			rc = add_example(g, eng, e, x, &ids, seqs, &nseq);
		}
	}
	while (!rc && ouro_engine_pending(eng)) {
		const struct ouro_engine_event *ev;
		int nev;
		if ((rc = ouro_engine_step(eng, &ev, &nev)))
			break;
		for (int k = 0; k < nev && !rc; k++)
			rc = take_event(g, eng, c, seqs, &ev[k], done, ctx);
	}
out:
	for (int64_t k = 0; xs && k < n; k++) {
		json_decref(xs[k].record);
		json_decref(xs[k].results);
	}
	for (int64_t k = 0; k < nseq; k++)
		ouro_ids_free(&seqs[k].ids);
	ouro_ids_free(&ids);
	ouro_engine_free(eng);
	free(xs);
	free(seqs);
	free(d);
	return rc;
}
