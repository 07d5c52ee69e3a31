/*
 * eval.h - scoring text at every loop step at once, for ouro-eval.
 *
 * A scorer runs one batched forward pass (all positions, all T loops) over
 * a window of input tokens and gives, for every position i and loop t, the
 * cross-entropy of the token that follows position i when it is predicted
 * from hidden[t, i] through lm_head, whether that token is the greedy
 * choice, the exit gate's distribution over loops, and the exit step of
 * every exit rule asked for (decided by ouro_exit_update, as ouro-gate and
 * ouro-generate decide).
 *
 * Two pieces of lm-evaluation-harness's request handling live here too,
 * because they decide which tokens are scored: the disjoint rolling
 * windows of loglikelihood_rolling, and the context/continuation split of
 * a loglikelihood request.
 *
 * Conventions as in ouro.h: functions return an enum ouro_status and leave
 * a message for ouro_errmsg().
 */
#ifndef OURO_EVAL_H
#define OURO_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "ouro.h"
#include "tokenizer.h"

struct ouro_scorer;

/* A scorer for `steps` loops; gate NULL: the model's own. The rules are
 * copied. */
int ouro_scorer_new(struct ouro_scorer **s, struct ouro_model *m, const struct ouro_gate *gate,
		    int steps, const struct ouro_exit_rule *rules, int nrules);
void ouro_scorer_free(struct ouro_scorer *s);

/* The scores of one window of n positions; valid until the next call. */
struct ouro_scores {
	int T, nrules;
	int64_t n, D;
	const float *hidden;          /* [T, n, D] normed state after each loop */
	const float *gate_logits;     /* [T, n] */
	const float *pdf;             /* [T, n] exit distribution (gate.h) */
	const float *loss;            /* [T, n] -log p(target[i] | hidden[t, i]); i >= lo only */
	const unsigned char *greedy;  /* [T, n] 1 if target[i] is the argmax (lowest id among
				       * equal maxima, as torch.argmax); i >= lo only */
	const int32_t *exit;          /* [nrules, n] exit step (0-based) of position i */
};

/* Runs the forward pass over ids [n] and scores positions lo..n-1 against
 * targets [n] (targets[i] is the token that follows position i; entries
 * below lo are not read). Exit steps are decided for every position. */
int ouro_score_window(struct ouro_scorer *s, const int32_t *ids, const int32_t *targets,
		      int64_t n, int64_t lo, const struct ouro_scores **out);

/* ---- lm-evaluation-harness request layout ------------------------------- */

/* One window of loglikelihood_rolling over a document of N tokens, in the
 * coordinates of x = [prefix] + tokens (x[0] the prefix token, x[j+1] =
 * tokens[j]): the input is x[start .. start+len), position p predicts
 * x[start+p+1], and positions first..len-1 are the ones scored. */
struct ouro_window {
	int64_t start, len, first;
};

/* The windows of get_rolling_token_windows(tokens, prefix, max_len,
 * context_len) made disjoint (make_disjoint_window): every token of the
 * document is scored exactly once; the first window predicts tokens[0]
 * from the prefix token alone; each later window predicts up to
 * max_len - context_len + 1 new tokens with the tokens before them as
 * context, max_len inputs in all. Stores up to cap windows in out (may be
 * NULL) and returns how many there are; 0 for an empty document.
 * 1 <= context_len <= max_len. */
int64_t ouro_rolling_windows(int64_t ntokens, int64_t max_len, int64_t context_len,
			     struct ouro_window *out, int64_t cap);

/* Tokenizes a loglikelihood request (context, continuation) as
 * lm-evaluation-harness does: an empty context becomes the prefix token
 * alone and the continuation is encoded by itself; otherwise trailing
 * whitespace of the context (Python's str.isspace) moves to the front of
 * the continuation, the context and context+continuation are encoded,
 * and the continuation's tokens are those of the whole past the
 * context's token count. A context that is only whitespace also becomes
 * the prefix token. Appends to ctx_ids and cont_ids (cleared first). An
 * empty continuation, or a context or continuation that encodes to no
 * tokens, is OURO_EINPUT. */
int ouro_request_encode(struct ouro_tok *tok, const char *ctx, size_t ctx_len,
			const char *cont, size_t cont_len, int32_t prefix,
			struct ouro_ids *ctx_ids, struct ouro_ids *cont_ids);

/* Length of s[0..len) in Unicode code points (Python's len() of the
 * decoded string), invalid UTF-8 bytes counting one each. */
int64_t ouro_utf8_length(const char *s, size_t len);

#endif
