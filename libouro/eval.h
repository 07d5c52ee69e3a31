/*
 * eval.h - scoring text at every loop step at once, for ouro-eval.
 *
 * A scorer runs one batched forward pass (all positions, all T loops) over
 * a batch of windows of input tokens and gives, for every window, position
 * i and loop t, the cross-entropy of the token that follows position i
 * when it is predicted from hidden[t, i] through lm_head, whether that
 * token is the greedy choice, the exit gate's distribution over loops, and
 * the exit step of every exit rule asked for (decided by ouro_exit_update,
 * as ouro-gate and ouro-generate decide). A window's scores do not depend
 * on the other windows of its batch.
 *
 * Two pieces of lm-evaluation-harness's request handling live here too,
 * because they decide which tokens are scored: the disjoint rolling
 * windows of loglikelihood_rolling, and the context/continuation split of
 * a loglikelihood request.
 *
 * Then the pieces of an evaluation: the tasks' examples read and
 * tokenized, each scored into a fixed set of sums (or, for a generative
 * task, generated under every exit rule on the batch engine and its
 * answer extracted), exact integer sums that merge and resume without
 * changing a digit, the report built from them, the log a run resumes
 * from, the merge of shards, and the report as a table and a plot.
 *
 * Conventions as in ouro.h: functions return an enum ouro_status and leave
 * a message for ouro_errmsg().
 */
#ifndef OURO_EVAL_H
#define OURO_EVAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

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

/* One window: the inputs ids [n], scored from position lo against targets
 * [n] (targets[i] is the token that follows position i; entries below lo
 * are not read). */
struct ouro_score_req {
	const int32_t *ids, *targets;
	int64_t n, lo;
};

/* Runs one forward pass over the windows req [nreq] together and scores
 * each; out gets their scores [nreq], valid until the next call. Exit
 * steps are decided for every position. */
int ouro_score_batch(struct ouro_scorer *s, const struct ouro_score_req *req, int nreq,
		     const struct ouro_scores **out);

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

/* ---- evaluation tasks (eval_tasks.c, eval_score.c, eval_sums.c,
 * eval_report.c): what ouro-eval is made of ------------------------------ */

#define OURO_EVAL_MAX_RULES 64
#define OURO_EVAL_REPORT_FORMAT "ouro-eval report"
#define OURO_EVAL_LOG_FORMAT "ouro-eval log"
#define OURO_EVAL_FORMAT_VERSION 1

enum ouro_eval_task { OURO_EVAL_PPL, OURO_EVAL_CHOICE, OURO_EVAL_GEN };

/* How a perplexity input is read: by its name (.jsonl/.json: JSONL, else
 * text), one text document, JSONL strings, or lines of token ids. */
enum ouro_eval_format { OURO_EVAL_AUTO, OURO_EVAL_TEXT, OURO_EVAL_JSONL, OURO_EVAL_IDS };
extern const char *const ouro_eval_format_names[];   /* "auto", "text", ... */

/* One loglikelihood request: a context and a continuation. */
struct ouro_eval_pair {
	const char *ctx, *cont;    /* into the example's strings */
	size_t ctx_len, cont_len;
	int64_t chars;             /* length of the choice for acc_norm */
	struct ouro_ids cids, kids;  /* tokens of context and continuation */
};

struct ouro_eval_example {
	char where[300];           /* "FILE: line N" or "FILE" */
	/* ppl */
	const char *text;
	size_t len;
	struct ouro_ids ids;
	/* choice */
	int npairs, gold;
	struct ouro_eval_pair *pairs;
	char *strings;             /* owns the texts of pairs */
	/* gen: the prompt (few_shot + prompt), the reference answer, the
	 * stop strings of `until` (nuntil -1: none given), max_tokens (-1:
	 * none given); a line that is not a good example has error instead */
	char *prompt, *answer, **until, *error;
	size_t prompt_len, answer_len;
	int nuntil;
	int64_t max_tokens;
};

/* The examples of all inputs, in order (zero-initialise before use). */
struct ouro_eval_corpus {
	struct ouro_eval_example *ex;
	int64_t n, cap;
	char **bufs;               /* file contents the examples point into */
	int nbufs;
};

/* Reads the rest of f into a NUL-terminated buffer and closes f (unless
 * it is stdin); name is f's name in messages. */
int ouro_eval_slurp_stream(FILE *f, const char *name, char **buf, size_t *len);
/* Reads a whole input ("-": stdin; a file, a pipe) into a NUL-terminated
 * buffer. */
int ouro_eval_slurp(const char *path, char **buf, size_t *len);
/* Reads and validates every input into c: multiple-choice JSONL for
 * OURO_EVAL_CHOICE, else documents in format fmt (JSONL strings or
 * objects whose member `field` is one; ids below V). */
int ouro_eval_corpus_read(struct ouro_eval_corpus *c, enum ouro_eval_task task,
			  enum ouro_eval_format fmt, const char *field, char *const *inputs, int ninputs,
			  int64_t V);
/* The readers of one input's contents buf [len] (modified), named name. */
int ouro_eval_read_ppl_jsonl(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len,
			     const char *field);
int ouro_eval_read_ppl_ids(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len,
			   int64_t V);
int ouro_eval_read_choice_jsonl(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len);
/* Generative tasks: a line that is not a good example is kept, with its
 * message in error (the run reports it and goes on). */
int ouro_eval_read_gen_jsonl(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len);
void ouro_eval_corpus_free(struct ouro_eval_corpus *c);
/* Tokenizes one example (its ids are kept for scoring): a document whole,
 * a choice as a request (ouro_request_encode), whose continuation must
 * fit the window. */
int ouro_eval_tokenize(struct ouro_eval_example *e, struct ouro_tok *tok, enum ouro_eval_task task,
		       int32_t prefix, int64_t window);

/* The sums of one task: fields of one number, one per loop or one per
 * exit rule, at offsets off[] of a vector of `total` numbers. */
struct ouro_eval_field;
struct ouro_eval_layout {
	const struct ouro_eval_field *f;
	int nfields, T, R;
	int off[16], len[16];
	int total;
};

/* The fields of each task, in layout order. */
enum { OURO_EVAL_P_EXAMPLES, OURO_EVAL_P_TOKENS, OURO_EVAL_P_BYTES, OURO_EVAL_P_WORDS,
       OURO_EVAL_P_NLL, OURO_EVAL_P_ENTROPY, OURO_EVAL_P_EXP_NLL, OURO_EVAL_P_EXP_LOOPS,
       OURO_EVAL_P_RULE_NLL, OURO_EVAL_P_RULE_LOOPS, OURO_EVAL_P_NFIELDS };
enum { OURO_EVAL_C_EXAMPLES, OURO_EVAL_C_TOKENS, OURO_EVAL_C_ACC, OURO_EVAL_C_ACC_NORM,
       OURO_EVAL_C_GREEDY, OURO_EVAL_C_GOLD_LL, OURO_EVAL_C_RULE_ACC, OURO_EVAL_C_RULE_ACC_NORM,
       OURO_EVAL_C_RULE_GREEDY, OURO_EVAL_C_RULE_GOLD_LL, OURO_EVAL_C_RULE_LOOPS,
       OURO_EVAL_C_NFIELDS };
enum { OURO_EVAL_G_EXAMPLES, OURO_EVAL_G_FAILED, OURO_EVAL_G_PROMPT_TOKENS, OURO_EVAL_G_RULE_CORRECT,
       OURO_EVAL_G_RULE_TOKENS, OURO_EVAL_G_RULE_LOOPS, OURO_EVAL_G_RULE_BUDGET, OURO_EVAL_G_NFIELDS };

void ouro_eval_layout_init(struct ouro_eval_layout *L, enum ouro_eval_task task, int T, int R);
/* One example's sums d [total] (doubles), rounded once into integers:
 * losses in units of 2^-28 nats, counts as they are. */
int ouro_eval_fix(const struct ouro_eval_layout *L, const double *d, int64_t *out, const char *where);
/* acc += v, failing on 64-bit overflow. */
int ouro_eval_sums_add(const struct ouro_eval_layout *L, int64_t *acc, const int64_t *v,
		       const char *where);
json_t *ouro_eval_sums_json(const struct ouro_eval_layout *L, const int64_t *v);
/* Reads sums written by ouro_eval_sums_json, checking every field and
 * length. */
int ouro_eval_sums_parse(const struct ouro_eval_layout *L, json_t *o, int64_t *v, const char *where);
/* The whole report: configuration, shard (shard_n 0: none), results and
 * the sums they come from. Merged and unsharded runs build it with this
 * one function. */
json_t *ouro_eval_report(json_t *config, long shard_k, long shard_n, int64_t total,
			 const struct ouro_eval_layout *L, const int64_t *v);
/* Checks that a report's configuration has what the results read; fills
 * the layout. */
int ouro_eval_config_layout(json_t *config, struct ouro_eval_layout *L, const char *where);
/* The first key whose values differ between two objects, for messages. */
const char *ouro_eval_first_difference(json_t *a, json_t *b);

/* Whether example i belongs to shard shard_k of shard_n (0: no shards). */
int ouro_eval_in_shard(int64_t i, long shard_k, long shard_n);
/* The log's first line: {"format", "version", "config", "shard": "K/N" or
 * null, "examples_total"}. */
json_t *ouro_eval_log_header(json_t *config, long shard_k, long shard_n, int64_t total);
/* One example's line: {"example", "source", "sums"} and, for a choice
 * (ll [npairs, T + R], else NULL), "gold" and "ll". */
json_t *ouro_eval_log_line(int64_t index, const struct ouro_eval_example *e,
			   const struct ouro_eval_layout *L, const int64_t *v, const double *ll);
/* Reads the log of an interrupted run from f, opened at path, and closes
 * f: adds its examples' sums to acc and marks them done [total]; *keep is
 * the length of its intact part (a last line cut short by the
 * interruption is dropped). A log of another run (its header differs
 * from header) is refused, naming what differs. */
int ouro_eval_log_resume(FILE *f, const char *path, json_t *header, long shard_k, long shard_n,
			 const struct ouro_eval_layout *L, int64_t total, unsigned char *done,
			 int64_t *acc, int64_t *ndone, off_t *keep);

/* What scoring examples needs (zero-initialise, then set the first
 * group). */
struct ouro_eval_run {
	enum ouro_eval_task task;
	struct ouro_model *m;
	struct ouro_scorer *scorer;
	struct ouro_eval_layout L;
	int T, R;
	int64_t window, context;   /* rolling windows (ouro_rolling_windows) */
	int32_t prefix;
	int batch;                 /* windows of one forward pass, >= 1 */
	FILE *per_token;           /* records for ouro-gate train, or NULL */
	const char *per_token_name;
	int64_t input_tokens;      /* tokens through the forward pass */
	int64_t windows, passes;   /* windows scored, forward passes made */
};

/* Positions of one forward pass at most, all its windows together, unless
 * a single window is longer (it then goes alone). */
#define OURO_EVAL_PASS_ROWS 2048

/* Where ouro_eval_score hands each example over: its number i, its sums d
 * [L.total] (doubles) and, for a choice, ll [npairs, T + R], the
 * log-likelihood of every choice at every loop and rule (else NULL). A
 * status other than OURO_OK stops the scoring with it. */
typedef int (*ouro_eval_done_fn)(void *ctx, int64_t i, const double *d, const double *ll);

/* Scores the examples c->ex[idx[k]], k = 0..n-1: a document through its
 * rolling windows, a multiple-choice question through one window per
 * choice. The windows of all the examples, in order, go through the model
 * r->batch at a time (at most OURO_EVAL_PASS_ROWS positions together),
 * so that short ones share each pass over the weights; a window's scores
 * are the same whatever else is in its pass. done() gets every example in
 * the order of idx as soon as its last window is scored. */
int ouro_eval_score(struct ouro_eval_run *r, const struct ouro_eval_corpus *c, const int64_t *idx,
		    int64_t n, ouro_eval_done_fn done, void *ctx);

/* ---- merging the reports of shards (eval_merge.c) ----------------------- */

/* What a merge has gathered from the reports read so far (zero-initialise,
 * then set nreports). */
struct ouro_eval_merge {
	int nreports;            /* reports to read in all */
	json_t *config;          /* of the first report */
	const char *first;       /* its path */
	long count;              /* shards */
	int64_t total;           /* examples */
	struct ouro_eval_layout L;
	json_t **seen;           /* [count] each shard's report, once read */
	const char **seen_by;    /* [count] its path */
	int64_t *acc, *v;        /* [L.total] the sums, and one report's */
};

/* Reads the shard report at path ("-": stdin), checks it against those
 * read before and adds its sums. */
int ouro_eval_merge_add(struct ouro_eval_merge *g, const char *path);
/* The merged report, once every shard is read (a missing one is
 * OURO_EINPUT). */
int ouro_eval_merge_end(struct ouro_eval_merge *g, json_t **report);
void ouro_eval_merge_free(struct ouro_eval_merge *g);

/* ---- generative tasks (eval_extract.c, eval_gen.c) ---------------------- */

/* How the answer is taken from a generated text (ouro-eval(1),
 * EXTRACTION), after a thinking section is dropped. */
enum ouro_extract_kind { OURO_EXTRACT_TEXT, OURO_EXTRACT_GSM8K, OURO_EXTRACT_LAST_NUMBER,
			 OURO_EXTRACT_BOXED, OURO_EXTRACT_REGEX };
extern const char *const ouro_extract_names[];   /* "text", "gsm8k", ... */

struct ouro_extract {
	enum ouro_extract_kind kind;
	void *re;          /* pcre2_code of regex:RE */
	void *number;      /* pcre2_code of a number */
};

/* From --extract's value: text, gsm8k, last-number, boxed or regex:RE
 * (OURO_EUSAGE if it is none of them). */
int ouro_extract_init(struct ouro_extract *x, const char *spec);
void ouro_extract_free(struct ouro_extract *x);
/* The answer of text [len] into out (cleared first); *found 0 when the
 * text has none. */
int ouro_extract_answer(const struct ouro_extract *x, const char *text, size_t len,
			struct ouro_bytes *out, int *found);
/* The form in which answers compare: a number canonical (commas, "$",
 * leading zeros, trailing decimal zeros dropped), any other string case
 * folded with its blank runs made one space and trailing ".,;:!?"
 * dropped; into out (cleared first). */
int ouro_answer_normalize(const char *s, size_t len, struct ouro_bytes *out);

/* A JSON string of the bytes p [n], each byte that is not part of a
 * UTF-8 character made U+FFFD (generated text need not be valid UTF-8). */
json_t *ouro_json_text(const char *p, size_t n);

/* What generating the examples needs (zero-initialise, then set all but
 * the statistics). */
struct ouro_eval_gen {
	struct ouro_model *m;
	struct ouro_tok *tok;
	const struct ouro_gate *gate;           /* NULL: the model's own */
	int T, R;
	const struct ouro_exit_rule *rules;     /* [R]: every example runs under each */
	const char *const *rule_names;          /* [R] for the records */
	struct ouro_sampler_opts samp;
	int64_t max_tokens;                     /* budget of an example without its own */
	char *const *stop;                      /* [nstop] stop strings; `until` replaces them */
	int nstop;
	const int32_t *stop_ids;                /* [nstop_ids] ids that end a generation */
	int nstop_ids;
	int chat, think;                        /* the prompt as a ChatML user turn */
	const char *system;
	const struct ouro_extract *extract;
	int parallel;                           /* sequences at once, >= 1 */
	int draft_tokens, draft_steps;          /* speculative decoding (ouro_engine_opts) */
	struct ouro_eval_layout L;
	uint64_t prompt_tokens, new_tokens;     /* statistics, added up */
};

/* Where ouro_eval_generate hands each example over: its number i, its
 * sums d [L.total] (doubles) and its record (an object: the example,
 * its source and reference answer, and per rule the text, the extracted
 * answer, whether it is correct, the tokens, loops per token and why the
 * generation ended; or "error" for an example that could not run), which
 * the callee may keep a reference to. */
typedef int (*ouro_eval_gen_fn)(void *ctx, int64_t i, const double *d, json_t *record);

/* Generates the examples c->ex[idx[k]], k = 0..n-1, one engine sequence
 * per example and rule, at most g->parallel at once; done() gets each
 * example when all its rules have finished. A sequence's text does not
 * depend on what runs beside it, so neither do the sums. */
int ouro_eval_generate(struct ouro_eval_gen *g, const struct ouro_eval_corpus *c, const int64_t *idx,
		       int64_t n, ouro_eval_gen_fn done, void *ctx);

/* The report as a table, for people. */
void ouro_eval_table(FILE *f, json_t *report);
/* The report as an SVG plot, written to path atomically. */
int ouro_eval_plot(const char *path, json_t *report);

#endif
