/*
 * eval_report.c - an evaluation report shown to people: as a table of
 * the metrics at each loop and under each exit rule, and as an SVG plot
 * (the per-loop curves, and the metric against average loops per token
 * for each family of exit rules beside the fixed loop counts).
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"

static double num(json_t *o, const char *key)
{
	json_t *x = json_object_get(o, key);
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

void ouro_eval_table(FILE *f, json_t *report)
{
	static const char *const ppl_cols[] = {"nll", "%10.4f", "ppl", "%14.6g", "bits_per_byte", "%10.4f",
					       NULL};
	static const char *const choice_cols[] = {"acc", "%8.4f", "acc_stderr", "%8.4f", "acc_norm", "%8.4f",
						  "acc_norm_stderr", "%8.4f", "greedy", "%8.4f", "ppl", "%12.6g",
						  NULL};
	json_t *cfg = json_object_get(report, "config"), *res = json_object_get(report, "results"), *x;
	const char *task = json_string_value(json_object_get(cfg, "task"));
	int ppl = strcmp(task, "ppl") == 0;
	size_t i;

	fprintf(f, "ouro-eval %s: model %s, gate %s, %lld loops\n", task,
		json_string_value(json_object_get(cfg, "model")), json_string_value(json_object_get(cfg, "gate")),
		(long long)json_integer_value(json_object_get(cfg, "steps")));
	if (json_object_get(report, "shard"))
		fprintf(f, "shard %lld of %lld (0-based)\n",
			(long long)json_integer_value(json_object_get(json_object_get(report, "shard"), "index")),
			(long long)json_integer_value(json_object_get(json_object_get(report, "shard"), "count")));
	if (ppl) {
		fprintf(f, "%lld documents, %lld tokens, %lld bytes, %lld words\n\n",
			(long long)json_integer_value(json_object_get(res, "documents")),
			(long long)json_integer_value(json_object_get(res, "tokens")),
			(long long)json_integer_value(json_object_get(res, "bytes")),
			(long long)json_integer_value(json_object_get(res, "words")));
		fprintf(f, "%-16s %10s %10s %14s %10s\n", "loop", "avg loops", "nll", "ppl", "bits/byte");
		for (int part = 0; part < 2; part++)
			json_array_foreach(json_object_get(res, part ? "exit_rules" : "loops"), i, x) {
				if (part) {
					fprintf(f, "%-16s ", json_string_value(json_object_get(x, "rule")));
					print_num(f, num(x, "avg_loops"), "%10.3f");
					fputc(' ', f);
				} else {
					fprintf(f, "%-16lld %10lld ", (long long)json_integer_value(json_object_get(x, "loop")),
						(long long)json_integer_value(json_object_get(x, "loop")));
				}
				print_row(f, x, ppl_cols);
			}
		json_t *ex = json_object_get(res, "exit");
		fprintf(f, "\nexit distribution: entropy %.4f nats, expected loops %.3f, expected nll %.4f,\n"
			"Stage I objective (beta %g) %.4f\n\n", num(ex, "entropy"), num(ex, "expected_loops"),
			num(ex, "expected_nll"), num(cfg, "beta"), num(ex, "stage1"));
		return;
	}
	if (strcmp(task, "gen") == 0) {
		static const char *const gen_cols[] = {"acc", "%8.4f", "acc_stderr", "%8.4f", "mean_tokens",
						       "%11.2f", "budget_share", "%9.4f", NULL};
		fprintf(f, "%lld examples (%lld failed), %lld prompt tokens\n\n",
			(long long)json_integer_value(json_object_get(res, "examples")),
			(long long)json_integer_value(json_object_get(res, "failed")),
			(long long)json_integer_value(json_object_get(res, "prompt_tokens")));
		fprintf(f, "%-16s %10s %8s %8s %11s %9s\n", "rule", "avg loops", "acc", "+-", "mean tokens",
			"at budget");
		json_array_foreach(json_object_get(res, "exit_rules"), i, x) {
			fprintf(f, "%-16s ", json_string_value(json_object_get(x, "rule")));
			print_num(f, num(x, "avg_loops"), "%10.3f");
			fputc(' ', f);
			print_row(f, x, gen_cols);
		}
		return;
	}
	fprintf(f, "%lld examples, %lld continuation tokens\n\n",
		(long long)json_integer_value(json_object_get(res, "examples")),
		(long long)json_integer_value(json_object_get(res, "tokens")));
	fprintf(f, "%-16s %10s %8s %8s %8s %8s %8s %12s\n", "loop", "avg loops", "acc", "+-",
		"acc_norm", "+-", "greedy", "ppl");
	for (int part = 0; part < 2; part++)
		json_array_foreach(json_object_get(res, part ? "exit_rules" : "loops"), i, x) {
			if (part)
				fprintf(f, "%-16s ", json_string_value(json_object_get(x, "rule")));
			else
				fprintf(f, "%-16lld ", (long long)json_integer_value(json_object_get(x, "loop")));
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
int ouro_eval_plot(const char *path, json_t *report)
{
	json_t *cfg = json_object_get(report, "config"), *res = json_object_get(report, "results");
	json_t *loops = json_object_get(res, "loops"), *rules = json_object_get(res, "exit_rules");
	int ppl = strcmp(json_string_value(json_object_get(cfg, "task")), "ppl") == 0;
	int gen = strcmp(json_string_value(json_object_get(cfg, "task")), "gen") == 0;
	int T = gen ? 0 : (int)json_array_size(loops), R = (int)json_array_size(rules), nm = ppl || gen ? 1 : 2;
	const char *metric[2] = {ppl ? "nll" : "acc", "acc_norm"};
	const char *colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
	size_t cap = json_array_size(loops) + (size_t)R + 1;
	double *lx = malloc(sizeof(double) * cap), *ly = malloc(sizeof(double) * 2 * cap);
	double *rx = malloc(sizeof(double) * (size_t)(R + 1)), *ry = malloc(sizeof(double) * (size_t)(R + 1));
	struct ouro_output *o = NULL;
	FILE *f;
	int rc;

	if (!lx || !ly || !rx || !ry) {
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
		goto out;
	}
	double ylo = INFINITY, yhi = -INFINITY, xhi;
	for (int m = 0; m < nm; m++)
		for (int t = 0; t < T; t++) {
			lx[t] = t + 1;
			ly[m * T + t] = num(json_array_get(loops, (size_t)t), metric[m]);
		}
	/* gen has no per-loop results: its fixed loop counts are its -s rules */
	for (int q = 0; gen && q < R; q++) {
		json_t *x = json_array_get(rules, (size_t)q);
		const char *name = json_string_value(json_object_get(x, "rule"));
		if (strncmp(name, "static ", 7) == 0) {
			lx[T] = atoi(name + 7) + 1;
			ly[T++] = num(x, "acc");
		}
	}
	sort_points(lx, ly, T);
	xhi = T ? lx[T - 1] : 1;
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
	/* one line per family of rules (the rules whose names begin with the
	 * same word: threshold, diff, static, kl, ...) and metric */
	int color = 2;
	for (int first = 0; first < R; first++) {
		const char *fam = json_string_value(json_object_get(json_array_get(rules, (size_t)first), "rule"));
		size_t wl = strcspn(fam, " ");
		int seen = 0;
		for (int q = 0; q < first && !seen; q++) {
			const char *name = json_string_value(json_object_get(json_array_get(rules, (size_t)q), "rule"));
			seen = strcspn(name, " ") == wl && strncmp(name, fam, wl) == 0;
		}
		for (int m = 0; m < nm && !seen; m++) {
			int n = 0;
			for (int q = first; q < R; q++) {
				json_t *x = json_array_get(rules, (size_t)q);
				const char *name = json_string_value(json_object_get(x, "rule"));
				if (strcspn(name, " ") != wl || strncmp(name, fam, wl))
					continue;
				rx[n] = num(x, "avg_loops");
				ry[n++] = num(x, metric[m]);
			}
			sort_points(rx, ry, n);
			svg_series(f, &right, rx, ry, n, colors[color % 6], m ? "2,3" : NULL);
			fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"%s\">rules %.*s: %s</text>\n", 575,
				60 + 16 * (color - 2), colors[color % 6], (int)wl, fam, metric[m]);
			color++;
		}
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

