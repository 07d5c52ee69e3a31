/*
 * test_matmul.c - the matrix kernels (matmul.c) against a float64
 * computation, and their one order of operations.
 *
 * For each weight format (F32, BF16, F16, q8_0) and odd shapes (in and out
 * not multiples of 16, 32 or the tiles; in below 32; n = 1..37 and a few
 * larger), on every vector unit the CPU has:
 *   - y against float64 sums of the same exact float32 weights, relative
 *     to the sum of |products|: below 1e-5 (float32 rounding over at most
 *     a few thousand terms);
 *   - bit for bit the same y for: the whole batch at once; each row alone
 *     (n = 1, the decoding case); the rows in another order; 1, 2 and 3
 *     threads; no scratch given; more rows than the scratch holds; and the
 *     portable C, AVX2 and AVX-512 kernels (the dot order is one);
 *   - with BF16 products (where the CPU has AVX512-BF16): the same bits
 *     from the AVX512-BF16 kernels as from their C emulation, rows alone
 *     or together; error against float64 products of x rounded to BF16
 *     below 1e-5.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unit.h"

enum fmt { F32, BF16, F16, Q8 };

struct mat {
	struct ouro_tensor t, s;
	struct ouro_weight w;
	float *wf;             /* [out, in] the exact weights */
	void *data, *scale;
};

static double rnd(void)
{
	return (rand() % 20001 - 10000) / 10000.0;
}

static void make(struct mat *m, enum fmt f, int64_t out, int64_t in)
{
	static const enum ouro_dtype dt[] = {OURO_F32, OURO_BF16, OURO_F16, OURO_I8};
	size_t n = (size_t)(out * in);

	m->wf = malloc(n * sizeof *m->wf);
	m->data = malloc(n * 4);
	m->scale = NULL;
	for (size_t i = 0; i < n; i++)
		m->wf[i] = (float)rnd();
	if (f == Q8) {
		int8_t *q = m->data;
		uint16_t *sc = m->scale = malloc(n / 32 * 2);
		for (size_t b = 0; b < n / 32; b++) {
			float d;
			ouro_from_f32(&sc[b], &(float){(float)(0.001 + 0.02 * (rnd() + 1))}, OURO_F16, 1);
			ouro_to_f32(&d, &sc[b], OURO_F16, 1);
			for (int i = 0; i < 32; i++) {
				q[b * 32 + i] = (int8_t)(rand() % 255 - 127);
				m->wf[b * 32 + i] = (float)q[b * 32 + i] * d;
			}
		}
	} else {
		ouro_from_f32(m->data, m->wf, dt[f], n);
		ouro_to_f32(m->wf, m->data, dt[f], n);
	}
	m->t = (struct ouro_tensor){.name = "w", .dtype = dt[f], .ndim = 2, .shape = {out, in},
				    .data = m->data};
	m->s = (struct ouro_tensor){.name = "s", .dtype = OURO_F16, .ndim = 2,
				    .shape = {out, in / 32}, .data = m->scale};
	m->w = (struct ouro_weight){&m->t, f == Q8 ? &m->s : NULL, out, in, 0};
}

static void unmake(struct mat *m)
{
	free(m->wf);
	free(m->data);
	free(m->scale);
}

static double max_err, max_err_bf;

/* y [n, out] against float64 sums over x (rounded to BF16 when bf). */
static void against_f64(const struct mat *m, const float *x, const float *y, int64_t n, int bf)
{
	int64_t out = m->w.out, in = m->w.in;
	double worst = 0;

	for (int64_t p = 0; p < n; p++)
		for (int64_t r = 0; r < out; r++) {
			double s = 0, a = 0;
			for (int64_t k = 0; k < in; k++) {
				float xv = bf ? unit_bf16_round(x[p * in + k]) : x[p * in + k];
				s += (double)xv * m->wf[r * in + k];
				a += fabs((double)xv * m->wf[r * in + k]);
			}
			double e = fabs(y[p * out + r] - s) / (a > 0 ? a : 1);
			worst = e > worst ? e : worst;
		}
	CHECK(worst < 1e-5);
	if (bf)
		max_err_bf = worst > max_err_bf ? worst : max_err_bf;
	else
		max_err = worst > max_err ? worst : max_err;
}

/* The product of every row, in all the ways that must give the same bits,
 * against y0 (computed first, by the caller's kernels). */
static void same_bits(const struct mat *m, const float *x, const float *y0, int64_t n)
{
	int64_t out = m->w.out, in = m->w.in;
	float *y = malloc(sizeof(float) * (size_t)(n * out));
	float *xr = malloc(sizeof(float) * (size_t)(n * in));
	float *wbuf;
	int threads[] = {1, 3, 2};

	for (int t = 0; t < 3; t++) {
		ouro_set_threads(threads[t]);
		wbuf = malloc(ouro_wbuf_floats(in) * sizeof *wbuf);
		ouro_matmul(y, x, &m->w, n, wbuf);
		CHECK(memcmp(y, y0, sizeof(float) * (size_t)(n * out)) == 0);
		free(wbuf);
	}
	ouro_matmul(y, x, &m->w, n, NULL);
	CHECK(memcmp(y, y0, sizeof(float) * (size_t)(n * out)) == 0);
	for (int64_t p = 0; p < n; p++) {      /* each row alone */
		ouro_matmul(y, x + p * in, &m->w, 1, NULL);
		CHECK(memcmp(y, y0 + p * out, sizeof(float) * (size_t)out) == 0);
	}
	for (int64_t p = 0; p < n; p++)        /* rows reversed */
		memcpy(xr + p * in, x + (n - 1 - p) * in, sizeof(float) * (size_t)in);
	wbuf = malloc(ouro_wbuf_floats(in) * sizeof *wbuf);
	ouro_matmul(y, xr, &m->w, n, wbuf);
	for (int64_t p = 0; p < n; p++)
		CHECK(memcmp(y + p * out, y0 + (n - 1 - p) * out, sizeof(float) * (size_t)out) == 0);
	free(wbuf);
	free(y);
	free(xr);
}

static void check(enum fmt f, int64_t out, int64_t in, int64_t n)
{
	struct mat m;
	float *x = malloc(sizeof(float) * (size_t)(n * in));
	float *y0 = malloc(sizeof(float) * (size_t)(n * out));
	float *y = malloc(sizeof(float) * (size_t)(n * out));
	int best = ouro_kernels_use(2, 0) / 2, bf = ouro_kernels_use(best, 1) & 1;

	make(&m, f, out, in);
	for (int64_t i = 0; i < n * in; i++)
		x[i] = (float)rnd();

	ouro_kernels_use(0, 0);                /* the dot order as written */
	ouro_set_threads(2);
	ouro_matmul(y0, x, &m.w, n, NULL);
	against_f64(&m, x, y0, n, 0);
	for (int lvl = 0; lvl <= best; lvl++) {
		ouro_kernels_use(lvl, 0);
		same_bits(&m, x, y0, n);
	}
	if (bf && f == BF16) {
		ouro_kernels_use(0, 1);        /* VDPBF16PS emulated */
		ouro_set_threads(2);
		ouro_matmul(y0, x, &m.w, n, NULL);
		against_f64(&m, x, y0, n, 1);
		same_bits(&m, x, y0, n);
		ouro_kernels_use(2, 1);
		same_bits(&m, x, y0, n);
	}
	unmake(&m);
	free(x);
	free(y0);
	free(y);
}

int main(void)
{
	static const int64_t shapes[][2] = {   /* out, in */
		{1, 1}, {7, 5}, {13, 31}, {37, 45}, {23, 64}, {50, 96}, {17, 131},
		{70, 200}, {29, 160}, {12, 33},
	};

	srand(18);
	for (int f = F32; f <= Q8; f++)
		for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
			int64_t out = shapes[s][0], in = shapes[s][1];
			if (f == Q8 && in % 32)
				continue;
			for (int64_t n = 1; n <= 37; n += n < 8 ? 1 : 7)
				check((enum fmt)f, out, in, n);
		}
	for (int f = F32; f <= Q8; f++) {
		check((enum fmt)f, 300, 2048, 3);      /* big enough for the threads */
		check((enum fmt)f, 67, 96, 300);       /* more rows than 1 thread's scratch */
	}
	printf("# max error relative to the sum of |products|: float32 %.3g, BF16 products %.3g\n",
	       max_err, max_err_bf);
	return unit_done("test_matmul");
}
