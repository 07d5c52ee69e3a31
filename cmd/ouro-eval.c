/*
 * ouro-eval - how good a looped model is at every loop step and under
 * every exit rule: per-loop perplexity (ppl) and multiple-choice accuracy
 * (choice), the curves of the Ouro paper, and the merge of sharded runs.
 *
 * Each example (a document, or a question with its choices) is scored
 * with one batched forward pass per window (libouro/eval.c) that keeps the
 * state of every loop, so every loop count 1..T comes from one pass of T
 * loops, not from T separate runs. Per example the program reduces the
 * scores to a fixed set of sums; the report is a function of the summed
 * sums alone. Sums of losses are kept as integers
 * in units of 2^-28 nats (each example's double sum rounded once), so
 * adding them is exact and order-free: shards merged, or a run resumed
 * from its log, give byte for byte the report of one uninterrupted run.
 *
 * The layout of the sums, the report, the log and the rules of
 * lm-evaluation-harness that decide what is scored are described in
 * ouro-eval(1).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "eval.h"           /* the scorer, rolling windows, request encoding */
#include "tokenizer.h"

#define MAX_RULES 64
#define FIX_SCALE 268435456.0        /* 2^28 fixed-point units per nat */
#define FIX_LIMIT 4611686018427387904.0   /* 2^62: bound on one fixed value */
#define REPORT_FORMAT "ouro-eval report"
#define LOG_FORMAT "ouro-eval log"
#define FORMAT_VERSION 1
#define JSON_OUT (JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12))
#define JSON_LINE (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17))

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-eval ppl [-m DIR] [--gate FILE] [-T STEPS] [-q Q,...] [-e EPS,...]\n"
		"                 [--beta B] [-W TOKENS] [--context TOKENS] [--prefix-token ID]\n"
		"                 [-f auto|text|jsonl|ids] [--field NAME] [--per-token FILE]\n"
		"                 [--limit N] [--shard K/N] [--log FILE [--resume]] [--table]\n"
		"                 [--plot FILE] [-j THREADS] [-v] [-o FILE] [FILE ...]\n"
		"       ouro-eval choice [-m DIR] [--gate FILE] [-T STEPS] [-q Q,...] [-e EPS,...]\n"
		"                 [-W TOKENS] [--prefix-token ID] [--limit N] [--shard K/N]\n"
		"                 [--log FILE [--resume]] [--table] [--plot FILE] [-j THREADS]\n"
		"                 [-v] [-o FILE] [FILE ...]\n"
		"       ouro-eval merge [--table] [--plot FILE] [-o FILE] REPORT ...\n"
		"Per-loop perplexity and multiple-choice accuracy at every loop and exit rule.\n"
		"\n"
		"  -m, --model DIR        model directory (default: $OURO_MODEL, else the bundled model)\n"
		"      --gate FILE        exit gate weights from FILE (ouro-gate train) instead of the model's\n"
		"  -T, --steps STEPS      loops (default: total_ut_steps of config.json)\n"
		"  -q, --threshold Q,...  exit rules: first loop whose exit CDF reaches Q, 0..1\n"
		"  -e, --eps EPS,...      exit rules: first loop t >= 2 with ||h[t] - h[t-1]|| < EPS\n"
		"      --beta B           entropy weight of the Stage I objective (default 0.1)\n"
		"  -W, --window TOKENS    most input tokens per forward pass\n"
		"                         (default: max_position_embeddings)\n"
		"      --context TOKENS   ppl: least context of a rolling window (default 1)\n"
		"      --prefix-token ID  token before a document or an empty context\n"
		"                         (default: bos_token_id, else eos_token_id)\n"
		"  -f, --format FORMAT    ppl input: text (a file is a document), jsonl (a line is\n"
		"                         one), ids (a line of token ids is one); auto: jsonl for\n"
		"                         *.jsonl and *.json, else text (default auto)\n"
		"      --field NAME       ppl: the JSONL field holding the text (default text)\n"
		"      --per-token FILE   ppl: write every window's tokens, hidden and step_loss\n"
		"                         as records (the input of ouro-gate train)\n"
		"      --limit N          only the first N examples\n"
		"      --shard K/N        only examples i with i mod N = K (0 <= K < N)\n"
		"      --log FILE         append each example's result to FILE (JSON lines)\n"
		"      --resume           continue the run that FILE of --log records\n"
		"      --table            print a table for people instead of the JSON report\n"
		"      --plot FILE        draw the per-loop and accuracy-vs-loops curves as SVG\n"
		"  -j, --threads N        threads (default: $OURO_THREADS, else all cores)\n"
		"  -v, --verbose          print the throughput to stderr at the end\n"
		"  -o, --output FILE      write the JSON report to FILE (atomically)\n"
		"  -h, --help             show this help\n"
		"\n"
		"ppl input: text, JSONL ({\"text\": ...} or a JSON string per line) or token ids.\n"
		"choice input: JSONL, {\"context\": C, \"choices\": [...], \"gold\": I} per line\n"
		"(optional \"delimiter\" before each choice), or {\"contexts\": [...],\n"
		"\"continuation\": S, \"gold\": I}. merge: the reports of --shard K/N runs.\n");
}

/* ---- small helpers ------------------------------------------------------ */

/* A JSON number, or null when v is not finite (JSON has no inf/nan). */
static json_t *jreal(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

/* Reads the rest of f into a NUL-terminated buffer and closes f (unless
 * it is stdin); name is f's name in messages. */
static int slurp_stream(FILE *f, const char *name, char **buf, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char *p;

	*buf = NULL;
	*len = 0;
	if (!(p = malloc(cap))) {
		if (f != stdin)
			fclose(f);
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", name);
	}
	for (;;) {
		if (cap - n < 2) {
			char *q = cap < ((size_t)1 << 40) ? realloc(p, cap * 2) : NULL;
			if (!q) {
				free(p);
				if (f != stdin)
					fclose(f);
				return ouro_fail(OURO_ENOMEM, "%s: out of memory", name);
			}
			p = q;
			cap *= 2;
		}
		size_t got = fread(p + n, 1, cap - n - 1, f);
		n += got;
		if (got == 0)
			break;
	}
	int err = ferror(f) ? errno : 0;
	if (f != stdin)
		fclose(f);
	if (err) {
		free(p);
		return ouro_fail(err == EISDIR ? OURO_EINPUT : OURO_ESYS, "%s: %s", name, strerror(err));
	}
	p[n] = '\0';
	*buf = p;
	*len = n;
	return OURO_OK;
}

/* Reads a whole input ("-": stdin; a file, a pipe) into a NUL-terminated
 * buffer. */
static int slurp(const char *path, char **buf, size_t *len)
{
	const char *name = ouro_input_name(path);
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");

	if (!f) {
		*buf = NULL;
		*len = 0;
		return ouro_fail(OURO_EINPUT, "%s: %s", name, strerror(errno));
	}
	return slurp_stream(f, name, buf, len);
}

/* ---- the sums ------------------------------------------------------------
 * Each task has a fixed list of sums; a field is one number, one per loop
 * or one per exit rule. Fixed-point fields hold nats in units of
 * 2^-28, the others counts. */

enum per { SCALAR, PER_LOOP, PER_RULE };

struct field {
	const char *name;
	enum per per;
	int fixed;
};

enum task { TASK_PPL, TASK_CHOICE };

enum { P_EXAMPLES, P_TOKENS, P_BYTES, P_WORDS, P_NLL, P_ENTROPY, P_EXP_NLL, P_EXP_LOOPS,
       P_RULE_NLL, P_RULE_LOOPS, P_NFIELDS };
static const struct field ppl_fields[P_NFIELDS] = {
	{"examples", SCALAR, 0}, {"tokens", SCALAR, 0}, {"bytes", SCALAR, 0},
	{"words", SCALAR, 0}, {"nll", PER_LOOP, 1}, {"entropy", SCALAR, 1},
	{"expected_nll", SCALAR, 1}, {"expected_loops", SCALAR, 1},
	{"rule_nll", PER_RULE, 1}, {"rule_loops", PER_RULE, 0},
};

enum { C_EXAMPLES, C_TOKENS, C_ACC, C_ACC_NORM, C_GREEDY, C_GOLD_LL, C_RULE_ACC,
       C_RULE_ACC_NORM, C_RULE_GREEDY, C_RULE_GOLD_LL, C_RULE_LOOPS, C_NFIELDS };
static const struct field choice_fields[C_NFIELDS] = {
	{"examples", SCALAR, 0}, {"tokens", SCALAR, 0}, {"acc", PER_LOOP, 0},
	{"acc_norm", PER_LOOP, 0}, {"greedy", PER_LOOP, 0}, {"gold_ll", PER_LOOP, 1},
	{"rule_acc", PER_RULE, 0}, {"rule_acc_norm", PER_RULE, 0},
	{"rule_greedy", PER_RULE, 0}, {"rule_gold_ll", PER_RULE, 1},
	{"rule_loops", PER_RULE, 0},
};

struct layout {
	const struct field *f;
	int nfields, T, R;
	int off[16], len[16];
	int total;
};

static void layout_init(struct layout *L, enum task task, int T, int R)
{
	L->f = task == TASK_PPL ? ppl_fields : choice_fields;
	L->nfields = task == TASK_PPL ? P_NFIELDS : C_NFIELDS;
	L->T = T;
	L->R = R;
	L->total = 0;
	for (int i = 0; i < L->nfields; i++) {
		L->off[i] = L->total;
		L->len[i] = L->f[i].per == SCALAR ? 1 : L->f[i].per == PER_LOOP ? T : R;
		L->total += L->len[i];
	}
}

/* One example's sums: doubles, rounded once into integers by fix(). */
static int fix(const struct layout *L, const double *d, int64_t *out, const char *where)
{
	for (int i = 0; i < L->nfields; i++)
		for (int k = 0; k < L->len[i]; k++) {
			double v = d[L->off[i] + k] * (L->f[i].fixed ? FIX_SCALE : 1.0);
			if (!isfinite(v) || fabs(v) >= FIX_LIMIT)
				return ouro_fail(OURO_EINPUT, "%s: %s is %g, which is not finite or too large to sum",
						 where, L->f[i].name, d[L->off[i] + k]);
			out[L->off[i] + k] = (int64_t)llround(v);
		}
	return OURO_OK;
}

static int sums_add(const struct layout *L, int64_t *acc, const int64_t *v, const char *where)
{
	for (int i = 0; i < L->total; i++)
		if (__builtin_add_overflow(acc[i], v[i], &acc[i]))
			return ouro_fail(OURO_EINPUT, "%s: the sums overflow 64 bits", where);
	return OURO_OK;
}

static json_t *sums_json(const struct layout *L, const int64_t *v)
{
	json_t *o = json_object();

	for (int i = 0; i < L->nfields; i++) {
		json_t *x;
		if (L->f[i].per == SCALAR) {
			x = json_integer(v[L->off[i]]);
		} else {
			x = json_array();
			for (int k = 0; k < L->len[i]; k++)
				json_array_append_new(x, json_integer(v[L->off[i] + k]));
		}
		json_object_set_new(o, L->f[i].name, x);
	}
	return o;
}

/* Reads sums written by sums_json, checking every field and length. */
static int sums_parse(const struct layout *L, json_t *o, int64_t *v, const char *where)
{
	if (!json_is_object(o))
		return ouro_fail(OURO_EINPUT, "%s: \"sums\" is not an object", where);
	if ((int)json_object_size(o) != L->nfields)
		return ouro_fail(OURO_EINPUT, "%s: \"sums\" has %d fields, expected %d",
				 where, (int)json_object_size(o), L->nfields);
	for (int i = 0; i < L->nfields; i++) {
		json_t *x = json_object_get(o, L->f[i].name);
		if (L->f[i].per == SCALAR) {
			if (!json_is_integer(x))
				return ouro_fail(OURO_EINPUT, "%s: sums.%s is missing or not an integer", where, L->f[i].name);
			v[L->off[i]] = json_integer_value(x);
			continue;
		}
		if (!json_is_array(x) || (int)json_array_size(x) != L->len[i])
			return ouro_fail(OURO_EINPUT, "%s: sums.%s is not an array of %d integers",
					 where, L->f[i].name, L->len[i]);
		for (int k = 0; k < L->len[i]; k++) {
			json_t *e = json_array_get(x, (size_t)k);
			if (!json_is_integer(e))
				return ouro_fail(OURO_EINPUT, "%s: sums.%s[%d] is not an integer", where, L->f[i].name, k);
			v[L->off[i] + k] = json_integer_value(e);
		}
	}
	return OURO_OK;
}

/* ---- options ------------------------------------------------------------- */

enum format { FMT_AUTO, FMT_TEXT, FMT_JSONL, FMT_IDS };
static const char *const format_names[] = {"auto", "text", "jsonl", "ids"};

struct opts {
	enum task task;
	const char *model_dir, *gate_file, *outpath, *plot, *log, *per_token, *threads;
	const char *field;
	enum format format;
	int table, resume, verbose;
	long steps, window, context, prefix, limit;
	double beta;
	struct ouro_exit_rule rules[MAX_RULES];
	int nrules;
	long shard_k, shard_n;    /* shard_n 0: the whole input */
	char **inputs;
	int ninputs;
};

/* Appends the rules of a comma-separated list of -q or -e values. */
static void add_rules(struct opts *o, const char *list, enum ouro_exit_kind kind)
{
	const char *p = list;
	char item[64];

	for (;;) {
		size_t len = strcspn(p, ",");
		if (len == 0 || len >= sizeof item)
			usage_error("%s: '%s' is not a comma-separated list of numbers",
				    kind == OURO_EXIT_THRESHOLD ? "--threshold" : "--eps", list);
		if (o->nrules == MAX_RULES)
			usage_error("more than %d exit rules", MAX_RULES);
		memcpy(item, p, len);
		item[len] = '\0';
		struct ouro_exit_rule *r = &o->rules[o->nrules++];
		memset(r, 0, sizeof *r);
		r->kind = kind;
		if (kind == OURO_EXIT_THRESHOLD)
			r->q = cli_real(item, 0, 1, "--threshold");
		else
			r->eps = cli_real(item, 0, INFINITY, "--eps");
		if (!p[len])
			break;
		p += len + 1;
	}
}

static void rule_text(char *buf, size_t len, const struct ouro_exit_rule *r)
{
	char num[40];

	cli_format_double(num, sizeof num, r->kind == OURO_EXIT_THRESHOLD ? r->q : r->eps);
	snprintf(buf, len, "%s %s", r->kind == OURO_EXIT_THRESHOLD ? "threshold" : "diff", num);
}

static void parse_shard(struct opts *o, const char *s)
{
	char *slash = strchr(s, '/'), k[32];

	if (!slash || (size_t)(slash - s) >= sizeof k)
		usage_error("--shard: '%s' is not K/N", s);
	memcpy(k, s, (size_t)(slash - s));
	k[slash - s] = '\0';
	o->shard_n = cli_long(slash + 1, 1, 1L << 30, "--shard N");
	o->shard_k = cli_long(k, 0, o->shard_n - 1, "--shard K");
}

static void parse_run_options(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"gate", required_argument, NULL, 'G'},
		{"steps", required_argument, NULL, 'T'},
		{"threshold", required_argument, NULL, 'q'},
		{"eps", required_argument, NULL, 'e'},
		{"beta", required_argument, NULL, 'B'},
		{"window", required_argument, NULL, 'W'},
		{"context", required_argument, NULL, 'C'},
		{"prefix-token", required_argument, NULL, 'P'},
		{"format", required_argument, NULL, 'f'},
		{"field", required_argument, NULL, 'F'},
		{"per-token", required_argument, NULL, 'K'},
		{"limit", required_argument, NULL, 'L'},
		{"shard", required_argument, NULL, 'S'},
		{"log", required_argument, NULL, 'l'},
		{"resume", no_argument, NULL, 'r'},
		{"table", no_argument, NULL, 't'},
		{"plot", required_argument, NULL, 'p'},
		{"threads", required_argument, NULL, 'j'},
		{"verbose", no_argument, NULL, 'v'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, ppl = o->task == TASK_PPL;

	o->beta = 0.1;
	o->context = 1;
	o->prefix = -1;
	o->limit = -1;
	o->field = "text";
	while ((c = cli_getopt(argc, argv, "m:T:q:e:W:f:j:vo:h", longopts)) != -1) {
		switch (c) {
		case 'm': o->model_dir = optarg; break;
		case 'G': o->gate_file = optarg; break;
		case 'T': o->steps = cli_long(optarg, 1, OURO_MAX_STEPS, "--steps"); break;
		case 'q': add_rules(o, optarg, OURO_EXIT_THRESHOLD); break;
		case 'e': add_rules(o, optarg, OURO_EXIT_DIFF); break;
		case 'B': o->beta = cli_real(optarg, 0, 1e6, "--beta"); break;
		case 'W': o->window = cli_long(optarg, 1, 1L << 24, "--window"); break;
		case 'C': o->context = cli_long(optarg, 1, 1L << 24, "--context"); break;
		case 'P': o->prefix = cli_long(optarg, 0, INT32_MAX, "--prefix-token"); break;
		case 'f':
			for (o->format = FMT_AUTO; o->format <= FMT_IDS; o->format++)
				if (strcmp(optarg, format_names[o->format]) == 0)
					break;
			if (o->format > FMT_IDS)
				usage_error("--format: '%s' is not auto, text, jsonl or ids", optarg);
			break;
		case 'F': o->field = optarg; break;
		case 'K': o->per_token = optarg; break;
		case 'L': o->limit = cli_long(optarg, 0, LONG_MAX, "--limit"); break;
		case 'S': parse_shard(o, optarg); break;
		case 'l': o->log = optarg; break;
		case 'r': o->resume = 1; break;
		case 't': o->table = 1; break;
		case 'p': o->plot = optarg; break;
		case 'j': o->threads = optarg; break;
		case 'v': o->verbose = 1; break;
		case 'o': o->outpath = optarg; break;
		case 'h': usage(stdout); exit(0);
		}
	}
	if (!ppl) {
		const char *only = o->per_token ? "--per-token" : o->format != FMT_AUTO ? "--format"
				   : strcmp(o->field, "text") ? "--field" : o->context != 1 ? "--context" : NULL;
		if (only)
			usage_error("%s applies to ppl only", only);
	}
	if (o->resume && !o->log)
		usage_error("--resume needs --log FILE");
	if (o->resume && o->per_token)
		usage_error("--per-token cannot be resumed; run without --resume or without --per-token");
	if (o->per_token)
		cli_binary_stdout(o->per_token);
	o->inputs = cli_inputs(argc, argv, &o->ninputs);
}

/* ---- examples ------------------------------------------------------------ */

/* One loglikelihood request: a context and a continuation. */
struct pair {
	const char *ctx, *cont;    /* into the example's strings */
	size_t ctx_len, cont_len;
	int64_t chars;             /* length of the choice for acc_norm */
	struct ouro_ids cids, kids;  /* tokens of context and continuation */
};

struct example {
	char where[300];           /* "FILE: line N" or "FILE" */
	/* ppl */
	const char *text;
	size_t len;
	struct ouro_ids ids;
	/* choice */
	int npairs, gold;
	struct pair *pairs;
	char *strings;             /* owns the texts of pairs */
};

struct corpus {
	struct example *ex;
	int64_t n, cap;
	char **bufs;               /* file contents the examples point into */
	int nbufs;
};

static struct example *corpus_add(struct corpus *c)
{
	if (c->n == c->cap) {
		int64_t cap = c->cap ? c->cap * 2 : 64;
		struct example *ex = realloc(c->ex, (size_t)cap * sizeof *ex);
		if (!ex)
			return NULL;
		c->ex = ex;
		c->cap = cap;
	}
	memset(&c->ex[c->n], 0, sizeof c->ex[c->n]);
	return &c->ex[c->n++];
}

static void corpus_free(struct corpus *c)
{
	for (int64_t i = 0; i < c->n; i++) {
		struct example *e = &c->ex[i];
		ouro_ids_free(&e->ids);
		for (int k = 0; e->pairs && k < e->npairs; k++) {
			ouro_ids_free(&e->pairs[k].cids);
			ouro_ids_free(&e->pairs[k].kids);
		}
		free(e->pairs);
		free(e->strings);
	}
	for (int i = 0; i < c->nbufs; i++)
		free(c->bufs[i]);
	free(c->bufs);
	free(c->ex);
}

/* Parses one JSONL line; blank lines give *out NULL. */
static int json_line(const char *line, size_t len, const char *where, json_t **out)
{
	json_error_t err;
	size_t i = 0;

	*out = NULL;
	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
		i++;
	if (i == len)
		return OURO_OK;
	if (!(*out = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err)))
		return ouro_fail(OURO_EINPUT, "%s: not valid JSON: %s (column %d)", where, err.text, err.column);
	return OURO_OK;
}

/* The lines of a file's contents buf[0..len), one after the other. */
struct lines {
	char *buf;
	size_t len, pos;
	const char *name;     /* the file, for messages */
	long lineno;
	char where[300];      /* "NAME: line N" of the current line */
};

/* The next line, without its newline, in *line [*n]; 0 at the end. */
static int next_line(struct lines *L, char **line, size_t *n)
{
	if (L->pos >= L->len)
		return 0;
	char *nl = memchr(L->buf + L->pos, '\n', L->len - L->pos);
	size_t end = nl ? (size_t)(nl - L->buf) : L->len;

	*line = L->buf + L->pos;
	*n = end - L->pos;
	L->pos = end + 1;
	L->lineno++;
	snprintf(L->where, sizeof L->where, "%s: line %ld", L->name, L->lineno);
	return 1;
}

/* The next line that is not blank, parsed as JSON; *out NULL at the end. */
static int next_json(struct lines *L, json_t **out)
{
	char *line;
	size_t n;
	int rc;

	*out = NULL;
	while (next_line(L, &line, &n))
		if ((rc = json_line(line, n, L->where, out)) || *out)
			return rc;
	return OURO_OK;
}

static int ppl_add_jsonl(struct corpus *c, const char *name, char *buf, size_t len, const char *field)
{
	struct lines L = {.buf = buf, .len = len, .name = name};
	json_t *j, *t;
	int rc;

	while (!(rc = next_json(&L, &j)) && j) {
		t = json_is_object(j) ? json_object_get(j, field) : j;
		if (!json_is_string(t)) {
			json_decref(j);
			return ouro_fail(OURO_EINPUT, "%s: expected a JSON string or an object with a string \"%s\"",
					 L.where, field);
		}
		struct example *e = corpus_add(c);
		char *s = e ? malloc(json_string_length(t) + 1) : NULL;
		if (!s) {
			json_decref(j);
			return ouro_fail(OURO_ENOMEM, "%s: out of memory", L.where);
		}
		memcpy(s, json_string_value(t), json_string_length(t) + 1);
		e->strings = s;
		e->text = s;
		e->len = json_string_length(t);
		snprintf(e->where, sizeof e->where, "%s", L.where);
		json_decref(j);
	}
	return rc;
}

static int ppl_add_ids(struct corpus *c, const char *name, char *buf, size_t len, int64_t V)
{
	struct lines L = {.buf = buf, .len = len, .name = name};
	char *line;
	size_t n;

	while (next_line(&L, &line, &n)) {
		struct example *e = NULL;

		line[n] = '\0';
		for (char *p = line;;) {
			while (*p == ' ' || *p == '\t' || *p == '\r')
				p++;
			if (!*p)
				break;
			char *q;
			errno = 0;
			long v = strtol(p, &q, 10);
			if (*p < '0' || *p > '9' || errno || v >= V || (*q && *q != ' ' && *q != '\t' && *q != '\r'))
				return ouro_fail(OURO_EINPUT, "%s: '%.*s' is not a token id in 0..%lld", L.where,
						 (int)strcspn(p, " \t\r"), p, (long long)V - 1);
			if (!e && !(e = corpus_add(c)))
				return ouro_fail(OURO_ENOMEM, "%s: out of memory", L.where);
			if (ouro_ids_push(&e->ids, (int32_t)v))
				return cli_refail(OURO_ENOMEM, L.where);
			p = q;
		}
		if (e)
			snprintf(e->where, sizeof e->where, "%s", L.where);
	}
	return OURO_OK;
}

/* Copies the strings of one choice example into one buffer. */
static int choice_strings(struct example *e, const char **ctx, const size_t *clen,
			  const char **cont, const size_t *nlen, const char *delim, size_t dlen)
{
	size_t total = 0;

	for (int k = 0; k < e->npairs; k++)
		total += clen[k] + dlen + nlen[k] + 2;
	if (!(e->strings = malloc(total + 1)) || !(e->pairs = calloc((size_t)e->npairs, sizeof *e->pairs)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", e->where);
	char *p = e->strings;
	for (int k = 0; k < e->npairs; k++) {
		struct pair *q = &e->pairs[k];
		q->ctx = p;
		memcpy(p, ctx[k], clen[k]);
		q->ctx_len = clen[k];
		p += clen[k];
		*p++ = '\0';
		q->cont = p;
		memcpy(p, delim, dlen);
		memcpy(p + dlen, cont[k], nlen[k]);
		q->cont_len = dlen + nlen[k];
		q->chars = ouro_utf8_length(cont[k], nlen[k]);
		p += q->cont_len;
		*p++ = '\0';
	}
	return OURO_OK;
}

/* A string member, or an error naming it. */
static int get_string(json_t *o, const char *key, const char *where, int required, json_t **out)
{
	*out = json_object_get(o, key);
	if (!*out && !required)
		return OURO_OK;
	if (!*out)
		return ouro_fail(OURO_EINPUT, "%s: no \"%s\"", where, key);
	if (!json_is_string(*out))
		return ouro_fail(OURO_EINPUT, "%s: \"%s\" is not a string", where, key);
	return OURO_OK;
}

/* Validates one choice line and adds it. */
static int choice_add(struct corpus *c, json_t *j, const char *where)
{
	json_t *ctx, *choices, *gold, *delim, *cont, *ctxs;
	int rc, many;

	if (!json_is_object(j))
		return ouro_fail(OURO_EINPUT, "%s: expected a JSON object with \"context\", \"choices\" and \"gold\"", where);
	ctxs = json_object_get(j, "contexts");
	many = ctxs != NULL;
	if (many) {
		if ((rc = get_string(j, "continuation", where, 1, &cont)))
			return rc;
		if (json_object_get(j, "context") || json_object_get(j, "choices"))
			return ouro_fail(OURO_EINPUT, "%s: \"contexts\" and \"continuation\" go without \"context\" and \"choices\"", where);
		choices = ctxs;
	} else {
		if ((rc = get_string(j, "context", where, 1, &ctx)))
			return rc;
		if (!(choices = json_object_get(j, "choices")))
			return ouro_fail(OURO_EINPUT, "%s: no \"choices\"", where);
	}
	const char *what = many ? "contexts" : "choices";
	if ((rc = get_string(j, "delimiter", where, 0, &delim)))
		return rc;
	if (!json_is_array(choices))
		return ouro_fail(OURO_EINPUT, "%s: \"%s\" is not an array", where, what);
	size_t nc = json_array_size(choices);
	if (nc == 0)
		return ouro_fail(OURO_EINPUT, "%s: \"%s\" is empty", where, what);
	if (nc > 1000000)
		return ouro_fail(OURO_EINPUT, "%s: %zu %s are too many", where, nc, what);
	if (!(gold = json_object_get(j, "gold")))
		return ouro_fail(OURO_EINPUT, "%s: no \"gold\"", where);
	if (!json_is_integer(gold))
		return ouro_fail(OURO_EINPUT, "%s: \"gold\" is not an integer", where);
	if (json_integer_value(gold) < 0 || json_integer_value(gold) >= (json_int_t)nc)
		return ouro_fail(OURO_EINPUT, "%s: \"gold\" is %lld, outside 0..%zu for %zu %s", where,
				 (long long)json_integer_value(gold), nc - 1, nc, what);

	const char **cs = malloc(nc * sizeof *cs), **ns = malloc(nc * sizeof *ns);
	size_t *cl = malloc(nc * sizeof *cl), *nl = malloc(nc * sizeof *nl);
	struct example *e = cs && ns && cl && nl ? corpus_add(c) : NULL;
	if (!e) {
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", where);
		goto out;
	}
	snprintf(e->where, sizeof e->where, "%s", where);
	e->npairs = (int)nc;
	e->gold = (int)json_integer_value(gold);
	for (size_t k = 0; k < nc; k++) {
		json_t *s = json_array_get(choices, k);
		if (!json_is_string(s)) {
			rc = ouro_fail(OURO_EINPUT, "%s: %s[%zu] is not a string", where, what, k);
			goto out;
		}
		if (json_string_length(s) == 0 && !many) {
			rc = ouro_fail(OURO_EINPUT, "%s: choices[%zu] is empty", where, k);
			goto out;
		}
		json_t *cx = many ? s : ctx, *cn = many ? cont : s;
		cs[k] = json_string_value(cx);
		cl[k] = json_string_length(cx);
		ns[k] = json_string_value(cn);
		nl[k] = json_string_length(cn);
	}
	if (delim && json_string_length(delim) + nl[0] == 0) {
		rc = ouro_fail(OURO_EINPUT, "%s: the continuation is empty", where);
		goto out;
	}
	if (many && nl[0] == 0 && !delim) {
		rc = ouro_fail(OURO_EINPUT, "%s: \"continuation\" is empty", where);
		goto out;
	}
	rc = choice_strings(e, cs, cl, ns, nl, delim ? json_string_value(delim) : "",
			    delim ? json_string_length(delim) : 0);
out:
	free(cs);
	free(ns);
	free(cl);
	free(nl);
	return rc;
}

static int choice_add_jsonl(struct corpus *c, const char *name, char *buf, size_t len)
{
	struct lines L = {.buf = buf, .len = len, .name = name};
	json_t *j;
	int rc;

	while (!(rc = next_json(&L, &j)) && j) {
		rc = choice_add(c, j, L.where);
		json_decref(j);
		if (rc)
			return rc;
	}
	return rc;
}

static enum format format_of(const struct opts *o, const char *path)
{
	size_t n = strlen(path);

	if (o->format != FMT_AUTO)
		return o->format;
	if ((n > 6 && strcmp(path + n - 6, ".jsonl") == 0) || (n > 5 && strcmp(path + n - 5, ".json") == 0))
		return FMT_JSONL;
	return FMT_TEXT;
}

/* Reads and validates every input. */
static int corpus_read(struct corpus *c, const struct opts *o, int64_t V)
{
	for (int i = 0; i < o->ninputs; i++) {
		const char *path = o->inputs[i], *name = ouro_input_name(path);
		char *buf, **bufs;
		size_t len;
		int rc;

		if ((rc = slurp(path, &buf, &len)))
			return rc;
		if (!(bufs = realloc(c->bufs, (size_t)(c->nbufs + 1) * sizeof *bufs))) {
			free(buf);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		c->bufs = bufs;
		c->bufs[c->nbufs++] = buf;
		if (o->task == TASK_CHOICE) {
			rc = choice_add_jsonl(c, name, buf, len);
		} else {
			switch (format_of(o, path)) {
			case FMT_JSONL: rc = ppl_add_jsonl(c, name, buf, len, o->field); break;
			case FMT_IDS: rc = ppl_add_ids(c, name, buf, len, V); break;
			default: {
				struct example *e = corpus_add(c);
				if (!e)
					return ouro_fail(OURO_ENOMEM, "out of memory");
				snprintf(e->where, sizeof e->where, "%s", name);
				e->text = buf;
				e->len = len;
				rc = OURO_OK;
			}
			}
		}
		if (rc)
			return rc;
	}
	return OURO_OK;
}

/* Words (runs of non-blank bytes) of a text, for word perplexity. */
static int64_t count_words(const char *s, size_t len)
{
	int64_t n = 0;
	int in = 0;

	for (size_t i = 0; i < len; i++) {
		int sp = s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r');
		n += !sp && !in;
		in = !sp;
	}
	return n;
}

/* Tokenizes one example (its ids are kept for scoring). */
static int tokenize(struct example *e, struct ouro_tok *tok, enum task task, int32_t prefix,
		    int64_t window)
{
	int rc;

	if (task == TASK_PPL) {
		if (e->text && (rc = ouro_tok_encode(tok, e->text, e->len, &e->ids)))
			return cli_refail(rc, e->where);
		return OURO_OK;
	}
	for (int k = 0; k < e->npairs; k++) {
		struct pair *p = &e->pairs[k];
		if ((rc = ouro_request_encode(tok, p->ctx, p->ctx_len, p->cont, p->cont_len, prefix,
					      &p->cids, &p->kids))) {
			char where[340];
			snprintf(where, sizeof where, "%s: choice %d", e->where, k);
			return cli_refail(rc, where);
		}
		if ((int64_t)p->kids.n > window)
			return ouro_fail(OURO_EINPUT, "%s: choice %d: the continuation has %zu tokens, more than the window of %lld",
					 e->where, k, p->kids.n, (long long)window);
	}
	return OURO_OK;
}

/* ---- scoring ------------------------------------------------------------- */

struct run {
	const struct opts *o;
	struct ouro_model *m;
	struct ouro_scorer *scorer;
	struct layout L;
	int T, R;
	int64_t window;
	int32_t prefix;
	FILE *per_token;           /* NULL: none */
	const char *per_token_name;
	int32_t *buf;              /* scratch ids [cap] */
	size_t buf_cap;
	float *loss_buf;           /* scratch step_loss [T, n-1] */
	size_t loss_cap;
	int64_t input_tokens;      /* tokens through the forward pass */
};

static int grow_ids(struct run *r, size_t n)
{
	if (n <= r->buf_cap)
		return OURO_OK;
	int32_t *p = realloc(r->buf, n * sizeof *p);
	if (!p)
		return ouro_fail(OURO_ENOMEM, "out of memory for %zu token ids", n);
	r->buf = p;
	r->buf_cap = n;
	return OURO_OK;
}

/* Writes one window as a record for ouro-gate train. */
static int write_per_token(struct run *r, const struct example *e, int64_t idx,
			   const struct ouro_window *w, const int32_t *ids, const struct ouro_scores *s)
{
	int64_t n = w->len, T = r->T, D = s->D;
	size_t need = (size_t)(T * (n - 1 > 0 ? n - 1 : 0));
	char first[32], window[32];
	int rc, steps[OURO_MAX_STEPS];

	if (need > r->loss_cap) {
		float *p = realloc(r->loss_buf, need * sizeof *p);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		r->loss_buf = p;
		r->loss_cap = need;
	}
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i + 1 < n; i++)
			r->loss_buf[t * (n - 1) + i] = s->loss[t * n + i];
	for (int t = 0; t < r->T; t++)
		steps[t] = t;
	snprintf(first, sizeof first, "%lld", (long long)w->first);
	char ex[32];
	snprintf(ex, sizeof ex, "%lld", (long long)idx);
	snprintf(window, sizeof window, "%lld", (long long)w->start);

	struct ouro_record *rec = ouro_record_new();
	int64_t tshape[1] = {n}, hshape[3] = {T, n, D}, lshape[2] = {T, n - 1};
	if (!rec)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if (!(rc = ouro_record_meta(rec, "ouro.producer", "ouro-eval")) &&
	    !(rc = ouro_record_meta(rec, "ouro.model", ouro_model_dir(r->m))) &&
	    !(rc = ouro_hidden_meta(rec, steps, r->T, r->T)) &&
	    !(rc = ouro_record_meta(rec, "ouro.example", ex)) &&
	    !(rc = ouro_record_meta(rec, "ouro.source", e->where)) &&
	    !(rc = ouro_record_meta(rec, "ouro.window_start", window)) &&
	    !(rc = ouro_record_meta(rec, "ouro.scored_from", first)) &&
	    !(rc = ouro_record_add(rec, "tokens", OURO_I32, 1, tshape, ids)) &&
	    !(rc = ouro_record_add(rec, "hidden", OURO_F32, 3, hshape, s->hidden)) &&
	    !(rc = ouro_record_add(rec, "step_loss", OURO_F32, 2, lshape, r->loss_buf)))
		rc = ouro_record_write(rec, r->per_token, r->per_token_name);
	ouro_record_free(rec);
	return rc;
}

/* One document: its rolling windows, summed into d (doubles, layout L). */
static int score_document(struct run *r, const struct example *e, int64_t idx, double *d)
{
	const struct layout *L = &r->L;
	int64_t N = (int64_t)e->ids.n, nw;
	struct ouro_window *win;
	int rc = OURO_OK;

	memset(d, 0, (size_t)L->total * sizeof *d);
	d[L->off[P_EXAMPLES]] = 1;
	d[L->off[P_TOKENS]] = (double)N;
	d[L->off[P_BYTES]] = e->text ? (double)e->len : 0;
	d[L->off[P_WORDS]] = e->text ? (double)count_words(e->text, e->len) : 0;
	if (N == 0)
		return OURO_OK;
	nw = ouro_rolling_windows(N, r->window, r->o->context, NULL, 0);
	if (!(win = malloc((size_t)nw * sizeof *win)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", e->where);
	ouro_rolling_windows(N, r->window, r->o->context, win, nw);
	/* x = [prefix] + tokens */
	if ((rc = grow_ids(r, (size_t)N + 1)))
		goto out;
	r->buf[0] = r->prefix;
	memcpy(r->buf + 1, e->ids.v, (size_t)N * sizeof *r->buf);
	for (int64_t k = 0; k < nw && !rc; k++) {
		const struct ouro_window *w = &win[k];
		const int32_t *ids = r->buf + w->start;
		const struct ouro_scores *s;
		int64_t n = w->len, lo = r->per_token ? 0 : w->first;

		if ((rc = ouro_score_window(r->scorer, ids, ids + 1, n, lo, &s))) {
			rc = cli_refail(rc, e->where);
			break;
		}
		r->input_tokens += n;
		for (int64_t i = w->first; i < n; i++) {
			double ent = 0, exp_nll = 0, exp_loops = 0;
			for (int t = 0; t < r->T; t++) {
				double p = s->pdf[(int64_t)t * n + i], l = s->loss[(int64_t)t * n + i];
				d[L->off[P_NLL] + t] += l;
				if (p > 0)
					ent -= p * log(p);
				exp_nll += p * l;
				exp_loops += p * (t + 1);
			}
			d[L->off[P_ENTROPY]] += ent;
			d[L->off[P_EXP_NLL]] += exp_nll;
			d[L->off[P_EXP_LOOPS]] += exp_loops;
			for (int q = 0; q < r->R; q++) {
				int t = s->exit[(int64_t)q * n + i];
				d[L->off[P_RULE_NLL] + q] += s->loss[(int64_t)t * n + i];
				d[L->off[P_RULE_LOOPS] + q] += t + 1;
			}
		}
		if (r->per_token && (rc = write_per_token(r, e, idx, w, ids, s)))
			break;
	}
out:
	free(win);
	return rc;
}

/* The first index of the largest value (numpy's argmax). */
static int argmax(const double *v, int n)
{
	int best = 0;

	for (int k = 1; k < n; k++)
		if (v[k] > v[best])
			best = k;
	return best;
}

/* One multiple-choice example: every choice scored at every loop and
 * rule. ll [npairs, T + R] gets the log-likelihoods (for the log). */
static int score_choice(struct run *r, const struct example *e, double *d, double *ll)
{
	const struct layout *L = &r->L;
	int T = r->T, R = r->R, C = e->npairs, rc;
	int cols = T + R;
	unsigned char *greedy = malloc((size_t)C * (size_t)cols);
	double *row = malloc((size_t)C * 2 * sizeof *row);

	memset(d, 0, (size_t)L->total * sizeof *d);
	if (!greedy || !row) {
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", e->where);
		goto out;
	}
	d[L->off[C_EXAMPLES]] = 1;
	for (int c = 0; c < C; c++) {
		const struct pair *p = &e->pairs[c];
		int64_t total = (int64_t)(p->cids.n + p->kids.n);
		int64_t n = total - 1 < r->window ? total - 1 : r->window;
		int64_t start = total - 1 - n, lo = n - (int64_t)p->kids.n;
		const struct ouro_scores *s;

		/* lm-evaluation-harness: (context + continuation)[-(W+1):][:-1] */
		if ((rc = grow_ids(r, (size_t)total)))
			goto out;
		memcpy(r->buf, p->cids.v, p->cids.n * sizeof *r->buf);
		memcpy(r->buf + p->cids.n, p->kids.v, p->kids.n * sizeof *r->buf);
		if ((rc = ouro_score_window(r->scorer, r->buf + start, r->buf + start + 1, n, lo, &s))) {
			char where[340];
			snprintf(where, sizeof where, "%s: choice %d", e->where, c);
			rc = cli_refail(rc, where);
			goto out;
		}
		r->input_tokens += n;
		d[L->off[C_TOKENS]] += (double)(n - lo);
		for (int k = 0; k < cols; k++) {
			double sum = 0;
			int all = 1;
			for (int64_t i = lo; i < n; i++) {
				int t = k < T ? k : s->exit[(int64_t)(k - T) * n + i];
				sum -= s->loss[(int64_t)t * n + i];
				all &= s->greedy[(int64_t)t * n + i];
				if (k >= T)
					d[L->off[C_RULE_LOOPS] + k - T] += t + 1;
			}
			ll[c * cols + k] = sum;
			greedy[c * cols + k] = (unsigned char)all;
		}
	}
	for (int k = 0; k < cols; k++) {
		for (int c = 0; c < C; c++) {
			row[c] = ll[c * cols + k];
			row[C + c] = ll[c * cols + k] / (double)e->pairs[c].chars;
		}
		int acc = argmax(row, C) == e->gold, acc_norm = argmax(row + C, C) == e->gold;
		int g = greedy[e->gold * cols + k];
		double gll = ll[e->gold * cols + k];
		if (k < T) {
			d[L->off[C_ACC] + k] = acc;
			d[L->off[C_ACC_NORM] + k] = acc_norm;
			d[L->off[C_GREEDY] + k] = g;
			d[L->off[C_GOLD_LL] + k] = gll;
		} else {
			d[L->off[C_RULE_ACC] + k - T] = acc;
			d[L->off[C_RULE_ACC_NORM] + k - T] = acc_norm;
			d[L->off[C_RULE_GREEDY] + k - T] = g;
			d[L->off[C_RULE_GOLD_LL] + k - T] = gll;
		}
	}
	rc = OURO_OK;
out:
	free(greedy);
	free(row);
	return rc;
}

/* ---- the report ----------------------------------------------------------- */

static json_t *jget(json_t *o, const char *key)
{
	return json_object_get(o, key);
}

static double ratio(int64_t a, int64_t b, int fixed)
{
	return b > 0 ? (double)a / (fixed ? FIX_SCALE : 1.0) / (double)b : NAN;
}

/* acc's standard error as lm-evaluation-harness gives it: sqrt(p(1-p)/(n-1)). */
static double stderr_of(double p, int64_t n)
{
	return n > 1 ? sqrt(p * (1 - p) / (double)(n - 1)) : NAN;
}

/* The results of a task from its sums and configuration. */
static json_t *results(json_t *config, const struct layout *L, const int64_t *v)
{
	json_t *res = json_object(), *loops = json_array(), *rules = json_array();
	json_t *names = jget(config, "rules");
	int T = L->T, R = L->R;

#define F(idx) (v + L->off[idx])
	if (L->f == ppl_fields) {
		int64_t N = *F(P_TOKENS), B = *F(P_BYTES), Wd = *F(P_WORDS);
		double beta = json_real_value(jget(config, "beta"));

		json_object_set_new(res, "documents", json_integer(*F(P_EXAMPLES)));
		json_object_set_new(res, "tokens", json_integer(N));
		json_object_set_new(res, "bytes", json_integer(B));
		json_object_set_new(res, "words", json_integer(Wd));
		for (int t = 0; t < T; t++) {
			json_t *x = json_object();
			double nll = ratio(F(P_NLL)[t], N, 1);
			json_object_set_new(x, "loop", json_integer(t + 1));
			json_object_set_new(x, "nll", jreal(nll));
			json_object_set_new(x, "ppl", jreal(exp(nll)));
			json_object_set_new(x, "bits_per_byte", jreal(ratio(F(P_NLL)[t], B, 1) / log(2.0)));
			json_object_set_new(x, "word_ppl", jreal(exp(ratio(F(P_NLL)[t], Wd, 1))));
			json_array_append_new(loops, x);
		}
		json_t *ex = json_object();
		double ent = ratio(*F(P_ENTROPY), N, 1), enll = ratio(*F(P_EXP_NLL), N, 1);
		json_object_set_new(ex, "entropy", jreal(ent));
		json_object_set_new(ex, "expected_nll", jreal(enll));
		json_object_set_new(ex, "stage1", jreal(enll - beta * ent));
		json_object_set_new(ex, "expected_loops", jreal(ratio(*F(P_EXP_LOOPS), N, 1)));
		json_object_set_new(res, "loops", loops);
		json_object_set_new(res, "exit", ex);
		for (int q = 0; q < R; q++) {
			json_t *x = json_object();
			double nll = ratio(F(P_RULE_NLL)[q], N, 1);
			json_object_set_new(x, "rule", json_incref(json_array_get(names, (size_t)q)));
			json_object_set_new(x, "avg_loops", jreal(ratio(F(P_RULE_LOOPS)[q], N, 0)));
			json_object_set_new(x, "nll", jreal(nll));
			json_object_set_new(x, "ppl", jreal(exp(nll)));
			json_object_set_new(x, "bits_per_byte", jreal(ratio(F(P_RULE_NLL)[q], B, 1) / log(2.0)));
			json_array_append_new(rules, x);
		}
		json_object_set_new(res, "exit_rules", rules);
		return res;
	}
	int64_t E = *F(C_EXAMPLES);
	json_object_set_new(res, "examples", json_integer(E));
	json_object_set_new(res, "tokens", json_integer(*F(C_TOKENS)));
	for (int k = 0; k < T + R; k++) {
		int rule = k >= T, j = rule ? k - T : k;
		const int64_t *acc = rule ? F(C_RULE_ACC) : F(C_ACC);
		const int64_t *accn = rule ? F(C_RULE_ACC_NORM) : F(C_ACC_NORM);
		const int64_t *gr = rule ? F(C_RULE_GREEDY) : F(C_GREEDY);
		const int64_t *gll = rule ? F(C_RULE_GOLD_LL) : F(C_GOLD_LL);
		json_t *x = json_object();
		double a = ratio(acc[j], E, 0), an = ratio(accn[j], E, 0);
		if (rule) {
			json_object_set_new(x, "rule", json_incref(json_array_get(names, (size_t)j)));
			json_object_set_new(x, "avg_loops", jreal(ratio(F(C_RULE_LOOPS)[j], *F(C_TOKENS), 0)));
		} else {
			json_object_set_new(x, "loop", json_integer(k + 1));
		}
		json_object_set_new(x, "acc", jreal(a));
		json_object_set_new(x, "acc_stderr", jreal(stderr_of(a, E)));
		json_object_set_new(x, "acc_norm", jreal(an));
		json_object_set_new(x, "acc_norm_stderr", jreal(stderr_of(an, E)));
		json_object_set_new(x, "greedy", jreal(ratio(gr[j], E, 0)));
		json_object_set_new(x, "gold_ll", jreal(ratio(gll[j], E, 1)));
		json_object_set_new(x, "ppl", jreal(exp(-ratio(gll[j], E, 1))));
		json_array_append_new(rule ? rules : loops, x);
	}
#undef F
	json_object_set_new(res, "loops", loops);
	json_object_set_new(res, "exit_rules", rules);
	return res;
}

/* The whole report: configuration, shard, results and the sums they come
 * from. Merged and unsharded runs build it with this one function. */
static json_t *report_build(json_t *config, long shard_k, long shard_n, int64_t total,
			    const struct layout *L, const int64_t *v)
{
	json_t *r = json_object();

	json_object_set_new(r, "format", json_string(REPORT_FORMAT));
	json_object_set_new(r, "version", json_integer(FORMAT_VERSION));
	json_object_set_new(r, "config", json_incref(config));
	if (shard_n) {
		json_t *s = json_object();
		json_object_set_new(s, "index", json_integer(shard_k));
		json_object_set_new(s, "count", json_integer(shard_n));
		json_object_set_new(r, "shard", s);
	}
	json_object_set_new(r, "examples_total", json_integer(total));
	json_object_set_new(r, "results", results(config, L, v));
	json_object_set_new(r, "sums", sums_json(L, v));
	return r;
}

static json_t *config_build(const struct opts *o, const struct ouro_model *m, int T)
{
	json_t *c = json_object(), *rules = json_array(), *inputs = json_array();
	char text[64];

	json_object_set_new(c, "task", json_string(o->task == TASK_PPL ? "ppl" : "choice"));
	json_object_set_new(c, "model", json_string(ouro_model_dir(m)));
	json_object_set_new(c, "gate", json_string(o->gate_file ? o->gate_file : "model"));
	json_object_set_new(c, "steps", json_integer(T));
	for (int q = 0; q < o->nrules; q++) {
		rule_text(text, sizeof text, &o->rules[q]);
		json_array_append_new(rules, json_string(text));
	}
	json_object_set_new(c, "rules", rules);
	json_object_set_new(c, "window", json_integer(o->window));
	json_object_set_new(c, "prefix_token", json_integer(o->prefix));
	if (o->task == TASK_PPL) {
		json_object_set_new(c, "context", json_integer(o->context));
		json_object_set_new(c, "beta", json_real(o->beta));
		json_object_set_new(c, "format", json_string(format_names[o->format]));
		json_object_set_new(c, "field", json_string(o->field));
	}
	for (int i = 0; i < o->ninputs; i++)
		json_array_append_new(inputs, json_string(o->inputs[i]));
	json_object_set_new(c, "inputs", inputs);
	json_object_set_new(c, "limit", o->limit >= 0 ? json_integer(o->limit) : json_null());
	return c;
}

/* Checks that a report's configuration has what results() reads; fills
 * the layout. */
static int config_layout(json_t *config, struct layout *L, const char *where)
{
	json_t *task = jget(config, "task"), *steps = jget(config, "steps"), *rules = jget(config, "rules");
	int ppl;

	if (!json_is_object(config) || !json_is_string(task) ||
	    (strcmp(json_string_value(task), "ppl") && strcmp(json_string_value(task), "choice")))
		return ouro_fail(OURO_EINPUT, "%s: \"config\" lacks a task of ppl or choice", where);
	ppl = strcmp(json_string_value(task), "ppl") == 0;
	/* the table prints them */
	if (!json_is_string(jget(config, "model")) || !json_is_string(jget(config, "gate")))
		return ouro_fail(OURO_EINPUT, "%s: config.model or config.gate is not a string", where);
	if (!json_is_integer(steps) || json_integer_value(steps) < 1 || json_integer_value(steps) > OURO_MAX_STEPS)
		return ouro_fail(OURO_EINPUT, "%s: config.steps is not an integer in 1..%d", where, OURO_MAX_STEPS);
	if (!json_is_array(rules) || json_array_size(rules) > MAX_RULES)
		return ouro_fail(OURO_EINPUT, "%s: config.rules is not an array of at most %d rules", where, MAX_RULES);
	for (size_t i = 0; i < json_array_size(rules); i++)
		if (!json_is_string(json_array_get(rules, i)))
			return ouro_fail(OURO_EINPUT, "%s: config.rules[%zu] is not a string", where, i);
	if (ppl && !json_is_real(jget(config, "beta")))
		return ouro_fail(OURO_EINPUT, "%s: config.beta is not a number", where);
	layout_init(L, ppl ? TASK_PPL : TASK_CHOICE, (int)json_integer_value(steps), (int)json_array_size(rules));
	return OURO_OK;
}

/* ---- the table and the plot ---------------------------------------------- */

static double num(json_t *o, const char *key)
{
	json_t *x = jget(o, key);
	return json_is_number(x) ? json_number_value(x) : NAN;
}

static void print_num(FILE *f, double v, const char *fmt)
{
	if (isfinite(v))
		fprintf(f, fmt, v);
	else
		fprintf(f, "%*s", atoi(fmt + 1), "-");
}

/* The rest of a table row: the numbers of x named by cols, each in the
 * format after its name, separated by blanks. */
static void print_row(FILE *f, json_t *x, const char *const *cols)
{
	for (int k = 0; cols[k]; k += 2) {
		if (k)
			fputc(' ', f);
		print_num(f, num(x, cols[k]), cols[k + 1]);
	}
	fputc('\n', f);
}

static void table_print(FILE *f, json_t *report)
{
	static const char *const ppl_cols[] = {"nll", "%10.4f", "ppl", "%14.6g", "bits_per_byte", "%10.4f",
					       NULL};
	static const char *const choice_cols[] = {"acc", "%8.4f", "acc_stderr", "%8.4f", "acc_norm", "%8.4f",
						  "acc_norm_stderr", "%8.4f", "greedy", "%8.4f", "ppl", "%12.6g",
						  NULL};
	json_t *cfg = jget(report, "config"), *res = jget(report, "results"), *x;
	int ppl = strcmp(json_string_value(jget(cfg, "task")), "ppl") == 0;
	size_t i;

	fprintf(f, "ouro-eval %s: model %s, gate %s, %lld loops\n", ppl ? "ppl" : "choice",
		json_string_value(jget(cfg, "model")), json_string_value(jget(cfg, "gate")),
		(long long)json_integer_value(jget(cfg, "steps")));
	if (jget(report, "shard"))
		fprintf(f, "shard %lld of %lld (0-based)\n",
			(long long)json_integer_value(jget(jget(report, "shard"), "index")),
			(long long)json_integer_value(jget(jget(report, "shard"), "count")));
	if (ppl) {
		fprintf(f, "%lld documents, %lld tokens, %lld bytes, %lld words\n\n",
			(long long)json_integer_value(jget(res, "documents")),
			(long long)json_integer_value(jget(res, "tokens")),
			(long long)json_integer_value(jget(res, "bytes")),
			(long long)json_integer_value(jget(res, "words")));
		fprintf(f, "%-16s %10s %10s %14s %10s\n", "loop", "avg loops", "nll", "ppl", "bits/byte");
		for (int part = 0; part < 2; part++)
			json_array_foreach(jget(res, part ? "exit_rules" : "loops"), i, x) {
				if (part) {
					fprintf(f, "%-16s ", json_string_value(jget(x, "rule")));
					print_num(f, num(x, "avg_loops"), "%10.3f");
					fputc(' ', f);
				} else {
					fprintf(f, "%-16lld %10lld ", (long long)json_integer_value(jget(x, "loop")),
						(long long)json_integer_value(jget(x, "loop")));
				}
				print_row(f, x, ppl_cols);
			}
		json_t *ex = jget(res, "exit");
		fprintf(f, "\nexit distribution: entropy %.4f nats, expected loops %.3f, expected nll %.4f,\n"
			"Stage I objective (beta %g) %.4f\n\n", num(ex, "entropy"), num(ex, "expected_loops"),
			num(ex, "expected_nll"), num(cfg, "beta"), num(ex, "stage1"));
		return;
	}
	fprintf(f, "%lld examples, %lld continuation tokens\n\n",
		(long long)json_integer_value(jget(res, "examples")),
		(long long)json_integer_value(jget(res, "tokens")));
	fprintf(f, "%-16s %10s %8s %8s %8s %8s %8s %12s\n", "loop", "avg loops", "acc", "+-",
		"acc_norm", "+-", "greedy", "ppl");
	for (int part = 0; part < 2; part++)
		json_array_foreach(jget(res, part ? "exit_rules" : "loops"), i, x) {
			if (part)
				fprintf(f, "%-16s ", json_string_value(jget(x, "rule")));
			else
				fprintf(f, "%-16lld ", (long long)json_integer_value(jget(x, "loop")));
			print_num(f, part ? num(x, "avg_loops") : num(x, "loop"), part ? "%10.3f" : "%10.0f");
			fputc(' ', f);
			print_row(f, x, choice_cols);
		}
}

/* A "nice" tick step for a range: 1, 2 or 5 times a power of ten. */
static double tick_step(double span, int want)
{
	double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;

	return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

struct panel {
	double x0, y0, w, h;          /* pixels of the plotting area */
	double xmin, xmax, ymin, ymax;
};

static double px(const struct panel *p, double x)
{
	return p->x0 + (x - p->xmin) / (p->xmax - p->xmin) * p->w;
}

static double py(const struct panel *p, double y)
{
	return p->y0 + p->h - (y - p->ymin) / (p->ymax - p->ymin) * p->h;
}

/* Frame, ticks and labels of one panel. */
static void svg_axes(FILE *f, const struct panel *p, const char *title, const char *xlabel,
		     const char *ylabel, int integer_x)
{
	double xs = integer_x ? fmax(1, round(tick_step(p->xmax - p->xmin, 8))) : tick_step(p->xmax - p->xmin, 6);
	double ys = tick_step(p->ymax - p->ymin, 6);

	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>\n",
		p->x0, p->y0, p->w, p->h);
	for (double x = ceil(p->xmin / xs - 1e-9) * xs; x <= p->xmax + 1e-9 * xs; x += xs)
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
			"<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
			px(p, x), p->y0, px(p, x), p->y0 + p->h, px(p, x), p->y0 + p->h + 16, x);
	for (double y = ceil(p->ymin / ys - 1e-9) * ys; y <= p->ymax + 1e-9 * ys; y += ys)
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
			"<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
			p->x0, py(p, y), p->x0 + p->w, py(p, y), p->x0 - 6, py(p, y) + 4,
			fabs(y) < ys * 1e-9 ? 0 : y);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"bold\">%s</text>\n",
		p->x0 + p->w / 2, p->y0 - 10, title);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n",
		p->x0 + p->w / 2, p->y0 + p->h + 36, xlabel);
	fprintf(f, "<text transform=\"translate(%.1f,%.1f) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
		p->x0 - 52, p->y0 + p->h / 2, ylabel);
}

/* A polyline through the finite points of (xs, ys) [n], with dots. */
static void svg_series(FILE *f, const struct panel *p, const double *xs, const double *ys, int n,
		       const char *color, const char *dash)
{
	fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s%s%s points=\"", color,
		dash ? " stroke-dasharray=\"" : "", dash ? dash : "", dash ? "\"" : "");
	for (int i = 0; i < n; i++)
		if (isfinite(xs[i]) && isfinite(ys[i]))
			fprintf(f, "%.1f,%.1f ", px(p, xs[i]), py(p, ys[i]));
	fprintf(f, "\"/>\n");
	for (int i = 0; i < n; i++)
		if (isfinite(xs[i]) && isfinite(ys[i]))
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
				px(p, xs[i]), py(p, ys[i]), color);
}

/* Sorts the points of a rule family by x (insertion sort; few points). */
static void sort_points(double *xs, double *ys, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && xs[j] < xs[j - 1]; j--) {
			double tx = xs[j], ty = ys[j];
			xs[j] = xs[j - 1];
			ys[j] = ys[j - 1];
			xs[j - 1] = tx;
			ys[j - 1] = ty;
		}
}

static void range_of(const double *v, int n, double *lo, double *hi)
{
	for (int i = 0; i < n; i++)
		if (isfinite(v[i])) {
			*lo = fmin(*lo, v[i]);
			*hi = fmax(*hi, v[i]);
		}
}

/* Draws the report: per-loop curve(s) on the left, the metric against
 * average loops for every exit rule family on the right. */
static int plot_write(const char *path, json_t *report)
{
	json_t *cfg = jget(report, "config"), *res = jget(report, "results");
	json_t *loops = jget(res, "loops"), *rules = jget(res, "exit_rules");
	int ppl = strcmp(json_string_value(jget(cfg, "task")), "ppl") == 0;
	int T = (int)json_array_size(loops), R = (int)json_array_size(rules), nm = ppl ? 1 : 2;
	const char *metric[2] = {ppl ? "nll" : "acc", "acc_norm"};
	const char *colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
	double *lx = malloc(sizeof(double) * (size_t)(T + 1)), *ly = malloc(sizeof(double) * 2 * (size_t)(T + 1));
	double *rx = malloc(sizeof(double) * (size_t)(R + 1)), *ry = malloc(sizeof(double) * (size_t)(R + 1));
	struct ouro_output *o = NULL;
	FILE *f;
	int rc;

	if (!lx || !ly || !rx || !ry) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto out;
	}
	double ylo = INFINITY, yhi = -INFINITY, xhi = T;
	for (int m = 0; m < nm; m++)
		for (int t = 0; t < T; t++) {
			lx[t] = t + 1;
			ly[m * T + t] = num(json_array_get(loops, (size_t)t), metric[m]);
		}
	range_of(ly, nm * T, &ylo, &yhi);
	for (int q = 0; q < R; q++)
		for (int m = 0; m < nm; m++) {
			double v = num(json_array_get(rules, (size_t)q), metric[m]);
			range_of(&v, 1, &ylo, &yhi);
		}
	if (!isfinite(ylo)) {
		ylo = 0;
		yhi = 1;
	}
	double pad = (yhi - ylo) * 0.08 + 1e-9 * fabs(yhi) + 1e-12;
	struct panel left = {80, 40, 380, 260, 1, xhi > 1 ? xhi : 2, ylo - pad, yhi + pad};
	struct panel right = left;
	right.x0 = 560;
	right.xmin = 1;

	if ((rc = ouro_output_open(&o, &f, path)))
		goto out;
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"400\" "
		"viewBox=\"0 0 1000 400\" font-family=\"sans-serif\" font-size=\"12\">\n"
		"<rect width=\"1000\" height=\"400\" fill=\"white\"/>\n");
	const char *ylabel = ppl ? "mean NLL (nats per token)" : "accuracy";
	svg_axes(f, &left, ppl ? "NLL at each loop" : "accuracy at each loop", "loops", ylabel, 1);
	svg_axes(f, &right, ppl ? "NLL against average loops" : "accuracy against average loops",
		 "average loops per token", ylabel, 0);
	for (int m = 0; m < nm; m++) {
		svg_series(f, &left, lx, ly + m * T, T, colors[m], NULL);
		/* a fixed loop count is a rule that uses exactly t loops */
		svg_series(f, &right, lx, ly + m * T, T, "#999", m ? "2,3" : "6,3");
	}
	/* one line per family of rules (thresholds, eps values) and metric */
	int color = 2;
	for (int fam = 0; fam < 2; fam++)
		for (int m = 0; m < nm; m++) {
			int n = 0;
			for (int q = 0; q < R; q++) {
				json_t *x = json_array_get(rules, (size_t)q);
				const char *name = json_string_value(jget(x, "rule"));
				if ((strncmp(name, "threshold", 9) == 0) != (fam == 0))
					continue;
				rx[n] = num(x, "avg_loops");
				ry[n++] = num(x, metric[m]);
			}
			if (!n)
				continue;
			sort_points(rx, ry, n);
			svg_series(f, &right, rx, ry, n, colors[color % 6], m ? "2,3" : NULL);
			fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"%s\">%s %s</text>\n", 575, 60 + 16 * (color - 2),
				colors[color % 6], fam ? "hidden-state difference (-e)" : "exit CDF threshold (-q)",
				metric[m]);
			color++;
		}
	for (int m = 0; m < nm; m++)
		fprintf(f, "<text x=\"95\" y=\"%d\" fill=\"%s\">%s</text>\n", 60 + 16 * m, colors[m], metric[m]);
	fprintf(f, "<text x=\"575\" y=\"%d\" fill=\"#999\">fixed loop count</text>\n", 60 + 16 * (color - 2));
	fprintf(f, "</svg>\n");
	rc = ouro_output_commit(o);
	o = NULL;
out:
	if (o)
		ouro_output_abort(o);
	free(lx);
	free(ly);
	free(rx);
	free(ry);
	return rc;
}

/* Opens where the JSON report goes: -o FILE, else stdout unless --table
 * takes its place (*o stays NULL then). */
static int report_open(struct ouro_output **o, FILE **f, const char *outpath, int table)
{
	*o = NULL;
	*f = NULL;
	return outpath || !table ? ouro_output_open(o, f, outpath) : OURO_OK;
}

/* Writes the report: the plot with --plot, the JSON to o (committed; o is
 * freed either way), the table on stdout with --table. */
static int emit_report(json_t *report, struct ouro_output *o, FILE *f, const char *outpath,
		       int table, const char *plot)
{
	int rc;

	if (plot && (rc = plot_write(plot, report))) {
		ouro_output_abort(o);
		return rc;
	}
	if (o) {
		if (json_dumpf(report, f, JSON_OUT) || fputc('\n', f) == EOF) {
			ouro_output_abort(o);
			return ouro_fail(OURO_ESYS, "%s: write error: %s", outpath ? outpath : "stdout", strerror(errno));
		}
		if ((rc = ouro_output_commit(o)))
			return rc;
	}
	if (table) {
		table_print(stdout, report);
		if (fflush(stdout) || ferror(stdout))
			return ouro_fail(OURO_ESYS, "stdout: write error: %s", strerror(errno));
	}
	return OURO_OK;
}

/* ---- the log --------------------------------------------------------------
 * Line 1: {"format": "ouro-eval log", "version": 1, "config": ..., "shard":
 * "K/N" or null, "examples_total": n}; then one line per example:
 * {"example": i, "source": "FILE: line N", "sums": {...}, ...}. */

static json_t *log_header(json_t *config, const struct opts *o, int64_t total)
{
	json_t *h = json_object();
	char shard[64];

	snprintf(shard, sizeof shard, "%ld/%ld", o->shard_k, o->shard_n);
	json_object_set_new(h, "format", json_string(LOG_FORMAT));
	json_object_set_new(h, "version", json_integer(FORMAT_VERSION));
	json_object_set_new(h, "config", json_incref(config));
	json_object_set_new(h, "shard", o->shard_n ? json_string(shard) : json_null());
	json_object_set_new(h, "examples_total", json_integer(total));
	return h;
}

/* The first key whose values differ between two objects, for messages. */
static const char *first_difference(json_t *a, json_t *b)
{
	const char *key;
	json_t *v;

	json_object_foreach(a, key, v)
		if (!json_equal(v, jget(b, key)))
			return key;
	json_object_foreach(b, key, v)
		if (!jget(a, key))
			return key;
	return "?";
}

static int in_shard(const struct opts *o, int64_t i)
{
	return !o->shard_n || i % o->shard_n == o->shard_k;
}

/* Reads the log of an interrupted run from f, opened at path, and closes
 * f: adds its examples' sums to acc and marks them done; *keep is the
 * length of its intact part (a last line cut short by the interruption is
 * dropped). */
static int log_resume(FILE *f, const char *path, json_t *header, const struct opts *o,
		      const struct layout *L, int64_t total, unsigned char *done, int64_t *acc,
		      int64_t *ndone, off_t *keep)
{
	char *buf, where[400];
	size_t len;
	long lineno = 0;
	int64_t *v = malloc((size_t)L->total * sizeof *v);
	int rc;

	*ndone = 0;
	*keep = 0;
	if (!v) {
		fclose(f);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if ((rc = slurp_stream(f, path, &buf, &len))) {
		free(v);
		return rc;
	}
	for (size_t pos = 0; pos < len && !rc;) {
		char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - buf) : len;
		json_error_t err;
		json_t *j;

		lineno++;
		snprintf(where, sizeof where, "%s: line %ld", path, lineno);
		if (!nl)
			break;   /* the line being written when the run stopped */
		j = json_loadb(buf + pos, end - pos, JSON_REJECT_DUPLICATES, &err);
		if (!j) {
			rc = ouro_fail(OURO_EINPUT, "%s: not valid JSON: %s (column %d)", where, err.text, err.column);
			break;
		}
		if (lineno == 1) {
			if (!json_is_object(j) || !json_is_string(jget(j, "format")) ||
			    strcmp(json_string_value(jget(j, "format")), LOG_FORMAT) ||
			    !json_equal(jget(j, "version"), jget(header, "version")))
				rc = ouro_fail(OURO_EINPUT, "%s: not a log of ouro-eval (version %d)", where, FORMAT_VERSION);
			else if (!json_equal(j, header))
				rc = ouro_fail(OURO_EINPUT, "%s: the log is of another run: its %s differs from this one's",
					       where, json_equal(jget(j, "config"), jget(header, "config"))
					       ? first_difference(j, header)
					       : first_difference(jget(j, "config"), jget(header, "config")));
		} else {
			json_t *ex = jget(j, "example");
			int64_t i = json_is_integer(ex) ? json_integer_value(ex) : -1;
			if (i < 0 || i >= total || !in_shard(o, i))
				rc = ouro_fail(OURO_EINPUT, "%s: \"example\" is not an example of this run", where);
			else if (done[i])
				rc = ouro_fail(OURO_EINPUT, "%s: example %lld appears twice", where, (long long)i);
			else if (!(rc = sums_parse(L, jget(j, "sums"), v, where)) && !(rc = sums_add(L, acc, v, where))) {
				done[i] = 1;
				(*ndone)++;
			}
		}
		json_decref(j);
		pos = end + 1;
		if (!rc)
			*keep = (off_t)pos;
	}
	free(buf);
	free(v);
	return rc;
}

/* ---- progress -------------------------------------------------------------- */

struct progress {
	int on;
	double t0, last;
	int64_t total;
};

static void progress_show(struct progress *p, int64_t done, int64_t tokens, int final)
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

/* ---- ppl and choice ---------------------------------------------------------- */

static int cmd_run(enum task task, int argc, char **argv)
{
	struct opts o = {.task = task};
	struct run r = {.o = &o};
	struct ouro_tok *tok = NULL;
	struct ouro_gate gate = {0};
	struct corpus corpus = {0};
	struct ouro_output *pt_out = NULL, *rep_out = NULL;
	FILE *rep_f = NULL;
	json_t *config = NULL, *report = NULL;
	unsigned char *done = NULL;
	int64_t *acc = NULL, *v = NULL, total, todo = 0, ndone = 0;
	double *d = NULL, *ll = NULL;
	FILE *log = NULL;
	int rc;

	parse_run_options(&o, argc, argv);
	cli_threads(o.threads);
	if ((rc = ouro_model_load(&r.m, ouro_model_path(o.model_dir))))
		die(rc);
	const struct ouro_config *cfg = ouro_model_config(r.m);
	r.T = (int)(o.steps ? o.steps : cfg->total_ut_steps);
	r.R = o.nrules;
	if (o.window > cfg->max_position_embeddings)
		usage_error("--window: %ld is more than max_position_embeddings %lld", o.window,
			    (long long)cfg->max_position_embeddings);
	if (!o.window)
		o.window = cfg->max_position_embeddings;
	if (o.context > o.window)
		usage_error("--context: %ld is more than the window of %ld", o.context, o.window);
	if (o.prefix < 0)
		o.prefix = cfg->bos_token_id >= 0 ? cfg->bos_token_id : cfg->eos_token_id;
	if (o.prefix < 0)
		usage_error("config.json has no bos_token_id or eos_token_id; give --prefix-token");
	if (o.prefix >= cfg->vocab_size)
		usage_error("--prefix-token: %ld is outside the vocabulary (0..%lld)", o.prefix,
			    (long long)cfg->vocab_size - 1);
	r.window = o.window;
	r.prefix = (int32_t)o.prefix;
	layout_init(&r.L, task, r.T, r.R);
	if (o.gate_file && (rc = ouro_gate_load(&gate, o.gate_file, cfg->hidden_size)))
		goto fail;
	if ((rc = ouro_scorer_new(&r.scorer, r.m, o.gate_file ? &gate : NULL, r.T, o.rules, o.nrules)))
		goto fail;
	/* a destination that cannot be written fails now, not after the
	 * work; the report itself is opened at the end, so that a run that
	 * is killed leaves no temporary file behind */
	if ((rc = corpus_read(&corpus, &o, cfg->vocab_size)) ||
	    (rc = report_open(&rep_out, &rep_f, o.outpath, o.table)))
		goto fail;
	ouro_output_abort(rep_out);
	rep_out = NULL;
	total = o.limit >= 0 && o.limit < corpus.n ? o.limit : corpus.n;
	config = config_build(&o, r.m, r.T);

	done = calloc((size_t)total + 1, 1);
	acc = calloc((size_t)r.L.total, sizeof *acc);
	v = calloc((size_t)r.L.total, sizeof *v);
	d = calloc((size_t)r.L.total, sizeof *d);
	if (!done || !acc || !v || !d) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto fail;
	}

	/* the log: a new one, or the one of the run to continue */
	if (o.log) {
		json_t *header = log_header(config, &o, total);
		struct stat st;
		int exists = stat(o.log, &st) == 0;
		off_t keep = 0;
		FILE *lf = NULL;

		/* the log is read back and truncated: a regular file, never a pipe */
		if (exists && (rc = ouro_file_open(&lf, NULL, o.log, OURO_EINPUT))) {
			json_decref(header);
			goto fail;
		}
		if (exists && !o.resume)
			usage_error("%s exists; add --resume to continue that run, or remove it", o.log);
		if (exists && (rc = log_resume(lf, o.log, header, &o, &r.L, total, done, acc, &ndone, &keep))) {
			json_decref(header);
			goto fail;
		}
		if (exists && truncate(o.log, keep)) {
			json_decref(header);
			rc = ouro_fail(OURO_ESYS, "%s: %s", o.log, strerror(errno));
			goto fail;
		}
		if (!(log = fopen(o.log, "a"))) {
			json_decref(header);
			rc = ouro_fail(OURO_ESYS, "%s: %s", o.log, strerror(errno));
			goto fail;
		}
		if (keep == 0 && (json_dumpf(header, log, JSON_LINE) || fputc('\n', log) == EOF || fflush(log))) {
			json_decref(header);
			rc = ouro_fail(OURO_ESYS, "%s: write error: %s", o.log, strerror(errno));
			goto fail;
		}
		json_decref(header);
	}

	/* tokenize what this run will score, so bad examples fail before any work */
	int need_tok = 0;
	for (int64_t i = 0; i < total && !need_tok; i++)
		need_tok = in_shard(&o, i) && !done[i] && (task == TASK_CHOICE || corpus.ex[i].text);
	if (need_tok && (rc = ouro_tok_load_dir(&tok, ouro_model_dir(r.m))))
		goto fail;
	for (int64_t i = 0; i < total; i++) {
		if (!in_shard(&o, i) || done[i])
			continue;
		todo++;
		if (tok && (rc = tokenize(&corpus.ex[i], tok, task, r.prefix, r.window)))
			goto fail;
	}
	if (o.per_token) {
		if ((rc = ouro_output_open(&pt_out, &r.per_token, o.per_token)))
			goto fail;
		r.per_token_name = strcmp(o.per_token, "-") ? o.per_token : "stdout";
	}
	if (task == TASK_CHOICE) {
		int most = 1;
		for (int64_t i = 0; i < total; i++)
			most = corpus.ex[i].npairs > most ? corpus.ex[i].npairs : most;
		if (!(ll = malloc((size_t)most * (size_t)(r.T + r.R) * sizeof *ll))) {
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
			goto fail;
		}
	}

	struct progress prog = {.on = isatty(2), .t0 = cli_now(), .total = todo};
	int64_t count = 0;
	for (int64_t i = 0; i < total; i++) {
		struct example *e = &corpus.ex[i];
		if (!in_shard(&o, i) || done[i])
			continue;
		rc = task == TASK_PPL ? score_document(&r, e, i, d) : score_choice(&r, e, d, ll);
		if (rc || (rc = fix(&r.L, d, v, e->where)) || (rc = sums_add(&r.L, acc, v, e->where)))
			goto fail;
		if (log) {
			json_t *line = json_object();
			json_object_set_new(line, "example", json_integer(i));
			json_object_set_new(line, "source", json_string(e->where));
			json_object_set_new(line, "sums", sums_json(&r.L, v));
			if (task == TASK_CHOICE) {
				json_t *all = json_array();
				for (int c = 0; c < e->npairs; c++) {
					json_t *row = json_array();
					for (int k = 0; k < r.T + r.R; k++)
						json_array_append_new(row, jreal(ll[c * (r.T + r.R) + k]));
					json_array_append_new(all, row);
				}
				json_object_set_new(line, "gold", json_integer(e->gold));
				json_object_set_new(line, "ll", all);
			}
			int bad = json_dumpf(line, log, JSON_LINE) || fputc('\n', log) == EOF || fflush(log);
			json_decref(line);
			if (bad) {
				rc = ouro_fail(OURO_ESYS, "%s: write error: %s", o.log, strerror(errno));
				goto fail;
			}
		}
		count++;
		progress_show(&prog, count, r.input_tokens, count == todo);
	}
	double el = cli_now() - prog.t0;
	if (o.verbose)
		fprintf(stderr, "%s: %lld examples (and %lld from the log), %lld tokens through the forward pass in %.2f s: %.0f tokens/s (%d loops each)\n",
			progname, (long long)count, (long long)ndone, (long long)r.input_tokens, el,
			el > 0 ? (double)r.input_tokens / el : 0.0, r.T);
	if (log && fclose(log)) {
		log = NULL;
		rc = ouro_fail(OURO_ESYS, "%s: write error: %s", o.log, strerror(errno));
		goto fail;
	}
	log = NULL;
	if (pt_out) {
		rc = ouro_output_commit(pt_out);
		pt_out = NULL;
		if (rc)
			goto fail;
	}
	report = report_build(config, o.shard_k, o.shard_n, total, &r.L, acc);
	if (!(rc = report_open(&rep_out, &rep_f, o.outpath, o.table)))
		rc = emit_report(report, rep_out, rep_f, o.outpath, o.table, o.plot);
	rep_out = NULL;
fail:
	if (rep_out)
		ouro_output_abort(rep_out);
	if (log)
		fclose(log);
	if (pt_out)
		ouro_output_abort(pt_out);
	json_decref(report);
	json_decref(config);
	free(done);
	free(acc);
	free(v);
	free(d);
	free(ll);
	free(r.buf);
	free(r.loss_buf);
	corpus_free(&corpus);
	ouro_tok_free(tok);
	ouro_scorer_free(r.scorer);
	ouro_gate_free(&gate);
	ouro_model_free(r.m);
	if (rc)
		die(rc);
	return 0;
}

/* ---- merge ------------------------------------------------------------------- */

static int cmd_merge(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"table", no_argument, NULL, 't'},
		{"plot", required_argument, NULL, 'p'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *outpath = NULL, *plot = NULL;
	int c, table = 0, rc = OURO_OK;
	json_t *config = NULL, *report = NULL, **seen = NULL;
	const char **seen_by = NULL;
	struct layout L;
	int64_t *acc = NULL, *v = NULL, total = 0;
	long count = 0;
	const char *first = NULL;

	while ((c = cli_getopt(argc, argv, "o:h", longopts)) != -1) {
		switch (c) {
		case 't': table = 1; break;
		case 'p': plot = optarg; break;
		case 'o': outpath = optarg; break;
		case 'h': usage(stdout); return 0;
		}
	}
	if (optind >= argc)
		usage_error("merge: give the reports of every shard");
	for (int i = optind; i < argc && !rc; i++) {
		const char *path = argv[i], *name = ouro_input_name(path);
		json_error_t err;
		char *buf;
		size_t len;
		json_t *j, *shard, *sums;

		if ((rc = slurp(path, &buf, &len)))
			break;
		j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
		free(buf);
		if (!j) {
			rc = ouro_fail(OURO_EINPUT, "%s: line %d: not valid JSON: %s", name, err.line, err.text);
			break;
		}
		shard = jget(j, "shard");
		sums = jget(j, "sums");
		json_t *idx = jget(shard, "index"), *cnt = jget(shard, "count"), *tot = jget(j, "examples_total");
		if (!json_is_object(j) || !json_is_string(jget(j, "format")) ||
		    strcmp(json_string_value(jget(j, "format")), REPORT_FORMAT) ||
		    !json_is_integer(jget(j, "version")) || json_integer_value(jget(j, "version")) != FORMAT_VERSION) {
			rc = ouro_fail(OURO_EINPUT, "%s: not a report of ouro-eval (version %d)", name, FORMAT_VERSION);
		} else if (!shard) {
			rc = ouro_fail(OURO_EINPUT, "%s: not the report of a --shard run", name);
		} else if (!json_is_integer(idx) || !json_is_integer(cnt) || json_integer_value(cnt) < 1 ||
			   json_integer_value(idx) < 0 || json_integer_value(idx) >= json_integer_value(cnt) ||
			   json_integer_value(cnt) > (1L << 30) || !json_is_integer(tot) || json_integer_value(tot) < 0) {
			rc = ouro_fail(OURO_EINPUT, "%s: \"shard\" or \"examples_total\" is invalid", name);
		} else if (!config) {
			config = json_incref(jget(j, "config"));
			first = path;
			count = (long)json_integer_value(cnt);
			total = json_integer_value(tot);
			if (count > argc - optind)
				rc = ouro_fail(OURO_EINPUT, "%s: one of %ld shards, but %d report%s given; shards are missing",
					       name, count, argc - optind, argc - optind == 1 ? " is" : "s are");
			else if (!(rc = config_layout(config, &L, name))) {
				seen = calloc((size_t)count, sizeof *seen);
				seen_by = calloc((size_t)count, sizeof *seen_by);
				acc = calloc((size_t)L.total, sizeof *acc);
				v = calloc((size_t)L.total, sizeof *v);
				if (!seen || !seen_by || !acc || !v)
					rc = ouro_fail(OURO_ENOMEM, "out of memory");
			}
		}
		if (!rc && config != jget(j, "config") && !json_equal(config, jget(j, "config")))
			rc = ouro_fail(OURO_EINPUT, "%s: a run with other settings than %s: config.%s differs",
				       name, ouro_input_name(first), first_difference(jget(j, "config"), config));
		else if (!rc && json_integer_value(cnt) != count)
			rc = ouro_fail(OURO_EINPUT, "%s: shard %lld/%lld, but %s is one of %ld shards", name,
				       (long long)json_integer_value(idx), (long long)json_integer_value(cnt),
				       ouro_input_name(first), count);
		else if (!rc && json_integer_value(tot) != total)
			rc = ouro_fail(OURO_EINPUT, "%s: %lld examples in all, %s has %lld", name,
				       (long long)json_integer_value(tot), ouro_input_name(first), (long long)total);
		else if (!rc && seen[json_integer_value(idx)])
			rc = ouro_fail(OURO_EINPUT, "%s: shard %lld/%ld is also %s", name,
				       (long long)json_integer_value(idx), count,
				       ouro_input_name(seen_by[json_integer_value(idx)]));
		if (!rc && !(rc = sums_parse(&L, sums, v, name))) {
			int64_t k = json_integer_value(idx);
			int64_t want = total / count + (k < total % count);
			int64_t got = v[L.off[0]];   /* "examples" is field 0 of both tasks */
			if (got != want)
				rc = ouro_fail(OURO_EINPUT, "%s: shard %lld/%ld scored %lld examples of %lld; is the run complete?",
					       name, (long long)k, count, (long long)got, (long long)want);
			else if (!(rc = sums_add(&L, acc, v, name))) {
				seen[k] = j;
				seen_by[k] = path;
				j = NULL;
			}
		}
		json_decref(j);
	}
	for (long k = 0; !rc && k < count; k++)
		if (!seen[k])
			rc = ouro_fail(OURO_EINPUT, "shard %ld/%ld is missing", k, count);
	if (!rc) {
		struct ouro_output *o;
		FILE *f;
		report = report_build(config, 0, 0, total, &L, acc);
		if (!(rc = report_open(&o, &f, outpath, table)))
			rc = emit_report(report, o, f, outpath, table, plot);
	}
	for (long k = 0; seen && k < count; k++)
		json_decref(seen[k]);
	free(seen);
	free(seen_by);
	free(acc);
	free(v);
	json_decref(config);
	json_decref(report);
	if (rc)
		die(rc);
	return 0;
}

int main(int argc, char **argv)
{
	cli_init("ouro-eval");
	if (argc < 2)
		usage_error("expected a command: ppl, choice or merge (see --help)");
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "ppl") == 0)
		return cmd_run(TASK_PPL, argc - 1, argv + 1);
	if (strcmp(argv[1], "choice") == 0)
		return cmd_run(TASK_CHOICE, argc - 1, argv + 1);
	if (strcmp(argv[1], "merge") == 0)
		return cmd_merge(argc - 1, argv + 1);
	usage_error("'%s' is not a command: ppl, choice or merge", argv[1]);
}
