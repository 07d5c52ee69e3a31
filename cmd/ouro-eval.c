/*
 * ouro-eval - how good a looped model is at every loop step and under
 * every exit rule: per-loop perplexity (ppl) and multiple-choice accuracy
 * (choice), the curves of the Ouro paper, generative accuracy with the
 * loops spent per token under each exit rule (gen), and the merge of
 * sharded runs.
 *
 * Each example (a document, or a question with its choices) is scored
 * through forward passes over its windows (libouro/eval) that keep the
 * state of every loop, so every loop count 1..T comes from one pass of T
 * loops, not from T separate runs; the windows of several examples share
 * a pass (-P), which changes no score. Per example the library reduces the
 * scores to a fixed set of sums; the report is a function of the summed
 * sums alone. A gen example is generated once per exit rule on the batch
 * engine (libouro/eval/eval_gen.c) and reduced to sums of counts. Sums of
 * losses are kept as integers
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
#include "eval.h"           /* the scorer, the tasks, their sums and reports */
#include "tokenizer.h"

#define JSON_OUT (JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12))
#define JSON_LINE (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17))

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-eval ppl [-m DIR] [--gate FILE] [-T STEPS] [-q Q,...] [-s STEP,...]\n"
		"                 [-e EPS,...] [--kl EPS,...] [--entropy H,...] [--stable K,...]\n"
		"                 [--beta B] [-W TOKENS] [--context TOKENS] [--prefix-token ID]\n"
		"                 [-f auto|text|jsonl|ids] [--field NAME] [--per-token FILE]\n"
		"                 [--limit N] [--shard K/N] [--log FILE [--resume]] [--table]\n"
		"                 [--plot FILE] [-P N] [-j THREADS] [-v] [-o FILE] [FILE ...]\n"
		"       ouro-eval choice [-m DIR] [--gate FILE] [-T STEPS] [-q Q,...] [-s STEP,...]\n"
		"                 [-e EPS,...] [--kl EPS,...] [--entropy H,...] [--stable K,...]\n"
		"                 [-W TOKENS] [--prefix-token ID] [--limit N] [--shard K/N]\n"
		"                 [--log FILE [--resume]] [--table] [--plot FILE] [-P N]\n"
		"                 [-j THREADS] [-v] [-o FILE] [FILE ...]\n"
		"       ouro-eval gen [-m DIR] [--gate FILE] [-T STEPS] [-q Q,...] [-s STEP,...]\n"
		"                 [-e EPS,...] [--kl EPS,...] [--entropy H,...] [--stable K,...]\n"
		"                 [-n N] [--stop STR] [--extract HOW] [--chat] [--system TEXT]\n"
		"                 [--think] [--temperature X] [--top-k K] [--top-p P] [--min-p P]\n"
		"                 [--seed S] [--speculate [--draft-steps S] [--draft-tokens K]]\n"
		"                 [--per-example FILE] [--limit N] [--shard K/N]\n"
		"                 [--log FILE [--resume]] [--table] [--plot FILE] [-P N]\n"
		"                 [-j THREADS] [-v] [-o FILE] [FILE ...]\n"
		"       ouro-eval merge [--table] [--plot FILE] [-o FILE] REPORT ...\n"
		"Per-loop perplexity and multiple-choice accuracy at every loop and exit rule;\n"
		"generative accuracy and loops per token under every exit rule.\n"
		"\n"
		"  -m, --model DIR        model directory (default: $OURO_MODEL, else the bundled model)\n"
		"      --gate FILE        exit gate weights from FILE (ouro-gate train) instead of the model's\n"
		"  -T, --steps STEPS      loops (default: total_ut_steps of config.json)\n"
		"  -q, --threshold Q,...  exit rules: first loop whose exit CDF reaches Q, 0..1\n"
		"  -s, --step STEP,...    exit rules: always after loop STEP (0-based)\n"
		"  -e, --eps EPS,...      exit rules: first loop t >= 2 with ||h[t] - h[t-1]|| < EPS\n"
		"      --kl EPS,...       exit rules: first loop t >= 2 whose next-token distribution\n"
		"                         is within KL divergence EPS (nats) of loop t-1's\n"
		"      --entropy H,...    exit rules: first loop t >= 2 whose next-token entropy < H\n"
		"      --stable K,...     exit rules: first loop whose most likely next token is that\n"
		"                         of the K-1 loops before it, K >= 2 (--kl, --entropy,\n"
		"                         --stable: an lm_head product per loop and position)\n"
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
		"  -n, --max-tokens N     gen: token budget of an example without max_tokens\n"
		"                         (default 256)\n"
		"      --stop STR         gen: end the answer at STR (repeatable); an example's\n"
		"                         \"until\" replaces these\n"
		"      --extract HOW      gen: the answer in the text: text (all of it, the\n"
		"                         default), gsm8k, last-number, boxed or regex:RE\n"
		"      --chat             gen: the prompt as a user turn in the chat format\n"
		"      --system TEXT      gen: the system message for --chat\n"
		"      --think            gen: open the assistant turn with <think>\n"
		"      --temperature X, --top-k K, --top-p P, --min-p P, --seed S\n"
		"                         gen: sampling as ouro-generate (default greedy)\n"
		"      --speculate, --draft-steps S, --draft-tokens K\n"
		"                         gen: self-speculative decoding as ouro-generate\n"
		"      --per-example FILE gen: one JSON line per example with every rule's text,\n"
		"                         extracted answer and loops per token\n"
		"      --limit N          only the first N examples\n"
		"      --shard K/N        only examples i with i mod N = K (0 <= K < N)\n"
		"      --log FILE         append each example's result to FILE (JSON lines)\n"
		"      --resume           continue the run that FILE of --log records\n"
		"      --table            print a table for people instead of the JSON report\n"
		"      --plot FILE        draw the per-loop and accuracy-vs-loops curves as SVG\n"
		"  -P, --parallel N       score up to N windows (a document's, a choice's), or\n"
		"                         generate up to N sequences, in one pass over the\n"
		"                         weights, 1 to 4096 (default 16); the report is the\n"
		"                         same for every N\n"
		"  -j, --threads N        threads (default: $OURO_THREADS, else all cores)\n"
		"  -v, --verbose          print the throughput to stderr at the end\n"
		"  -o, --output FILE      write the JSON report to FILE (atomically)\n"
		"  -h, --help             show this help\n"
		"\n"
		"ppl input: text, JSONL ({\"text\": ...} or a JSON string per line) or token ids.\n"
		"choice input: JSONL, {\"context\": C, \"choices\": [...], \"gold\": I} per line\n"
		"(optional \"delimiter\" before each choice), or {\"contexts\": [...],\n"
		"\"continuation\": S, \"gold\": I}. gen input: JSONL, {\"prompt\": P, \"answer\": A}\n"
		"per line (or \"context\", \"target\"; optional \"until\", \"max_tokens\",\n"
		"\"few_shot\"). merge: the reports of --shard K/N runs.\n");
}

/* ---- options ------------------------------------------------------------- */

struct opts {
	enum ouro_eval_task task;
	const char *model_dir, *gate_file, *outpath, *plot, *log, *per_token, *threads;
	const char *field, *extract, *system, *per_example;
	enum ouro_eval_format format;
	int table, resume, verbose, chat, think, sampling;
	long steps, window, context, prefix, limit, parallel, max_tokens;
	struct ouro_sampler_opts samp;
	struct cli_spec spec;
	char *stop[64];
	int nstop;
	double beta;
	struct ouro_exit_rule rules[OURO_EVAL_MAX_RULES];
	int nrules;
	long shard_k, shard_n;    /* shard_n 0: the whole input */
	char **inputs;
	int ninputs;
};

/* Appends the rules of a comma-separated list of values of the exit-rule
 * option opt (-q, -s, -e, --kl, --entropy or --stable). */
static void add_rules(struct opts *o, const char *list, int opt)
{
	const char *p = list;
	char item[64];

	for (;;) {
		size_t len = strcspn(p, ",");
		if (len == 0 || len >= sizeof item)
			usage_error("%s: '%s' is not a comma-separated list of numbers",
				    cli_exit_name(opt, 1), list);
		if (o->nrules == OURO_EVAL_MAX_RULES)
			usage_error("more than %d exit rules", OURO_EVAL_MAX_RULES);
		memcpy(item, p, len);
		item[len] = '\0';
		cli_exit_value(&o->rules[o->nrules++], opt, item, 1);
		if (!p[len])
			break;
		p += len + 1;
	}
}

/* The options of gen and those it has no use for; gen's defaults. */
static void check_gen_options(struct opts *o)
{
	struct ouro_extract x;
	int rc;

	if (o->task != OURO_EVAL_GEN) {
		const char *only = o->max_tokens >= 0 ? "--max-tokens" : o->nstop ? "--stop" : o->extract ? "--extract"
				   : o->chat ? "--chat" : o->system ? "--system" : o->think ? "--think"
				   : o->per_example ? "--per-example" : o->sampling ? "sampling or speculation" : NULL;
		if (only)
			usage_error("%s applies to gen only", only);
	} else if (o->window || o->prefix >= 0) {
		usage_error("%s applies to ppl and choice only", o->window ? "--window" : "--prefix-token");
	}
	if ((o->system || o->think) && !o->chat)
		usage_error("--system and --think need --chat");
	if (!o->extract)
		o->extract = "text";
	if (o->max_tokens < 0)
		o->max_tokens = 256;
	/* a bad regex:RE is a usage error before the model is loaded */
	if ((rc = ouro_extract_init(&x, o->extract)))
		die(rc);
	ouro_extract_free(&x);
}

static void parse_run_options(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"gate", required_argument, NULL, 'G'},
		{"steps", required_argument, NULL, 'T'},
		{"threshold", required_argument, NULL, 'q'},
		{"step", required_argument, NULL, 's'},
		{"eps", required_argument, NULL, 'e'},
		CLI_EXIT_LONGOPTS,
		{"max-tokens", required_argument, NULL, 'n'},
		{"stop", required_argument, NULL, 'U'},
		{"extract", required_argument, NULL, 'x'},
		{"chat", no_argument, NULL, 'c'},
		{"system", required_argument, NULL, 'Y'},
		{"think", no_argument, NULL, 'H'},
		{"per-example", required_argument, NULL, 'E'},
		CLI_SAMPLER_LONGOPTS,
		CLI_SPEC_LONGOPTS,
		{"beta", required_argument, NULL, 'B'},
		{"window", required_argument, NULL, 'W'},
		{"context", required_argument, NULL, 'C'},
		{"prefix-token", required_argument, NULL, 'I'},
		{"format", required_argument, NULL, 'f'},
		{"field", required_argument, NULL, 'F'},
		{"per-token", required_argument, NULL, 'K'},
		{"limit", required_argument, NULL, 'L'},
		{"shard", required_argument, NULL, 'S'},
		{"log", required_argument, NULL, 'l'},
		{"resume", no_argument, NULL, 'r'},
		{"table", no_argument, NULL, 't'},
		{"plot", required_argument, NULL, 'p'},
		{"parallel", required_argument, NULL, 'P'},
		{"threads", required_argument, NULL, 'j'},
		{"verbose", no_argument, NULL, 'v'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, ppl = o->task == OURO_EVAL_PPL;

	o->beta = 0.1;
	o->context = 1;
	o->prefix = -1;
	o->limit = -1;
	o->field = "text";
	o->parallel = 16;
	o->max_tokens = -1;
	cli_sampler_defaults(&o->samp);
	while ((c = cli_getopt(argc, argv, "m:T:q:s:e:n:W:f:P:j:vo:h", longopts)) != -1) {
		switch (c) {
		case 'm': o->model_dir = optarg; break;
		case 'G': o->gate_file = optarg; break;
		case 'T': o->steps = cli_long(optarg, 1, OURO_MAX_STEPS, "--steps"); break;
		case 'q': case 's': case 'e': case CLI_OPT_KL: case CLI_OPT_ENTROPY: case CLI_OPT_STABLE:
			add_rules(o, optarg, c);
			break;
		case 'n': o->max_tokens = cli_long(optarg, 1, 1L << 24, "--max-tokens"); break;
		case 'U':
			if (!*optarg || o->nstop == 64)
				usage_error("--stop: give at most 64 stop strings, none empty");
			o->stop[o->nstop++] = optarg;
			break;
		case 'x': o->extract = optarg; break;
		case 'c': o->chat = 1; break;
		case 'Y': o->system = optarg; break;
		case 'H': o->think = 1; break;
		case 'E': o->per_example = optarg; break;
		case 'B': o->beta = cli_real(optarg, 0, 1e6, "--beta"); break;
		case 'W': o->window = cli_long(optarg, 1, 1L << 24, "--window"); break;
		case 'C': o->context = cli_long(optarg, 1, 1L << 24, "--context"); break;
		case 'I': o->prefix = cli_long(optarg, 0, INT32_MAX, "--prefix-token"); break;
		case 'f':
			for (o->format = OURO_EVAL_AUTO; o->format <= OURO_EVAL_IDS; o->format++)
				if (strcmp(optarg, ouro_eval_format_names[o->format]) == 0)
					break;
			if (o->format > OURO_EVAL_IDS)
				usage_error("--format: '%s' is not auto, text, jsonl or ids", optarg);
			break;
		case 'F': o->field = optarg; break;
		case 'K': o->per_token = optarg; break;
		case 'L': o->limit = cli_long(optarg, 0, LONG_MAX, "--limit"); break;
		case 'S': cli_shard(optarg, &o->shard_k, &o->shard_n); break;
		case 'l': o->log = optarg; break;
		case 'r': o->resume = 1; break;
		case 't': o->table = 1; break;
		case 'p': o->plot = optarg; break;
		case 'P': o->parallel = cli_long(optarg, 1, 4096, "--parallel"); break;
		case 'j': o->threads = optarg; break;
		case 'v': o->verbose = 1; break;
		case 'o': o->outpath = optarg; break;
		case 'h': usage(stdout); exit(0);
		default:
			o->sampling |= cli_sampler_option(&o->samp, c, optarg) | cli_spec_option(&o->spec, c, optarg);
			break;
		}
	}
	check_gen_options(o);
	if (!ppl) {
		const char *only = o->per_token ? "--per-token" : o->format != OURO_EVAL_AUTO ? "--format"
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

static json_t *config_build(const struct opts *o, const struct ouro_model *m, int T)
{
	json_t *c = json_object(), *rules = json_array(), *inputs = json_array();
	char text[64];

	json_object_set_new(c, "task", json_string(o->task == OURO_EVAL_PPL ? "ppl"
						    : o->task == OURO_EVAL_CHOICE ? "choice" : "gen"));
	json_object_set_new(c, "model", json_string(ouro_model_dir(m)));
	json_object_set_new(c, "gate", json_string(o->gate_file ? o->gate_file : "model"));
	json_object_set_new(c, "steps", json_integer(T));
	for (int q = 0; q < o->nrules; q++) {
		cli_rule_text(text, sizeof text, &o->rules[q]);
		json_array_append_new(rules, json_string(text));
	}
	json_object_set_new(c, "rules", rules);
	if (o->task == OURO_EVAL_GEN) {
		json_t *stop = json_array();
		for (int i = 0; i < o->nstop; i++)
			json_array_append_new(stop, json_string(o->stop[i]));
		json_object_set_new(c, "max_tokens", json_integer(o->max_tokens));
		json_object_set_new(c, "stop", stop);
		json_object_set_new(c, "extract", json_string(o->extract));
		json_object_set_new(c, "chat", json_boolean(o->chat));
		json_object_set_new(c, "system", o->system ? json_string(o->system) : json_null());
		json_object_set_new(c, "think", json_boolean(o->think));
		json_object_set_new(c, "temperature", json_real(o->samp.temperature));
		json_object_set_new(c, "top_k", json_integer(o->samp.top_k));
		json_object_set_new(c, "top_p", json_real(o->samp.top_p));
		json_object_set_new(c, "min_p", json_real(o->samp.min_p));
		snprintf(text, sizeof text, "%llu", (unsigned long long)o->samp.seed);
		json_object_set_new(c, "seed", json_string(text));
		if (o->spec.on && o->samp.temperature > 0)   /* greedy, it changes nothing */
			json_object_set_new(c, "speculate", json_pack("{s:I,s:I}", "draft_steps", (json_int_t)o->spec.steps,
								      "draft_tokens", (json_int_t)o->spec.tokens));
	} else {
		json_object_set_new(c, "window", json_integer(o->window));
		json_object_set_new(c, "prefix_token", json_integer(o->prefix));
	}
	if (o->task == OURO_EVAL_PPL) {
		json_object_set_new(c, "context", json_integer(o->context));
		json_object_set_new(c, "beta", json_real(o->beta));
		json_object_set_new(c, "format", json_string(ouro_eval_format_names[o->format]));
		json_object_set_new(c, "field", json_string(o->field));
	}
	for (int i = 0; i < o->ninputs; i++)
		json_array_append_new(inputs, json_string(o->inputs[i]));
	json_object_set_new(c, "inputs", inputs);
	json_object_set_new(c, "limit", o->limit >= 0 ? json_integer(o->limit) : json_null());
	return c;
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

	if (plot && (rc = ouro_eval_plot(plot, report))) {
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
		ouro_eval_table(stdout, report);
		if (fflush(stdout) || ferror(stdout))
			return ouro_fail(OURO_ESYS, "stdout: write error: %s", strerror(errno));
	}
	return OURO_OK;
}

/* ---- ppl and choice ---------------------------------------------------------- */

/* Where the scored examples go: the report's sums, the log, the progress. */
struct sink {
	struct ouro_eval_run *r;
	const struct ouro_eval_corpus *corpus;
	int64_t *acc, *v;          /* [L.total] the sums, and one example's */
	FILE *log;
	const char *log_name;
	struct cli_progress prog;
	int64_t count;
	json_t **records;          /* gen: [examples] each one's record, for --per-example */
	int64_t tokens;            /* gen: tokens generated */
	const struct ouro_eval_gen *gen;   /* gen: the run, while it runs */
};

/* Example i is scored (ll: choice's log-likelihoods, record: gen's). */
static int sink_take(struct sink *k, int64_t i, const double *d, const double *ll, json_t *record)
{
	const struct ouro_eval_example *e = &k->corpus->ex[i];
	json_t *err = json_object_get(record, "error");
	int rc;

	if ((rc = ouro_eval_fix(&k->r->L, d, k->v, e->where)) ||
	    (rc = ouro_eval_sums_add(&k->r->L, k->acc, k->v, e->where)))
		return rc;
	if (err)
		fprintf(stderr, "%s: %s\n", progname, json_string_value(err));
	if (k->log) {
		json_t *line = ouro_eval_log_line(i, e, &k->r->L, k->v, ll);
		if (record)
			json_object_set(line, "record", record);
		int bad = json_dumpf(line, k->log, JSON_LINE) || fputc('\n', k->log) == EOF || fflush(k->log);
		json_decref(line);
		if (bad)
			return ouro_fail(OURO_ESYS, "%s: write error: %s", k->log_name, strerror(errno));
	}
	if (k->records)
		k->records[i] = json_incref(record);
	k->count++;
	cli_progress_show(&k->prog, k->count, k->r->input_tokens + k->tokens, k->count == k->prog.total);
	return OURO_OK;
}

/* ouro_eval_done_fn */
static int example_done(void *ctx, int64_t i, const double *d, const double *ll)
{
	return sink_take(ctx, i, d, ll, NULL);
}

/* ouro_eval_gen_fn */
static int gen_done(void *ctx, int64_t i, const double *d, json_t *record)
{
	struct sink *k = ctx;

	k->tokens = (int64_t)k->gen->new_tokens;
	return sink_take(k, i, d, NULL, record);
}

/* Generates the examples todo [ntodo] under every rule into the sink. */
static int run_gen(const struct opts *o, struct ouro_eval_run *r, const struct ouro_gate *gate,
		   struct ouro_tok *tok, const int64_t *todo, int64_t ntodo, struct sink *k)
{
	char names[OURO_EVAL_MAX_RULES][64];
	const char *name_of[OURO_EVAL_MAX_RULES];
	int32_t stop_ids[3];
	struct ouro_extract x;
	int rc;

	if ((rc = ouro_extract_init(&x, o->extract)))
		return rc;
	for (int q = 0; q < o->nrules; q++) {
		cli_rule_text(names[q], sizeof names[q], &o->rules[q]);
		name_of[q] = names[q];
	}
	struct ouro_eval_gen g = {
		.m = r->m, .tok = tok, .gate = gate, .T = r->T, .R = r->R, .rules = o->rules,
		.rule_names = name_of, .samp = o->samp, .max_tokens = o->max_tokens,
		.stop = o->stop, .nstop = o->nstop,
		.stop_ids = stop_ids, .nstop_ids = cli_stop_ids(ouro_model_config(r->m), tok, stop_ids),
		.chat = o->chat, .think = o->think, .system = o->system, .extract = &x,
		.parallel = (int)o->parallel, .L = r->L,
		.draft_tokens = (int)o->spec.tokens, .draft_steps = (int)o->spec.steps,
	};
	k->gen = &g;
	rc = ouro_eval_generate(&g, k->corpus, todo, ntodo, gen_done, k);
	r->input_tokens = (int64_t)g.prompt_tokens;
	k->tokens = (int64_t)g.new_tokens;
	k->gen = NULL;
	ouro_extract_free(&x);
	return rc;
}

/* Writes the records of --per-example in the order of the examples. */
static int write_records(const char *path, json_t **records, int64_t total)
{
	struct ouro_output *out;
	FILE *f;
	int rc;

	if ((rc = ouro_output_open(&out, &f, path)))
		return rc;
	for (int64_t i = 0; i < total; i++)
		if (records[i] && (json_dumpf(records[i], f, JSON_LINE) || fputc('\n', f) == EOF)) {
			ouro_output_abort(out);
			return ouro_fail(OURO_ESYS, "%s: write error: %s", ouro_input_name(path), strerror(errno));
		}
	return ouro_output_commit(out);
}

/* The run's settings that depend on the model, checked against it. */
static void run_settings(struct opts *o, const struct ouro_config *cfg, struct ouro_eval_run *r)
{
	r->T = (int)(o->steps ? o->steps : cfg->total_ut_steps);
	cli_spec_settings(&o->spec, r->T);
	/* a generation runs under one rule: gen's default is the model's */
	if (o->task == OURO_EVAL_GEN && !o->nrules)
		o->rules[o->nrules++] = (struct ouro_exit_rule){.kind = OURO_EXIT_THRESHOLD,
								.q = cfg->early_exit_threshold};
	for (int q = 0; q < o->nrules; q++)
		if (o->rules[q].kind == OURO_EXIT_STATIC && o->rules[q].step >= r->T)
			usage_error("--step: %d is outside 0..%d", o->rules[q].step, r->T - 1);
	r->R = o->nrules;
	if (o->window > cfg->max_position_embeddings)
		usage_error("--window: %ld is more than max_position_embeddings %lld", o->window,
			    (long long)cfg->max_position_embeddings);
	if (!o->window)
		o->window = cfg->max_position_embeddings;
	if (o->context > o->window)
		usage_error("--context: %ld is more than the window of %ld", o->context, o->window);
	if (o->prefix < 0)
		o->prefix = cfg->bos_token_id >= 0 ? cfg->bos_token_id : cfg->eos_token_id;
	if (o->prefix < 0)
		usage_error("config.json has no bos_token_id or eos_token_id; give --prefix-token");
	if (o->prefix >= cfg->vocab_size)
		usage_error("--prefix-token: %ld is outside the vocabulary (0..%lld)", o->prefix,
			    (long long)cfg->vocab_size - 1);
	r->window = o->window;
	r->context = o->context;
	r->prefix = (int32_t)o->prefix;
	r->batch = (int)o->parallel;
	ouro_eval_layout_init(&r->L, o->task, r->T, r->R);
}

/* The log o->log into *log: a new one with its header, or the one of the
 * run to continue (--resume), whose examples are marked in done[], added
 * to acc and counted in *ndone, and whose torn last line is cut off. */
static int log_open(const struct opts *o, json_t *config, int64_t total,
		    const struct ouro_eval_layout *L, unsigned char *done, int64_t *acc,
		    int64_t *ndone, FILE **log)
{
	struct stat st;
	int exists = stat(o->log, &st) == 0, rc = OURO_OK;
	off_t keep = 0;
	FILE *lf = NULL;

	/* the log is read back and truncated: a regular file, never a pipe */
	if (exists && (rc = ouro_file_open(&lf, NULL, o->log, OURO_EINPUT)))
		return rc;
	if (exists && !o->resume) {
		fclose(lf);
		usage_error("%s exists; add --resume to continue that run, or remove it", o->log);
	}
	json_t *header = ouro_eval_log_header(config, o->shard_k, o->shard_n, total);
	if (exists)
		rc = ouro_eval_log_resume(lf, o->log, header, o->shard_k, o->shard_n, L, total, done,
					  acc, ndone, &keep);
	if (!rc && exists && truncate(o->log, keep))
		rc = ouro_fail(OURO_ESYS, "%s: %s", o->log, strerror(errno));
	if (!rc && !(*log = fopen(o->log, "a")))
		rc = ouro_fail(OURO_ESYS, "%s: %s", o->log, strerror(errno));
	if (!rc && keep == 0 && (json_dumpf(header, *log, JSON_LINE) || fputc('\n', *log) == EOF ||
				 fflush(*log)))
		rc = ouro_fail(OURO_ESYS, "%s: write error: %s", o->log, strerror(errno));
	json_decref(header);
	return rc;
}

/* The examples this run scores (its shard's, less those of the log) into
 * todo[*ntodo], tokenized now, so that a bad example fails before any
 * work; the tokenizer is loaded into *tok only if one needs it. */
static int examples_todo(const struct opts *o, struct ouro_eval_run *r,
			 struct ouro_eval_corpus *corpus, int64_t total, const unsigned char *done,
			 struct ouro_tok **tok, int64_t *todo, int64_t *ntodo)
{
	int need_tok = 0, rc;

	for (int64_t i = 0; i < total && !need_tok; i++)
		need_tok = ouro_eval_in_shard(i, o->shard_k, o->shard_n) && !done[i] &&
			   (o->task != OURO_EVAL_PPL || corpus->ex[i].text);
	if (need_tok && (rc = ouro_tok_load_dir(tok, ouro_model_dir(r->m))))
		return rc;
	for (int64_t i = 0; i < total; i++) {
		if (!ouro_eval_in_shard(i, o->shard_k, o->shard_n) || done[i])
			continue;
		todo[(*ntodo)++] = i;
		if (*tok && o->task != OURO_EVAL_GEN && (rc = ouro_eval_tokenize(&corpus->ex[i], *tok, o->task, r->prefix, r->window)))
			return rc;
	}
	return OURO_OK;
}

/* -v: what the run did and how fast. */
static void show_speed(const struct ouro_eval_run *r, const struct sink *k, int64_t ndone)
{
	double el = cli_now() - k->prog.t0;

	if (r->task == OURO_EVAL_GEN)
		fprintf(stderr, "%s: %lld examples (and %lld from the log), %lld prompt tokens and %lld generated tokens under %d rules in %.2f s: %.1f generated tokens/s\n",
			progname, (long long)k->count, (long long)ndone, (long long)r->input_tokens,
			(long long)k->tokens, r->R, el, el > 0 ? (double)k->tokens / el : 0.0);
	else
		fprintf(stderr, "%s: %lld examples (and %lld from the log), %lld windows in %lld passes, %lld tokens through the forward pass in %.2f s: %.0f tokens/s, %.1f examples/s (%d loops each)\n",
			progname, (long long)k->count, (long long)ndone, (long long)r->windows,
			(long long)r->passes, (long long)r->input_tokens, el,
			el > 0 ? (double)r->input_tokens / el : 0.0, el > 0 ? (double)k->count / el : 0.0,
			r->T);
}

static int cmd_run(enum ouro_eval_task task, int argc, char **argv)
{
	struct opts o = {.task = task};
	struct ouro_eval_run r = {.task = task};
	struct ouro_tok *tok = NULL;
	struct ouro_gate gate = {0};
	struct ouro_eval_corpus corpus = {0};
	struct ouro_output *pt_out = NULL, *rep_out = NULL;
	FILE *rep_f = NULL;
	json_t *config = NULL, *report = NULL;
	unsigned char *done = NULL;
	int64_t *acc = NULL, *v = NULL, *todo = NULL, total = 0, ntodo = 0, ndone = 0;
	FILE *log = NULL;
	json_t **records = NULL;
	int rc, failed = 0;

	parse_run_options(&o, argc, argv);
	cli_threads(o.threads);
	if ((rc = ouro_model_load(&r.m, ouro_model_path(o.model_dir))))
		die(rc);
	const struct ouro_config *cfg = ouro_model_config(r.m);
	run_settings(&o, cfg, &r);
	if (o.gate_file && (rc = ouro_gate_load(&gate, o.gate_file, cfg->hidden_size)))
		goto fail;
	if (task != OURO_EVAL_GEN &&
	    (rc = ouro_scorer_new(&r.scorer, r.m, o.gate_file ? &gate : NULL, r.T, o.rules, o.nrules)))
		goto fail;
	/* a destination that cannot be written fails now, not after the
	 * work; the report itself is opened at the end, so that a run that
	 * is killed leaves no temporary file behind */
	if ((rc = ouro_eval_corpus_read(&corpus, task, o.format, o.field, o.inputs, o.ninputs,
					   cfg->vocab_size)) ||
	    (rc = report_open(&rep_out, &rep_f, o.outpath, o.table)))
		goto fail;
	ouro_output_abort(rep_out);
	rep_out = NULL;
	total = o.limit >= 0 && o.limit < corpus.n ? o.limit : corpus.n;
	config = config_build(&o, r.m, r.T);

	done = calloc((size_t)total + 1, 1);
	acc = calloc((size_t)r.L.total, sizeof *acc);
	v = calloc((size_t)r.L.total, sizeof *v);
	todo = malloc(((size_t)total + 1) * sizeof *todo);
	records = o.per_example ? calloc((size_t)total + 1, sizeof *records) : NULL;
	if (!done || !acc || !v || !todo || (o.per_example && !records)) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto fail;
	}

	if ((o.log && (rc = log_open(&o, config, total, &r.L, done, acc, &ndone, &log))) ||
	    (rc = examples_todo(&o, &r, &corpus, total, done, &tok, todo, &ntodo)))
		goto fail;
	if (o.per_token) {
		if ((rc = ouro_output_open(&pt_out, &r.per_token, o.per_token)))
			goto fail;
		r.per_token_name = strcmp(o.per_token, "-") ? o.per_token : "stdout";
	}
	struct sink sink = {&r, &corpus, acc, v, log, o.log,
			    {.on = isatty(2), .t0 = cli_now(), .total = ntodo}, 0, records, 0, NULL};
	if ((rc = task == OURO_EVAL_GEN ? run_gen(&o, &r, o.gate_file ? &gate : NULL, tok, todo, ntodo, &sink)
					: ouro_eval_score(&r, &corpus, todo, ntodo, example_done, &sink)))
		goto fail;
	if (o.verbose)
		show_speed(&r, &sink, ndone);
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
	if (records && (rc = write_records(o.per_example, records, total)))
		goto fail;
	report = ouro_eval_report(config, o.shard_k, o.shard_n, total, &r.L, acc);
	if (!(rc = report_open(&rep_out, &rep_f, o.outpath, o.table)))
		rc = emit_report(report, rep_out, rep_f, o.outpath, o.table, o.plot);
	rep_out = NULL;
	/* gen: examples that could not run were named on stderr, now or by
	 * the run that logged them; the report is written all the same */
	failed = !rc && task == OURO_EVAL_GEN && acc[r.L.off[OURO_EVAL_G_FAILED]];
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
	free(todo);
	for (int64_t i = 0; records && i < total; i++)
		json_decref(records[i]);
	free(records);
	ouro_eval_corpus_free(&corpus);
	ouro_tok_free(tok);
	ouro_scorer_free(r.scorer);
	ouro_gate_free(&gate);
	ouro_model_free(r.m);
	if (rc)
		die(rc);
	return failed ? OURO_EINPUT : 0;
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
	struct ouro_eval_merge g = {0};
	json_t *report = NULL;

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
	g.nreports = argc - optind;
	for (int i = optind; i < argc && !rc; i++)
		rc = ouro_eval_merge_add(&g, argv[i]);
	if (!rc && !(rc = ouro_eval_merge_end(&g, &report))) {
		struct ouro_output *o;
		FILE *f;
		if (!(rc = report_open(&o, &f, outpath, table)))
			rc = emit_report(report, o, f, outpath, table, plot);
	}
	ouro_eval_merge_free(&g);
	json_decref(report);
	if (rc)
		die(rc);
	return 0;
}

int main(int argc, char **argv)
{
	cli_init("ouro-eval");
	if (argc < 2)
		usage_error("expected a command: ppl, choice, gen or merge (see --help)");
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "ppl") == 0)
		return cmd_run(OURO_EVAL_PPL, argc - 1, argv + 1);
	if (strcmp(argv[1], "choice") == 0)
		return cmd_run(OURO_EVAL_CHOICE, argc - 1, argv + 1);
	if (strcmp(argv[1], "gen") == 0)
		return cmd_run(OURO_EVAL_GEN, argc - 1, argv + 1);
	if (strcmp(argv[1], "merge") == 0)
		return cmd_merge(argc - 1, argv + 1);
	usage_error("'%s' is not a command: ppl, choice, gen or merge", argv[1]);
}
