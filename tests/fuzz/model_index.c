/*
 * model_index.c - fuzzes the loading of a sharded checkpoint: the input
 * is model.safetensors.index.json in a model directory (made once, in
 * /tmp) that holds the config.json of tests/bad/model-ok and links to
 * two weight files: model-ok's whole model.safetensors ("a.safetensors")
 * and the first of two shards of tests/bad/shard-missing. A model that
 * loads runs one forward pass, which reads every weight it uses.
 */
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "ouro.h"

static char dir[64];
static char index_path[96];

static void cleanup(void)
{
	static const char *const names[] = {"config.json", "a.safetensors",
		"model-00001-of-00002.safetensors", "model.safetensors.index.json"};
	char p[128];

	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
}

static void setup(void)
{
	char p[128];

	snprintf(dir, sizeof dir, "/tmp/ouro-fuzz-XXXXXX");
	FUZZ_ASSERT(mkdtemp(dir));
	atexit(cleanup);
	snprintf(p, sizeof p, "%s/config.json", dir);
	FUZZ_ASSERT(symlink(FUZZ_ROOT "/tests/bad/model-ok/config.json", p) == 0);
	snprintf(p, sizeof p, "%s/a.safetensors", dir);
	FUZZ_ASSERT(symlink(FUZZ_ROOT "/tests/bad/model-ok/model.safetensors", p) == 0);
	snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
	FUZZ_ASSERT(symlink(FUZZ_ROOT "/tests/bad/shard-missing/model-00001-of-00002.safetensors", p) == 0);
	snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
	ouro_set_threads(1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ouro_model *m;
	FILE *f;

	if (!dir[0])
		setup();
	FUZZ_ASSERT((f = fopen(index_path, "wb")));
	FUZZ_ASSERT(fwrite(data, 1, size, f) == size || size == 0);
	FUZZ_ASSERT(fclose(f) == 0);
	if (ouro_model_load(&m, dir) == OURO_OK) {
		const struct ouro_config *c = ouro_model_config(m);
		int32_t ids[3] = {1, 2, 3};
		float *h = malloc((size_t)(c->total_ut_steps * 3 * c->hidden_size) * sizeof *h);
		FUZZ_ASSERT(h);
		FUZZ_ASSERT(ouro_forward(m, ids, 3, (int)c->total_ut_steps, h) == OURO_OK);
		free(h);
		ouro_model_free(m);
	}
	return 0;
}
