/*
 * ouro-lens - what the model would say after each loop.
 *
 * A logit lens over the loop: for every token position it applies the
 * language-model head to the state after each loop step (hidden[t] of
 * that position) and shows the K most likely next tokens with their
 * probabilities, next to the exit gate's view of the position: the exit
 * pdf and cdf over the steps and the step the exit rule chooses (decided
 * by ouro_exit_steps, as ouro-gate and ouro-generate decide).
 * The output is an aligned table for a terminal, or one JSON object per
 * sequence.
 *
 * The sequence is a text prompt (tokenized with the model's tokenizer),
 * token ids (--prompt-ids), or the records of ouro-forward on stdin, whose
 * hidden states are used as they are.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <utf8proc.h>

#include "cli.h"
#include "tokenizer.h"

#define ROWS 64            /* states sent through lm_head at a time */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-lens [-m DIR] [-k K] [-T STEPS] [-q Q | --kl EPS | --entropy H |\n"
		"                 --stable K] [--prompt-ids] [--json] [-j THREADS] [-o FILE]\n"
		"                 [PROMPT ...]\n"
		"Show each position's top next-token predictions after every loop, the exit\n"
		"distribution over the loops and the loop the exit rule chooses.\n"
		"\n"
		"  -m, --model DIR       model directory (default: $OURO_MODEL, else the bundled model)\n"
		"  -k, --top K           predictions per loop (default 3)\n"
		"  -T, --steps STEPS     loops to run (default: total_ut_steps of config.json)\n"
		"  -q, --threshold Q     exit at the first loop whose exit CDF reaches Q, 0..1\n"
		"                        (default: early_exit_threshold of config.json)\n"
		"      --kl EPS          exit at the first loop t >= 1 whose next-token distribution\n"
		"                        is within KL divergence EPS (nats) of loop t-1's\n"
		"      --entropy H       exit at the first loop t >= 1 whose next-token entropy is\n"
		"                        below H nats\n"
		"      --stable K        exit once K consecutive loops have the same most likely\n"
		"                        next token, K >= 2\n"
		"      --prompt-ids      the prompt is token ids (decimal, blank-separated)\n"
		"      --json            one JSON object per sequence instead of a table\n"
		"  -j, --threads N       threads (default: $OURO_THREADS, else all cores)\n"
		"  -o, --output FILE     write to FILE (atomically) instead of stdout\n"
		"  -h, --help            show this help\n"
		"\n"
		"The prompt is the arguments, else stdin: text, token ids with --prompt-ids,\n"
		"or the records of ouro-forward (tokens I32 [n], hidden [T, n, D], every step).\n");
}

struct opts {
	const char *model, *threads, *output;
	long top, steps;          /* -k; -T, 0: the config's */
	struct ouro_exit_rule rule;   /* a threshold of q < 0: the config's */
	int rule_given;
	int prompt_ids, as_json;
};

/* ---- the sequence ------------------------------------------------------ */

/* One sequence and its loop states. */
struct lens {
	int T;
	int64_t n, D, V;
	const char *model;        /* the model's directory, for messages */
	const int32_t *ids;       /* [n] */
	int32_t *ids_copy;        /* [n] owned copy of a record's ids, or NULL */
	float *h;                 /* [T, n, D] */
	/* results */
	int K;
	int32_t *top_ids;         /* [T, n, K] */
	float *top_lp;            /* [T, n, K] log-probabilities */
	float *gate;              /* [T, n] gate logits */
	float *pdf, *cdf;         /* [T, n] */
	int32_t *exit_step;       /* [n] */
};

static void lens_free(struct lens *L)
{
	free(L->ids_copy);
	free(L->top_ids);
	free(L->top_lp);
	free(L->gate);
	free(L->pdf);
	free(L->cdf);
	free(L->exit_step);
}

/* Fills L's results from L->h: the top K of lm_head(h[t, i]) for every
 * step and position, the gate's logits and exit distribution, and the
 * step the exit rule picks for each position. */
static int lens_run(struct lens *L, struct ouro_model *m, const struct ouro_gate *g,
		    const struct ouro_exit_rule *rule)
{
	int64_t Tn = (int64_t)L->T * L->n, D = L->D;
	float *logits = malloc((size_t)ROWS * (size_t)L->V * sizeof *logits);   /* [ROWS, V] */
	int rc = OURO_OK;

	L->top_ids = malloc((size_t)(Tn * L->K) * sizeof *L->top_ids);
	L->top_lp = malloc((size_t)(Tn * L->K) * sizeof *L->top_lp);
	L->gate = malloc((size_t)Tn * sizeof *L->gate);
	L->pdf = malloc((size_t)Tn * sizeof *L->pdf);
	L->cdf = malloc((size_t)Tn * sizeof *L->cdf);
	L->exit_step = malloc((size_t)L->n * sizeof *L->exit_step);
	if (!logits || !L->top_ids || !L->top_lp || !L->gate || !L->pdf || !L->cdf || !L->exit_step) {
		free(logits);
		return ouro_fail(OURO_ENOMEM, "out of memory for the lens of %lld tokens", (long long)L->n);
	}
	for (int64_t r0 = 0; r0 < Tn && !rc; r0 += ROWS) {
		int64_t rows = Tn - r0 < ROWS ? Tn - r0 : ROWS;
		if ((rc = ouro_logits(m, L->h + r0 * D, rows, logits)))
			break;
		for (int64_t r = 0; r < rows; r++)
			ouro_logprobs_topk(logits + r * L->V, L->V, L->K, L->top_ids + (r0 + r) * L->K,
					   L->top_lp + (r0 + r) * L->K);
	}
	free(logits);
	if (rc)
		return rc;
	for (int64_t k = 0; k < Tn; k++)
		L->gate[k] = ouro_gate_logit(g, L->h + k * D);
	ouro_exit_dist(L->gate, L->T, L->n, L->pdf, L->cdf);
	return ouro_exit_steps(m, L->h, L->T, L->n, L->gate, rule, 1, L->exit_step);
}

/* ---- token text -------------------------------------------------------- */

/* The text of token id, escaped for one table cell: in double quotes,
 * with \" \\ \n \t \r, \xNN for bytes that are not UTF-8 (a token may
 * hold part of a character) and \u{N} for invisible code points; *width
 * gets its width in terminal columns. For JSON (json != 0) invalid bytes
 * become U+FFFD and nothing else is escaped. */
static int token_text(const struct ouro_tok *tok, int32_t id, int json, struct ouro_bytes *out,
		      int *width)
{
	struct ouro_bytes raw = {0};
	char esc[16];
	int rc, w = 0;

	out->n = 0;
	if ((rc = ouro_tok_decode(tok, &id, 1, &raw)))
		return rc;
	if (!json && ouro_bytes_add(out, "\"", 1))
		goto nomem;
	w = json ? 0 : 2;
	for (size_t i = 0; i < raw.n;) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t len = utf8proc_iterate((const utf8proc_uint8_t *)raw.p + i,
							(utf8proc_ssize_t)(raw.n - i), &cp);
		const char *s = raw.p + i;
		size_t slen = len > 0 ? (size_t)len : 1;

		if (len <= 0) {
			s = json ? "\xef\xbf\xbd" : esc;
			if (!json)
				snprintf(esc, sizeof esc, "\\x%02x", (unsigned char)raw.p[i]);
			slen = strlen(s);
			w += json ? 1 : 4;
		} else if (!json) {
			utf8proc_category_t cat = utf8proc_category(cp);
			if (cp == '"' || cp == '\\' || cp == '\n' || cp == '\t' || cp == '\r') {
				snprintf(esc, sizeof esc, "\\%c", cp == '\n' ? 'n' : cp == '\t' ? 't'
					 : cp == '\r' ? 'r' : (char)cp);
				s = esc;
			} else if (cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
				   cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP ||
				   cat == UTF8PROC_CATEGORY_CN || cat == UTF8PROC_CATEGORY_CO) {
				snprintf(esc, sizeof esc, "\\u{%x}", (unsigned)cp);
				s = esc;
			}
			slen = s == esc ? strlen(esc) : (size_t)len;
			w += s == esc ? (int)slen : utf8proc_charwidth(cp);
		}
		if (ouro_bytes_add(out, s, slen))
			goto nomem;
		i += len > 0 ? (size_t)len : 1;
	}
	if (!json && ouro_bytes_add(out, "\"", 1))
		goto nomem;
	if (ouro_bytes_add(out, "", 1))    /* NUL, not counted */
		goto nomem;
	out->n--;
	ouro_bytes_free(&raw);
	*width = w;
	return OURO_OK;
nomem:
	ouro_bytes_free(&raw);
	return ouro_fail(OURO_ENOMEM, "out of memory");
}

/* ---- the table --------------------------------------------------------- */

/* A table of strings with their display widths, printed with each column
 * padded to its widest cell. */
struct cell {
	char *s;
	int w;
};

struct table {
	int cols;
	size_t rows, cap;
	struct cell *c;           /* [rows, cols] */
	int *right;               /* [cols] right-aligned */
};

static int table_row(struct table *tb)
{
	if (tb->rows == tb->cap) {
		size_t cap = tb->cap ? 2 * tb->cap : 64;
		struct cell *c = realloc(tb->c, cap * (size_t)tb->cols * sizeof *c);
		if (!c)
			return ouro_fail(OURO_ENOMEM, "out of memory for the table");
		tb->c = c;
		tb->cap = cap;
	}
	memset(tb->c + tb->rows * (size_t)tb->cols, 0, (size_t)tb->cols * sizeof *tb->c);
	tb->rows++;
	return OURO_OK;
}

/* Sets the cell at column col of the last row; w < 0: the width of an
 * ASCII string. */
static int table_set(struct table *tb, int col, const char *s, int w)
{
	struct cell *c = &tb->c[(tb->rows - 1) * (size_t)tb->cols + (size_t)col];

	if (!(c->s = strdup(s)))
		return ouro_fail(OURO_ENOMEM, "out of memory for the table");
	c->w = w < 0 ? (int)strlen(s) : w;
	return OURO_OK;
}

static void table_print(FILE *f, const struct table *tb)
{
	int *width = calloc((size_t)tb->cols, sizeof *width);

	if (!width)
		return;
	for (size_t r = 0; r < tb->rows; r++)
		for (int k = 0; k < tb->cols; k++)
			if (tb->c[r * (size_t)tb->cols + (size_t)k].w > width[k])
				width[k] = tb->c[r * (size_t)tb->cols + (size_t)k].w;
	for (size_t r = 0; r < tb->rows; r++) {
		int pending = 0;     /* spaces owed before the next non-empty cell */
		for (int k = 0; k < tb->cols; k++) {
			const struct cell *c = &tb->c[r * (size_t)tb->cols + (size_t)k];
			int pad = width[k] - c->w;
			if (k)
				pending += 2;
			if (!c->s || !*c->s) {
				pending += width[k];
				continue;
			}
			if (tb->right[k])
				pending += pad;
			fprintf(f, "%*s%s", pending, "", c->s);
			pending = tb->right[k] ? 0 : pad;
		}
		fputc('\n', f);
	}
	free(width);
}

static void table_free(struct table *tb)
{
	for (size_t i = 0; i < tb->rows * (size_t)tb->cols; i++)
		free(tb->c[i].s);
	free(tb->c);
	free(tb->right);
}

/* Writes L as a table: a row per position and step. */
static int print_table(FILE *f, const struct lens *L, const struct ouro_tok *tok,
		       const struct ouro_exit_rule *rule, long seq)
{
	enum { POS, TOKEN, STEP, PDF, CDF, TOP };
	struct table tb = {.cols = TOP + 2 * L->K};
	struct ouro_bytes text = {0};
	char buf[64];
	int rc = OURO_OK, w;

	if (!(tb.right = calloc((size_t)tb.cols, sizeof *tb.right)))
		return ouro_fail(OURO_ENOMEM, "out of memory for the table");
	tb.right[POS] = tb.right[STEP] = tb.right[PDF] = tb.right[CDF] = 1;
	for (int k = 0; k < L->K; k++)
		tb.right[TOP + 2 * k + 1] = 1;
	if ((rc = table_row(&tb)) || (rc = table_set(&tb, POS, "pos", -1)) ||
	    (rc = table_set(&tb, TOKEN, "token", -1)) || (rc = table_set(&tb, STEP, "loop", -1)) ||
	    (rc = table_set(&tb, PDF, "p(exit)", -1)) || (rc = table_set(&tb, CDF, "cdf", -1)))
		goto out;
	for (int k = 0; k < L->K && !rc; k++) {
		snprintf(buf, sizeof buf, "top %d", k + 1);
		rc = table_set(&tb, TOP + 2 * k, buf, -1);
	}
	for (int64_t i = 0; i < L->n && !rc; i++) {
		for (int t = 0; t < L->T && !rc; t++) {
			int64_t row = (int64_t)t * L->n + i;
			if ((rc = table_row(&tb)))
				break;
			if (t == 0) {
				snprintf(buf, sizeof buf, "%lld", (long long)i);
				if ((rc = table_set(&tb, POS, buf, -1)) ||
				    (rc = token_text(tok, L->ids[i], 0, &text, &w)) ||
				    (rc = table_set(&tb, TOKEN, text.p, w)))
					break;
			}
			snprintf(buf, sizeof buf, "%s%d", L->exit_step[i] == t ? "* " : "", t);
			if ((rc = table_set(&tb, STEP, buf, -1)))
				break;
			snprintf(buf, sizeof buf, "%.3f", L->pdf[row]);
			if ((rc = table_set(&tb, PDF, buf, -1)))
				break;
			snprintf(buf, sizeof buf, "%.3f", L->cdf[row]);
			if ((rc = table_set(&tb, CDF, buf, -1)))
				break;
			for (int k = 0; k < L->K && !rc; k++) {
				if ((rc = token_text(tok, L->top_ids[row * L->K + k], 0, &text, &w)) ||
				    (rc = table_set(&tb, TOP + 2 * k, text.p, w)))
					break;
				snprintf(buf, sizeof buf, "%.3g", exp((double)L->top_lp[row * L->K + k]));
				rc = table_set(&tb, TOP + 2 * k + 1, buf, -1);
			}
		}
	}
	if (!rc) {
		cli_rule_text(buf, sizeof buf, rule);
		fprintf(f, "sequence %ld: %lld tokens, %d loops, exit %s; * marks the exit loop\n",
			seq, (long long)L->n, L->T, buf);
		table_print(f, &tb);
	}
out:
	ouro_bytes_free(&text);
	table_free(&tb);
	return rc;
}

/* ---- JSON -------------------------------------------------------------- */

static int print_json(FILE *f, const char *fname, const struct lens *L, const struct ouro_tok *tok,
		      const struct ouro_exit_rule *rule)
{
	char rtext[64];
	json_t *o = json_object(), *ids = json_array(), *pos = json_array();
	struct ouro_bytes text = {0};
	int rc = OURO_OK, w;

	for (int64_t i = 0; i < L->n; i++)
		json_array_append_new(ids, json_integer(L->ids[i]));
	json_object_set_new(o, "tokens", ids);
	json_object_set_new(o, "steps", json_integer(L->T));
	cli_rule_text(rtext, sizeof rtext, rule);
	json_object_set_new(o, "exit_rule", json_string(rtext));
	if (rule->kind == OURO_EXIT_THRESHOLD)
		json_object_set_new(o, "threshold", json_real(rule->q));
	for (int64_t i = 0; i < L->n && !rc; i++) {
		json_t *p = json_object(), *pdf = json_array(), *cdf = json_array(),
		       *gl = json_array(), *pred = json_array();

		json_array_append_new(pos, p);
		if ((rc = token_text(tok, L->ids[i], 1, &text, &w)))
			break;
		json_object_set_new(p, "pos", json_integer(i));
		json_object_set_new(p, "id", json_integer(L->ids[i]));
		json_object_set_new(p, "text", json_stringn(text.p, text.n));
		json_object_set_new(p, "exit_step", json_integer(L->exit_step[i]));
		for (int t = 0; t < L->T && !rc; t++) {
			int64_t row = (int64_t)t * L->n + i;
			json_t *top = json_array();
			json_array_append_new(gl, json_real(L->gate[row]));
			json_array_append_new(pdf, json_real(L->pdf[row]));
			json_array_append_new(cdf, json_real(L->cdf[row]));
			for (int k = 0; k < L->K && !rc; k++) {
				double lp = L->top_lp[row * L->K + k];
				if ((rc = token_text(tok, L->top_ids[row * L->K + k], 1, &text, &w)))
					break;
				json_array_append_new(top, json_pack("{s:i, s:s%, s:f, s:f}", "id",
								     (int)L->top_ids[row * L->K + k],
								     "text", text.p, text.n, "logprob", lp,
								     "prob", exp(lp)));
			}
			json_array_append_new(pred, top);
		}
		json_object_set_new(p, "gate_logits", gl);
		json_object_set_new(p, "exit_pdf", pdf);
		json_object_set_new(p, "exit_cdf", cdf);
		json_object_set_new(p, "predictions", pred);
	}
	json_object_set_new(o, "positions", pos);
	if (!rc && (json_dumpf(o, f, JSON_COMPACT) || fputc('\n', f) == EOF))
		rc = ouro_fail(OURO_ESYS, "%s: write error: %s", fname, strerror(errno));
	json_decref(o);
	ouro_bytes_free(&text);
	return rc;
}

/* ---- input ------------------------------------------------------------- */

/* Takes tokens and hidden [T, n, D] (every step 0..T-1) from an
 * ouro-forward record into L; L->h is allocated. */
static int from_record(struct lens *L, const struct ouro_st *rec, const char *where)
{
	const struct ouro_tensor *tk = ouro_st_find(rec, "tokens"), *h;
	struct ouro_hidden hid;
	int rc;

	if (!tk || tk->dtype != OURO_I32 || tk->ndim != 1 || tk->shape[0] < 1)
		return ouro_fail(OURO_EINPUT, "%s: expected a tensor 'tokens' I32 [n] with n >= 1", where);
	if (!ouro_st_find(rec, "hidden"))
		return ouro_fail(OURO_EINPUT, "%s: no tensor 'hidden' [T, n, D]; ouro-lens reads the records of ouro-forward",
				 where);
	if ((rc = ouro_hidden_find(&hid, rec, tk->shape[0], L->D, L->model, where)) ||
	    (rc = ouro_hidden_complete(&hid, where)))
		return rc;
	h = hid.t;
	L->T = (int)h->shape[0];
	L->n = tk->shape[0];
	/* a copy: record data need not be aligned for int32_t */
	if (!(L->ids_copy = malloc((size_t)L->n * sizeof *L->ids_copy)) ||
	    !(L->h = malloc((size_t)ouro_tensor_numel(h) * sizeof *L->h)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", where);
	memcpy(L->ids_copy, tk->data, (size_t)L->n * sizeof *L->ids_copy);
	L->ids = L->ids_copy;
	ouro_to_f32(L->h, h->data, h->dtype, (size_t)ouro_tensor_numel(h));
	for (int64_t i = 0; i < L->n; i++)
		if (L->ids[i] < 0 || L->ids[i] >= L->V)
			return ouro_fail(OURO_EINPUT, "%s: token %lld: id %d is outside the vocabulary (0..%lld)",
					 where, (long long)i + 1, L->ids[i], (long long)L->V - 1);
	return OURO_OK;
}

/* Everything one run needs. */
struct ctx {
	struct opts *o;
	struct ouro_model *m;
	struct ouro_tok *tok;
	struct ouro_gate gate;
	FILE *out;
	const char *outname;
	long seq;                 /* sequences shown */
};

/* Runs the lens over L (L->h filled, or NULL: run the forward pass) and
 * prints it. Frees L's buffers. */
static int show(struct ctx *c, struct lens *L)
{
	int rc = OURO_OK;

	if (!L->h) {
		if (!(L->h = malloc((size_t)L->T * (size_t)(L->n * L->D) * sizeof *L->h)))
			rc = ouro_fail(OURO_ENOMEM, "out of memory for the states of %lld tokens",
				       (long long)L->n);
		else
			rc = ouro_forward(c->m, L->ids, L->n, L->T, L->h);
	}
	if (!rc)
		rc = lens_run(L, c->m, &c->gate, &c->o->rule);
	c->seq++;
	if (!rc)
		rc = c->o->as_json ? print_json(c->out, c->outname, L, c->tok, &c->o->rule)
				   : print_table(c->out, L, c->tok, &c->o->rule, c->seq);
	free(L->h);
	L->h = NULL;
	lens_free(L);
	return rc;
}

static int run(struct ctx *c, int argc, char **argv)
{
	const struct ouro_config *cfg = ouro_model_config(c->m);
	struct lens proto = {.T = (int)c->o->steps, .D = cfg->hidden_size, .V = cfg->vocab_size,
			     .model = ouro_model_dir(c->m), .K = (int)c->o->top};
	struct ouro_bytes text = {0};
	struct ouro_ids ids = {0};
	enum ouro_input_kind kind = OURO_INPUT_TEXT;
	FILE *f = NULL;
	int rc = OURO_OK;

	if (optind < argc) {
		rc = cli_prompt_args(argc, argv, &text);
	} else if (!(rc = ouro_input_open(&f, &kind, "-"))) {
		if (kind == OURO_INPUT_EMPTY)
			rc = ouro_fail(OURO_EINPUT, "the prompt is empty");
		else if (kind == OURO_INPUT_TEXT)
			rc = cli_prompt_stdin(f, &text);
	}
	if (rc)
		goto out;

	if (kind == OURO_INPUT_RECORDS) {
		struct ouro_st *rec;
		long count = 0;
		char where[64];

		if (c->o->prompt_ids || c->o->steps) {
			rc = ouro_fail(OURO_EUSAGE, "%s", c->o->steps ? "-T: the records hold their own loop steps"
					: "--prompt-ids: stdin holds records, not ids");
			goto out;
		}
		for (;;) {
			struct lens L = proto;
			snprintf(where, sizeof where, "stdin: record %ld", count + 1);
			if ((rc = ouro_st_read(&rec, f, where)) || !rec)
				break;
			count++;
			rc = from_record(&L, rec, where);
			if (!rc)
				rc = show(c, &L);
			else {
				free(L.h);
				lens_free(&L);
			}
			ouro_st_free(rec);
			if (rc)
				break;
		}
		goto out;
	}
	if (c->o->prompt_ids)
		rc = cli_prompt_ids(text.p, text.n, &ids);
	else
		rc = ouro_tok_encode(c->tok, text.p ? text.p : "", text.n, &ids);
	if (!rc && ids.n == 0)
		rc = ouro_fail(OURO_EINPUT, "the prompt is empty");
	if (!rc) {
		struct lens L = proto;
		L.T = c->o->steps ? (int)c->o->steps : (int)cfg->total_ut_steps;
		L.ids = ids.v;
		L.n = (int64_t)ids.n;
		rc = show(c, &L);
	}
out:
	ouro_input_close(f);
	ouro_bytes_free(&text);
	ouro_ids_free(&ids);
	return rc;
}

int main(int argc, char **argv)
{
	enum { OPT_PROMPT_IDS = 256, OPT_JSON };
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"top", required_argument, NULL, 'k'},
		{"steps", required_argument, NULL, 'T'},
		{"threshold", required_argument, NULL, 'q'},
		CLI_EXIT_LONGOPTS,
		{"prompt-ids", no_argument, NULL, OPT_PROMPT_IDS},
		{"json", no_argument, NULL, OPT_JSON},
		{"threads", required_argument, NULL, 'j'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {.top = 3, .rule = {.kind = OURO_EXIT_THRESHOLD, .q = -1}};
	struct ctx c = {.o = &o};
	struct ouro_output *out;
	int ch, rc;

	cli_init("ouro-lens");
	while ((ch = cli_getopt(argc, argv, "m:k:T:q:j:o:h", longopts)) != -1) {
		switch (ch) {
		case 'm': o.model = optarg; break;
		case 'k': o.top = cli_long(optarg, 1, 1000, "-k"); break;
		case 'T': o.steps = cli_long(optarg, 1, OURO_MAX_STEPS, "-T"); break;
		case 'q': case CLI_OPT_KL: case CLI_OPT_ENTROPY: case CLI_OPT_STABLE:
			cli_exit_option(&o.rule, &o.rule_given, ch, optarg, 0);
			break;
		case OPT_PROMPT_IDS: o.prompt_ids = 1; break;
		case OPT_JSON: o.as_json = 1; break;
		case 'j': o.threads = optarg; break;
		case 'o': o.output = optarg; break;
		case 'h': usage(stdout); return 0;
		}
	}
	cli_threads(o.threads);
	if ((rc = ouro_model_load(&c.m, ouro_model_path(o.model))) ||
	    (rc = ouro_tok_load_dir(&c.tok, ouro_model_dir(c.m))) ||
	    (rc = ouro_gate_from_model(&c.gate, c.m)))
		die(rc);
	if (o.top > ouro_model_config(c.m)->vocab_size)
		usage_error("-k: %ld exceeds the model's vocabulary of %lld tokens", o.top,
			    (long long)ouro_model_config(c.m)->vocab_size);
	if (o.rule.kind == OURO_EXIT_THRESHOLD && o.rule.q < 0)
		o.rule.q = ouro_model_config(c.m)->early_exit_threshold;
	c.outname = cli_output_open(&out, &c.out, o.output);
	rc = run(&c, argc, argv);
	ouro_gate_free(&c.gate);
	ouro_tok_free(c.tok);
	ouro_model_free(c.m);
	return cli_output_end(out, rc);
}
