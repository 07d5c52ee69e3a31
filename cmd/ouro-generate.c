/*
 * ouro-generate - prompts in, text out, with the loop and real early exit.
 *
 * The stages of ouro-tokenize | ouro-forward | ouro-gate | ouro-sample in
 * one process, on the library's batch engine: a prompt is prefilled with
 * every KV slot kept, then each new token is decoded with the KV cache,
 * runs loops only until its exit rule fires, and is sampled with the same
 * seeded sampler as ouro-sample. One prompt (the operands or stdin) has
 * its text written as each token is known. With -f, many prompts (one a
 * line, or JSON objects with --jsonl) run together, at most -P at once,
 * and their answers are written in input order, each as soon as it and
 * all before it are done; a sequence's answer is the same whatever runs
 * with it. Generation stops at an end-of-turn token, a stop string, after
 * -n tokens, or when the context is full.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "eval.h"           /* ouro_json_text */
#include "tokenizer.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-generate [-m DIR] [-n N] [-T STEPS] [-q Q | -s STEP | -e EPS | -w |\n"
		"                     --kl EPS | --entropy H | --stable K] [--gate FILE]\n"
		"                     [--kv full|last|mean] [--kv-type bf16|f32] [--kv-memory SIZE]\n"
		"                     [--temperature X] [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
		"                     [--chat] [--system TEXT] [--think] [--prompt-ids]\n"
		"                     [-f FILE [--jsonl] [-P N]] [-t] [-v]\n"
		"                     [--speculate [--draft-steps S] [--draft-tokens K]]\n"
		"                     [-j THREADS] [PROMPT ...]\n"
		"Generate text from a prompt (the arguments, else stdin), or from many (-f).\n"
		"\n"
		"  -m, --model DIR       model directory (default: $OURO_MODEL, else the bundled model)\n"
		"  -n, --max-tokens N    stop after N new tokens (default 128)\n"
		"  -T, --steps STEPS     loops per token (default: total_ut_steps of config.json)\n"
		"  -q, --threshold Q     exit at the first loop whose exit CDF reaches Q\n"
		"                        (default: early_exit_threshold of config.json)\n"
		"  -s, --step STEP       always exit after loop STEP (0-based)\n"
		"  -e, --eps EPS         exit at the first loop t >= 1 with ||h[t] - h[t-1]|| < EPS\n"
		"  -w, --weighted        mix all loops' states by the exit distribution\n"
		"      --kl EPS          exit at the first loop t >= 1 whose next-token distribution\n"
		"                        is within KL divergence EPS (nats) of loop t-1's\n"
		"      --entropy H       exit at the first loop t >= 1 with next-token entropy < H\n"
		"      --stable K        exit once K loops in a row predict the same top token\n"
		"      --gate FILE       exit gate weights from FILE instead of the model\n"
		"      --kv POLICY       decode-time KV cache: full (default), last or mean\n"
		"      --kv-type TYPE    KV cache elements: bf16 (default) or f32\n"
		"      --kv-memory SIZE  KV cache budget, bytes or with K, M, G (default: half\n"
		"                        the available memory)\n"
		"      --temperature X   sampling temperature; 0 is greedy (default 0)\n"
		"      --top-k K         keep the K most likely tokens (default 0: all)\n"
		"      --top-p P         keep the smallest set with probability >= P (default 1)\n"
		"      --min-p P         drop tokens less likely than P times the best (default 0)\n"
		"      --seed S          random seed (default 0)\n"
		"      --chat            wrap the prompt as a user turn in the chat format\n"
		"      --system TEXT     the system message for --chat\n"
		"      --think           open the assistant turn with <think> (-Thinking models)\n"
		"      --prompt-ids      the prompt is token ids (decimal, blank-separated)\n"
		"  -f, --file FILE       many prompts from FILE ('-': stdin), one a line\n"
		"      --jsonl           with -f: JSON objects in and out, one a line\n"
		"  -P, --parallel N      with -f: at most N sequences at once (default 16)\n"
		"      --speculate       under --kv full, draft tokens with the first loops and\n"
		"                        verify them together (the same output or distribution)\n"
		"      --draft-steps S   draft with S loops, 1..STEPS-1 (default 1)\n"
		"      --draft-tokens K  at most K positions a draft (default 4)\n"
		"  -t, --ids             print the new token ids instead of text\n"
		"  -v, --verbose         print speed, loops per token and cache size to stderr\n"
		"  -j, --threads N       threads (default: $OURO_THREADS, else all cores)\n"
		"  -h, --help            show this help\n");
}

struct opts {
	const char *model, *gate, *system, *threads, *file;
	long max_tokens, steps, parallel;
	int chat, think, prompt_ids, print_ids, verbose, jsonl;
	struct cli_spec spec;
	int rule_given;           /* the exit-rule option given, 0: none */
	struct ouro_exit_rule rule;
	enum ouro_kv_policy kv;
	enum ouro_dtype kv_type;
	uint64_t kv_memory;
	struct ouro_sampler_opts samp;
};

static void parse_args(struct opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"max-tokens", required_argument, NULL, 'n'},
		{"steps", required_argument, NULL, 'T'},
		{"threshold", required_argument, NULL, 'q'},
		{"step", required_argument, NULL, 's'},
		{"eps", required_argument, NULL, 'e'},
		{"weighted", no_argument, NULL, 'w'},
		CLI_EXIT_LONGOPTS,
		{"gate", required_argument, NULL, 'G'},
		{"kv", required_argument, NULL, 'K'},
		{"kv-type", required_argument, NULL, 'D'},
		{"kv-memory", required_argument, NULL, 'B'},
		CLI_SAMPLER_LONGOPTS,
		{"chat", no_argument, NULL, 'c'},
		{"system", required_argument, NULL, 'Y'},
		{"think", no_argument, NULL, 'H'},
		{"prompt-ids", no_argument, NULL, 'I'},
		{"file", required_argument, NULL, 'f'},
		{"jsonl", no_argument, NULL, 'J'},
		{"parallel", required_argument, NULL, 'P'},
		CLI_SPEC_LONGOPTS,
		{"ids", no_argument, NULL, 't'},
		{"verbose", no_argument, NULL, 'v'},
		{"threads", required_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	o->max_tokens = 128;
	cli_sampler_defaults(&o->samp);
	o->kv_type = OURO_BF16;
	while ((c = cli_getopt(argc, argv, "m:n:T:q:s:e:wf:P:tvj:h", longopts)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'n': o->max_tokens = cli_long(optarg, 0, 1L << 24, "--max-tokens"); break;
		case 'T': o->steps = cli_long(optarg, 1, OURO_MAX_STEPS, "--steps"); break;
		case 'q': case 's': case 'e': case 'w':
		case CLI_OPT_KL: case CLI_OPT_ENTROPY: case CLI_OPT_STABLE:
			cli_exit_option(&o->rule, &o->rule_given, c, optarg, 1);
			break;
		case 'G': o->gate = optarg; break;
		case 'K':
			if (strcmp(optarg, "full") == 0)
				o->kv = OURO_KV_FULL;
			else if (strcmp(optarg, "last") == 0)
				o->kv = OURO_KV_LAST;
			else if (strcmp(optarg, "mean") == 0)
				o->kv = OURO_KV_MEAN;
			else
				usage_error("--kv: '%s' is not full, last or mean", optarg);
			break;
		case 'D':
			if (strcmp(optarg, "bf16") == 0)
				o->kv_type = OURO_BF16;
			else if (strcmp(optarg, "f32") == 0)
				o->kv_type = OURO_F32;
			else
				usage_error("--kv-type: '%s' is not bf16 or f32", optarg);
			break;
		case 'B': o->kv_memory = cli_size(optarg, "--kv-memory"); break;
		case 'c': o->chat = 1; break;
		case 'Y': o->system = optarg; break;
		case 'H': o->think = 1; break;
		case 'I': o->prompt_ids = 1; break;
		case 'f': o->file = optarg; break;
		case 'J': o->jsonl = 1; break;
		case 'P': o->parallel = cli_long(optarg, 1, 4096, "--parallel"); break;
		case 't': o->print_ids = 1; break;
		case 'v': o->verbose = 1; break;
		case 'j': o->threads = optarg; break;
		case 'h': usage(stdout); exit(0);
		default:
			if (!cli_sampler_option(&o->samp, c, optarg))
				cli_spec_option(&o->spec, c, optarg);
			break;
		}
	}
	if ((o->system || o->think) && !o->chat)
		usage_error("--system and --think need --chat");
	if (o->chat && o->prompt_ids)
		usage_error("--chat wraps text; it cannot be used with --prompt-ids");
	if ((o->jsonl || o->parallel) && !o->file)
		usage_error("--jsonl and --parallel go with -f");
	if (o->file && optind < argc)
		usage_error("-f reads the prompts; no PROMPT operands with it");
	if (o->jsonl && o->prompt_ids)
		usage_error("--jsonl objects give prompt_ids themselves; no --prompt-ids with it");
	if (!o->parallel)
		o->parallel = o->file ? 16 : 1;
}

/* The ids of one prompt's text or id list, as the options say. */
static int encode_prompt(const struct opts *o, struct ouro_tok *tok, const char *p, size_t n,
			 struct ouro_ids *ids)
{
	struct ouro_bytes chat = {0};
	int rc;

	if (o->prompt_ids) {
		rc = cli_prompt_ids(p, n, ids);
	} else if (o->chat) {
		if (!(rc = ouro_tok_chat(&chat, o->system, p ? p : "", n, o->think)))
			rc = ouro_tok_encode(tok, chat.p, chat.n, ids);
	} else {
		rc = ouro_tok_encode(tok, p ? p : "", n, ids);
	}
	if (!rc && ids->n == 0)
		rc = ouro_fail(OURO_EINPUT, "the prompt is empty");
	ouro_bytes_free(&chat);
	return rc;
}

static int write_error(void)
{
	return ouro_fail(OURO_ESYS, "stdout: write error: %s", strerror(errno));
}

/* ---- many prompts (-f) ------------------------------------------------ */

/* One prompt of the input and, once done, its answer. */
struct job {
	long line;                /* 1-based line of the input */
	struct ouro_ids ids;      /* the prompt, then the new tokens */
	size_t prompt;            /* prompt tokens */
	size_t prompt_text;       /* bytes of the prompt's text */
	struct ouro_ids loops;    /* [new tokens] loops of each */
	char **stop;              /* [nstop] stop strings */
	int nstop;
	int64_t max_tokens;
	uint64_t seed;
	struct ouro_bytes text;   /* the answer's text (at the end) */
	char *error;              /* the message of a bad prompt */
	int finish;               /* enum ouro_finish; set when done */
};

static void job_free(struct job *j)
{
	ouro_ids_free(&j->ids);
	ouro_ids_free(&j->loops);
	for (int i = 0; i < j->nstop; i++)
		free(j->stop[i]);
	free(j->stop);
	ouro_bytes_free(&j->text);
	free(j->error);
	*j = (struct job){0};
}

/* Marks j bad with the library's last message. */
static void job_fail(struct job *j)
{
	j->error = strdup(ouro_errmsg());
	j->finish = OURO_FINISH_STOP;
}

/* Reads a --jsonl object's fields into j: prompt (text) or prompt_ids,
 * max_tokens, stop (a string or strings), seed. */
static int parse_object(const struct opts *o, struct ouro_tok *tok, const char *p, size_t n,
			struct job *j)
{
	json_error_t err;
	json_t *v = json_loadb(p, n, 0, &err), *f;
	int rc = OURO_OK;

	if (!v)
		return ouro_fail(OURO_EINPUT, "invalid JSON: %s", err.text);
	if (!json_is_object(v)) {
		rc = ouro_fail(OURO_EINPUT, "not a JSON object");
		goto out;
	}
	const char *key;
	json_object_foreach(v, key, f)
		if (strcmp(key, "prompt") && strcmp(key, "prompt_ids") && strcmp(key, "max_tokens") &&
		    strcmp(key, "stop") && strcmp(key, "seed")) {
			rc = ouro_fail(OURO_EINPUT, "unknown field \"%s\"", key);
			goto out;
		}
	json_t *text = json_object_get(v, "prompt"), *ids = json_object_get(v, "prompt_ids");
	if (!!text == !!ids) {
		rc = ouro_fail(OURO_EINPUT, "give one of \"prompt\" (text) and \"prompt_ids\"");
		goto out;
	}
	if (text) {
		if (!json_is_string(text)) {
			rc = ouro_fail(OURO_EINPUT, "\"prompt\" is not a string");
			goto out;
		}
		if (!tok) {
			rc = ouro_fail(OURO_EINPUT, "a text prompt needs the model's tokenizer");
			goto out;
		}
		struct opts to = *o;
		to.prompt_ids = 0;
		if ((rc = encode_prompt(&to, tok, json_string_value(text), json_string_length(text),
					&j->ids)))
			goto out;
	} else {
		size_t i;
		json_t *x;
		if (!json_is_array(ids)) {
			rc = ouro_fail(OURO_EINPUT, "\"prompt_ids\" is not an array");
			goto out;
		}
		json_array_foreach(ids, i, x) {
			if (!json_is_integer(x) || json_integer_value(x) < INT32_MIN ||
			    json_integer_value(x) > INT32_MAX) {
				rc = ouro_fail(OURO_EINPUT, "\"prompt_ids\"[%zu] is not a token id", i);
				goto out;
			}
			if (ouro_ids_push(&j->ids, (int32_t)json_integer_value(x))) {
				rc = ouro_fail(OURO_ENOMEM, "out of memory");
				goto out;
			}
		}
		if (!j->ids.n) {
			rc = ouro_fail(OURO_EINPUT, "the prompt is empty");
			goto out;
		}
	}
	if ((f = json_object_get(v, "max_tokens"))) {
		if (!json_is_integer(f) || json_integer_value(f) < 0 ||
		    json_integer_value(f) > (1 << 24)) {
			rc = ouro_fail(OURO_EINPUT, "\"max_tokens\" is not an integer in 0..16777216");
			goto out;
		}
		j->max_tokens = json_integer_value(f);
	}
	if ((f = json_object_get(v, "seed"))) {
		if (!json_is_integer(f) || json_integer_value(f) < 0) {
			rc = ouro_fail(OURO_EINPUT, "\"seed\" is not an integer >= 0");
			goto out;
		}
		j->seed = (uint64_t)json_integer_value(f);
	}
	if ((f = json_object_get(v, "stop"))) {
		size_t cnt = json_is_string(f) ? 1 : json_is_array(f) ? json_array_size(f) : 0;
		if (!json_is_string(f) && !json_is_array(f)) {
			rc = ouro_fail(OURO_EINPUT, "\"stop\" is not a string or an array of strings");
			goto out;
		}
		if (cnt && !(j->stop = calloc(cnt, sizeof *j->stop))) {
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < cnt; i++) {
			json_t *x = json_is_string(f) ? f : json_array_get(f, i);
			if (!json_is_string(x) || !json_string_length(x)) {
				rc = ouro_fail(OURO_EINPUT, "\"stop\" holds something not a non-empty string");
				goto out;
			}
			if (!(j->stop[j->nstop++] = strdup(json_string_value(x)))) {
				rc = ouro_fail(OURO_ENOMEM, "out of memory");
				goto out;
			}
		}
	}
out:
	json_decref(v);
	return rc;
}

/* The prompts of the input, one a line (a final line without a newline
 * counts). A line that is not a good prompt becomes a job with an error. */
static int read_jobs(const struct opts *o, struct ouro_tok *tok, struct job **out, size_t *njobs)
{
	FILE *f = strcmp(o->file, "-") ? fopen(o->file, "r") : stdin;
	const char *name = ouro_input_name(o->file);
	struct job *jobs = NULL;
	size_t n = 0, cap = 0, len = 0;
	char *line = NULL;
	ssize_t got;
	int rc = OURO_OK;

	if (!f)
		return ouro_fail(OURO_ESYS, "%s: %s", o->file, strerror(errno));
	while ((got = getline(&line, &len, f)) >= 0) {
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 64;
			struct job *p = realloc(jobs, nc * sizeof *p);
			if (!p) {
				rc = ouro_fail(OURO_ENOMEM, "out of memory");
				break;
			}
			jobs = p;
			cap = nc;
		}
		struct job *j = &jobs[n++];
		memset(j, 0, sizeof *j);
		j->line = (long)n;
		j->max_tokens = o->max_tokens;
		j->seed = o->samp.seed;
		if (got && line[got - 1] == '\n')
			line[--got] = 0;
		if ((o->jsonl ? parse_object(o, tok, line, (size_t)got, j)
			      : encode_prompt(o, tok, line, (size_t)got, &j->ids)))
			job_fail(j);
		j->prompt = j->ids.n;
	}
	if (!rc && ferror(f))
		rc = ouro_fail(OURO_ESYS, "%s: read error: %s", name, strerror(errno));
	free(line);
	if (f != stdin)
		fclose(f);
	*out = jobs;
	*njobs = n;
	return rc;
}

static const char *finish_name(int finish)
{
	return finish == OURO_FINISH_EOS ? "eos" : finish == OURO_FINISH_STOP ? "stop" : "length";
}

/* Writes the answer of job index i as one whole line and flushes it. */
static int write_job(const struct opts *o, const struct ouro_tok *tok, const struct job *j,
		     size_t i)
{
	struct ouro_bytes line = {0};
	int rc = OURO_OK;

	if (o->jsonl) {
		json_t *v = json_object(), *ids = json_array(), *loops = json_array();
		json_object_set_new(v, "index", json_integer((json_int_t)i));
		if (j->error) {
			json_object_set_new(v, "error", json_string(j->error));
		} else {
			if (tok)
				json_object_set_new(v, "text", ouro_json_text(j->text.p ? j->text.p : "", j->text.n));
			for (size_t k = j->prompt; k < j->ids.n; k++) {
				json_array_append_new(ids, json_integer(j->ids.v[k]));
				json_array_append_new(loops, json_integer(j->loops.v[k - j->prompt]));
			}
			json_object_set(v, "ids", ids);
			json_object_set(v, "loops", loops);
			json_object_set_new(v, "finish", json_string(finish_name(j->finish)));
		}
		char *s = json_dumps(v, JSON_COMPACT);
		if (!s || ouro_bytes_add(&line, s, strlen(s)))
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
		free(s);
		json_decref(ids);
		json_decref(loops);
		json_decref(v);
	} else if (o->print_ids) {
		char buf[16];
		for (size_t k = j->prompt; !j->error && k < j->ids.n && !rc; k++) {
			snprintf(buf, sizeof buf, "%s%d", k > j->prompt ? " " : "", j->ids.v[k]);
			rc = ouro_bytes_add(&line, buf, strlen(buf)) ? ouro_fail(OURO_ENOMEM, "out of memory") : 0;
		}
	} else {
		/* one line an answer: newlines and backslashes escaped */
		for (size_t k = 0; !j->error && k < j->text.n && !rc; k++) {
			char c = j->text.p[k];
			const char *s = c == '\n' ? "\\n" : c == '\\' ? "\\\\" : &j->text.p[k];
			rc = ouro_bytes_add(&line, s, c == '\n' || c == '\\' ? 2 : 1)
				     ? ouro_fail(OURO_ENOMEM, "out of memory") : 0;
		}
	}
	if (!rc && ouro_bytes_add(&line, "\n", 1))
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
	if (!rc && (fwrite(line.p, 1, line.n, stdout) != line.n || fflush(stdout)))
		rc = write_error();
	ouro_bytes_free(&line);
	return rc;
}

/* After a new token of j: 1 when its text now holds a stop string, the
 * text cut before the first one. */
static int hits_stop(struct ouro_tok *tok, struct job *j, int *rc)
{
	int stopped = 0;

	if (j->nstop && tok)
		*rc = ouro_tok_decode_after(tok, j->ids.v, j->ids.n, j->prompt_text, j->stop, j->nstop,
					    &j->text, &stopped);
	return stopped;
}

/* When the first new token of the run came (cli_now), for -v: the
 * prompt's prefill ends there. 0 before. */
static double first_token;

/* Runs every good job on the engine and writes the answers in order. */
static int run_jobs(const struct opts *o, struct ouro_engine *eng, struct ouro_tok *tok,
		    const int32_t *stop_ids, int nstop, struct job *jobs, size_t njobs, int *failed)
{
	size_t *of_seq = malloc((njobs ? njobs : 1) * sizeof *of_seq), next = 0;
	int64_t nseq = 0;
	int rc = OURO_OK;

	if (!of_seq)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	for (size_t i = 0; i < njobs; i++) {
		struct job *j = &jobs[i];
		int64_t id;
		struct ouro_bytes b = {0};

		if (j->error)
			continue;
		struct ouro_seq_opts so = {.rule = o->rule, .samp = o->samp,
					   .max_tokens = j->max_tokens, .stop = stop_ids, .nstop = nstop};
		so.samp.seed = j->seed;
		if (tok && !o->print_ids) {
			if ((rc = ouro_tok_decode(tok, j->ids.v, j->ids.n, &b)))
				goto out;
			j->prompt_text = b.n;
			ouro_bytes_free(&b);
		}
		if ((rc = ouro_engine_add(eng, j->ids.v, (int64_t)j->ids.n, &so, &id))) {
			if (rc == OURO_ESYS)
				goto out;
			job_fail(j);
			rc = OURO_OK;
			continue;
		}
		of_seq[nseq++] = i;
	}
	for (;;) {
		for (; next < njobs && jobs[next].finish; next++) {
			struct job *j = &jobs[next];
			if (j->error) {
				fprintf(stderr, "%s: %s: line %ld: %s\n", progname,
					ouro_input_name(o->file), j->line, j->error);
				*failed = 1;
			}
			if ((rc = write_job(o, tok, j, next)))
				goto out;
			job_free(j);
		}
		if (!ouro_engine_pending(eng))
			break;
		const struct ouro_engine_event *ev;
		int nev;
		if ((rc = ouro_engine_step(eng, &ev, &nev)))
			goto out;
		for (int k = 0; k < nev; k++) {
			struct job *j = &jobs[of_seq[ev[k].seq]];
			int finish = ev[k].finish;

			if (ev[k].token >= 0 && !first_token)
				first_token = cli_now();

			if (ev[k].token >= 0 && (ouro_ids_push(&j->ids, ev[k].token) ||
						 ouro_ids_push(&j->loops, ev[k].loops))) {
				rc = ouro_fail(OURO_ENOMEM, "out of memory");
				goto out;
			}
			if (ev[k].token >= 0 && hits_stop(tok, j, &rc)) {
				if (!finish)
					ouro_engine_cancel(eng, ev[k].seq);
				finish = OURO_FINISH_STOP;
			}
			if (rc)
				goto out;
			int stopped;
			if (finish && (finish == OURO_FINISH_STOP || !tok || o->print_ids ||
				       !(rc = ouro_tok_decode_after(tok, j->ids.v, j->ids.n, j->prompt_text,
								    NULL, 0, &j->text, &stopped))))
				j->finish = finish;
			if (rc)
				goto out;
		}
	}
out:
	free(of_seq);
	return rc;
}

/* ---- one prompt ---------------------------------------------------------- */

/* The prompt as ids: from the arguments or stdin. */
static int read_prompt(const struct opts *o, int argc, char **argv, struct ouro_tok *tok,
		       struct ouro_ids *ids)
{
	struct ouro_bytes text = {0};
	int rc;

	if (!(rc = optind < argc ? cli_prompt_args(argc, argv, &text) : cli_prompt_stdin(stdin, &text)))
		rc = encode_prompt(o, tok, text.p, text.n, ids);
	ouro_bytes_free(&text);
	return rc;
}

/* Generates from one prompt, writing each new token's text (or id) as soon
 * as it is known: the sequence is decoded whole and the bytes past those
 * shown are written, so a token's text depends on its context as it does
 * in the tokenizer. */
static int run_one(const struct opts *o, struct ouro_engine *eng, struct ouro_tok *tok,
		   const int32_t *stop_ids, int nstop, struct ouro_ids *ids)
{
	struct ouro_bytes b = {0};
	size_t shown = 0, prompt = ids->n;
	int64_t id;
	int rc, done = 0;

	if (tok && !o->print_ids) {
		if ((rc = ouro_tok_decode(tok, ids->v, ids->n, &b)))
			return rc;
		shown = b.n;
	}
	struct ouro_seq_opts so = {.rule = o->rule, .samp = o->samp, .max_tokens = o->max_tokens,
				   .stop = stop_ids, .nstop = nstop};
	if ((rc = ouro_engine_add(eng, ids->v, (int64_t)ids->n, &so, &id)))
		goto out;
	while (!done) {
		const struct ouro_engine_event *ev;
		int nev;
		if ((rc = ouro_engine_step(eng, &ev, &nev)))
			goto out;
		for (int k = 0; k < nev; k++) {
			done |= ev[k].finish != OURO_FINISH_NONE;
			if (ev[k].token < 0)
				continue;
			if (!first_token)
				first_token = cli_now();
			if (ouro_ids_push(ids, ev[k].token)) {
				rc = ouro_fail(OURO_ENOMEM, "out of memory");
				goto out;
			}
			if (o->print_ids) {
				printf("%s%d", ids->n - 1 > prompt ? " " : "", ev[k].token);
			} else {
				b.n = 0;
				if ((rc = ouro_tok_decode(tok, ids->v, ids->n, &b)))
					goto out;
				if (b.n > shown) {
					fwrite(b.p + shown, 1, b.n - shown, stdout);
					shown = b.n;
				}
			}
			if (fflush(stdout) || ferror(stdout)) {
				rc = write_error();
				goto out;
			}
		}
	}
	if ((o->print_ids || ids->n > prompt) && putchar('\n') == EOF)
		rc = write_error();
out:
	ouro_bytes_free(&b);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct ouro_model *m = NULL;
	struct ouro_tok *tok = NULL;
	struct ouro_gate gate = {0};
	struct ouro_engine *eng = NULL;
	struct ouro_ids ids = {0};
	struct job *jobs = NULL;
	size_t njobs = 0;
	int32_t stop[3];
	int nstop, rc, failed = 0;

	cli_init("ouro-generate");
	double start = cli_now();
	parse_args(&o, argc, argv);
	cli_threads(o.threads);
	if ((rc = ouro_model_load(&m, ouro_model_path(o.model))))
		die(rc);
	const struct ouro_config *c = ouro_model_config(m);
	if (!o.steps)
		o.steps = c->total_ut_steps;
	if (!o.rule_given)
		o.rule = (struct ouro_exit_rule){.kind = OURO_EXIT_THRESHOLD, .q = c->early_exit_threshold};
	if (o.rule.kind == OURO_EXIT_STATIC && o.rule.step >= o.steps)
		usage_error("--step: %d is outside 0..%ld", o.rule.step, o.steps - 1);
	cli_spec_settings(&o.spec, o.steps);
	/* the tokenizer gives the end-of-turn ids too, so it is loaded even
	 * when ids go in and out; only then may it be missing (--jsonl: the
	 * answers have no "text", and text prompts are bad lines) */
	if ((rc = ouro_tok_load_dir(&tok, ouro_model_dir(m)))) {
		if (!(o.prompt_ids && o.print_ids) && !o.jsonl)
			goto fail;
		tok = NULL;
		rc = OURO_OK;
	}
	nstop = cli_stop_ids(c, tok, stop);
	if (o.gate && (rc = ouro_gate_load(&gate, o.gate, c->hidden_size)))
		goto fail;
	if (o.file ? (rc = read_jobs(&o, tok, &jobs, &njobs)) : (rc = read_prompt(&o, argc, argv, tok, &ids)))
		goto fail;
	struct ouro_engine_opts eo = {.steps = (int)o.steps, .kv = o.kv, .kv_dtype = o.kv_type,
				      .gate = o.gate ? &gate : NULL, .kv_memory = o.kv_memory,
				      .max_seqs = (int)o.parallel, .draft_tokens = (int)o.spec.tokens,
				      .draft_steps = (int)o.spec.steps};
	if ((rc = ouro_engine_new(&eng, m, &eo)))
		goto fail;

	double t0 = cli_now();
	if ((rc = o.file ? run_jobs(&o, eng, tok, stop, nstop, jobs, njobs, &failed)
			 : run_one(&o, eng, tok, stop, nstop, &ids)))
		goto fail;
	double t1 = cli_now();
	if (fflush(stdout) || ferror(stdout)) {
		rc = write_error();
		goto fail;
	}
	if (o.verbose) {
		const struct ouro_engine_stats *st = ouro_engine_stats(eng);
		double steps = st->steps ? (double)st->steps : 1, dec = (double)st->decoded_tokens;
		double made = (double)st->new_tokens;
		fprintf(stderr,
			"%s: load %.2f s; %.2f s for %llu prompt tokens and %llu new tokens "
			"(the first after %.2f s), "
			"%.2f new tokens/s; %.2f loops per decoded token (%llu layer passes); "
			"%.2f sequences (%.2f positions) a pass over %llu passes; "
			"KV cache %.1f KiB at most (blocks of %.1f KiB, budget %.1f MiB)\n",
			progname, t0 - start, t1 - t0, (unsigned long long)st->prefill_tokens,
			(unsigned long long)st->new_tokens, first_token ? first_token - t0 : t1 - t0,
			made / (t1 - t0),
			dec ? (double)st->decoded_loops / dec : 0.0,
			(unsigned long long)(st->decoded_loops * (uint64_t)c->num_hidden_layers),
			(double)st->items / steps, (double)st->rows / steps,
			(unsigned long long)st->steps,
			(double)st->kv_peak_blocks * (double)st->kv_block_bytes / 1024,
			(double)st->kv_block_bytes / 1024, (double)st->kv_budget / (1 << 20));
		if (o.spec.on)
			cli_spec_report(st, c->num_hidden_layers);
	}
fail:
	for (size_t i = 0; i < njobs; i++)
		job_free(&jobs[i]);
	free(jobs);
	ouro_engine_free(eng);
	ouro_gate_free(&gate);
	ouro_ids_free(&ids);
	ouro_tok_free(tok);
	ouro_model_free(m);
	if (rc)
		die(rc);
	return failed ? OURO_EINPUT : 0;
}
