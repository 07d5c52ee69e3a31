/*
 * ouro-forward - token ids in, the hidden state after every loop out.
 *
 * Reads sequences (records with a `tokens` tensor, or text: decimal ids,
 * one sequence per line) from files or stdin, runs the looped forward
 * pass over each, and writes one record per sequence with `tokens` [n]
 * and `hidden` [K, n, D]: the normed state after each kept loop step.
 * Sequences stream through one at a time; a record is written only when
 * it is complete.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"


static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-forward [-m DIR] [-T STEPS] [-k STEP,...] [--dtype f32|bf16|f16]\n"
		"                    [-j THREADS] [-o FILE] [FILE ...]\n"
		"Run the looped forward pass and write the hidden state after every loop.\n"
		"\n"
		"  -m, --model DIR           model directory (default: $OURO_MODEL, else the bundled model)\n"
		"  -T, --steps STEPS         loops to run (default: total_ut_steps of config.json)\n"
		"  -k, --keep STEP,...       keep only these steps (0-based), or 'last'\n"
		"      --dtype f32|bf16|f16  dtype of hidden (default f32)\n"
		"  -j, --threads THREADS     threads (default: $OURO_THREADS, else all cores)\n"
		"  -o, --output FILE         write records to FILE (atomically) instead of stdout\n"
		"  -h, --help                show this help\n"
		"\n"
		"Input: records with an I32 tensor 'tokens', or text ids, one sequence per line.\n");
}

/* Parses --keep into keep[0..steps): 1 for each step to write. */
static int parse_keep(const char *list, int steps, unsigned char *keep)
{
	const char *p = list;
	char item[32];

	memset(keep, 0, (size_t)steps);
	if (strcmp(list, "last") == 0) {
		keep[steps - 1] = 1;
		return 0;
	}
	for (;;) {
		size_t len = strcspn(p, ",");
		long v;

		if (len == 0 || len >= sizeof item)
			usage_error("--keep: '%s' is not a comma-separated list of steps", list);
		memcpy(item, p, len);
		item[len] = '\0';
		if (ouro_parse_int(item, 0, steps - 1, &v, "--keep"))
			usage_error("%s (with %d steps)", ouro_errmsg(), steps);
		keep[v] = 1;
		if (!p[len])
			break;
		p += len + 1;
	}
	return 0;
}

/* Builds and writes the record of one sequence. */
static int emit(FILE *out, const char *outname, const struct ouro_model *m,
		const struct ouro_st *in, const int32_t *ids, int64_t n, int steps,
		const unsigned char *keep, enum ouro_dtype dt, float *hidden, void *conv)
{
	int64_t D = ouro_model_config(m)->hidden_size;
	int kept = 0, list[OURO_MAX_STEPS];
	struct ouro_record *r = ouro_record_new();
	int rc = OURO_OK;

	if (!r)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	if ((rc = ouro_record_meta_copy(r, in)))
		goto out;
	for (int t = 0; t < steps; t++) {
		if (!keep[t])
			continue;
		float *src = hidden + (size_t)t * (size_t)(n * D);
		char *dst = (char *)conv + (size_t)kept * (size_t)(n * D) * ouro_dtype_size(dt);
		if (dt == OURO_F32)
			memmove(dst, src, (size_t)(n * D) * sizeof(float));
		else
			ouro_from_f32(dst, src, dt, (size_t)(n * D));
		list[kept++] = t;
	}
	int64_t tshape[1] = {n}, hshape[3] = {kept, n, D};
	if ((rc = ouro_record_meta(r, "ouro.producer", "ouro-forward")) ||
	    (rc = ouro_record_meta(r, "ouro.model", ouro_model_dir(m))) ||
	    (rc = ouro_hidden_meta(r, list, kept, steps)) ||
	    (rc = ouro_record_add(r, "tokens", OURO_I32, 1, tshape, ids)) ||
	    (rc = ouro_record_add(r, "hidden", dt, 3, hshape, conv)))
		goto out;
	rc = ouro_record_write(r, out, outname);
out:
	ouro_record_free(r);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"steps", required_argument, NULL, 'T'},
		{"keep", required_argument, NULL, 'k'},
		{"dtype", required_argument, NULL, 'D'},
		{"threads", required_argument, NULL, 'j'},
		{"output", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *model_dir = NULL, *keep_list = NULL, *threads = NULL, *outpath = NULL;
	enum ouro_dtype dt = OURO_F32;
	long steps = 0;
	int c, rc;

	cli_init("ouro-forward");
	while ((c = cli_getopt(argc, argv, "m:T:k:j:o:h", longopts)) != -1) {
		switch (c) {
		case 'm': model_dir = optarg; break;
		case 'T': steps = cli_long(optarg, 1, OURO_MAX_STEPS, "--steps"); break;
		case 'k': keep_list = optarg; break;
		case 'D':
			if (strcmp(optarg, "f32") == 0)
				dt = OURO_F32;
			else if (strcmp(optarg, "bf16") == 0)
				dt = OURO_BF16;
			else if (strcmp(optarg, "f16") == 0)
				dt = OURO_F16;
			else
				usage_error("--dtype: '%s' is not f32, bf16 or f16", optarg);
			break;
		case 'j': threads = optarg; break;
		case 'o': outpath = optarg; break;
		case 'h': usage(stdout); return 0;
		}
	}
	cli_threads(threads);
	cli_binary_stdout(outpath);

	struct ouro_model *m;
	if ((rc = ouro_model_load(&m, ouro_model_path(model_dir))))
		die(rc);
	const struct ouro_config *cfg = ouro_model_config(m);
	if (!steps)
		steps = cfg->total_ut_steps;
	unsigned char keep[OURO_MAX_STEPS];
	if (keep_list)
		parse_keep(keep_list, (int)steps, keep);
	else
		memset(keep, 1, sizeof keep);

	struct ouro_output *o;
	FILE *out;
	const char *outname = cli_output_open(&o, &out, outpath);
	struct cli_seqs in;
	const struct ouro_st *rec;
	const int32_t *ids;
	int64_t n;
	float *hidden = NULL;
	size_t cap = 0;

	cli_seqs_open(&in, argc, argv);
	while (!(rc = cli_seqs_next(&in, &ids, &n, &rec)) && ids) {
		size_t need = (size_t)steps * (size_t)n * (size_t)cfg->hidden_size;
		if (need > cap) {
			free(hidden);
			if (!(hidden = malloc(need * sizeof *hidden))) {
				cap = 0;
				rc = ouro_fail(OURO_ENOMEM, "%s: %lld tokens need %.1f MiB for hidden states",
					       ouro_seq_where(in.in), (long long)n, (double)need * 4 / (1 << 20));
				break;
			}
			cap = need;
		}
		if ((rc = ouro_forward(m, ids, n, (int)steps, hidden))) {
			rc = ouro_refail(rc, ouro_seq_where(in.in));
			break;
		}
		/* hidden doubles as the conversion target: kept steps are
		 * packed in order, never overtaking their source */
		if ((rc = emit(out, outname, m, rec, ids, n, (int)steps, keep, dt, hidden, hidden)))
			break;
	}
	cli_seqs_close(&in);
	free(hidden);
	ouro_model_free(m);
	return cli_output_end(o, rc);
}
