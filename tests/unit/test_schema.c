/*
 * test_schema - the record schema between programs (schema.c): records
 * with a `hidden` tensor and step metadata are written with
 * ouro_record_write and ouro_hidden_meta, read back with ouro_st_read,
 * and checked by ouro_hidden_find, ouro_hidden_complete and
 * ouro_hidden_row:
 *   - every subset of the loops of T = 5 (all 31), written and read back:
 *     the rows' loops and T survive, complete only for the whole set, each
 *     kept loop found in its row, a dropped one refused;
 *   - no metadata: rows are loops 0..K-1 of K;
 *   - refusals, each with its message: a list of the wrong length, not
 *     increasing, with junk, past OURO_MAX_STEPS; ouro.steps not a number
 *     or below the last listed loop; the wrong dtype, rank, positions,
 *     width, a zero dimension; no tensor at all.
 */
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "unit.h"

#define N 3
#define D 4

/* r written and read back (r is freed); NULL on failure. */
static struct ouro_st *round_trip(struct ouro_record *r)
{
	struct ouro_st *st = NULL;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CHECK(ouro_record_write(r, f, "mem") == OURO_OK);
	fclose(f);
	f = fmemopen(buf, len, "rb");
	CHECK(ouro_st_read(&st, f, "mem") == OURO_OK);
	fclose(f);
	free(buf);
	ouro_record_free(r);
	return st;
}

/* A record with hidden [K, N, D] (dtype dt, rank ndim) and the metadata
 * pairs meta[0..2*nmeta), read back. */
static struct ouro_st *record(enum ouro_dtype dt, int ndim, const int64_t *shape,
			      const char *const *meta, int nmeta)
{
	static float data[OURO_MAX_STEPS * N * D];
	struct ouro_record *r = ouro_record_new();

	for (int i = 0; i < nmeta; i++)
		CHECK(ouro_record_meta(r, meta[2 * i], meta[2 * i + 1]) == OURO_OK);
	CHECK(ouro_record_add(r, "hidden", dt, ndim, shape, data) == OURO_OK);
	return round_trip(r);
}

/* ouro_hidden_find on the record refuses it with a message holding frag. */
static void refused(struct ouro_st *st, int64_t n, int64_t d, const char *frag)
{
	struct ouro_hidden h;

	CHECK(ouro_hidden_find(&h, st, n, d, "M", "rec") == OURO_EINPUT);
	if (!strstr(ouro_errmsg(), frag))
		fprintf(stderr, "test_schema: '%s' lacks '%s'\n", ouro_errmsg(), frag);
	CHECK(strstr(ouro_errmsg(), frag) != NULL);
	CHECK(strncmp(ouro_errmsg(), "rec: ", 5) == 0);
	ouro_st_free(st);
}

static void meta_refused(const char *list, const char *steps, int64_t K, const char *frag)
{
	int64_t shape[3] = {K, N, D};
	const char *meta[4] = {"ouro.hidden_steps", list, "ouro.steps", steps};

	if (!list) {
		meta[0] = "ouro.steps";
		meta[1] = steps;
	}
	refused(record(OURO_F32, 3, shape, meta, list && steps ? 2 : 1), N, D, frag);
}

int main(void)
{
	/* every subset of the loops of T = 5 */
	for (int set = 1; set < 32; set++) {
		struct ouro_record *r = ouro_record_new();
		int steps[5], K = 0;
		for (int t = 0; t < 5; t++)
			if (set >> t & 1)
				steps[K++] = t;
		CHECK(ouro_hidden_meta(r, steps, K, 5) == OURO_OK);
		int64_t shape[3] = {K, N, D};
		static float data[5 * N * D];
		CHECK(ouro_record_add(r, "hidden", OURO_BF16, 3, shape, data) == OURO_OK);
		struct ouro_st *st = round_trip(r);
		struct ouro_hidden h;
		CHECK(ouro_hidden_find(&h, st, N, D, "M", "rec") == OURO_OK);
		CHECK(h.K == K && h.total == 5 && memcmp(h.step, steps, (size_t)K * sizeof *steps) == 0);
		CHECK((ouro_hidden_complete(&h, "rec") == OURO_OK) == (set == 31));
		if (set != 31)
			CHECK(strstr(ouro_errmsg(), "every step 0..4 is needed") != NULL);
		for (int t = 0; t < 5; t++) {
			int64_t row = -1;
			int rc = ouro_hidden_row(&h, t, "rec", &row);
			CHECK((rc == OURO_OK) == (set >> t & 1));
			if (rc == OURO_OK)
				CHECK(steps[row] == t);
			else
				CHECK(strstr(ouro_errmsg(), "is not in 'hidden'") != NULL);
		}
		int64_t last;
		CHECK(ouro_hidden_row(&h, -1, "rec", &last) == OURO_OK && last == K - 1);
		ouro_st_free(st);
	}

	/* no metadata: loops 0..K-1 of K */
	int64_t shape[3] = {3, N, D};
	struct ouro_st *st = record(OURO_F16, 3, shape, NULL, 0);
	struct ouro_hidden h;
	CHECK(ouro_hidden_find(&h, st, -1, -1, "", "rec") == OURO_OK);
	CHECK(h.K == 3 && h.total == 3 && h.step[2] == 2 && ouro_hidden_complete(&h, "rec") == OURO_OK);
	ouro_st_free(st);

	/* the metadata refused */
	meta_refused("0,1", NULL, 3, "ouro.hidden_steps '0,1' is not a list of 3 steps");
	meta_refused("0,1,2,3", NULL, 3, "is not a list of 3 steps");
	meta_refused("0,2,1", NULL, 3, "'0,2,1' does not increase");
	meta_refused("0,0,1", NULL, 3, "does not increase");
	meta_refused("0,x,2", NULL, 3, "'0,x,2' is not a list");
	meta_refused("0,1,-2", NULL, 3, "is not a list");
	meta_refused("0,1, 2", NULL, 3, "is not a list");
	meta_refused("0,1,2,", NULL, 3, "is not a list");
	meta_refused("0,1,256", NULL, 3, "is not a list");
	meta_refused("0,1,2", "2", 3, "ouro.steps is 2, but hidden holds step 2");
	meta_refused("0,1,2", "x", 3, "metadata ouro.steps");
	meta_refused("0,1,2", "257", 3, "metadata ouro.steps");
	meta_refused(NULL, "2", 3, "ouro.steps is 2, but hidden holds step 2");

	/* the tensor refused */
	int64_t s3[3] = {3, N, D}, s2[2] = {N, D}, sn[3] = {3, N + 1, D}, sd[3] = {3, N, D + 1};
	int64_t s0[3] = {3, 0, D}, sk[3] = {OURO_MAX_STEPS + 1, 1, 1};
	refused(record(OURO_I32, 3, s3, NULL, 0), N, D, "tensor 'hidden' has dtype I32, expected F32, BF16 or F16");
	refused(record(OURO_F32, 2, s2, NULL, 0), N, D, "has 2 dimensions, expected 3 ([K, n, D])");
	refused(record(OURO_F32, 3, sn, NULL, 0), N, D, "has 4 positions, expected 3");
	refused(record(OURO_F32, 3, sd, NULL, 0), N, D, "has D = 5, but the model M has hidden_size 4");
	refused(record(OURO_F32, 3, s0, NULL, 0), -1, -1, "has positions 0, expected at least 1");
	refused(record(OURO_F32, 3, sk, NULL, 0), -1, -1, "has 257 steps, expected 1..256");
	struct ouro_record *r = ouro_record_new();
	int64_t one = 1;
	int32_t id = 7;   /* the record references its data until written */
	CHECK(ouro_record_add(r, "tokens", OURO_I32, 1, &one, &id) == OURO_OK);
	refused(round_trip(r), -1, -1, "rec: no tensor 'hidden' [K, n, D]");
	return unit_done("test_schema");
}
