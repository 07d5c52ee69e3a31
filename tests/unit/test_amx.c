/*
 * test_amx.c - the AMX BF16 product against a float64 computation.
 *
 * With inputs that BF16 represents exactly, the AMX path multiplies
 * exactly and accumulates in float32, so it must agree with float64 to
 * float32 rounding (relative error below 1e-5): any error in the tile
 * layouts (pairs, padding of k, rows and positions, the transposed store)
 * shows as an error of order 1. Covers rows that fill whole chunks and
 * not, k that is a multiple of 32 (weights read in place) and not, BF16
 * and F32 weights, and position counts that are not multiples of 16; and
 * that the result is the same for 1 and 2 threads. Passes with a note
 * where the CPU or kernel has no AMX, and off x86, where there is none.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unit.h"

#if OURO_X86
static double max_err;

static void check(int64_t out, int64_t in, int64_t n, enum ouro_dtype dt)
{
	float *wf = malloc(sizeof(float) * (size_t)(out * in));
	void *wd = malloc(4 * (size_t)(out * in));
	float *x = malloc(sizeof(float) * (size_t)(n * in));
	float *y = malloc(sizeof(float) * (size_t)(n * out)), *y2 = malloc(sizeof(float) * (size_t)(n * out));
	struct ouro_tensor t = {.name = "w", .dtype = dt, .ndim = 2, .shape = {out, in}, .data = wd};
	struct ouro_weight w = {&t, NULL, out, in, 0};

	for (int64_t i = 0; i < out * in; i++)
		wf[i] = unit_bf16_round((float)(rand() % 2001 - 1000) / 997.0f);
	for (int64_t i = 0; i < n * in; i++)
		x[i] = unit_bf16_round((float)(rand() % 2001 - 1000) / 991.0f);
	ouro_from_f32(wd, wf, dt, (size_t)(out * in));
	ouro_set_threads(2);
	CHECK(ouro_amx_matmul(y, x, &w, n) == OURO_OK);
	ouro_set_threads(1);
	CHECK(ouro_amx_matmul(y2, x, &w, n) == OURO_OK);
	CHECK(memcmp(y, y2, sizeof(float) * (size_t)(n * out)) == 0);
	for (int64_t p = 0; p < n; p++)
		for (int64_t r = 0; r < out; r++) {
			double s = 0, a = 0;
			for (int64_t k = 0; k < in; k++) {
				s += (double)x[p * in + k] * wf[r * in + k];
				a += fabs((double)x[p * in + k] * wf[r * in + k]);
			}
			double e = fabs(y[p * out + r] - s) / (a > 0 ? a : 1);
			max_err = e > max_err ? e : max_err;
		}
	CHECK(max_err < 1e-5);
	free(wf);
	free(wd);
	free(x);
	free(y);
	free(y2);
}

#endif

int main(void)
{
#if OURO_X86
	setenv("OURO_MATMUL", "bf16", 1);
	if (!ouro_amx_enabled()) {
		printf("# no AMX on this machine: the BF16 path is not used, nothing to test\n");
		return unit_done("test_amx");
	}
	srand(11);
	check(64, 64, 16, OURO_BF16);
	check(200, 96, 37, OURO_BF16);
	check(130, 40, 5, OURO_BF16);
	check(70, 2048, 33, OURO_BF16);
	check(512, 32, 16, OURO_BF16);     /* whole chunks only: nothing converted */
	check(300, 64, 20, OURO_BF16);     /* in place, then a part chunk converted */
	check(96, 64, 50, OURO_F32);
	check(33, 31, 17, OURO_F16);
	printf("# max error relative to the sum of |products|: %.3g\n", max_err);
#else
	printf("# not x86: no AMX, nothing to test\n");
#endif
	return unit_done("test_amx");
}
