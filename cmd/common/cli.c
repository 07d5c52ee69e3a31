/*
 * cli.c - the helpers every ouro program shares (see cli.h), compiled
 * once and linked into each program.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

const char *progname;

void die(int status)
{
	fprintf(stderr, "%s: %s\n", progname, ouro_errmsg());
	exit(status);
}

void usage_error(const char *fmt, ...)
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

void cli_init(const char *name)
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

int cli_getopt(int argc, char **argv, const char *optstring,
	             const struct option *longopts)
{
	int c;

	opterr = 0;
	c = getopt_long(argc, argv, optstring, longopts, NULL);
	if (c == '?')
		usage_error("%s: unknown option or missing argument", argv[optind - 1]);
	return c;
}

int cli_strtod(const char *s, double *v)
{
	char *end;

	errno = 0;
	*v = strtod(s, &end);
	return !*s || *end || errno || !isfinite(*v) ? -1 : 0;
}

double cli_real(const char *s, double lo, double hi, const char *what)
{
	double v;

	if (cli_strtod(s, &v) || v < lo || v > hi)
		usage_error("%s: '%s' is not a number in %g..%g", what, s, lo, hi);
	return v;
}

long cli_long(const char *s, long lo, long hi, const char *what)
{
	long v;

	if (ouro_parse_int(s, lo, hi, &v, what))
		usage_error("%s", ouro_errmsg());
	return v;
}

int cli_strtou64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 10);
	return *s < '0' || *s > '9' || *end || errno ? -1 : 0;
}

uint64_t cli_size(const char *s, const char *what)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	errno = 0;
	v = *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
	if (*s >= '0' && *s <= '9' && !errno && end[0] && !end[1])
		shift = end[0] == 'K' ? 10 : end[0] == 'M' ? 20 : end[0] == 'G' ? 30 : -1;
	if (*s < '0' || *s > '9' || errno || (end[0] && (end[1] || shift < 0)) || v == 0 ||
	    v > (UINT64_MAX >> shift))
		usage_error("%s: '%s' is not a size (bytes, or a number with K, M or G)", what, s);
	return (uint64_t)v << shift;
}

const char *cli_exit_name(int opt, int long_names)
{
	switch (opt) {
	case 'q': return long_names ? "--threshold" : "-q";
	case 's': return long_names ? "--step" : "-s";
	case 'e': return long_names ? "--eps" : "-e";
	case 'w': return long_names ? "--weighted" : "-w";
	case CLI_OPT_KL: return "--kl";
	case CLI_OPT_ENTROPY: return "--entropy";
	default: return "--stable";
	}
}

void cli_exit_value(struct ouro_exit_rule *r, int opt, const char *arg, int long_names)
{
	const char *name = cli_exit_name(opt, long_names);

	memset(r, 0, sizeof *r);
	switch (opt) {
	case 'q':
		r->kind = OURO_EXIT_THRESHOLD;
		r->q = cli_real(arg, 0, 1, name);
		break;
	case 's':
		r->kind = OURO_EXIT_STATIC;
		r->step = (int)cli_long(arg, 0, 255, name);
		break;
	case 'e':
		r->kind = OURO_EXIT_DIFF;
		r->eps = cli_real(arg, 0, INFINITY, name);
		break;
	case CLI_OPT_KL:
		r->kind = OURO_EXIT_KL;
		r->kl = cli_real(arg, 0, INFINITY, name);
		break;
	case CLI_OPT_ENTROPY:
		r->kind = OURO_EXIT_ENTROPY;
		r->entropy = cli_real(arg, 0, INFINITY, name);
		break;
	case CLI_OPT_STABLE:
		r->kind = OURO_EXIT_STABLE;
		r->stable = (int)cli_long(arg, 2, 256, name);
		break;
	default:
		r->kind = OURO_EXIT_WEIGHTED;
		break;
	}
}

void cli_exit_option(struct ouro_exit_rule *r, int *given, int opt,
		     const char *arg, int long_names)
{
	if (*given && *given != opt)
		usage_error("%s and %s choose different exit rules; give one",
			    cli_exit_name(*given, long_names), cli_exit_name(opt, long_names));
	*given = opt;
	cli_exit_value(r, opt, arg, long_names);
}

void cli_rule_text(char *buf, size_t len, const struct ouro_exit_rule *r)
{
	static const char *const names[] = {
		[OURO_EXIT_THRESHOLD] = "threshold", [OURO_EXIT_DIFF] = "diff",
		[OURO_EXIT_KL] = "kl", [OURO_EXIT_ENTROPY] = "entropy",
	};
	char num[40];

	switch (r->kind) {
	case OURO_EXIT_STATIC:
		snprintf(buf, len, "static %d", r->step);
		break;
	case OURO_EXIT_STABLE:
		snprintf(buf, len, "stable %d", r->stable);
		break;
	case OURO_EXIT_WEIGHTED:
		snprintf(buf, len, "weighted");
		break;
	default:
		cli_format_double(num, sizeof num, r->kind == OURO_EXIT_THRESHOLD ? r->q :
				  r->kind == OURO_EXIT_DIFF ? r->eps :
				  r->kind == OURO_EXIT_KL ? r->kl : r->entropy);
		snprintf(buf, len, "%s %s", names[r->kind], num);
		break;
	}
}

void cli_sampler_defaults(struct ouro_sampler_opts *s)
{
	*s = (struct ouro_sampler_opts){.top_p = 1};
}

int cli_sampler_option(struct ouro_sampler_opts *s, int opt, const char *arg)
{
	switch (opt) {
	case CLI_OPT_TEMPERATURE: s->temperature = cli_real(arg, 0, HUGE_VAL, "--temperature"); break;
	case CLI_OPT_TOP_K: s->top_k = cli_long(arg, 0, 1L << 24, "--top-k"); break;
	case CLI_OPT_TOP_P: s->top_p = cli_real(arg, 1e-300, 1, "--top-p"); break;
	case CLI_OPT_MIN_P: s->min_p = cli_real(arg, 0, 1, "--min-p"); break;
	case CLI_OPT_SEED:
		if (cli_strtou64(arg, &s->seed))
			usage_error("--seed: '%s' is not an unsigned integer", arg);
		break;
	default: return 0;
	}
	return 1;
}

int cli_stop_ids(const struct ouro_config *c, const struct ouro_tok *tok, int32_t stop[3])
{
	int n = 0;

	if (c->eos_token_id >= 0)
		stop[n++] = (int32_t)c->eos_token_id;
	for (int i = 0; tok && i < 2; i++) {
		int32_t id = ouro_tok_piece_id(tok, i ? "<|endoftext|>" : "<|im_end|>");
		int seen = 0;
		for (int k = 0; k < n; k++)
			seen |= stop[k] == id;
		if (id >= 0 && !seen)
			stop[n++] = id;
	}
	return n;
}

void cli_shard(const char *s, long *k, long *n)
{
	char *slash = strchr(s, '/'), ks[32];

	if (!slash || (size_t)(slash - s) >= sizeof ks)
		usage_error("--shard: '%s' is not K/N", s);
	memcpy(ks, s, (size_t)(slash - s));
	ks[slash - s] = '\0';
	*n = cli_long(slash + 1, 1, 1L << 30, "--shard N");
	*k = cli_long(ks, 0, *n - 1, "--shard K");
}

void cli_format_double(char *buf, size_t len, double v)
{
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			return;
	}
}

double cli_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_threads(const char *opt)
{
	const char *v = opt ? opt : getenv("OURO_THREADS");

	if (!v || !*v)
		return;
	ouro_set_threads((int)cli_long(v, 1, 1024, opt ? "--threads" : "OURO_THREADS"));
}

const char *cli_output_open(struct ouro_output **o, FILE **f,
			       const char *path)
{
	int rc;

	if ((rc = ouro_output_open(o, f, path)))
		die(rc);
	return path && strcmp(path, "-") ? path : "stdout";
}

int cli_output_end(struct ouro_output *o, int rc)
{
	if (rc) {
		ouro_output_abort(o);
		die(rc);
	}
	if ((rc = ouro_output_commit(o)))
		die(rc);
	return 0;
}

char **cli_inputs(int argc, char **argv, int *n)
{
	static char *stdin_only[] = {"-"};

	*n = optind < argc ? argc - optind : 1;
	return optind < argc ? argv + optind : stdin_only;
}

void cli_seqs_open(struct cli_seqs *s, int argc, char **argv)
{
	s->inputs = cli_inputs(argc, argv, &s->ninputs);
	s->next = 0;
	s->in = NULL;
}

int cli_seqs_next(struct cli_seqs *s, const int32_t **ids, int64_t *n,
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

void cli_seqs_close(struct cli_seqs *s)
{
	ouro_seq_close(s->in);
	s->in = NULL;
}

int cli_prompt_args(int argc, char **argv, struct ouro_bytes *text)
{
	for (int i = optind; i < argc; i++)
		if ((i > optind && ouro_bytes_add(text, " ", 1)) ||
		    ouro_bytes_add(text, argv[i], strlen(argv[i])))
			return ouro_fail(OURO_ENOMEM, "out of memory");
	return OURO_OK;
}

int cli_prompt_stdin(FILE *f, struct ouro_bytes *text)
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

int cli_prompt_ids(const char *p, size_t len, struct ouro_ids *ids)
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

void cli_binary_stdout(const char *path)
{
	if ((!path || (path[0] == '-' && !path[1])) && isatty(1))
		usage_error("will not write binary records to a terminal; redirect stdout or use -o FILE");
}

void cli_progress_show(struct cli_progress *p, int64_t done, int64_t tokens, int final)
{
	double t = cli_now(), el = t - p->t0;
	char eta[32] = "--:--";
	int width = 24, fill;

	if (!p->on || (!final && t - p->last < 0.2))
		return;
	p->last = t;
	if (done > 0 && p->total > done) {
		long s = (long)(el / (double)done * (double)(p->total - done) + 0.5);
		snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
	} else if (p->total <= done) {
		snprintf(eta, sizeof eta, "done");
	}
	fill = p->total ? (int)(width * done / p->total) : width;
	fprintf(stderr, "\r%s: [%.*s%*s] %lld/%lld examples, %.0f tokens/s, ETA %s \033[K", progname,
		fill, "########################", width - fill, "", (long long)done,
		(long long)p->total, el > 0 ? (double)tokens / el : 0.0, eta);
	if (final)
		fputc('\n', stderr);
	fflush(stderr);
}

int cli_spec_option(struct cli_spec *sp, int opt, const char *arg)
{
	switch (opt) {
	case CLI_OPT_SPECULATE: sp->on = 1; break;
	case CLI_OPT_DRAFT_STEPS: sp->steps = cli_long(arg, 1, OURO_MAX_STEPS - 1, "--draft-steps"); break;
	case CLI_OPT_DRAFT_TOKENS: sp->tokens = cli_long(arg, 1, OURO_MAX_DRAFT, "--draft-tokens"); break;
	default: return 0;
	}
	return 1;
}

void cli_spec_settings(struct cli_spec *sp, long T)
{
	if ((sp->steps || sp->tokens) && !sp->on)
		usage_error("--draft-steps and --draft-tokens go with --speculate");
	if (sp->on && T < 2)
		usage_error("--speculate: %ld loop, at least 2 needed", T);
	if (sp->on && sp->steps >= T)
		usage_error("--draft-steps: %ld is outside 1..%ld", sp->steps, T - 1);
	sp->tokens = sp->on ? (sp->tokens ? sp->tokens : 4) : 0;
	sp->steps = sp->steps ? sp->steps : 1;
}

void cli_spec_report(const struct ouro_engine_stats *st, int64_t layers)
{
	double rounds = st->spec_rounds ? (double)st->spec_rounds : 1;

	fprintf(stderr,
		"%s: speculation: %llu rounds, %llu of %llu drafted tokens accepted (%.1f%%), "
		"%.2f tokens a round; %lld layer passes saved (%llu passes for tokens of %llu loops; "
		"%llu verify passes of %.2f positions)\n",
		progname, (unsigned long long)st->spec_rounds, (unsigned long long)st->spec_accepted,
		(unsigned long long)st->spec_drafted,
		st->spec_drafted ? 100.0 * (double)st->spec_accepted / (double)st->spec_drafted : 0.0,
		(double)(st->spec_accepted + st->spec_rounds) / rounds,
		((long long)st->spec_loops - (long long)st->spec_passes) * (long long)layers,
		(unsigned long long)st->spec_passes, (unsigned long long)st->spec_loops,
		(unsigned long long)st->spec_vpasses,
		st->spec_vpasses ? (double)st->spec_vrows / (double)st->spec_vpasses : 0.0);
}
