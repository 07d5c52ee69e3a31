/*
 * st.c - fuzzes the safetensors parser (libouro/core/safetensors.c): the
 * input as a buffer of back-to-back images (ouro_st_parse, as weight files
 * are read) and as a stream of records (ouro_st_read, as the programs read
 * their input). Every tensor a parse accepts is read whole, and written
 * back through ouro_record_write and parsed again: the copy must hold the
 * same tensors with the same bytes. Records read from a stream must have
 * every tensor aligned to its element size.
 */
#include <string.h>

#include "fuzz.h"
#include "ouro.h"

/* Writes st as a record and checks that it parses back to the same. */
static void round_trip(const struct ouro_st *st)
{
	struct ouro_record *r = ouro_record_new();
	struct ouro_st *back = NULL;
	char *buf = NULL;
	size_t len = 0;
	uint64_t used;
	FILE *f;

	FUZZ_ASSERT(r);
	for (int i = 0; i < ouro_st_meta_count(st); i++) {
		const char *k, *v;
		ouro_st_meta_at(st, i, &k, &v);
		FUZZ_ASSERT(ouro_record_meta(r, k, v) == OURO_OK);
	}
	for (int i = 0; i < ouro_st_count(st); i++) {
		const struct ouro_tensor *t = ouro_st_tensor(st, i);
		FUZZ_ASSERT(ouro_record_add(r, t->name, t->dtype, t->ndim, t->shape, t->data) == OURO_OK);
	}
	FUZZ_ASSERT((f = open_memstream(&buf, &len)));
	FUZZ_ASSERT(ouro_record_write(r, f, "memory") == OURO_OK);
	FUZZ_ASSERT(fclose(f) == 0);
	FUZZ_ASSERT(ouro_st_parse(&back, "round trip", buf, len, &used) == OURO_OK);
	FUZZ_ASSERT(used == len);
	FUZZ_ASSERT(ouro_st_count(back) == ouro_st_count(st));
	for (int i = 0; i < ouro_st_count(st); i++) {
		const struct ouro_tensor *a = ouro_st_tensor(st, i);
		const struct ouro_tensor *b = ouro_st_find(back, a->name);
		FUZZ_ASSERT(b && b->dtype == a->dtype && b->ndim == a->ndim && b->nbytes == a->nbytes);
		FUZZ_ASSERT(memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof *a->shape) == 0);
		FUZZ_ASSERT(!a->nbytes || memcmp(a->data, b->data, a->nbytes) == 0);
	}
	ouro_st_free(back);
	ouro_record_free(r);
	free(buf);
}

static void touch(const struct ouro_st *st)
{
	for (int i = 0; i < ouro_st_count(st); i++) {
		const struct ouro_tensor *t = ouro_st_tensor(st, i);
		uint64_t n = (uint64_t)ouro_tensor_numel(t) * ouro_dtype_size(t->dtype);

		FUZZ_ASSERT(n == t->nbytes);
		FUZZ_ASSERT(ouro_st_find(st, t->name) == t);
		fuzz_touch(t->data, t->nbytes);
		fuzz_touch(t->name, strlen(t->name));
	}
	for (int i = 0; i < ouro_st_meta_count(st); i++) {
		const char *k, *v;
		ouro_st_meta_at(st, i, &k, &v);
		FUZZ_ASSERT(ouro_st_meta(st, k));
		fuzz_touch(v, strlen(v));
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t pos = 0, used;
	struct ouro_st *st;
	FILE *f;

	/* weight files: images parsed in place, one after another */
	for (int k = 0; k < 4 && pos < size; k++) {
		if (ouro_st_parse(&st, "fuzz", data + pos, size - pos, &used))
			break;
		FUZZ_ASSERT(used >= 8 && used <= size - pos);
		touch(st);
		if (k == 0)
			round_trip(st);
		ouro_st_free(st);
		pos += used;
	}

	/* record streams */
	if (!size || !(f = fmemopen((void *)data, size, "rb")))
		return 0;
	for (int k = 0; k < 8; k++) {
		if (ouro_st_read(&st, f, "fuzz") || !st)
			break;
		touch(st);
		/* records read into memory have aligned tensors */
		for (int i = 0; i < ouro_st_count(st); i++) {
			const struct ouro_tensor *t = ouro_st_tensor(st, i);
			FUZZ_ASSERT((uintptr_t)t->data % ouro_dtype_size(t->dtype) == 0);
		}
		ouro_st_free(st);
	}
	fclose(f);
	return 0;
}
