/*
 * ouro-quantize - a copy of a model directory with quantized weights.
 *
 * With --type q8_0 (the default) every layer matrix and lm_head become
 * blocks of 32 int8 with one F16 scale (34 bytes per 32 weights instead
 * of 64 in BF16); with --type q4 the layer matrices become 4-bit values
 * in super-blocks of 256 (144 bytes per 256 weights) and lm_head q8_0.
 * The loader recognises both by their tensor names; the embedding, the
 * norms and the exit gate are copied unchanged, and so is every other file
 * of the directory (config.json, the tokenizer). Each output file is
 * written atomically.
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-quantize [-m DIR] [-t TYPE] [-j THREADS] -o OUTDIR\n"
		"Write a copy of a model directory with its layer matrices and lm_head quantized.\n"
		"\n"
		"  -m, --model DIR        model directory (default: $OURO_MODEL, else the bundled model)\n"
		"  -o, --output OUTDIR    the new model directory (created if missing)\n"
		"  -t, --type TYPE        q8_0 (default: 8.5 bits a weight) or q4 (4.5 bits;\n"
		"                         lm_head stays q8_0)\n"
		"  -j, --threads THREADS  threads (default: $OURO_THREADS, else all cores)\n"
		"  -h, --help             show this help\n");
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The files of the new directory replace what is there, so each must be
 * a regular file or absent: an existing pipe or device is refused, not
 * written into (ouro_file_open says what it is). */
static int dest_check(const char *dst)
{
	struct stat sb;
	FILE *f;
	int rc;

	if (stat(dst, &sb) || S_ISREG(sb.st_mode))
		return OURO_OK;
	if (!(rc = ouro_file_open(&f, NULL, dst, OURO_ESYS)))
		fclose(f);
	return rc;
}

/* Copies dir/name, a regular file, to outdir/name atomically; with check
 * set, only checks that it can: dir/name opens as a regular file and
 * outdir/name may be replaced. */
static int copy_file(const char *dir, const char *outdir, const char *name, int check)
{
	char src[4096], dst[4096], buf[65536];
	struct ouro_output *o;
	FILE *in, *out;
	size_t got;
	int rc;

	snprintf(src, sizeof src, "%s/%s", dir, name);
	snprintf(dst, sizeof dst, "%s/%s", outdir, name);
	if ((rc = ouro_file_open(&in, NULL, src, OURO_EMODEL)))
		return rc;
	if (check) {
		fclose(in);
		return dest_check(dst);
	}
	if ((rc = ouro_output_open(&o, &out, dst))) {
		fclose(in);
		return rc;
	}
	while ((got = fread(buf, 1, sizeof buf, in)) > 0)
		if (fwrite(buf, 1, got, out) != got)
			break;
	if (ferror(in)) {
		rc = ouro_fail(OURO_ESYS, "%s: read error: %s", src, strerror(errno));
		ouro_output_abort(o);
	} else {
		rc = ouro_output_commit(o);
	}
	fclose(in);
	return rc;
}

/* Copies every file of dir but the weights and the directories (check:
 * checks that each can be copied, see copy_file); one that is not a
 * regular file (a pipe, a device) is refused. */
static int copy_others(const char *dir, const char *outdir, int check)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = OURO_OK;

	if (!d)
		return ouro_fail(OURO_EMODEL, "%s: %s", dir, strerror(errno));
	while (!rc && (e = readdir(d))) {
		char path[4096];
		struct stat sb;

		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (stat(path, &sb) || S_ISDIR(sb.st_mode) || ends_with(e->d_name, ".safetensors") ||
		    strcmp(e->d_name, "model.safetensors.index.json") == 0)
			continue;
		rc = copy_file(dir, outdir, e->d_name, check);
	}
	closedir(d);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"output", required_argument, NULL, 'o'},
		{"type", required_argument, NULL, 't'},
		{"threads", required_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *model_dir = NULL, *outdir = NULL, *threads = NULL;
	enum ouro_quant type = OURO_QUANT_Q8_0;
	struct ouro_model *m;
	struct ouro_output *o;
	struct stat a, b;
	char path[4096];
	FILE *out;
	int c, rc;

	cli_init("ouro-quantize");
	while ((c = cli_getopt(argc, argv, "m:o:t:j:h", longopts)) != -1) {
		switch (c) {
		case 'm': model_dir = optarg; break;
		case 'o': outdir = optarg; break;
		case 't':
			if (strcmp(optarg, "q8_0") == 0)
				type = OURO_QUANT_Q8_0;
			else if (strcmp(optarg, "q4") == 0)
				type = OURO_QUANT_Q4;
			else
				usage_error("--type: '%s' is neither q8_0 nor q4", optarg);
			break;
		case 'j': threads = optarg; break;
		case 'h': usage(stdout); return 0;
		}
	}
	if (optind < argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	if (!outdir)
		usage_error("-o OUTDIR is required");
	cli_threads(threads);
	if ((rc = ouro_model_load(&m, ouro_model_path(model_dir))))
		die(rc);
	const char *dir = ouro_model_dir(m);
	if (mkdir(outdir, 0777) && errno != EEXIST)
		rc = ouro_fail(OURO_ESYS, "%s: cannot create: %s", outdir, strerror(errno));
	else if (stat(outdir, &b) || !S_ISDIR(b.st_mode))
		rc = ouro_fail(OURO_ESYS, "%s: not a directory", outdir);
	else if (stat(dir, &a) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
		rc = ouro_fail(OURO_EUSAGE, "%s: is the model directory itself; choose another", outdir);
	snprintf(path, sizeof path, "%s/model.safetensors", outdir);
	/* no file is written unless every one can be */
	if (!rc && !(rc = copy_others(dir, outdir, 1)) && !(rc = dest_check(path)))
		rc = copy_others(dir, outdir, 0);
	if (!rc && !(rc = ouro_output_open(&o, &out, path))) {
		if ((rc = ouro_model_quantize(m, out, type, path)))
			ouro_output_abort(o);
		else
			rc = ouro_output_commit(o);
	}
	ouro_model_free(m);
	if (rc)
		die(rc);
	return 0;
}
