/*
 * ouro-sample - the next token from the state a record carries.
 *
 * Reads records from ouro-gate (exit_hidden [n, D]) or ouro-forward
 * (hidden [K, n, D], one step chosen), applies the language-model head to
 * the state of the last position only, picks the next token (greedy by
 * default; temperature, top-k, top-p, min-p and a seed otherwise) and
 * writes per record a record whose `tokens` is the input's plus the new
 * one, so that ouro-forward can take it again. -t writes the extended
 * sequence as text ids instead.
 */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"


static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-sample [-m DIR] [-s STEP] [--temperature X] [--top-k K] [--top-p P]\n"
		"                   [--min-p P] [--seed N] [--logprobs K] [-t] [-j THREADS]\n"
		"                   [-o FILE] [FILE ...]\n"
		"Pick the next token from the state at the last position of each record.\n"
		"\n"
		"  -m, --model DIR       model directory (default: $OURO_MODEL, else the bundled model)\n"
		"  -s, --step STEP       use hidden at loop STEP (0-based), not exit_hidden\n"
		"      --temperature X   X >= 0; 0 (default) is greedy\n"
		"      --top-k K         keep the K most likely tokens (default 0: all)\n"
		"      --top-p P         keep the most likely tokens up to mass P, 0 < P <= 1 (default 1)\n"
		"      --min-p P         keep tokens at least P times the most likely, 0 <= P <= 1 (default 0)\n"
		"      --seed N          seed of the draws, 0 to 2^64-1 (default 0)\n"
		"      --logprobs K      add the K most likely tokens and their log-probabilities\n"
		"  -t, --ids             write the extended sequences as text ids, not records\n"
		"  -j, --threads N       threads (default: $OURO_THREADS, else all cores)\n"
		"  -o, --output FILE     write to FILE (atomically) instead of stdout\n"
		"  -h, --help            show this help\n"
		"\n"
		"Input: records with 'tokens' and 'exit_hidden' [n, D] or 'hidden' [K, n, D].\n");
}

/* Parses a whole finite decimal number, or exits with a usage error. */
static double parse_double(const char *s, const char *opt)
{
	double v;

	if (*s == ' ' || *s == '\t' || cli_strtod(s, &v))
		usage_error("%s: '%s' is not a finite number", opt, s);
	return v;
}

/* Where a state comes from. */
struct source {
	long step;            /* -s STEP, or -1 */
	int64_t V, D;         /* the model's vocab_size and hidden_size */
	const char *model;    /* its directory, for messages */
};

/* Converts the state of the last position of rec into h [D]. */
static int last_state(const struct ouro_st *rec, int64_t n, const struct source *src,
		      const char *where, float *h)
{
	const struct ouro_tensor *t = ouro_st_find(rec, "exit_hidden");
	size_t esz;
	int64_t row = 0;
	int rc;

	if (t && src->step < 0) {
		int64_t lead[1] = {n};
		if ((rc = ouro_state_check(t, 2, lead, src->D, src->model, where)))
			return rc;
		row = n - 1;
	} else if (ouro_st_find(rec, "hidden")) {
		struct ouro_hidden hid;
		if ((rc = ouro_hidden_find(&hid, rec, n, src->D, src->model, where)) ||
		    (rc = ouro_hidden_row(&hid, src->step, where, &row)))
			return rc;
		t = hid.t;
		row = row * n + n - 1;
	} else if (src->step >= 0) {
		return ouro_fail(OURO_EINPUT, "%s: no tensor 'hidden' [K, n, D] to take step %ld from",
				 where, src->step);
	} else {
		return ouro_fail(OURO_EINPUT, "%s: no tensor 'exit_hidden' [n, D] or 'hidden' [K, n, D]",
				 where);
	}
	esz = ouro_dtype_size(t->dtype);
	ouro_to_f32(h, (const char *)t->data + (size_t)row * (size_t)src->D * esz, t->dtype,
		    (size_t)src->D);
	return OURO_OK;
}

struct outputs {
	FILE *f;
	const char *name;
	int as_ids;          /* -t */
	int logprobs;        /* --logprobs K, 0: none */
};

/* Writes the extended sequence ids [n+1] of one record. */
static int emit(const struct outputs *o, const struct ouro_st *in, const int32_t *ids,
		int64_t n, const int32_t *top_ids, const float *top_lp)
{
	struct ouro_record *r;
	int rc = OURO_OK;

	if (o->as_ids) {
		for (int64_t i = 0; i < n; i++)
			fprintf(o->f, "%s%d", i ? " " : "", ids[i]);
		putc('\n', o->f);
		return OURO_OK;
	}
	if (!(r = ouro_record_new()))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	int64_t tshape[1] = {n}, kshape[1] = {o->logprobs};
	if ((rc = ouro_record_meta_copy(r, in)) ||
	    (rc = ouro_record_meta(r, "ouro.producer", "ouro-sample")) ||
	    (rc = ouro_record_add(r, "tokens", OURO_I32, 1, tshape, ids)))
		goto out;
	if (o->logprobs &&
	    ((rc = ouro_record_add(r, "top_ids", OURO_I32, 1, kshape, top_ids)) ||
	     (rc = ouro_record_add(r, "top_logprobs", OURO_F32, 1, kshape, top_lp))))
		goto out;
	rc = ouro_record_write(r, o->f, o->name);
out:
	ouro_record_free(r);
	return rc;
}

/* The command line. */
struct opts {
	struct ouro_sampler_opts so;
	struct source src;         /* step */
	struct outputs o;          /* as_ids, logprobs */
	const char *model_dir, *threads, *outpath;
};

static void parse_args(struct opts *op, int argc, char **argv)
{
	enum { OPT_TEMP = 256, OPT_TOPK, OPT_TOPP, OPT_MINP, OPT_SEED, OPT_LOGPROBS };
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"step", required_argument, NULL, 's'},
		{"temperature", required_argument, NULL, OPT_TEMP},
		{"top-k", required_argument, NULL, OPT_TOPK},
		{"top-p", required_argument, NULL, OPT_TOPP},
		{"min-p", required_argument, NULL, OPT_MINP},
		{"seed", required_argument, NULL, OPT_SEED},
		{"logprobs", required_argument, NULL, OPT_LOGPROBS},
		{"ids", no_argument, NULL, 't'},
		{"threads", required_argument, NULL, 'j'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct ouro_sampler_opts *so = &op->so;
	int c;

	*op = (struct opts){.so = {.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 0},
			    .src = {.step = -1}};
	while ((c = cli_getopt(argc, argv, "m:s:tj:o:h", longopts)) != -1) {
		switch (c) {
		case 'm': op->model_dir = optarg; break;
		case 's': op->src.step = cli_long(optarg, 0, OURO_MAX_STEPS - 1, "--step"); break;
		case OPT_TEMP:
			so->temperature = parse_double(optarg, "--temperature");
			if (so->temperature < 0)
				usage_error("--temperature: %s is negative", optarg);
			break;
		case OPT_TOPK: so->top_k = cli_long(optarg, 0, LONG_MAX, "--top-k"); break;
		case OPT_TOPP:
			so->top_p = parse_double(optarg, "--top-p");
			if (!(so->top_p > 0 && so->top_p <= 1))
				usage_error("--top-p: %s is not in (0, 1]", optarg);
			break;
		case OPT_MINP:
			so->min_p = parse_double(optarg, "--min-p");
			if (!(so->min_p >= 0 && so->min_p <= 1))
				usage_error("--min-p: %s is not in [0, 1]", optarg);
			break;
		case OPT_SEED:
			if (cli_strtou64(optarg, &so->seed))
				usage_error("--seed: '%s' is not an integer in 0..18446744073709551615", optarg);
			break;
		case OPT_LOGPROBS: op->o.logprobs = (int)cli_long(optarg, 1, INT_MAX, "--logprobs"); break;
		case 't': op->o.as_ids = 1; break;
		case 'j': op->threads = optarg; break;
		case 'o': op->outpath = optarg; break;
		case 'h': usage(stdout); exit(0);
		}
	}
	if (op->o.as_ids && op->o.logprobs)
		usage_error("--logprobs needs record output; it cannot go with -t");
}

/* The buffers sampling a record needs, sized for the model once. */
struct work {
	float *h;            /* [D] */
	float *logits;       /* [V] */
	int32_t *top_ids;    /* [K] */
	float *top_lp;       /* [K] */
	int32_t *ext;        /* [n+1] the extended sequence */
	size_t cap;          /* of ext */
};

/* Picks the next token of the record rec with ids [n] and writes the
 * extended sequence. */
static int sample_record(struct ouro_model *m, struct ouro_sampler *sampler,
			 const struct source *src, const struct outputs *o, struct work *w,
			 const struct ouro_st *rec, const int32_t *ids, int64_t n, const char *where)
{
	int rc;

	if (!rec)
		return ouro_fail(OURO_EINPUT, "%s: text ids carry no state; give records from ouro-forward or ouro-gate",
				 where);
	if ((rc = last_state(rec, n, src, where, w->h)))
		return rc;
	for (int64_t j = 0; j < n; j++)
		if (ids[j] < 0 || ids[j] >= src->V)
			return ouro_fail(OURO_EINPUT, "%s: token %lld: id %d is outside the vocabulary (0..%lld)",
					 where, (long long)j + 1, ids[j], (long long)src->V - 1);
	if ((rc = ouro_logits(m, w->h, 1, w->logits)))
		return rc;
	if ((size_t)n + 1 > w->cap) {
		free(w->ext);
		w->cap = 2 * ((size_t)n + 1);
		if (!(w->ext = malloc(w->cap * sizeof *w->ext)))
			return ouro_fail(OURO_ENOMEM, "out of memory for %lld token ids", (long long)n + 1);
	}
	memcpy(w->ext, ids, (size_t)n * sizeof *w->ext);
	w->ext[n] = ouro_sample(sampler, w->logits, n);
	if (o->logprobs)
		ouro_logprobs_topk(w->logits, src->V, o->logprobs, w->top_ids, w->top_lp);
	return emit(o, rec, w->ext, n + 1, w->top_ids, w->top_lp);
}

int main(int argc, char **argv)
{
	struct opts op;
	struct source *src = &op.src;
	struct outputs *o = &op.o;
	int rc;

	cli_init("ouro-sample");
	parse_args(&op, argc, argv);
	cli_threads(op.threads);
	if (!o->as_ids)
		cli_binary_stdout(op.outpath);

	struct ouro_model *m;
	if ((rc = ouro_model_load(&m, ouro_model_path(op.model_dir))))
		die(rc);
	const struct ouro_config *cfg = ouro_model_config(m);
	src->V = cfg->vocab_size;
	src->D = cfg->hidden_size;
	src->model = ouro_model_dir(m);
	if (o->logprobs > src->V)
		usage_error("--logprobs: %d exceeds the model's vocabulary of %lld tokens", o->logprobs,
			    (long long)src->V);

	struct ouro_sampler *sampler;
	if ((rc = ouro_sampler_new(&sampler, &op.so, src->V)))
		die(rc);
	struct work w = {
		.h = malloc((size_t)src->D * sizeof *w.h),
		.logits = malloc((size_t)src->V * sizeof *w.logits),
		.top_ids = malloc((size_t)(o->logprobs + 1) * sizeof *w.top_ids),
		.top_lp = malloc((size_t)(o->logprobs + 1) * sizeof *w.top_lp),
	};
	if (!w.h || !w.logits || !w.top_ids || !w.top_lp) {
		die(ouro_fail(OURO_ENOMEM, "out of memory for the logits of %lld tokens",
			      (long long)src->V));
	}

	struct ouro_output *out;
	o->name = cli_output_open(&out, &o->f, op.outpath);
	struct cli_seqs in;
	const struct ouro_st *rec;
	const int32_t *ids;
	int64_t n;

	cli_seqs_open(&in, argc, argv);
	while (!(rc = cli_seqs_next(&in, &ids, &n, &rec)) && ids)
		if ((rc = sample_record(m, sampler, src, o, &w, rec, ids, n, ouro_seq_where(in.in))))
			break;
	cli_seqs_close(&in);
	free(w.ext);
	free(w.top_lp);
	free(w.top_ids);
	free(w.logits);
	free(w.h);
	ouro_sampler_free(sampler);
	ouro_model_free(m);
	return cli_output_end(out, rc);
}
