/*
 * ouro-generate - prompt in, text out, with the loop and real early exit.
 *
 * The stages of ouro-tokenize | ouro-forward | ouro-gate | ouro-sample in
 * one process: the prompt is prefilled with every KV slot kept, then each
 * new token is decoded with the KV cache, runs loops only until its exit
 * rule fires, and is sampled with the same seeded sampler as ouro-sample;
 * its text is written as soon as it is known. Generation stops at an
 * end-of-turn token, after -n tokens, or when the context is full.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tokenizer.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-generate [-m DIR] [-n N] [-T STEPS] [-q Q | -s STEP | -e EPS | -w]\n"
		"                     [--gate FILE] [--kv full|last|mean] [--temperature X]\n"
		"                     [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
		"                     [--chat] [--system TEXT] [--think] [--prompt-ids] [-t] [-v]\n"
		"                     [-j THREADS] [PROMPT ...]\n"
		"Generate text from a prompt (the arguments, else stdin).\n"
		"\n"
		"  -m, --model DIR       model directory (default: $OURO_MODEL, else the bundled model)\n"
		"  -n, --max-tokens N    stop after N new tokens (default 128)\n"
		"  -T, --steps STEPS     loops per token (default: total_ut_steps of config.json)\n"
		"  -q, --threshold Q     exit at the first loop whose exit CDF reaches Q\n"
		"                        (default: early_exit_threshold of config.json)\n"
		"  -s, --step STEP       always exit after loop STEP (0-based)\n"
		"  -e, --eps EPS         exit at the first loop t >= 1 with ||h[t] - h[t-1]|| < EPS\n"
		"  -w, --weighted        mix all loops' states by the exit distribution\n"
		"      --gate FILE       exit gate weights from FILE instead of the model\n"
		"      --kv POLICY       decode-time KV cache: full (default), last or mean\n"
		"      --temperature X   sampling temperature; 0 is greedy (default 0)\n"
		"      --top-k K         keep the K most likely tokens (default 0: all)\n"
		"      --top-p P         keep the smallest set with probability >= P (default 1)\n"
		"      --min-p P         drop tokens less likely than P times the best (default 0)\n"
		"      --seed S          random seed (default 0)\n"
		"      --chat            wrap the prompt as a user turn in the chat format\n"
		"      --system TEXT     the system message for --chat\n"
		"      --think           open the assistant turn with <think> (-Thinking models)\n"
		"      --prompt-ids      the prompt is token ids (decimal, blank-separated)\n"
		"  -t, --ids             print the new token ids instead of text\n"
		"  -v, --verbose         print speed, loops per token and cache size to stderr\n"
		"  -j, --threads N       threads (default: $OURO_THREADS, else all cores)\n"
		"  -h, --help            show this help\n");
}

struct opts {
	const char *model, *gate, *system, *threads;
	long max_tokens, steps;
	int chat, think, prompt_ids, print_ids, verbose;
	int rule_given;           /* the exit-rule option given, 0: none */
	struct ouro_exit_rule rule;
	enum ouro_kv_policy kv;
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
		{"gate", required_argument, NULL, 'G'},
		{"kv", required_argument, NULL, 'K'},
		{"temperature", required_argument, NULL, 'X'},
		{"top-k", required_argument, NULL, 'k'},
		{"top-p", required_argument, NULL, 'p'},
		{"min-p", required_argument, NULL, 'M'},
		{"seed", required_argument, NULL, 'S'},
		{"chat", no_argument, NULL, 'c'},
		{"system", required_argument, NULL, 'Y'},
		{"think", no_argument, NULL, 'H'},
		{"prompt-ids", no_argument, NULL, 'I'},
		{"ids", no_argument, NULL, 't'},
		{"verbose", no_argument, NULL, 'v'},
		{"threads", required_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	o->max_tokens = 128;
	o->samp.top_p = 1;
	while ((c = cli_getopt(argc, argv, "m:n:T:q:s:e:wtvj:h", longopts)) != -1) {
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'n': o->max_tokens = cli_long(optarg, 0, 1L << 24, "--max-tokens"); break;
		case 'T': o->steps = cli_long(optarg, 1, OURO_MAX_STEPS, "--steps"); break;
		case 'q': case 's': case 'e': case 'w':
			if (cli_exit_option(&o->rule, &o->rule_given, c, optarg, 1))
				usage_error("-q, -s, -e and -w choose one exit rule; give only one");
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
		case 'X': o->samp.temperature = cli_real(optarg, 0, HUGE_VAL, "--temperature"); break;
		case 'k': o->samp.top_k = cli_long(optarg, 0, 1L << 24, "--top-k"); break;
		case 'p': o->samp.top_p = cli_real(optarg, 1e-300, 1, "--top-p"); break;
		case 'M': o->samp.min_p = cli_real(optarg, 0, 1, "--min-p"); break;
		case 'S':
			if (cli_strtou64(optarg, &o->samp.seed))
				usage_error("--seed: '%s' is not an unsigned integer", optarg);
			break;
		case 'c': o->chat = 1; break;
		case 'Y': o->system = optarg; break;
		case 'H': o->think = 1; break;
		case 'I': o->prompt_ids = 1; break;
		case 't': o->print_ids = 1; break;
		case 'v': o->verbose = 1; break;
		case 'j': o->threads = optarg; break;
		case 'h': usage(stdout); exit(0);
		}
	}
	if ((o->system || o->think) && !o->chat)
		usage_error("--system and --think need --chat");
	if (o->chat && o->prompt_ids)
		usage_error("--chat wraps text; it cannot be used with --prompt-ids");
}

/* The prompt as ids: from the arguments or stdin, as text (through the
 * tokenizer, optionally in the chat format) or as ids. */
static int read_prompt(const struct opts *o, int argc, char **argv, struct ouro_tok *tok,
		       struct ouro_ids *ids)
{
	struct ouro_bytes text = {0}, chat = {0};
	int rc = OURO_OK;

	if ((rc = optind < argc ? cli_prompt_args(argc, argv, &text) : cli_prompt_stdin(stdin, &text)))
		goto out;
	if (o->prompt_ids) {
		rc = cli_prompt_ids(text.p, text.n, ids);
	} else if (o->chat) {
		if (!(rc = ouro_tok_chat(&chat, o->system, text.p ? text.p : "", text.n, o->think)))
			rc = ouro_tok_encode(tok, chat.p, chat.n, ids);
	} else {
		rc = ouro_tok_encode(tok, text.p ? text.p : "", text.n, ids);
	}
	if (!rc && ids->n == 0)
		rc = ouro_fail(OURO_EINPUT, "the prompt is empty");
out:
	ouro_bytes_free(&text);
	ouro_bytes_free(&chat);
	return rc;
}

/* Writes one token as text or as an id; flushes so it appears at once. */
/* Writes the newest token of seq [n] as an id, or as the text it adds:
 * the sequence is decoded whole and the bytes past the *shown ones are
 * written, so a token's text depends on its context as it does in the
 * tokenizer (a SentencePiece word marker is a space except at the start
 * of a sequence). Flushes so it appears at once. */
static int emit(const struct opts *o, struct ouro_tok *tok, const int32_t *seq, size_t n,
		size_t *shown, int first)
{
	struct ouro_bytes b = {0};
	int rc = OURO_OK;

	if (o->print_ids) {
		printf("%s%d", first ? "" : " ", seq[n - 1]);
	} else if (!(rc = ouro_tok_decode(tok, seq, n, &b)) && b.n > *shown) {
		fwrite(b.p + *shown, 1, b.n - *shown, stdout);
		*shown = b.n;
	}
	ouro_bytes_free(&b);
	if (!rc && (fflush(stdout) || ferror(stdout)))
		rc = ouro_fail(OURO_ESYS, "stdout: write error: %s", strerror(errno));
	return rc;
}

static int is_stop(const int32_t *stop, int nstop, int32_t id)
{
	for (int i = 0; i < nstop; i++)
		if (stop[i] == id)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	struct ouro_model *m = NULL;
	struct ouro_tok *tok = NULL;
	struct ouro_gate gate = {0};
	struct ouro_gen *g = NULL;
	struct ouro_sampler *samp = NULL;
	struct ouro_ids ids = {0};
	float *h = NULL, *logits = NULL;
	int32_t stop[3];
	int nstop = 0, exit_step, rc;

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
	/* the tokenizer gives the end-of-turn ids too, so it is loaded even
	 * when ids go in and out; only then may it be missing */
	if ((rc = ouro_tok_load_dir(&tok, ouro_model_dir(m)))) {
		if (!(o.prompt_ids && o.print_ids))
			goto fail;
		tok = NULL;
		rc = OURO_OK;
	}
	if (c->eos_token_id >= 0)
		stop[nstop++] = (int32_t)c->eos_token_id;
	for (int i = 0; tok && i < 2; i++) {
		int32_t id = ouro_tok_piece_id(tok, i ? "<|endoftext|>" : "<|im_end|>");
		if (id >= 0 && !is_stop(stop, nstop, id))
			stop[nstop++] = id;
	}
	if ((rc = read_prompt(&o, argc, argv, tok, &ids)))
		goto fail;
	if ((int64_t)ids.n > c->max_position_embeddings) {
		rc = ouro_fail(OURO_EINPUT, "prompt: %zu tokens exceed max_position_embeddings %lld", ids.n,
			       (long long)c->max_position_embeddings);
		goto fail;
	}
	if (o.gate && (rc = ouro_gate_load(&gate, o.gate, c->hidden_size)))
		goto fail;

	int64_t cap = (int64_t)ids.n + o.max_tokens;
	if (cap > c->max_position_embeddings)
		cap = c->max_position_embeddings;   /* generation ends when the context is full */
	struct ouro_gen_opts go = {.steps = (int)o.steps, .kv = o.kv, .rule = o.rule,
				   .gate = o.gate ? &gate : NULL, .capacity = cap};
	if ((rc = ouro_gen_new(&g, m, &go)) || (rc = ouro_sampler_new(&samp, &o.samp, c->vocab_size)))
		goto fail;
	if (!(h = malloc((size_t)c->hidden_size * sizeof *h)) ||
	    !(logits = malloc((size_t)c->vocab_size * sizeof *logits))) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto fail;
	}

	/* the prompt's own text, which the new tokens' text follows */
	size_t shown = 0;
	if (tok && !o.print_ids) {
		struct ouro_bytes b = {0};
		if ((rc = ouro_tok_decode(tok, ids.v, ids.n, &b)))
			goto fail;
		shown = b.n;
		ouro_bytes_free(&b);
	}

	double t0 = cli_now(), t1;
	if ((rc = ouro_gen_prefill(g, ids.v, (int64_t)ids.n, h, &exit_step)))
		goto fail;
	t1 = cli_now();
	int64_t prompt_n = (int64_t)ids.n, made = 0;
	while (made < o.max_tokens && prompt_n + made < cap) {
		if ((rc = ouro_logits(m, h, 1, logits)))
			goto fail;
		int32_t next = ouro_sample(samp, logits, prompt_n + made);
		if (is_stop(stop, nstop, next))
			break;
		if (ouro_ids_push(&ids, next)) {
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
			goto fail;
		}
		if ((rc = emit(&o, tok, ids.v, ids.n, &shown, made == 0)))
			goto fail;
		made++;
		if (prompt_n + made >= cap || made == o.max_tokens)
			break;          /* the last token needs no forward pass */
		if ((rc = ouro_gen_step(g, next, h, &exit_step)))
			goto fail;
	}
	double t2 = cli_now();
	if (o.print_ids || made)
		putchar('\n');
	if (fflush(stdout) || ferror(stdout)) {
		rc = ouro_fail(OURO_ESYS, "stdout: write error: %s", strerror(errno));
		goto fail;
	}
	if (o.verbose) {
		const struct ouro_gen_stats *st = ouro_gen_stats(g);
		fprintf(stderr,
			"%s: load %.2f s; prompt %llu tokens, %.1f tokens/s; decode %llu tokens, "
			"%.2f tokens/s; %.2f loops per decoded token (%llu layer passes); "
			"KV cache %.1f KiB\n",
			progname, t0 - start, (unsigned long long)st->prefill_tokens,
			(double)st->prefill_tokens / (t1 - t0), (unsigned long long)st->decoded_tokens,
			st->decoded_tokens ? (double)st->decoded_tokens / (t2 - t1) : 0.0,
			st->decoded_tokens ? (double)st->decoded_loops / (double)st->decoded_tokens : 0.0,
			(unsigned long long)st->layer_evals, (double)st->kv_bytes / 1024);
	}
fail:
	free(h);
	free(logits);
	ouro_sampler_free(samp);
	ouro_gen_free(g);
	ouro_gate_free(&gate);
	ouro_ids_free(&ids);
	ouro_tok_free(tok);
	ouro_model_free(m);
	if (rc)
		die(rc);
	return 0;
}
