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

/* Takes one exit-rule option into *r: -q Q (0..1), -s STEP (0..255),
 * -e EPS (0..inf) or -w, as opt and its value arg; long_names: messages
 * call them --threshold, --step and --eps. *given is the option that
 * chose r's kind (0: none); an option of another kind changes nothing and
 * returns -1 for the caller's usage error, else 0 (a repeat keeps the
 * last value). */
int cli_exit_option(struct ouro_exit_rule *r, int *given, int opt,
		       const char *arg, int long_names);

/* The shortest decimal form of v that reads back as v. */
void cli_format_double(char *buf, size_t len, double v);

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
