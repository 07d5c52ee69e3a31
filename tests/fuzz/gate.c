/*
 * gate.c - fuzzes the exit-gate file reader (ouro_gate_load in
 * libouro/model/gate.c) through an in-memory file, for the hidden sizes of the
 * test models and the one the file itself claims.
 */
#include <math.h>

#include "fuzz.h"
#include "ouro.h"

static void try(const char *path, int64_t dim)
{
	struct ouro_gate g;

	if (ouro_gate_load(&g, path, dim) != OURO_OK) {
		FUZZ_ASSERT(g.w == NULL);
		return;
	}
	FUZZ_ASSERT(g.dim == dim && g.w && isfinite(g.b));
	for (int64_t i = 0; i < dim; i++)
		FUZZ_ASSERT(isfinite(g.w[i]));
	ouro_gate_free(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *path = fuzz_path(data, size);
	uint64_t used;
	struct ouro_st *st;

	try(path, 16);
	try(path, 64);
	/* the width the file's weight has, when it parses */
	if (ouro_st_parse(&st, "fuzz", data, size, &used) == OURO_OK) {
		const struct ouro_tensor *w = ouro_st_find(st, "model.early_exit_gate.weight");
		if (w && w->ndim == 2 && w->shape[1] > 0 && w->shape[1] <= 4096 &&
		    w->shape[1] != 16 && w->shape[1] != 64)
			try(path, w->shape[1]);
		ouro_st_free(st);
	}
	return 0;
}
