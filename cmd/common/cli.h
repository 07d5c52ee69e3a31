/*
 * cli.h - the few things every ouro program shares (cli.c): its name, how
 * it dies on a library failure or a usage error, strict parsing of option
 * values and of the exit-rule options, the thread-count setting, the
 * inputs and the atomic output, and the prompt of ouro-generate and
 * ouro-lens.
 */
#ifndef OURO_CLI_H
#define OURO_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "ouro.h"
#include "tokenizer.h"      /* ouro_bytes and ouro_ids of the prompt helpers */

/* The program's name in messages (set by cli_init). */
extern const char *progname;

/* Prints the library's last message and exits with its status. */
__attribute__((noreturn)) void die(int status);

/* A bad command line: one message line, exit status 2. */
__attribute__((noreturn, format(printf, 1, 2))) void usage_error(const char *fmt, ...);

/* Names the program for messages. A closed output pipe ends the program
 * quietly by SIGPIPE even if the parent ignored the signal. SIGINT, SIGTERM,
 * SIGHUP (unless ignored) and SIGPIPE end it as they would, but first
 * remove the temporary files of its outputs, so an interrupted -o FILE
 * leaves the old file or none. */
void cli_init(const char *name);

/* getopt_long that prints nothing itself: an unknown option or a missing
 * argument becomes one usage_error line. */
int cli_getopt(int argc, char **argv, const char *optstring,
	             const struct option *longopts);

/* Reads all of s as one finite number (strtod's syntax): 0 and *v, or -1. */
int cli_strtod(const char *s, double *v);

/* A whole finite number in lo..hi, or a usage error naming `what`. */
double cli_real(const char *s, double lo, double hi, const char *what);

/* A whole decimal integer in lo..hi, or a usage error naming `what`. */
long cli_long(const char *s, long lo, long hi, const char *what);

/* Reads all of s as a decimal integer in 0..2^64-1: 0 and *v, or -1. */
int cli_strtou64(const char *s, uint64_t *v);

/* A size option's value: a whole number of bytes, or of KiB, MiB, GiB
 * with K, M, G; else a usage error naming `what`. */
uint64_t cli_size(const char *s, const char *what);

/* The exit-rule options without a short form, and their getopt_long
 * entries: --kl EPS, --entropy H, --stable K. */
enum { CLI_OPT_KL = 0x400, CLI_OPT_ENTROPY, CLI_OPT_STABLE };
#define CLI_EXIT_LONGOPTS \
	{"kl", required_argument, NULL, CLI_OPT_KL}, \
	{"entropy", required_argument, NULL, CLI_OPT_ENTROPY}, \
	{"stable", required_argument, NULL, CLI_OPT_STABLE}

/* An exit-rule option's name in messages (long_names: --threshold,
 * --step, --eps, --weighted for -q, -s, -e, -w). */
const char *cli_exit_name(int opt, int long_names);

/* Sets *r to the rule of one exit-rule option and its value: -q Q (0..1),
 * -s STEP (0..255), -e EPS (0..inf), -w, --kl EPS (0..inf), --entropy H
 * (0..inf) or --stable K (2..256); a bad value is a usage error naming
 * the option (long_names: --threshold, --step, --eps for -q, -s, -e). */
void cli_exit_value(struct ouro_exit_rule *r, int opt, const char *arg, int long_names);

/* Takes one exit-rule option into *r as cli_exit_value; *given is the
 * option that chose r's kind (0: none). An option of another kind is a
 * usage error; a repeat keeps the last value. */
void cli_exit_option(struct ouro_exit_rule *r, int *given, int opt,
		     const char *arg, int long_names);

/* The rule as records and reports name it: "threshold Q", "static S",
 * "diff EPS", "weighted", "kl EPS", "entropy H" or "stable K". */
void cli_rule_text(char *buf, size_t len, const struct ouro_exit_rule *r);

/* The sampling options of ouro-generate and ouro-eval gen: long options
 * with these codes, CLI_SAMPLER_LONGOPTS in a program's option table. */
enum { CLI_OPT_TEMPERATURE = 0x100, CLI_OPT_TOP_K, CLI_OPT_TOP_P, CLI_OPT_MIN_P, CLI_OPT_SEED };
#define CLI_SAMPLER_LONGOPTS \
	{"temperature", required_argument, NULL, CLI_OPT_TEMPERATURE}, \
	{"top-k", required_argument, NULL, CLI_OPT_TOP_K}, \
	{"top-p", required_argument, NULL, CLI_OPT_TOP_P}, \
	{"min-p", required_argument, NULL, CLI_OPT_MIN_P}, \
	{"seed", required_argument, NULL, CLI_OPT_SEED}

/* The options of speculative decoding (ouro-generate, ouro-eval gen):
 * --speculate, --draft-steps S, --draft-tokens K. */
enum { CLI_OPT_SPECULATE = 0x200, CLI_OPT_DRAFT_STEPS, CLI_OPT_DRAFT_TOKENS };
#define CLI_SPEC_LONGOPTS \
	{"speculate", no_argument, NULL, CLI_OPT_SPECULATE}, \
	{"draft-steps", required_argument, NULL, CLI_OPT_DRAFT_STEPS}, \
	{"draft-tokens", required_argument, NULL, CLI_OPT_DRAFT_TOKENS}

struct cli_spec {
	int on;               /* --speculate given */
	long steps, tokens;   /* their values; 0: not given (see cli_spec_settings) */
};

/* Takes option opt with its value arg into sp if it is one of them:
 * returns 1, else 0. */
int cli_spec_option(struct cli_spec *sp, int opt, const char *arg);

/* Sets sp's tokens and steps to the engine's draft_tokens and draft_steps
 * (ouro_engine_opts) for a run of T loops: 0 and 1 without --speculate,
 * else K (default 4) and S (default 1); draft options without
 * --speculate, or S >= T, are usage errors. */
void cli_spec_settings(struct cli_spec *sp, long T);

/* The defaults of those options: greedy, no filter, seed 0. */
void cli_sampler_defaults(struct ouro_sampler_opts *s);

/* Takes option opt (a getopt code) with its value arg into s if it is one
 * of them: returns 1, else 0. */
int cli_sampler_option(struct ouro_sampler_opts *s, int opt, const char *arg);

/* The ids that end a generation: the config's eos_token_id and, with a
 * tokenizer, <|im_end|> and <|endoftext|>, each once, into stop [3];
 * returns how many. */
int cli_stop_ids(const struct ouro_config *c, const struct ouro_tok *tok, int32_t stop[3]);

/* --shard K/N: *k and *n with 0 <= K < N <= 2^30, else a usage error. */
void cli_shard(const char *s, long *k, long *n);

/* The shortest decimal form of v that reads back as v. */
void cli_format_double(char *buf, size_t len, double v);

/* A progress line on stderr: examples done of total, tokens/s, ETA. */
struct cli_progress {
	int on;              /* stderr is a terminal */
	double t0, last;     /* the start, the last update (cli_now) */
	int64_t total;
};

/* Redraws the line (at most 5 times a second, unless final; final ends
 * it with a newline). */
void cli_progress_show(struct cli_progress *p, int64_t done, int64_t tokens, int final);

/* Seconds on the monotonic clock. */
double cli_now(void);

/* Sets the thread count from an option value, else $OURO_THREADS, else
 * leaves the default (all cores). */
void cli_threads(const char *opt);

/* Opens the program's output at path ("-" or NULL: stdout) or dies;
 * returns its name for messages. */
const char *cli_output_open(struct ouro_output **o, FILE **f,
			       const char *path);

/* Ends the program's output: after a failure rc it is discarded and the
 * program dies, else it is committed. Returns the exit status, 0. */
int cli_output_end(struct ouro_output *o, int rc);

/* The input operands argv[optind..argc), or "-" (stdin) if there are
 * none; *n gets their count. */
char **cli_inputs(int argc, char **argv, int *n);

/* The token sequences of all the inputs, one input after the other. */
struct cli_seqs {
	char **inputs;
	int ninputs, next;
	struct ouro_seq_reader *in;   /* the input being read, or NULL */
};

void cli_seqs_open(struct cli_seqs *s, int argc, char **argv);

/* The next sequence of the inputs, as ouro_seq_next gives it (s->in is
 * the input it came from, for ouro_seq_where); *ids is NULL after the
 * last. */
int cli_seqs_next(struct cli_seqs *s, const int32_t **ids, int64_t *n,
		   const struct ouro_st **rec);

void cli_seqs_close(struct cli_seqs *s);

/* The prompt in the operands argv[optind..argc): appended to text,
 * separated by blanks. */
int cli_prompt_args(int argc, char **argv, struct ouro_bytes *text);

/* The prompt on stdin: the rest of f appended to text, less one final
 * newline. */
int cli_prompt_stdin(FILE *f, struct ouro_bytes *text);

/* A prompt of token ids: the decimal ids of p[0..len), separated by blanks
 * or newlines, appended to ids. */
int cli_prompt_ids(const char *p, size_t len, struct ouro_ids *ids);

/* -v's line on speculative decoding (stderr): the acceptance rate, the
 * tokens a round, and the layer passes saved against decoding without it
 * (the loops the tokens ran, less the passes the speculating sequences
 * took part in, times the layers). */
void cli_spec_report(const struct ouro_engine_stats *st, int64_t layers);

/* Refuses to write binary records to a terminal. */
void cli_binary_stdout(const char *path);

#endif
