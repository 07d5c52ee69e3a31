/*
 * bench-kernels - the two ceilings `make bench` holds ouro's speed against.
 *
 *   bench-kernels cpu
 *   bench-kernels bandwidth [-j THREADS] [-r REPEAT] [-s MIB | -f FILE]
 *   bench-kernels sgemm [-j THREADS] [-r REPEAT] -P TOKENS -D DIM -F FFN
 *                 -H HEADS -K KV_HEADS -d HEAD_DIM -N LAYERS -T STEPS
 *   bench-kernels matvec [-j THREADS] [-r REPEAT] [-a SKEW] -t TYPE -P ROWS -D DIM
 *                 -F FFN -N LAYERS [-V VOCAB]
 *
 * bandwidth: THREADS threads stream through one buffer much larger than the
 * last-level cache (default 4x L3, at least 1 GiB, at most a quarter of
 * memory), each reading its own contiguous slice with wide vector loads,
 * as a decode that splits matrix rows across threads does. Decode reads
 * every layer weight once per loop, so bytes per token / this bandwidth is
 * its speed limit (the roofline). With -f, the threads read FILE itself
 * through a read-only mapping that asks for huge pages, as ouro maps a
 * checkpoint: how fast this machine reads the file where the page cache
 * happens to hold it.
 *
 * sgemm: OpenBLAS cblas_sgemm, with THREADS threads, on every matrix
 * product of a prefill of TOKENS tokens through one layer of the given
 * shape: y = x W^T with W stored [out, in] as in the checkpoint, and the
 * per-head attention products, of which a causal prefill needs half. The
 * time of one layer, times N layers, times T loops, is what a prefill
 * built on OpenBLAS float32 sgemm would need at the least.
 *
 * matvec: ouro's own decode products, ouro_matmul with ROWS rows of x
 * (1 for one sequence, up to 4 for a few decoded side by side), through
 * the seven matrices of each of LAYERS layers of the given shape (q, k, v,
 * o [DIM, DIM], gate, up [FFN, DIM], down [DIM, FFN]) in TYPE (bf16, q8_0
 * or q4) filled with random values, as one loop of a decode step reads
 * them, each matrix starting SKEW bytes (default 0) past a 64-byte
 * boundary: a checkpoint's tensors lie wherever its header ends, 16 or 18
 * bytes past one in the bench's. Enough layers to exceed the last-level
 * cache make it stream the weights from memory: its GB/s (weight bytes
 * over seconds) against the bandwidth figure is how near the kernels run
 * to the roofline. The fastest pass and the processor time per pass are
 * printed too, which other work on a shared machine disturbs less than
 * the median; gflops counts 2 operations a weight a row of x (with many
 * rows, a batch's products, the rate to set beside sgemm's). With -V, the
 * language-model head [VOCAB, DIM] alone too (in q8_0 for q4, as
 * ouro-quantize writes it): what the exit rules that read the next-token
 * distribution pay at every loop, against one loop's layers.
 *
 * cpu: what the kernels found and chose (no measurement): the vector units
 * the CPU has, the level ouro's matrix kernels run at (after OURO_CPU),
 * whether OURO_MATMUL=bf16 would run BF16 products (AVX512-BF16) or AMX,
 * and the core type OpenBLAS runs (its attention products; the
 * environment may pin it, OPENBLAS_CORETYPE).
 *
 * Each measurement is repeated REPEAT times (after one untimed warm-up)
 * and the median is printed. Output is one "key=value ..." line per
 * figure on stdout, read by scripts/bench and by people.
 */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"        /* messages, option values and the clock of the programs */
#include "internal.h"   /* the kernels' choice of vector unit */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench-kernels cpu\n"
		"       bench-kernels bandwidth [-j THREADS] [-r REPEAT] [-s MIB | -f FILE]\n"
		"       bench-kernels sgemm [-j THREADS] [-r REPEAT] -P TOKENS -D DIM -F FFN\n"
		"                     -H HEADS -K KV_HEADS -d HEAD_DIM -N LAYERS -T STEPS\n"
		"       bench-kernels matvec [-j THREADS] [-r REPEAT] [-a SKEW] -t TYPE -P ROWS -D DIM\n"
		"                     -F FFN -N LAYERS [-V VOCAB]\n");
}


static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- bandwidth ---------------------------------------------------------- */

typedef long long v8q __attribute__((vector_size(64)));

/* Sums n 64-byte blocks with four independent accumulators; compiled for
 * AVX-512, AVX2 and baseline x86-64 and picked at run time. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static long long read_sum(const v8q *p, size_t n) // p: [n] 64-byte blocks
{
	v8q a = {0}, b = {0}, c = {0}, d = {0};
	long long s = 0;

	for (size_t i = 0; i + 4 <= n; i += 4) {
		a += p[i];
		b += p[i + 1];
		c += p[i + 2];
		d += p[i + 3];
	}
	a += b + c + d;
	for (int k = 0; k < 8; k++)
		s += a[k];
	return s;
}

struct reader {
	pthread_t tid;
	pthread_barrier_t *bar;
	v8q *p;                 // [n] this thread's slice
	size_t n;
	int reps;
	int mapped;             // a file's: read-only
	volatile long long sink;
};

/* Writes its slice once unless it is a file's (so its pages are real and
 * local to it), then reads it once per repetition between two barriers. */
static void *reader_main(void *arg)
{
	struct reader *r = arg;

	if (!r->mapped)
		memset(r->p, 1, r->n * sizeof *r->p);
	pthread_barrier_wait(r->bar);
	for (int i = 0; i < r->reps + 1; i++) {
		pthread_barrier_wait(r->bar);
		r->sink += read_sum(r->p, r->n);
		pthread_barrier_wait(r->bar);
	}
	return NULL;
}

static int bench_bandwidth(int threads, int reps, long mib, const char *file)
{
	long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	uint64_t bytes, phys = (uint64_t)pages * (uint64_t)psize, len = 0;
	size_t per;
	struct reader *r;
	pthread_barrier_t bar;
	double *t, t0;
	void *buf;

	if (file) {
		struct stat sb;
		int fd = open(file, O_RDONLY);

		if (fd < 0 || fstat(fd, &sb))
			die(ouro_fail(OURO_ESYS, "%s: %s", file, strerror(errno)));
		bytes = len = (uint64_t)sb.st_size;
		buf = len ? mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
		if (buf == MAP_FAILED)
			die(ouro_fail(OURO_ESYS, "%s: cannot map: %s", file, len ? strerror(errno) : "empty file"));
		close(fd);
	} else if (mib > 0) {
		bytes = (uint64_t)mib << 20;
	} else {
		bytes = l3 > 0 ? 4 * (uint64_t)l3 : 0;
		if (bytes < (1ULL << 30))
			bytes = 1ULL << 30;
		if (phys > 0 && bytes > phys / 4)
			bytes = phys / 4;
	}
	/* whole 256-byte groups (four blocks) per thread */
	per = (size_t)(bytes / (uint64_t)threads / 256) * 4;
	if (per == 0)
		usage_error("%s: %llu bytes is too small for %d threads", file ? file : "-s",
			    (unsigned long long)bytes, threads);
	bytes = (uint64_t)per * 64 * (uint64_t)threads;
	/* aligned_alloc wants a multiple of the alignment: round up */
	if (!file && !(buf = aligned_alloc(1 << 21, (size_t)((bytes + (1 << 21) - 1) & ~(uint64_t)((1 << 21) - 1)))))
		die(ouro_fail(OURO_ENOMEM, "out of memory for a %llu-byte buffer", (unsigned long long)bytes));
	madvise(buf, (size_t)bytes, MADV_HUGEPAGE);   // fewer TLB misses: a true ceiling
	r = calloc((size_t)threads, sizeof *r);
	t = calloc((size_t)reps + 1, sizeof *t);
	if (!r || !t)
		die(ouro_fail(OURO_ENOMEM, "out of memory"));
	pthread_barrier_init(&bar, NULL, (unsigned)threads + 1);
	for (int i = 0; i < threads; i++) {
		r[i] = (struct reader){.bar = &bar, .p = (v8q *)buf + (size_t)i * per, .n = per, .reps = reps,
				       .mapped = file != NULL};
		if (pthread_create(&r[i].tid, NULL, reader_main, &r[i]))
			die(ouro_fail(OURO_ESYS, "cannot start a thread"));
	}
	pthread_barrier_wait(&bar);           // every slice written
	for (int i = 0; i < reps + 1; i++) {  // repetition 0 is the warm-up
		pthread_barrier_wait(&bar);
		t0 = cli_now();
		pthread_barrier_wait(&bar);
		t[i] = cli_now() - t0;
	}
	for (int i = 0; i < threads; i++)
		pthread_join(r[i].tid, NULL);
	double sec = median(t + 1, reps);
	printf("bandwidth gbs=%.3f bytes=%llu threads=%d seconds=%.6f l3_bytes=%ld file=%d\n",
	       (double)bytes / sec * 1e-9, (unsigned long long)bytes, threads, sec, l3 > 0 ? l3 : 0,
	       file != NULL);
	pthread_barrier_destroy(&bar);
	free(t);
	free(r);
	if (file)
		munmap(buf, (size_t)len);
	else
		free(buf);
	return 0;
}

/* ---- sgemm -------------------------------------------------------------- */

struct shape {
	const char *name;
	int m, n, k;            // C [m, n] = A [m, k] x B, B stored [n, k] if trans_b else [k, n]
	int trans_b;
	double count;           // products of this shape per layer
};

static void fill(float *p, size_t n, uint64_t *seed)
{
	for (size_t i = 0; i < n; i++) {
		*seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
		p[i] = (float)((double)(*seed >> 40) / (double)(1 << 24) * 2.0 - 1.0);
	}
}

/* Median seconds of one product of shape s. */
static double time_sgemm(const struct shape *s, int reps)
{
	size_t na = (size_t)s->m * (size_t)s->k, nb = (size_t)s->k * (size_t)s->n;
	size_t nc = (size_t)s->m * (size_t)s->n;
	float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
	double *t = calloc((size_t)reps, sizeof *t), sec;
	uint64_t seed = 42;

	if (!a || !b || !c || !t)
		die(ouro_fail(OURO_ENOMEM, "out of memory for the %s product", s->name));
	fill(a, na, &seed);
	fill(b, nb, &seed);
	for (int i = 0; i < reps + 1; i++) {
		double t0 = cli_now();
		cblas_sgemm(CblasRowMajor, CblasNoTrans, s->trans_b ? CblasTrans : CblasNoTrans,
			    s->m, s->n, s->k, 1.0f, a, s->k, b, s->trans_b ? s->k : s->n, 0.0f, c, s->n);
		if (i > 0)
			t[i - 1] = cli_now() - t0;
	}
	sec = median(t, reps);
	free(a);
	free(b);
	free(c);
	free(t);
	return sec;
}

static int bench_sgemm(int threads, int reps, const long *v)
{
	int P = (int)v['P'], D = (int)v['D'], F = (int)v['F'], H = (int)v['H'];
	int KV = (int)v['K'], hd = (int)v['d'], N = (int)v['N'], T = (int)v['T'];
	const struct shape shapes[] = {
		{"q", P, H * hd, D, 1, 1},
		{"k,v", P, KV * hd, D, 1, 2},
		{"o", P, D, H * hd, 1, 1},
		{"gate,up", P, F, D, 1, 2},
		{"down", P, D, F, 1, 1},
		{"attn_qk", P, P, hd, 1, 0.5 * H},     // per head; causal: half
		{"attn_pv", P, hd, P, 0, 0.5 * H},
	};
	double layer_sec = 0, layer_flop = 0;

	openblas_set_num_threads(threads);
	for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
		const struct shape *s = &shapes[i];
		double sec = time_sgemm(s, reps), flop = 2.0 * s->m * s->n * s->k;

		printf("sgemm name=%s m=%d n=%d k=%d count=%g seconds=%.6f gflops=%.2f\n",
		       s->name, s->m, s->n, s->k, s->count, sec, flop / sec * 1e-9);
		layer_sec += s->count * sec;
		layer_flop += s->count * flop;
	}
	double sec = layer_sec * N * T, flop = layer_flop * N * T;
	printf("sgemm_prefill tokens=%d threads=%d gflop=%.3f seconds=%.6f gflops=%.2f tokens_per_s=%.3f\n",
	       P, threads, flop * 1e-9, sec, flop / sec * 1e-9, P / sec);
	return 0;
}

/* ---- matvec ------------------------------------------------------------- */

enum wtype { W_BF16, W_Q8, W_Q4 };

/* A weight [out, in] of type ty with random values (exact widths and
 * scales: the kernels' speed does not depend on them), its data and
 * scales starting `skew` bytes past a 64-byte boundary. */
static void make_weight(struct ouro_weight *w, struct ouro_tensor *t, struct ouro_tensor *sc,
			enum wtype ty, int64_t out, int64_t in, int skew, uint64_t *seed)
{
	int64_t nsb = ouro_q4_blocks(in);
	size_t qbytes = ty == W_BF16 ? (size_t)(out * in) * 2 : ty == W_Q8 ? (size_t)(out * in)
			: (size_t)(out * nsb) * OURO_Q4_QBYTES;
	size_t sbytes = ty == W_Q8 ? (size_t)(out * in / 32) * 2 : (size_t)(out * nsb) * OURO_Q4_HBYTES;
	char *q = aligned_alloc(64, (qbytes + 127) & ~(size_t)63);
	char *s = ty == W_BF16 ? NULL : aligned_alloc(64, (sbytes + 127) & ~(size_t)63);
	float f[256];

	if (!q || (ty != W_BF16 && !s))
		die(ouro_fail(OURO_ENOMEM, "out of memory for a [%lld, %lld] weight", (long long)out,
			      (long long)in));
	q += skew;
	s = s ? s + skew : NULL;
	*t = (struct ouro_tensor){.data = q, .nbytes = qbytes};
	*w = (struct ouro_weight){.t = t, .out = out, .in = in, .q4 = ty == W_Q4};
	for (size_t i = 0; i < qbytes; i += 2 * 256) {   /* 256 BF16 or 512 int8 */
		size_t n = qbytes - i < 512 ? qbytes - i : 512;
		fill(f, 256, seed);
		if (ty == W_BF16)
			ouro_from_f32(q + i, f, OURO_BF16, n / 2);
		else
			for (size_t k = 0; k < n; k++)
				q[i + k] = (char)(int)(f[k / 2] * (k % 2 ? 127 : -127));
	}
	if (ty == W_BF16) {
		t->dtype = OURO_BF16;
		return;
	}
	*sc = (struct ouro_tensor){.data = s, .nbytes = sbytes};
	w->scale = sc;
	for (size_t i = 0; i < sbytes; i += 2)   /* F16 0x2000: 2^-7; q4's sc, mn bytes anything */
		memcpy(s + i, (uint16_t[]){0x2000}, 2);
	t->dtype = ty == W_Q8 ? OURO_I8 : OURO_U8;
	sc->dtype = ty == W_Q8 ? OURO_F16 : OURO_U8;
}

static double cpu_seconds(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec * 1e-6 +
	       (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec * 1e-6;
}

static int bench_matvec(int threads, int reps, const char *type, int skew, const long *v)
{
	static const char *const names[] = {"bf16", "q8_0", "q4"};
	int64_t P = v['P'], D = v['D'], F = v['F'], N = v['N'], V = v['V'];
	int ty = -1;

	for (int i = 0; i < 3; i++)
		if (!strcmp(type, names[i]))
			ty = i;
	if (ty < 0)
		usage_error("-t %s: expected bf16, q8_0 or q4", type);
	const int64_t shape[7][2] = {{D, D}, {D, D}, {D, D}, {D, D}, {F, D}, {F, D}, {D, F}};
	struct ouro_weight *w = calloc((size_t)(7 * N), sizeof *w);
	struct ouro_tensor *t = calloc((size_t)(14 * N), sizeof *t);
	float *x = malloc((size_t)(P * F) * sizeof *x), *y = malloc((size_t)(P * F) * sizeof *y);
	float *wbuf = malloc(ouro_wbuf_floats(F) * sizeof *wbuf);
	double *sec = calloc((size_t)reps, sizeof *sec), bytes = 0, params = 0, c0;
	uint64_t seed = 7;

	if (!w || !t || !x || !y || !wbuf || !sec)
		die(ouro_fail(OURO_ENOMEM, "out of memory"));
	ouro_set_threads(threads);
	fill(x, (size_t)(P * F), &seed);
	for (int64_t i = 0; i < 7 * N; i++) {
		make_weight(&w[i], &t[2 * i], &t[2 * i + 1], (enum wtype)ty, shape[i % 7][0],
			    shape[i % 7][1], skew, &seed);
		bytes += (double)w[i].t->nbytes + (w[i].scale ? (double)w[i].scale->nbytes : 0);
		params += (double)(shape[i % 7][0] * shape[i % 7][1]);
	}
	c0 = cpu_seconds();
	for (int r = 0; r < reps + 1; r++) {   /* pass 0 is the warm-up */
		double t0 = cli_now();
		for (int64_t i = 0; i < 7 * N; i++)
			ouro_matmul(y, x, &w[i], P, wbuf);
		if (r > 0)
			sec[r - 1] = cli_now() - t0;
		else
			c0 = cpu_seconds();
	}
	double cpu = (cpu_seconds() - c0) / reps, s = median(sec, reps);
	/* sorted by median(): the fastest pass, what the kernels do undisturbed */
	printf("matvec type=%s rows=%lld threads=%d skew=%d bytes=%.0f seconds=%.6f gbs=%.3f "
	       "best_gbs=%.3f gflops=%.3f cpu_seconds=%.6f", type, (long long)P, threads, skew, bytes,
	       s, bytes / s * 1e-9, bytes / sec[0] * 1e-9, 2 * params * (double)P / s * 1e-9, cpu);
	if (V) {
		struct ouro_weight hw;
		struct ouro_tensor ht[2];
		float *hy = malloc((size_t)(P * V) * sizeof *hy);

		if (!hy)
			die(ouro_fail(OURO_ENOMEM, "out of memory"));
		make_weight(&hw, &ht[0], &ht[1], ty == W_Q4 ? W_Q8 : (enum wtype)ty, V, D, skew, &seed);
		for (int r = 0; r < reps + 1; r++) {
			double t0 = cli_now();
			ouro_matmul(hy, x, &hw, P, wbuf);
			if (r > 0)
				sec[r - 1] = cli_now() - t0;
		}
		s = median(sec, reps);
		printf(" head_seconds=%.6f head_best_seconds=%.6f", s, sec[0]);
	}
	putchar('\n');
	return 0;
}

/* ---- cpu ---------------------------------------------------------------- */

static int bench_cpu(void)
{
	static const char *const level[] = {"portable", "avx2", "avx512"};
	/* __builtin_cpu_supports takes only string literals */
	const struct { const char *name; int has; } f[] = {
		{"avx2", __builtin_cpu_supports("avx2")},
		{"fma", __builtin_cpu_supports("fma")},
		{"avx512f", __builtin_cpu_supports("avx512f")},
		{"avx512bw", __builtin_cpu_supports("avx512bw")},
		{"avx512vl", __builtin_cpu_supports("avx512vl")},
		{"avx512bf16", __builtin_cpu_supports("avx512bf16")},
		{"avx512vnni", __builtin_cpu_supports("avx512vnni")},
		{"amx-bf16", __builtin_cpu_supports("amx-bf16")},
	};

	printf("cpu features=");
	for (size_t i = 0, n = 0; i < sizeof f / sizeof *f; i++)
		if (f[i].has)
			printf("%s%s", n++ ? "," : "", f[i].name);
	printf(" kernels=%s bf16_products=%s amx=%s openblas_core=%s\n", level[ouro_cpu_level()],
	       ouro_bf16_products() ? "yes" : "no", ouro_amx_enabled() ? "yes" : "no",
	       openblas_get_corename());
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"threads", required_argument, NULL, 'j'},
		{"repeat", required_argument, NULL, 'r'},
		{"size-mib", required_argument, NULL, 's'},
		{"file", required_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	long shape[128] = {0}, threads, reps = 5, mib = 0, skew = 0;
	const char *mode, *file = NULL, *type = NULL;
	int c;

	cli_init("bench-kernels");
	threads = sysconf(_SC_NPROCESSORS_ONLN);
	if (argc == 2 && !strcmp(argv[1], "cpu"))
		return bench_cpu();
	if (argc < 2 || (strcmp(argv[1], "bandwidth") && strcmp(argv[1], "sgemm") &&
			 strcmp(argv[1], "matvec"))) {
		if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
			usage(stdout);
			return 0;
		}
		usage(stderr);
		return 2;
	}
	mode = argv[1];
	optind = 2;
	while ((c = cli_getopt(argc, argv, "j:r:s:f:t:a:P:D:F:H:K:d:N:T:V:h", longopts)) != -1) {
		switch (c) {
		case 'j': threads = cli_long(optarg, 1, 4096, "--threads"); break;
		case 'r': reps = cli_long(optarg, 1, 1000, "--repeat"); break;
		case 's': mib = cli_long(optarg, 1, 1L << 24, "--size-mib"); break;
		case 'f': file = optarg; break;
		case 't': type = optarg; break;
		case 'a': skew = cli_long(optarg, 0, 63, "-a"); break;
		case 'P': case 'D': case 'F': case 'H': case 'K': case 'd': case 'N': case 'T': case 'V': {
			char what[3] = {'-', (char)c, 0};
			shape[c] = cli_long(optarg, 1, 1 << 20, what);
			break;
		}
		default: usage(stdout); return 0;   /* -h */
		}
	}
	if (optind < argc)
		usage_error("%s: unexpected argument", argv[optind]);
	if (mib && file)
		usage_error("-s and -f: one or the other");
	if (!strcmp(mode, "bandwidth"))
		return bench_bandwidth((int)threads, (int)reps, mib, file);
	if (!strcmp(mode, "matvec")) {
		for (const char *p = "PDFN"; *p; p++)
			if (!shape[(int)*p]) {
				char what[3] = {'-', *p, 0};
				usage_error("matvec needs %s (see --help)", what);
			}
		if (!type)
			usage_error("matvec needs -t (see --help)");
		return bench_matvec((int)threads, (int)reps, type, (int)skew, shape);
	}
	for (const char *p = "PDFHKdNT"; *p; p++)
		if (!shape[(int)*p]) {
			char what[3] = {'-', *p, 0};
			usage_error("sgemm needs %s (see --help)", what);
		}
	return bench_sgemm((int)threads, (int)reps, shape);
}
