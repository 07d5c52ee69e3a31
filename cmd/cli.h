/*
 * cli.h - the few lines every ouro program shares: its name, how it dies
 * on a library failure or a usage error, and the thread-count setting.
 * Included once by each cmd/ program.
 */
#ifndef OURO_CLI_H
#define OURO_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ouro.h"

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

/* Names the program for messages. A closed output pipe ends the program
 * quietly by SIGPIPE even if the parent ignored the signal. */
__attribute__((unused)) static void cli_init(const char *name)
{
	progname = name;
	signal(SIGPIPE, SIG_DFL);
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

/* Sets the thread count from an option value, else $OURO_THREADS, else
 * leaves the default (all cores). */
__attribute__((unused)) static void cli_threads(const char *opt)
{
	const char *v = opt ? opt : getenv("OURO_THREADS");
	long n;

	if (!v || !*v)
		return;
	if (ouro_parse_int(v, 1, 1024, &n, opt ? "--threads" : "OURO_THREADS"))
		usage_error("%s", ouro_errmsg());
	ouro_set_threads((int)n);
}

/* Refuses to write binary records to a terminal. */
__attribute__((unused)) static void cli_binary_stdout(const char *path)
{
	if ((!path || (path[0] == '-' && !path[1])) && isatty(1))
		usage_error("will not write binary records to a terminal; redirect stdout or use -o FILE");
}

#endif
