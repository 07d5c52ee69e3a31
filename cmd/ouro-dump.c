/*
 * ouro-dump - what is in a record stream or a .safetensors file.
 *
 * For every record and tensor: name, dtype, shape and summary statistics.
 * With --per-step, for the loop-axis tensor `hidden` [T, n, D], one line
 * per loop step: the mean token norm, mean, max |x|, and how far the state
 * moved from the previous step (relative change and cosine similarity,
 * averaged over tokens; per token with --per-token). --json writes the
 * same facts as one JSON object per record.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "cli.h"

static int per_step, per_token, as_json;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-dump [--per-step [--per-token]] [--json] [FILE ...]\n"
		"Describe the records of a stream or a .safetensors file.\n"
		"\n"
		"      --per-step      per-loop statistics of the hidden tensor [T, n, D]\n"
		"      --per-token     with --per-step, also one line per token\n"
		"      --json          one JSON object per record instead of text\n"
		"  -h, --help          show this help\n");
}

struct stats {
	double min, max, mean, std, absmax;
	int64_t nonfinite;
};

/* Reads element i of a tensor of any dtype as a double. */
static double elem(const struct ouro_tensor *t, int64_t i)
{
	const unsigned char *p = (const unsigned char *)t->data + (size_t)i * ouro_dtype_size(t->dtype);
	union { float f; double d; int8_t i8; uint8_t u8; int16_t i16; int32_t i32; int64_t i64; } u;

	switch (t->dtype) {
	case OURO_F32: memcpy(&u.f, p, 4); return u.f;
	case OURO_F16: case OURO_BF16: ouro_to_f32(&u.f, p, t->dtype, 1); return u.f;
	case OURO_F64: memcpy(&u.d, p, 8); return u.d;
	case OURO_I8: memcpy(&u.i8, p, 1); return u.i8;
	case OURO_U8: case OURO_BOOL: return *p;
	case OURO_I16: memcpy(&u.i16, p, 2); return u.i16;
	case OURO_I32: memcpy(&u.i32, p, 4); return u.i32;
	case OURO_I64: memcpy(&u.i64, p, 8); return (double)u.i64;
	default: return NAN;
	}
}

static struct stats tensor_stats(const struct ouro_tensor *t)
{
	struct stats s = {INFINITY, -INFINITY, 0, 0, 0, 0};
	int64_t n = ouro_tensor_numel(t), finite = 0;
	double sum = 0, sq = 0;

	for (int64_t i = 0; i < n; i++) {
		double v = elem(t, i);
		if (!isfinite(v)) {
			s.nonfinite++;
			continue;
		}
		finite++;
		s.min = v < s.min ? v : s.min;
		s.max = v > s.max ? v : s.max;
		s.absmax = fabs(v) > s.absmax ? fabs(v) : s.absmax;
		sum += v;
		sq += v * v;
	}
	if (finite) {
		s.mean = sum / (double)finite;
		s.std = sqrt(fmax(0, sq / (double)finite - s.mean * s.mean));
	} else {
		s.min = s.max = NAN;
	}
	return s;
}

/* Statistics of step t of hidden [T, n, D]; tok (if not NULL) gets the
 * per-token relative change and cosine to step t-1 as [n, 2]. */
struct step {
	double norm, mean, absmax, change, cosine;
};

static struct step step_stats(const struct ouro_tensor *t, int64_t s, double *tok)
{
	int64_t n = t->shape[1], D = t->shape[2];
	struct step r = {0, 0, 0, NAN, NAN};
	double chg = 0, cs = 0;

	for (int64_t i = 0; i < n; i++) {
		double nn = 0, pn = 0, dd = 0, dot = 0;
		for (int64_t j = 0; j < D; j++) {
			double v = elem(t, (s * n + i) * D + j);
			nn += v * v;
			r.mean += v;
			r.absmax = fabs(v) > r.absmax ? fabs(v) : r.absmax;
			if (s > 0) {
				double p = elem(t, ((s - 1) * n + i) * D + j);
				pn += p * p;
				dd += (v - p) * (v - p);
				dot += v * p;
			}
		}
		r.norm += sqrt(nn);
		if (s > 0) {
			double c = sqrt(dd) / sqrt(pn), o = dot / (sqrt(nn) * sqrt(pn));
			chg += c;
			cs += o;
			if (tok) {
				tok[2 * i] = c;
				tok[2 * i + 1] = o;
			}
		}
	}
	r.norm /= (double)n;
	r.mean /= (double)(n * D);
	if (s > 0) {
		r.change = chg / (double)n;
		r.cosine = cs / (double)n;
	}
	return r;
}

static int is_loop_tensor(const struct ouro_tensor *t)
{
	return strcmp(t->name, "hidden") == 0 && t->ndim == 3 && t->shape[0] > 0 &&
	       t->shape[1] > 0 && t->shape[2] > 0 &&
	       (t->dtype == OURO_F32 || t->dtype == OURO_BF16 || t->dtype == OURO_F16);
}

static void shape_str(char *buf, size_t len, const struct ouro_tensor *t)
{
	size_t k = (size_t)snprintf(buf, len, "[");
	for (int d = 0; d < t->ndim && k < len; d++)
		k += (size_t)snprintf(buf + k, len - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
	if (k < len)
		snprintf(buf + k, len - k, "]");
}

static void dump_text(const struct ouro_st *st, long index)
{
	printf("record %ld\n", index);
	for (int i = 0; i < ouro_st_meta_count(st); i++) {
		const char *k, *v;
		ouro_st_meta_at(st, i, &k, &v);
		printf("  %s = %s\n", k, v);
	}
	for (int i = 0; i < ouro_st_count(st); i++) {
		const struct ouro_tensor *t = ouro_st_tensor(st, i);
		struct stats s = tensor_stats(t);
		char shape[200];

		shape_str(shape, sizeof shape, t);
		printf("  %-16s %-4s %-18s min %.6g max %.6g mean %.6g std %.6g", t->name,
		       ouro_dtype_name(t->dtype), shape, s.min, s.max, s.mean, s.std);
		if (s.nonfinite)
			printf(" non-finite %lld", (long long)s.nonfinite);
		putchar('\n');
		if (!per_step || !is_loop_tensor(t))
			continue;
		int64_t n = t->shape[1];
		double *tok = per_token ? malloc((size_t)n * 2 * sizeof *tok) : NULL;
		printf("    step  norm        mean         max|x|      change      cosine\n");
		for (int64_t s2 = 0; s2 < t->shape[0]; s2++) {
			struct step r = step_stats(t, s2, tok);
			printf("    %-5lld %-11.5g %-12.5g %-11.5g ", (long long)s2, r.norm, r.mean, r.absmax);
			if (s2 == 0)
				printf("-           -\n");
			else
				printf("%-11.5g %.6f\n", r.change, r.cosine);
			for (int64_t j = 0; tok && s2 > 0 && j < n; j++)
				printf("      token %-6lld change %-11.5g cosine %.6f\n", (long long)j,
				       tok[2 * j], tok[2 * j + 1]);
		}
		free(tok);
	}
}

static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static void dump_json(const struct ouro_st *st, long index)
{
	json_t *rec = json_object(), *meta = json_object(), *tensors = json_array();

	for (int i = 0; i < ouro_st_meta_count(st); i++) {
		const char *k, *v;
		ouro_st_meta_at(st, i, &k, &v);
		json_object_set_new(meta, k, json_string(v));
	}
	for (int i = 0; i < ouro_st_count(st); i++) {
		const struct ouro_tensor *t = ouro_st_tensor(st, i);
		struct stats s = tensor_stats(t);
		json_t *shape = json_array(), *o;

		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:I}", "name", t->name, "dtype",
			      ouro_dtype_name(t->dtype), "shape", shape, "min", jnum(s.min), "max",
			      jnum(s.max), "mean", jnum(s.mean), "std", jnum(s.std), "nonfinite",
			      (json_int_t)s.nonfinite);
		if (per_step && is_loop_tensor(t)) {
			json_t *steps = json_array();
			int64_t n = t->shape[1];
			double *tok = per_token ? malloc((size_t)n * 2 * sizeof *tok) : NULL;

			for (int64_t s2 = 0; s2 < t->shape[0]; s2++) {
				struct step r = step_stats(t, s2, tok);
				json_t *js = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "step", (json_int_t)s2,
						       "norm", jnum(r.norm), "mean", jnum(r.mean), "absmax",
						       jnum(r.absmax), "change", jnum(r.change), "cosine",
						       jnum(r.cosine));
				if (tok && s2 > 0) {
					json_t *pt = json_array();
					for (int64_t j = 0; j < n; j++)
						json_array_append_new(pt, json_pack("{s:o, s:o}", "change",
										    jnum(tok[2 * j]), "cosine",
										    jnum(tok[2 * j + 1])));
					json_object_set_new(js, "tokens", pt);
				}
				json_array_append_new(steps, js);
			}
			free(tok);
			json_object_set_new(o, "steps", steps);
		}
		json_array_append_new(tensors, o);
	}
	json_object_set_new(rec, "record", json_integer(index));
	json_object_set_new(rec, "metadata", meta);
	json_object_set_new(rec, "tensors", tensors);
	json_dumpf(rec, stdout, JSON_COMPACT);
	putchar('\n');
	json_decref(rec);
}

static int dump_file(const char *path)
{
	const char *name = ouro_input_name(path);
	enum ouro_input_kind kind;
	struct ouro_st *st;
	FILE *f;
	long index = 0;
	int rc;

	if ((rc = ouro_input_open(&f, &kind, path)))
		return rc;
	if (kind != OURO_INPUT_RECORDS) {
		ouro_input_close(f);
		return ouro_fail(OURO_EINPUT, "%s: %s", name,
				 kind == OURO_INPUT_EMPTY ? "empty input" : "not a record stream or a .safetensors file");
	}
	for (;;) {
		char what[300];

		snprintf(what, sizeof what, "%s: record %ld", name, index + 1);
		if ((rc = ouro_st_read(&st, f, what)) || !st)
			break;
		index++;
		if (as_json)
			dump_json(st, index);
		else
			dump_text(st, index);
		ouro_st_free(st);
	}
	ouro_input_close(f);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"per-step", no_argument, NULL, 's'},
		{"per-token", no_argument, NULL, 't'},
		{"json", no_argument, NULL, 'J'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, rc = OURO_OK;

	cli_init("ouro-dump");
	while ((c = cli_getopt(argc, argv, "h", longopts)) != -1) {
		switch (c) {
		case 's': per_step = 1; break;
		case 't': per_token = 1; break;
		case 'J': as_json = 1; break;
		case 'h': usage(stdout); return 0;
		}
	}
	if (per_token && !per_step)
		usage_error("--per-token needs --per-step");
	if (optind == argc)
		rc = dump_file("-");
	for (int i = optind; i < argc && !rc; i++)
		rc = dump_file(argv[i]);
	if (fflush(stdout) || ferror(stdout))
		rc = rc ? rc : ouro_fail(OURO_ESYS, "stdout: write error");
	if (rc)
		die(rc);
	return 0;
}
