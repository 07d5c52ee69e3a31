/*
 * cli.h - the few lines every ouro program shares: its name, how it dies
 * on a library failure or a usage error, strict parsing of option values
 * and of the exit-rule options, the thread-count setting, the inputs and
 * the atomic output, and the prompt of ouro-generate and ouro-lens.
 * Included once by each cmd/ program.
 */
#ifndef OURO_CLI_H
#define OURO_CLI_H

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ouro.h"
#include "tokenizer.h"      /* ouro_bytes and ouro_ids of the prompt helpers */

static const char *progname;

/* Prints the library's last message and exits with its status. */
__attribute__((unused)) static void die(int status)
{
	fprintf(stderr, "%s: %s\n", progname, ouro_errmsg());
	exit(status);
}

/* A bad command line: one message line, exit status 2. */
__attribute__((format(printf, 1, 2))) static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(OURO_EUSAGE);
}

/* Removes the temporaries of the outputs being written, then lets the
 * signal end the program as it would have. */
static void cli_on_signal(int sig)
{
	ouro_output_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Names the program for messages. A closed output pipe ends the program
 * quietly by SIGPIPE even if the parent ignored the signal. SIGINT, SIGTERM,
 * SIGHUP (unless ignored) and SIGPIPE end it as they would, but first
 * remove the temporary files of its outputs, so an interrupted -o FILE
 * leaves the old file or none. */
__attribute__((unused)) static void cli_init(const char *name)
{
	static const int stop[] = {SIGINT, SIGTERM, SIGHUP};
	struct sigaction sa;

	progname = name;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = cli_on_signal;
	sigfillset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof stop / sizeof *stop; i++) {
		struct sigaction old;
		if (sigaction(stop[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
			sigaction(stop[i], &sa, NULL);
	}
	sigaction(SIGPIPE, &sa, NULL);
}

/* getopt_long that prints nothing itself: an unknown option or a missing
 * argument becomes one usage_error line. */
__attribute__((unused)) static int cli_getopt(int argc, char **argv, const char *optstring,
					      const struct option *longopts)
{
	int c;

	opterr = 0;
	c = getopt_long(argc, argv, optstring, longopts, NULL);
	if (c == '?')
		usage_error("%s: unknown option or missing argument", argv[optind - 1]);
	return c;
}

/* Reads all of s as one finite number (strtod's syntax): 0 and *v, or -1. */
__attribute__((unused)) static int cli_strtod(const char *s, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	return !*s || *end || errno || !isfinite(*v) ? -1 : 0;
}

/* A whole finite number in lo..hi, or a usage error naming `what`. */
__attribute__((unused)) static double cli_real(const char *s, double lo, double hi, const char *what)
{
	double v;

	if (cli_strtod(s, &v) || v < lo || v > hi)
		usage_error("%s: '%s' is not a number in %g..%g", what, s, lo, hi);
	return v;
}

/* A whole decimal integer in lo..hi, or a usage error naming `what`. */
__attribute__((unused)) static long cli_long(const char *s, long lo, long hi, const char *what)
{
	long v;

	if (ouro_parse_int(s, lo, hi, &v, what))
		usage_error("%s", ouro_errmsg());
	return v;
}

/* Reads all of s as a decimal integer in 0..2^64-1: 0 and *v, or -1. */
__attribute__((unused)) static int cli_strtou64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 10);
	return *s < '0' || *s > '9' || *end || errno ? -1 : 0;
}

/* Takes one exit-rule option into *r: -q Q (0..1), -s STEP (0..255),
 * -e EPS (0..inf) or -w, as opt and its value arg; long_names: messages
 * call them --threshold, --step and --eps. *given is the option that
 * chose r's kind (0: none); an option of another kind changes nothing and
 * returns -1 for the caller's usage error, else 0 (a repeat keeps the
 * last value). */
__attribute__((unused)) static int cli_exit_option(struct ouro_exit_rule *r, int *given, int opt,
						   const char *arg, int long_names)
{
	if (*given && *given != opt)
		return -1;
	*given = opt;
	switch (opt) {
	case 'q':
		r->kind = OURO_EXIT_THRESHOLD;
		r->q = cli_real(arg, 0, 1, long_names ? "--threshold" : "-q");
		break;
	case 's':
		r->kind = OURO_EXIT_STATIC;
		r->step = (int)cli_long(arg, 0, 255, long_names ? "--step" : "-s");
		break;
	case 'e':
		r->kind = OURO_EXIT_DIFF;
		r->eps = cli_real(arg, 0, INFINITY, long_names ? "--eps" : "-e");
		break;
	default:
		r->kind = OURO_EXIT_WEIGHTED;
		break;
	}
	return 0;
}

/* The shortest decimal form of v that reads back as v. */
__attribute__((unused)) static void cli_format_double(char *buf, size_t len, double v)
{
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

/* Seconds on the monotonic clock. */
__attribute__((unused)) static double cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Sets the thread count from an option value, else $OURO_THREADS, else
 * leaves the default (all cores). */
__attribute__((unused)) static void cli_threads(const char *opt)
{
	const char *v = opt ? opt : getenv("OURO_THREADS");

	if (!v || !*v)
		return;
	ouro_set_threads((int)cli_long(v, 1, 1024, opt ? "--threads" : "OURO_THREADS"));
}

/* Opens the program's output at path ("-" or NULL: stdout) or dies;
 * returns its name for messages. */
__attribute__((unused)) static const char *cli_output_open(struct ouro_output **o, FILE **f,
							   const char *path)
{
	int rc;

	if ((rc = ouro_output_open(o, f, path)))
		die(rc);
	return path && strcmp(path, "-") ? path : "stdout";
}

/* Ends the program's output: after a failure rc it is discarded and the
 * program dies, else it is committed. Returns the exit status, 0. */
__attribute__((unused)) static int cli_output_end(struct ouro_output *o, int rc)
{
	if (rc) {
		ouro_output_abort(o);
		die(rc);
	}
	if ((rc = ouro_output_commit(o)))
		die(rc);
	return 0;
}

/* The input operands argv[optind..argc), or "-" (stdin) if there are
 * none; *n gets their count. */
__attribute__((unused)) static char **cli_inputs(int argc, char **argv, int *n)
{
	static char *stdin_only[] = {"-"};

	*n = optind < argc ? argc - optind : 1;
	return optind < argc ? argv + optind : stdin_only;
}

/* The token sequences of all the inputs, one input after the other. */
struct cli_seqs {
	char **inputs;
	int ninputs, next;
	struct ouro_seq_reader *in;   /* the input being read, or NULL */
};

__attribute__((unused)) static void cli_seqs_open(struct cli_seqs *s, int argc, char **argv)
{
	s->inputs = cli_inputs(argc, argv, &s->ninputs);
	s->next = 0;
	s->in = NULL;
}

/* The next sequence of the inputs, as ouro_seq_next gives it (s->in is
 * the input it came from, for ouro_seq_where); *ids is NULL after the
 * last. */
__attribute__((unused)) static int cli_seqs_next(struct cli_seqs *s, const int32_t **ids, int64_t *n,
						 const struct ouro_st **rec)
{
	int rc;

	for (;;) {
		*ids = NULL;
		*rec = NULL;
		if (!s->in && s->next == s->ninputs)
			return OURO_OK;
		if (!s->in && (rc = ouro_seq_open(&s->in, s->inputs[s->next++])))
			return rc;
		if ((rc = ouro_seq_next(s->in, ids, n, rec)) || *ids)
			return rc;
		ouro_seq_close(s->in);
		s->in = NULL;
	}
}

__attribute__((unused)) static void cli_seqs_close(struct cli_seqs *s)
{
	ouro_seq_close(s->in);
	s->in = NULL;
}

/* The prompt in the operands argv[optind..argc): appended to text,
 * separated by blanks. */
__attribute__((unused)) static int cli_prompt_args(int argc, char **argv, struct ouro_bytes *text)
{
	for (int i = optind; i < argc; i++)
		if ((i > optind && ouro_bytes_add(text, " ", 1)) ||
		    ouro_bytes_add(text, argv[i], strlen(argv[i])))
			return ouro_fail(OURO_ENOMEM, "out of memory");
	return OURO_OK;
}

/* The prompt on stdin: the rest of f appended to text, less one final
 * newline. */
__attribute__((unused)) static int cli_prompt_stdin(FILE *f, struct ouro_bytes *text)
{
	char buf[65536];
	size_t got;

	while ((got = fread(buf, 1, sizeof buf, f)) > 0)
		if (ouro_bytes_add(text, buf, got))
			return ouro_fail(OURO_ENOMEM, "stdin: out of memory");
	if (ferror(f))
		return ouro_fail(OURO_ESYS, "stdin: read error: %s", strerror(errno));
	if (text->n && text->p[text->n - 1] == '\n')
		text->n--;
	return OURO_OK;
}

/* A prompt of token ids: the decimal ids of p[0..len), separated by blanks
 * or newlines, appended to ids. */
__attribute__((unused)) static int cli_prompt_ids(const char *p, size_t len, struct ouro_ids *ids)
{
	size_t i = 0;

	while (i < len) {
		unsigned long v = 0;
		size_t start;

		while (i < len && strchr(" \t\r\n", p[i]))
			i++;
		if (i == len)
			break;
		for (start = i; i < len && p[i] >= '0' && p[i] <= '9' && v <= INT32_MAX; i++)
			v = v * 10 + (unsigned long)(p[i] - '0');
		if (i == start || v > INT32_MAX || (i < len && !strchr(" \t\r\n", p[i]))) {
			size_t w = start;
			while (w < len && w - start < 40 && !strchr(" \t\r\n", p[w]))
				w++;
			return ouro_fail(OURO_EINPUT, "prompt: '%.*s' is not a token id", (int)(w - start),
					 p + start);
		}
		if (ouro_ids_push(ids, (int32_t)v))
			return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	return OURO_OK;
}

/* Refuses to write binary records to a terminal. */
__attribute__((unused)) static void cli_binary_stdout(const char *path)
{
	if ((!path || (path[0] == '-' && !path[1])) && isatty(1))
		usage_error("will not write binary records to a terminal; redirect stdout or use -o FILE");
}

#endif
