/*
 * ouro-dump - what is in a record stream or a .safetensors file, and the
 * way out of it to NumPy.
 *
 * For every record and tensor: name, dtype, shape and summary statistics.
 * With --per-step, for the loop-axis tensor `hidden` [T, n, D], one line
 * per loop step: the mean token norm, mean, max |x|, and how far the state
 * moved from the previous step (relative change and cosine similarity,
 * averaged over tokens; per token with --per-token). --text adds the
 * values themselves (--limit of them per tensor), --json writes the same
 * facts as one JSON object per record.
 *
 * --npz FILE writes the selected tensors as a NumPy .npz archive (member
 * record<K>/<tensor>.npy, records numbered from 1 across all inputs) and
 * --npy TENSOR one tensor of one record as a .npy file; see export.h for
 * the format and for how BF16 is stored. --record K and --tensor NAME
 * select what every mode shows or writes.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "cli.h"


static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-dump [--per-step [--per-token]] [--text [--limit N]] [--json]\n"
		"                 [--record K] [--tensor NAME] [-o FILE] [FILE ...]\n"
		"       ouro-dump --npz ARCHIVE [--record K] [--tensor NAME] [FILE ...]\n"
		"       ouro-dump --npy TENSOR [--record K] [-o FILE] [FILE ...]\n"
		"Describe the records of a stream or a .safetensors file, or export them to NumPy.\n"
		"\n"
		"      --per-step      per-loop statistics of the hidden tensor [T, n, D]\n"
		"      --per-token     with --per-step, also one line per token\n"
		"      --text          also print the values of each tensor\n"
		"      --limit N       with --text, at most N values per tensor (default 64; 0: all)\n"
		"      --json          one JSON object per record instead of text\n"
		"      --record K      only record K (1-based, counted across all inputs)\n"
		"      --tensor NAME   only the tensor NAME (an error if a record lacks it)\n"
		"      --npz ARCHIVE   write the tensors to a NumPy .npz archive (atomically)\n"
		"      --npy TENSOR    write TENSOR of the first record (or of --record K) as .npy\n"
		"  -o, --output FILE   write to FILE (atomically) instead of stdout\n"
		"  -h, --help          show this help\n"
		"\n"
		"In the .npz archive each tensor is the member record<K>/<NAME>.npy; BF16 is\n"
		"stored as float32 (exact), since NumPy has no bfloat16.\n");
}

struct opts {
	int per_step, per_token, as_json, text;
	long limit;            /* --limit: values per tensor with --text, 0: all */
	long record;           /* --record K, 0: every record */
	const char *tensor;    /* --tensor NAME or --npy TENSOR, NULL: all */
	const char *npz;       /* --npz ARCHIVE */
	int npy;               /* --npy */
	const char *output;    /* -o FILE */
};

static struct opts opt = {.limit = 64};

/* Where the output goes: a text/JSON stream, a .npz archive or a .npy. */
struct sink {
	FILE *f;
	const char *name;          /* for messages */
	struct ouro_npz *npz;      /* --npz */
	int npy_written;           /* --npy: the tensor was found */
};

/* ---- values and statistics --------------------------------------------- */

struct stats {
	double min, max, mean, std, absmax;
	int64_t nonfinite;
};

static int is_float(enum ouro_dtype dt)
{
	return dt == OURO_F32 || dt == OURO_BF16 || dt == OURO_F16 || dt == OURO_F64;
}

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

/* Element i as the shortest decimal that reads back as the stored value
 * (F64 to 17 digits, the narrower floats to 9); integers exactly. */
static void format_elem(char *buf, size_t len, const struct ouro_tensor *t, int64_t i)
{
	if (t->dtype == OURO_I64) {
		int64_t v;
		memcpy(&v, (const char *)t->data + (size_t)i * 8, 8);
		snprintf(buf, len, "%lld", (long long)v);
		return;
	}
	double v = elem(t, i);

	if (!is_float(t->dtype) || !isfinite(v)) {
		snprintf(buf, len, "%.17g", v);
		return;
	}
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		double back = strtod(buf, NULL);
		if (t->dtype == OURO_F64 ? back == v : (float)back == (float)v)
			return;
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

static void shape_str(char *buf, size_t len, const struct ouro_tensor *t)
{
	size_t k = (size_t)snprintf(buf, len, "[");
	for (int d = 0; d < t->ndim && k < len; d++)
		k += (size_t)snprintf(buf + k, len - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
	if (k < len)
		snprintf(buf + k, len - k, "]");
}

/* The names of st's tensors, comma-separated, for messages. */
static void tensor_names(char *buf, size_t len, const struct ouro_st *st)
{
	size_t k = 0;

	buf[0] = '\0';
	for (int i = 0; i < ouro_st_count(st) && k < len; i++)
		k += (size_t)snprintf(buf + k, len - k, "%s%s", i ? ", " : "", ouro_st_tensor(st, i)->name);
	if (k >= len && len > 4)
		strcpy(buf + len - 4, "...");
}

/* ---- the loop axis ----------------------------------------------------- */

/* The loop-axis tensor of st for --per-step: `hidden`, a float [K, n, D],
 * with the loop of each row in h->step. */
static int loop_tensor(const struct ouro_st *st, const char *where, struct ouro_hidden *h)
{
	char names[200];

	if (!ouro_st_find(st, "hidden")) {
		tensor_names(names, sizeof names, st);
		return ouro_fail(OURO_EINPUT,
				 "%s: no loop-axis tensor 'hidden' [T, n, D] for --per-step (the record has %s)",
				 where, names[0] ? names : "no tensors");
	}
	return ouro_hidden_find(h, st, -1, -1, "", where);
}

/* ---- text -------------------------------------------------------------- */

/* Prints up to opt.limit values of t, eight a line, each line led by the
 * index of its first value. */
static void text_values(FILE *f, const struct ouro_tensor *t)
{
	int64_t n = ouro_tensor_numel(t), shown = opt.limit && opt.limit < n ? opt.limit : n;
	char buf[64];

	for (int64_t i = 0; i < shown; i++) {
		if (i % 8 == 0) {
			int64_t rest = i, idx[OURO_MAX_DIMS];
			for (int d = t->ndim - 1; d >= 0; d--) {
				idx[d] = t->shape[d] ? rest % t->shape[d] : 0;
				rest = t->shape[d] ? rest / t->shape[d] : 0;
			}
			fprintf(f, "%s    [", i ? "\n" : "");
			for (int d = 0; d < t->ndim; d++)
				fprintf(f, "%s%lld", d ? ", " : "", (long long)idx[d]);
			fputs("]", f);
		}
		format_elem(buf, sizeof buf, t, i);
		fprintf(f, " %s", buf);
	}
	if (shown)
		fputc('\n', f);
	if (shown < n)
		fprintf(f, "    ... %lld more\n", (long long)(n - shown));
}

static void text_steps(FILE *f, const struct ouro_tensor *t, const int *steps)
{
	int64_t n = t->shape[1];
	double *tok = opt.per_token ? malloc((size_t)n * 2 * sizeof *tok) : NULL;   /* [n, 2] */

	if (opt.per_token && !tok)
		return;
	fprintf(f, "    step  norm        mean         max|x|      change      cosine\n");
	for (int64_t s = 0; s < t->shape[0]; s++) {
		struct step r = step_stats(t, s, tok);
		fprintf(f, "    %-5d %-11.5g %-12.5g %-11.5g ", steps[s], r.norm, r.mean, r.absmax);
		if (s == 0)
			fprintf(f, "-           -\n");
		else
			fprintf(f, "%-11.5g %.6f\n", r.change, r.cosine);
		for (int64_t j = 0; tok && s > 0 && j < n; j++)
			fprintf(f, "      token %-6lld change %-11.5g cosine %.6f\n", (long long)j,
				tok[2 * j], tok[2 * j + 1]);
	}
	free(tok);
}

static void dump_text(FILE *f, const struct ouro_st *st, long index, const struct ouro_tensor *loop,
		      const int *steps)
{
	fprintf(f, "record %ld\n", index);
	for (int i = 0; i < ouro_st_meta_count(st); i++) {
		const char *k, *v;
		ouro_st_meta_at(st, i, &k, &v);
		fprintf(f, "  %s = %s\n", k, v);
	}
	for (int i = 0; i < ouro_st_count(st); i++) {
		const struct ouro_tensor *t = ouro_st_tensor(st, i);
		struct stats s;
		char shape[200];

		if (opt.tensor && strcmp(t->name, opt.tensor) != 0)
			continue;
		s = tensor_stats(t);
		shape_str(shape, sizeof shape, t);
		fprintf(f, "  %-16s %-4s %-18s min %.6g max %.6g mean %.6g std %.6g", t->name,
			ouro_dtype_name(t->dtype), shape, s.min, s.max, s.mean, s.std);
		if (s.nonfinite)
			fprintf(f, " non-finite %lld", (long long)s.nonfinite);
		fputc('\n', f);
		if (opt.text)
			text_values(f, t);
		if (t == loop)
			text_steps(f, t, steps);
	}
}

/* ---- JSON -------------------------------------------------------------- */

static json_t *jnum(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static json_t *json_steps(const struct ouro_tensor *t, const int *steps)
{
	json_t *arr = json_array();
	int64_t n = t->shape[1];
	double *tok = opt.per_token ? malloc((size_t)n * 2 * sizeof *tok) : NULL;   /* [n, 2] */

	for (int64_t s = 0; s < t->shape[0]; s++) {
		struct step r = step_stats(t, s, tok);
		json_t *js = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "step", (json_int_t)steps[s],
				       "norm", jnum(r.norm), "mean", jnum(r.mean), "absmax",
				       jnum(r.absmax), "change", jnum(r.change), "cosine",
				       jnum(r.cosine));
		if (tok && s > 0) {
			json_t *pt = json_array();
			for (int64_t j = 0; j < n; j++)
				json_array_append_new(pt, json_pack("{s:o, s:o}", "change",
								    jnum(tok[2 * j]), "cosine",
								    jnum(tok[2 * j + 1])));
			json_object_set_new(js, "tokens", pt);
		}
		json_array_append_new(arr, js);
	}
	free(tok);
	return arr;
}

static json_t *json_values(const struct ouro_tensor *t)
{
	int64_t n = ouro_tensor_numel(t), shown = opt.limit && opt.limit < n ? opt.limit : n;
	json_t *arr = json_array();

	for (int64_t i = 0; i < shown; i++) {
		if (t->dtype == OURO_I64) {
			int64_t v;
			memcpy(&v, (const char *)t->data + (size_t)i * 8, 8);
			json_array_append_new(arr, json_integer(v));
		} else if (is_float(t->dtype)) {
			json_array_append_new(arr, jnum(elem(t, i)));
		} else {
			json_array_append_new(arr, json_integer((json_int_t)elem(t, i)));
		}
	}
	return arr;
}

static int dump_json(FILE *f, const char *fname, const struct ouro_st *st, long index,
		     const struct ouro_tensor *loop, const int *steps)
{
	json_t *rec = json_object(), *meta = json_object(), *tensors = json_array();
	int rc = OURO_OK;

	for (int i = 0; i < ouro_st_meta_count(st); i++) {
		const char *k, *v;
		ouro_st_meta_at(st, i, &k, &v);
		json_object_set_new(meta, k, json_string(v));
	}
	for (int i = 0; i < ouro_st_count(st); i++) {
		const struct ouro_tensor *t = ouro_st_tensor(st, i);
		struct stats s;
		json_t *shape = json_array(), *o;

		if (opt.tensor && strcmp(t->name, opt.tensor) != 0) {
			json_decref(shape);
			continue;
		}
		s = tensor_stats(t);
		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		o = json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:I}", "name", t->name, "dtype",
			      ouro_dtype_name(t->dtype), "shape", shape, "min", jnum(s.min), "max",
			      jnum(s.max), "mean", jnum(s.mean), "std", jnum(s.std), "nonfinite",
			      (json_int_t)s.nonfinite);
		if (opt.text) {
			json_object_set_new(o, "values", json_values(t));
			json_object_set_new(o, "values_omitted",
					    json_integer(opt.limit && opt.limit < ouro_tensor_numel(t)
							 ? ouro_tensor_numel(t) - opt.limit : 0));
		}
		if (t == loop)
			json_object_set_new(o, "steps", json_steps(t, steps));
		json_array_append_new(tensors, o);
	}
	json_object_set_new(rec, "record", json_integer(index));
	json_object_set_new(rec, "metadata", meta);
	json_object_set_new(rec, "tensors", tensors);
	if (json_dumpf(rec, f, JSON_COMPACT) || fputc('\n', f) == EOF)
		rc = ouro_fail(OURO_ESYS, "%s: write error: %s", fname, strerror(errno));
	json_decref(rec);
	return rc;
}

/* ---- export ------------------------------------------------------------ */

static int export_npz(struct sink *out, const struct ouro_st *st, long index)
{
	int rc = OURO_OK;

	for (int i = 0; i < ouro_st_count(st) && !rc; i++) {
		const struct ouro_tensor *t = ouro_st_tensor(st, i);
		char *member;

		if (opt.tensor && strcmp(t->name, opt.tensor) != 0)
			continue;
		if (asprintf(&member, "record%ld/%s", index, t->name) < 0)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		rc = ouro_npz_add(out->npz, member, t);
		free(member);
	}
	return rc;
}

/* ---- the records ------------------------------------------------------- */

/* Shows or writes one record (number `index` across all inputs). */
static int one_record(struct sink *out, const struct ouro_st *st, long index, const char *where)
{
	struct ouro_hidden h = {NULL, 0, 0, {0}};
	const struct ouro_tensor *loop = NULL;
	const int *steps = h.step;
	char names[200];
	int rc;

	if (opt.tensor && !ouro_st_find(st, opt.tensor)) {
		tensor_names(names, sizeof names, st);
		return ouro_fail(OURO_EINPUT, "%s: no tensor '%s' (the record has %s)", where,
				 opt.tensor, names[0] ? names : "no tensors");
	}
	if (opt.per_step) {
		if ((rc = loop_tensor(st, where, &h)))
			return rc;
		loop = h.t;
	}
	if (opt.npy) {
		out->npy_written = 1;
		return ouro_npy_write(out->f, out->name, ouro_st_find(st, opt.tensor));
	}
	if (out->npz)
		return export_npz(out, st, index);
	if (opt.as_json)
		return dump_json(out->f, out->name, st, index, loop, steps);
	dump_text(out->f, st, index, loop, steps);
	return OURO_OK;
}

/* Reads the records of path; *index counts them across inputs. Stops
 * early once --record K has been passed. */
static int dump_file(struct sink *out, const char *path, long *index)
{
	const char *name = ouro_input_name(path);
	enum ouro_input_kind kind;
	struct ouro_st *st;
	FILE *f;
	long local = 0;
	int rc;

	if ((rc = ouro_input_open(&f, &kind, path)))
		return rc;
	if (kind != OURO_INPUT_RECORDS) {
		ouro_input_close(f);
		return ouro_fail(OURO_EINPUT, "%s: %s", name,
				 kind == OURO_INPUT_EMPTY ? "empty input"
				 : "not a record stream or a .safetensors file");
	}
	while (!(opt.record && *index >= opt.record)) {
		char what[300];

		snprintf(what, sizeof what, "%s: record %ld", name, local + 1);
		if ((rc = ouro_st_read(&st, f, what)) || !st)
			break;
		local++;
		++*index;
		if (!opt.record || *index == opt.record)
			rc = one_record(out, st, *index, what);
		ouro_st_free(st);
		if (rc || (opt.npy && out->npy_written))
			break;
	}
	ouro_input_close(f);
	return rc;
}

int main(int argc, char **argv)
{
	enum { OPT_PER_STEP = 256, OPT_PER_TOKEN, OPT_JSON, OPT_TEXT, OPT_LIMIT, OPT_RECORD,
	       OPT_TENSOR, OPT_NPZ, OPT_NPY };
	static const struct option longopts[] = {
		{"per-step", no_argument, NULL, OPT_PER_STEP},
		{"per-token", no_argument, NULL, OPT_PER_TOKEN},
		{"json", no_argument, NULL, OPT_JSON},
		{"text", no_argument, NULL, OPT_TEXT},
		{"limit", required_argument, NULL, OPT_LIMIT},
		{"record", required_argument, NULL, OPT_RECORD},
		{"tensor", required_argument, NULL, OPT_TENSOR},
		{"npz", required_argument, NULL, OPT_NPZ},
		{"npy", required_argument, NULL, OPT_NPY},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct sink out = {0};
	struct ouro_output *o = NULL;
	const char *path;
	int c, rc = OURO_OK, limit_given = 0;
	long index = 0;

	cli_init("ouro-dump");
	while ((c = cli_getopt(argc, argv, "o:h", longopts)) != -1) {
		switch (c) {
		case OPT_PER_STEP: opt.per_step = 1; break;
		case OPT_PER_TOKEN: opt.per_token = 1; break;
		case OPT_JSON: opt.as_json = 1; break;
		case OPT_TEXT: opt.text = 1; break;
		case OPT_LIMIT:
			opt.limit = cli_long(optarg, 0, LONG_MAX, "--limit");
			limit_given = 1;
			break;
		case OPT_RECORD: opt.record = cli_long(optarg, 1, LONG_MAX, "--record"); break;
		case OPT_TENSOR: opt.tensor = optarg; break;
		case OPT_NPZ: opt.npz = optarg; break;
		case OPT_NPY: opt.npy = 1; opt.tensor = optarg; break;
		case 'o': opt.output = optarg; break;
		case 'h': usage(stdout); return 0;
		}
	}
	if (opt.per_token && !opt.per_step)
		usage_error("--per-token needs --per-step");
	if (limit_given && !opt.text)
		usage_error("--limit needs --text");
	if (opt.npz && opt.npy)
		usage_error("--npz and --npy are different outputs; give one");
	if ((opt.npz || opt.npy) && (opt.per_step || opt.text || opt.as_json))
		usage_error("--%s writes tensors, not statistics; it cannot go with --per-step, --text or --json",
			    opt.npz ? "npz" : "npy");
	if (opt.npz && opt.output)
		usage_error("--npz names its own output file; -o is for the other modes");
	if (opt.per_step && opt.tensor && strcmp(opt.tensor, "hidden") != 0)
		usage_error("--per-step shows the tensor 'hidden'; --tensor selects '%s'", opt.tensor);
	if (opt.npy && !opt.record)
		opt.record = 1;
	if (opt.tensor && !*opt.tensor)
		usage_error("%s: the tensor name is empty", opt.npy ? "--npy" : "--tensor");

	path = opt.npz ? opt.npz : opt.output;
	if (opt.npz || opt.npy)
		cli_binary_stdout(path);
	out.name = cli_output_open(&o, &out.f, path);
	if (opt.npz && (rc = ouro_npz_new(&out.npz, out.f, out.name, -1)))
		goto fail;

	if (optind == argc)
		rc = dump_file(&out, "-", &index);
	for (int i = optind; i < argc && !rc && !(opt.record && index >= opt.record); i++)
		rc = dump_file(&out, argv[i], &index);
	if (rc)
		goto fail;
	if (opt.record && index < opt.record) {
		rc = ouro_fail(OURO_EINPUT, "--record %ld: the input holds %ld record%s", opt.record,
			       index, index == 1 ? "" : "s");
		goto fail;
	}
	if (out.npz) {
		rc = ouro_npz_finish(out.npz);
		out.npz = NULL;
		if (rc)
			goto fail;
	}
	if ((rc = ouro_output_commit(o)))
		die(rc);
	return 0;
fail:
	ouro_npz_free(out.npz);
	ouro_output_abort(o);
	die(rc);
}
