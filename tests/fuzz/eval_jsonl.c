/*
 * eval_jsonl.c - fuzzes the evaluation readers of the library (eval.h)
 * that ouro-eval feeds its inputs, reports and logs to. The first byte
 * picks the reader, the rest is the file:
 *   0  ppl documents as JSONL (ouro_eval_read_ppl_jsonl, field "text")
 *   1  ppl documents as token ids, vocabulary 100 (ouro_eval_read_ppl_ids)
 *   2  multiple-choice tasks as JSONL (ouro_eval_read_choice_jsonl), and
 *      the same bytes as generative tasks (ouro_eval_read_gen_jsonl, which
 *      keeps a bad line as an example with its message)
 *   3  a report given to merge: its config and sums
 *      (ouro_eval_config_layout, ouro_eval_sums_parse, ouro_eval_sums_add),
 *      then the report rebuilt from the sums and printed as a table (to
 *      /dev/null) and a plot (to a temporary directory, emptied after each
 *      input)
 *   4  the log of an interrupted run given to --resume
 *      (ouro_eval_log_resume), its first line taken as the run's own header
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval.h"
#include "fuzz.h"

static void readers(int mode, const uint8_t *data, size_t size)
{
	struct ouro_eval_corpus c;
	char *buf = fuzz_copy(data, size, 1);

	int rc = OURO_OK;

	memset(&c, 0, sizeof c);
	switch (mode) {
	case 0: rc = ouro_eval_read_ppl_jsonl(&c, "fuzz", buf, size, "text"); break;
	case 1: rc = ouro_eval_read_ppl_ids(&c, "fuzz", buf, size, 100); break;
	case 2: rc = ouro_eval_read_choice_jsonl(&c, "fuzz", buf, size); break;
	}
	/* after a failure the program only frees the corpus */
	for (int64_t i = 0; !rc && i < c.n; i++) {
		struct ouro_eval_example *e = &c.ex[i];
		if (e->text)
			fuzz_touch(e->text, e->len);
		for (size_t k = 0; k < e->ids.n; k++)
			FUZZ_ASSERT(e->ids.v[k] >= 0 && e->ids.v[k] < 100);
		FUZZ_ASSERT(e->npairs == 0 || (e->gold >= 0 && e->gold < e->npairs));
		for (int k = 0; k < e->npairs; k++) {
			fuzz_touch(e->pairs[k].ctx, e->pairs[k].ctx_len + 1);
			fuzz_touch(e->pairs[k].cont, e->pairs[k].cont_len + 1);
		}
	}
	ouro_eval_corpus_free(&c);
	if (mode == 2) {
		memset(&c, 0, sizeof c);
		memcpy(buf, data, size);
		if (ouro_eval_read_gen_jsonl(&c, "fuzz", buf, size) == OURO_OK)
			for (int64_t i = 0; i < c.n; i++) {
				struct ouro_eval_example *e = &c.ex[i];
				if (e->error) {
					fuzz_touch(e->error, strlen(e->error) + 1);
					continue;
				}
				FUZZ_ASSERT(e->prompt && e->answer);
				fuzz_touch(e->prompt, e->prompt_len + 1);
				fuzz_touch(e->answer, e->answer_len + 1);
				for (int k = 0; k < e->nuntil; k++)
					FUZZ_ASSERT(e->until[k] && e->until[k][0]);
			}
		ouro_eval_corpus_free(&c);
	}
	free(buf);
}

static char plotdir[64];

static void rm_plotdir(void)
{
	rmdir(plotdir);
}

static void report(const uint8_t *data, size_t size)
{
	json_error_t err;
	json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err), *rep;
	struct ouro_eval_layout L;
	int64_t *v, *acc;

	if (!j)
		return;
	if (ouro_eval_config_layout(json_object_get(j, "config"), &L, "fuzz") == OURO_OK) {
		FUZZ_ASSERT(L.total > 0);
		v = calloc((size_t)L.total, sizeof *v);
		acc = calloc((size_t)L.total, sizeof *acc);
		FUZZ_ASSERT(v && acc);
		if (ouro_eval_sums_parse(&L, json_object_get(j, "sums"), v, "fuzz") == OURO_OK &&
		    ouro_eval_sums_add(&L, acc, v, "fuzz") == OURO_OK) {
			rep = ouro_eval_report(json_object_get(j, "config"), 0, 0, 1, &L, acc);
			FILE *f = fopen("/dev/null", "w");
			FUZZ_ASSERT(f);
			ouro_eval_table(f, rep);
			fclose(f);
			if (!plotdir[0]) {
				snprintf(plotdir, sizeof plotdir, "/tmp/ouro-fuzz-XXXXXX");
				FUZZ_ASSERT(mkdtemp(plotdir));
				atexit(rm_plotdir);
			}
			char plot[96];
			snprintf(plot, sizeof plot, "%s/plot.svg", plotdir);
			ouro_eval_plot(plot, rep);
			unlink(plot);
			json_decref(rep);
		}
		free(v);
		free(acc);
	}
	json_decref(j);
}

static void resume(const uint8_t *data, size_t size)
{
	const char *nl = memchr(data, '\n', size);
	json_error_t err;
	json_t *header;
	struct ouro_eval_layout L;

	if (!nl || !(header = json_loadb((const char *)data, (size_t)(nl - (const char *)data), 0, &err)))
		return;
	json_t *tot = json_object_get(header, "examples_total");
	int64_t total = json_is_integer(tot) ? json_integer_value(tot) : 0;
	if (total >= 1 && total <= 4096 && ouro_eval_config_layout(json_object_get(header, "config"), &L, "fuzz") == OURO_OK) {
		unsigned char *done = calloc((size_t)total, 1);
		int64_t *acc = calloc((size_t)L.total, sizeof *acc), ndone;
		off_t keep;
		const char *path = fuzz_path(data, size);
		FILE *f;
		int opened = ouro_file_open(&f, NULL, path, OURO_EINPUT);
		FUZZ_ASSERT(done && acc && opened == OURO_OK);
		if (ouro_eval_log_resume(f, path, header, 0, 0, &L, total, done, acc, &ndone, &keep) == OURO_OK) {
			FUZZ_ASSERT(ndone >= 0 && ndone <= total);
			FUZZ_ASSERT(keep >= 0 && (size_t)keep <= size);
		}
		free(done);
		free(acc);
	}
	json_decref(header);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 5) {
	case 0: case 1: case 2: readers(data[0] % 5, data + 1, size - 1); break;
	case 3: report(data + 1, size - 1); break;
	case 4: resume(data + 1, size - 1); break;
	}
	return 0;
}
