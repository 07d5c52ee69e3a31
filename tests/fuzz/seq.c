/*
 * seq.c - fuzzes the token-sequence reader (ouro_seq_open / ouro_seq_next
 * in libouro/core/io.c): input classification, text ids and records, through
 * an in-memory file. Every sequence it gives is read whole.
 */
#include <string.h>

#include "fuzz.h"
#include "ouro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ouro_seq_reader *r;
	const struct ouro_st *rec;
	const int32_t *ids;
	int64_t n;
	int rc;

	if (ouro_seq_open(&r, fuzz_path(data, size)) != OURO_OK)
		return 0;
	for (int k = 0; k < 64; k++) {
		rc = ouro_seq_next(r, &ids, &n, &rec);
		fuzz_touch(ouro_seq_where(r), strlen(ouro_seq_where(r)));
		if (rc || !ids)
			break;
		FUZZ_ASSERT(n >= 1);
		fuzz_touch(ids, (size_t)n * sizeof *ids);
		for (int64_t i = 0; !rec && i < n; i++)   /* text ids are never negative */
			FUZZ_ASSERT(ids[i] >= 0);
	}
	ouro_seq_close(r);
	return 0;
}
