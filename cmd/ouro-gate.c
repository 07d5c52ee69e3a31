/*
 * ouro-gate - the exit gate as a pipeline stage, and its Stage II training.
 *
 * ouro-gate reads the records of ouro-forward (tokens I32 [n], hidden
 * [T, n, D] with every loop step 0..T-1) and writes each one again with
 * the gate's view of it added: gate_logits, exit_pdf and exit_cdf [T, n],
 * the exit step each token takes under one exit rule, exit_step I32 [n],
 * and the state it exits with, exit_hidden F32 [n, D]. The rule is
 * decided loop by loop by ouro_exit_update, the function ouro-generate
 * uses when it really stops early, so both choose the same steps.
 *
 * ouro-gate train fits the gate alone (the language model stays frozen) to
 * the per-token, per-step losses by the focused adaptive loss of the Ouro
 * paper's Stage II, with Adam over mini-batches of tokens, and writes the
 * gate as a safetensors file that --gate reads back. The losses come from
 * the records (step_loss F32 [T, n-1]) or, if absent, from the model's
 * lm_head applied to every step of hidden.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"


static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-gate [-m DIR] [--gate FILE] [-q Q | -s STEP | -e EPS | -w |\n"
		"                 --kl EPS | --entropy H | --stable K] [--drop-hidden] [-o FILE]\n"
		"                 [FILE ...]\n"
		"       ouro-gate train [-m DIR] [--gate FILE] [-q Q] [-n EPOCHS] [--lr RATE]\n"
		"                 [--batch N] [--seed S] [-j THREADS] -o FILE [FILE ...]\n"
		"Apply the exit gate to ouro-forward records and choose each token's exit step,\n"
		"or train the gate (Stage II) and write it to a file.\n"
		"\n"
		"  -m, --model DIR     model directory (default: $OURO_MODEL, else the bundled model)\n"
		"      --gate FILE     gate weights from FILE instead of the model\n"
		"  -q, --threshold Q   exit at the first step whose exit CDF reaches Q, 0..1\n"
		"                      (default: early_exit_threshold of config.json)\n"
		"  -s, --step STEP     exit at step STEP, 0-based\n"
		"  -e, --eps EPS       exit at the first step t >= 1 with ||h[t] - h[t-1]|| < EPS\n"
		"  -w, --weighted      mix the states of all steps by the exit pdf\n"
		"      --kl EPS        exit at the first step t >= 1 whose next-token distribution\n"
		"                      is within KL divergence EPS (nats) of step t-1's\n"
		"      --entropy H     exit at the first step t >= 1 whose next-token entropy is\n"
		"                      below H nats\n"
		"      --stable K      exit once K consecutive steps have the same most likely\n"
		"                      next token, K >= 2 (--kl, --entropy, --stable read the\n"
		"                      model's lm_head: one product per step)\n"
		"      --drop-hidden   leave the input tensor 'hidden' out of the output\n"
		"  -o, --output FILE   write to FILE (atomically) instead of stdout\n"
		"  -h, --help          show this help\n"
		"\n"
		"train:\n"
		"  -n, --epochs N      passes over the data (default 10)\n"
		"      --lr RATE       Adam learning rate (default 0.001)\n"
		"      --batch N       tokens per Adam step (default 256)\n"
		"      --seed S        seed of the order of the tokens (default 1)\n"
		"  -j, --threads N     threads (default: $OURO_THREADS, else all cores)\n"
		"  -o, --output FILE   the trained gate, a safetensors file (required)\n"
		"\n"
		"Input: records with tokens I32 [n] and hidden [T, n, D] holding every step;\n"
		"train also reads step_loss F32 [T, n-1] where present.\n");
}

/* ---- the loop states of one record ------------------------------------ */

/* A validated record: n tokens, T loop steps of width D. */
struct loops {
	int T;
	int64_t n, D;
	const int32_t *tokens;   /* [n] */
	float *h;                /* [T, n, D] F32, owned by the caller's buffer */
};

/* Validates rec as ouro-forward output for the model `model` of width D
 * and widens its hidden into *buf (grown as needed). */
static int read_loops(struct loops *L, const struct ouro_st *rec, const char *where,
		      const char *model, int64_t D, float **buf, size_t *cap)
{
	const struct ouro_tensor *tok = ouro_st_find(rec, "tokens"), *hid;
	struct ouro_hidden h;
	int rc;

	if ((rc = ouro_hidden_find(&h, rec, tok->shape[0], D, model, where)) ||
	    (rc = ouro_hidden_complete(&h, where)))
		return rc;
	hid = h.t;
	L->n = tok->shape[0];
	L->D = D;
	L->T = (int)hid->shape[0];
	L->tokens = tok->data;

	size_t need = (size_t)ouro_tensor_numel(hid);
	if (need > *cap) {
		free(*buf);
		if (!(*buf = malloc(need * sizeof **buf))) {
			*cap = 0;
			return ouro_fail(OURO_ENOMEM, "%s: out of memory for %.1f MiB of hidden states",
					 where, (double)need * 4 / (1 << 20));
		}
		*cap = need;
	}
	ouro_to_f32(*buf, hid->data, hid->dtype, need);
	L->h = *buf;
	return OURO_OK;
}

/* ---- ouro-gate: apply --------------------------------------------------- */

static const char *const added[] = {"gate_logits", "exit_pdf", "exit_cdf", "exit_step", "exit_hidden"};

/* Computes the gate's tensors for one record and writes the record. */
static int apply_one(FILE *out, const char *outname, const struct ouro_st *rec, const char *where,
		     struct ouro_model *m, const struct loops *L, const struct ouro_gate *g,
		     const struct ouro_exit_rule *r,
		     const char *rule, const char *gate_src, int drop_hidden)
{
	int T = L->T;
	int64_t n = L->n, D = L->D, Tn = (int64_t)T * n;
	float *logits = malloc((size_t)Tn * sizeof *logits);
	float *pdf = malloc((size_t)Tn * sizeof *pdf);
	float *cdf = malloc((size_t)Tn * sizeof *cdf);
	int32_t *step = malloc((size_t)n * sizeof *step);
	float *xh = malloc((size_t)(n * D) * sizeof *xh);
	struct ouro_record *o = ouro_record_new();
	int rc = OURO_OK;

	if (!logits || !pdf || !cdf || !step || !xh || !o) {
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", where);
		goto out;
	}
	if (r->kind == OURO_EXIT_STATIC && r->step >= T) {
		rc = ouro_fail(OURO_EUSAGE, "%s: -s %d: the records have %d steps (0..%d)", where, r->step, T, T - 1);
		goto out;
	}
	for (int64_t k = 0; k < Tn; k++)
		logits[k] = ouro_gate_logit(g, L->h + k * D);
	ouro_exit_dist(logits, T, n, pdf, cdf);
	if ((rc = ouro_exit_steps(m, L->h, T, n, logits, r, 1, step)))
		goto out;
	for (int64_t i = 0; i < n; i++) {
		float *x = xh + i * D;
		if (r->kind == OURO_EXIT_WEIGHTED) {
			/* lm_head is linear without bias: the logits of this
			 * mixture are the pdf-weighted mixture of the logits */
			for (int64_t j = 0; j < D; j++) {
				double acc = 0;
				for (int t = 0; t < T; t++)
					acc += (double)pdf[t * n + i] * L->h[((int64_t)t * n + i) * D + j];
				x[j] = (float)acc;
			}
		} else {
			memcpy(x, L->h + ((int64_t)step[i] * n + i) * D, (size_t)D * sizeof *x);
		}
	}

	if ((rc = ouro_record_meta_copy(o, rec)))
		goto out;
	for (int k = 0; k < ouro_st_count(rec); k++) {
		const struct ouro_tensor *t = ouro_st_tensor(rec, k);
		int skip = drop_hidden && strcmp(t->name, "hidden") == 0;
		for (size_t a = 0; a < sizeof added / sizeof *added; a++)
			skip |= strcmp(t->name, added[a]) == 0;
		if (!skip && (rc = ouro_record_add(o, t->name, t->dtype, t->ndim, t->shape, t->data)))
			goto out;
	}
	int64_t tn[2] = {T, n}, sn[1] = {n}, nd[2] = {n, D};
	if ((rc = ouro_record_meta(o, "ouro.producer", "ouro-gate")) ||
	    (rc = ouro_record_meta(o, "ouro.exit_rule", rule)) ||
	    (rc = ouro_record_meta(o, "ouro.gate", gate_src)) ||
	    (rc = ouro_record_add(o, "gate_logits", OURO_F32, 2, tn, logits)) ||
	    (rc = ouro_record_add(o, "exit_pdf", OURO_F32, 2, tn, pdf)) ||
	    (rc = ouro_record_add(o, "exit_cdf", OURO_F32, 2, tn, cdf)) ||
	    (rc = ouro_record_add(o, "exit_step", OURO_I32, 1, sn, step)) ||
	    (rc = ouro_record_add(o, "exit_hidden", OURO_F32, 2, nd, xh)))
		goto out;
	rc = ouro_record_write(o, out, outname);
out:
	ouro_record_free(o);
	free(logits);
	free(pdf);
	free(cdf);
	free(step);
	free(xh);
	return rc;
}

/* The records of the inputs, one after the other, as loop states. */
struct loop_reader {
	struct cli_seqs in;
	const char *model;          /* the model's directory */
	int64_t D;                  /* and hidden_size */
	const struct ouro_st *rec;  /* the current record; NULL at the end */
	char where[300];            /* where it came from, for messages */
	struct loops L;             /* its states, validated */
	float *buf;                 /* L.h [cap] */
	size_t cap;
};

/* Reads the next record into r (r->rec NULL at the end); text ids are
 * refused. */
static int next_loops(struct loop_reader *r)
{
	const int32_t *ids;
	int64_t n;
	int rc;

	if ((rc = cli_seqs_next(&r->in, &ids, &n, &r->rec)) || !ids)
		return rc;
	snprintf(r->where, sizeof r->where, "%s", ouro_seq_where(r->in.in));
	if (!r->rec)
		return ouro_fail(OURO_EINPUT, "%s: text ids, not records; ouro-gate reads the records of ouro-forward",
				 r->where);
	return read_loops(&r->L, r->rec, r->where, r->model, r->D, &r->buf, &r->cap);
}

static void loop_reader_close(struct loop_reader *r)
{
	cli_seqs_close(&r->in);
	free(r->buf);
}

/* Loads the model of -m DIR and the gate to use (--gate FILE, else the
 * model's), and gives a threshold rule without -q (q < 0) the model's
 * early_exit_threshold. Dies on failure. */
static const struct ouro_config *load_model(struct ouro_model **m, struct ouro_gate *g,
					    const char *model_dir, const char *gate_file,
					    struct ouro_exit_rule *rule)
{
	const struct ouro_config *cfg;
	int rc;

	if ((rc = ouro_model_load(m, ouro_model_path(model_dir))))
		die(rc);
	cfg = ouro_model_config(*m);
	if (rule->kind == OURO_EXIT_THRESHOLD && rule->q < 0)
		rule->q = cfg->early_exit_threshold;
	rc = gate_file ? ouro_gate_load(g, gate_file, cfg->hidden_size) : ouro_gate_from_model(g, *m);
	if (rc)
		die(rc);
	return cfg;
}

static int cmd_apply(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"gate", required_argument, NULL, 'G'},
		{"threshold", required_argument, NULL, 'q'},
		{"step", required_argument, NULL, 's'},
		{"eps", required_argument, NULL, 'e'},
		{"weighted", no_argument, NULL, 'w'},
		CLI_EXIT_LONGOPTS,
		{"drop-hidden", no_argument, NULL, 'H'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *model_dir = NULL, *gate_file = NULL, *outpath = NULL;
	struct ouro_exit_rule rule = {.kind = OURO_EXIT_THRESHOLD, .q = -1};
	int c, rc, given = 0, drop_hidden = 0;

	while ((c = cli_getopt(argc, argv, "m:q:s:e:wo:h", longopts)) != -1) {
		switch (c) {
		case 'm': model_dir = optarg; break;
		case 'G': gate_file = optarg; break;
		case 'q': case 's': case 'e': case 'w':
		case CLI_OPT_KL: case CLI_OPT_ENTROPY: case CLI_OPT_STABLE:
			/* at most one kind; repeating the same option keeps the last */
			cli_exit_option(&rule, &given, c, optarg, 0);
			break;
		case 'H': drop_hidden = 1; break;
		case 'o': outpath = optarg; break;
		case 'h': usage(stdout); return 0;
		}
	}
	cli_binary_stdout(outpath);

	struct ouro_model *m;
	struct ouro_gate g;
	const struct ouro_config *cfg = load_model(&m, &g, model_dir, gate_file, &rule);
	char rule_str[64];
	cli_rule_text(rule_str, sizeof rule_str, &rule);

	struct ouro_output *o;
	FILE *out;
	const char *outname = cli_output_open(&o, &out, outpath);
	struct loop_reader in = {.model = ouro_model_dir(m), .D = cfg->hidden_size};

	cli_seqs_open(&in.in, argc, argv);
	while (!(rc = next_loops(&in)) && in.rec)
		if ((rc = apply_one(out, outname, in.rec, in.where, m, &in.L, &g, &rule, rule_str,
				    gate_file ? gate_file : "model", drop_hidden)))
			break;
	loop_reader_close(&in);
	ouro_gate_free(&g);
	ouro_model_free(m);
	return cli_output_end(o, rc);
}

/* ---- ouro-gate train ---------------------------------------------------- */

static int cmd_train(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"gate", required_argument, NULL, 'G'},
		{"threshold", required_argument, NULL, 'q'},
		{"epochs", required_argument, NULL, 'n'},
		{"lr", required_argument, NULL, 'L'},
		{"batch", required_argument, NULL, 'B'},
		{"seed", required_argument, NULL, 'S'},
		{"threads", required_argument, NULL, 'j'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *model_dir = NULL, *gate_file = NULL, *outpath = NULL, *threads = NULL;
	struct ouro_exit_rule rule = {.kind = OURO_EXIT_THRESHOLD, .q = -1};
	long epochs = 10, batch = 256, seed = 1;
	double lr = 1e-3;
	int c, rc = OURO_OK;

	while ((c = cli_getopt(argc, argv, "m:q:n:j:o:h", longopts)) != -1) {
		switch (c) {
		case 'm': model_dir = optarg; break;
		case 'G': gate_file = optarg; break;
		case 'q': rule.q = cli_real(optarg, 0, 1, "-q"); break;
		case 'n': epochs = cli_long(optarg, 0, 1000000, "--epochs"); break;
		case 'L':
			lr = cli_real(optarg, 0, 1e6, "--lr");
			if (lr == 0)
				usage_error("--lr: '%s' is not a positive number", optarg);
			break;
		case 'B': batch = cli_long(optarg, 1, 1L << 30, "--batch"); break;
		case 'S': seed = cli_long(optarg, 0, LONG_MAX, "--seed"); break;
		case 'j': threads = optarg; break;
		case 'o': outpath = optarg; break;
		case 'h': usage(stdout); return 0;
		}
	}
	if (!outpath)
		usage_error("-o FILE is required: where to write the trained gate");
	cli_threads(threads);
	cli_binary_stdout(outpath);

	struct ouro_model *m;
	struct ouro_gate g;
	const struct ouro_config *cfg = load_model(&m, &g, model_dir, gate_file, &rule);

	struct ouro_gate_trainer *tr = NULL;
	struct loop_reader in = {.model = ouro_model_dir(m), .D = cfg->hidden_size};
	long nrec = 0;

	if ((rc = ouro_gate_trainer_new(&tr, cfg->hidden_size)))
		goto out;
	cli_seqs_open(&in.in, argc, argv);
	while (!(rc = next_loops(&in)) && in.rec) {
		const struct ouro_tensor *sl = ouro_st_find(in.rec, "step_loss");
		int T = in.L.T;
		int64_t n = in.L.n;
		if (sl && (sl->dtype != OURO_F32 || sl->ndim != 2 || sl->shape[0] != T || sl->shape[1] != n - 1)) {
			rc = ouro_fail(OURO_EINPUT, "%s: tensor 'step_loss' must be F32 [%d, %lld], not %s with %d dimensions%s",
				       in.where, T, (long long)(n - 1), ouro_dtype_name(sl->dtype), sl->ndim,
				       sl->ndim == 2 ? " of another shape" : "");
			break;
		}
		if ((rc = ouro_gate_trainer_add(tr, m, in.L.h, T, n, in.L.tokens, sl ? sl->data : NULL, in.where)))
			break;
		nrec++;
	}
	loop_reader_close(&in);

	int64_t ntok, nlab;
	int T;
	long computed;
	ouro_gate_trainer_counts(tr, &ntok, &nlab, &T, &computed);
	if (!rc && nlab == 0)
		rc = ouro_fail(OURO_EINPUT, "no training data: %s", nrec ? "every sequence has a single token"
									 : "the input holds no records");
	if (!rc && T < 2)
		rc = ouro_fail(OURO_EINPUT, "the records have 1 step; the gate trains on steps 1..T-1");
	if (rc)
		goto out;

	char qtext[40];
	cli_format_double(qtext, sizeof qtext, rule.q);
	fprintf(stderr, "%s: %ld records, %lld tokens, %lld with a next token; T=%d, D=%lld; "
		"step_loss computed with lm_head for %ld records\n",
		progname, nrec, (long long)ntok, (long long)nlab, T, (long long)cfg->hidden_size, computed);

	const struct ouro_gate_train_opts topts = {lr, batch, (uint64_t)seed};
	for (long e = 0; e <= epochs; e++) {
		if (e > 0 && (rc = ouro_gate_train_epoch(tr, &g, &topts)))
			goto out;
		double loss = ouro_gate_stage2_loss(tr, &g, NULL);
		fprintf(stderr, "%s: epoch %ld: loss %.6f, mean exit step %.4f at threshold %s\n",
			progname, e, loss, ouro_gate_mean_exit(tr, &g, &rule), qtext);
		if (!isfinite(loss)) {
			rc = ouro_fail(OURO_EINPUT, "epoch %ld: the loss is not finite; lower --lr", e);
			goto out;
		}
	}
	rc = ouro_gate_save(&g, outpath);
out:
	ouro_gate_trainer_free(tr);
	ouro_gate_free(&g);
	ouro_model_free(m);
	if (rc)
		die(rc);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "train") == 0) {
		cli_init("ouro-gate train");
		return cmd_train(argc - 1, argv + 1);
	}
	cli_init("ouro-gate");
	return cmd_apply(argc, argv);
}
