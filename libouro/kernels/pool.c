/*
 * pool.c - the library's worker threads: every parallel kernel runs on
 * them, OpenBLAS's products included.
 *
 * One process-wide pool of ouro_threads()-1 workers plus the calling
 * thread. A job is split into as many contiguous ranges as there are
 * threads, always the same way for the same thread count, and each range
 * is computed by one thread in a fixed order, so results do not depend on
 * timing or on the thread count when the ranges are fixed-size chunks.
 * Jobs run one at a time (a mutex serialises callers). OpenBLAS is kept
 * to one thread and called from inside the jobs, so the two never
 * oversubscribe the cores.
 *
 * Decoding one token hands out some 800 small jobs, a few hundred
 * microseconds each. Waking a sleeping thread takes tens of microseconds
 * (a futex and, on a virtual machine, an interrupt to another CPU), so
 * the threads first spin for up to 100 us on the job counter (workers) or
 * the count of busy workers (the caller), and only then sleep on the
 * condition variables. On the Ouro-1.4B shapes with 2 threads this took
 * BF16 decode from 2.55 to 2.72 tokens/s mapped and 2.90 to 3.17 read in;
 * two such processes sharing 2 cores run as fast as before.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "internal.h"

/* One spin of a busy wait: tells the core that the thread is waiting,
 * sparing the other hardware thread and the memory bus. */
#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

static struct {
	pthread_mutex_t lock;      /* one job at a time */
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	int nthreads;              /* workers + the caller */
	int started;               /* workers running */
	unsigned long gen;         /* job generation (atomic) */
	unsigned long born;        /* gen when the newest workers were made */
	unsigned long pending;     /* workers still busy with this job (atomic) */
	void (*fn)(void *, int, int64_t, int64_t);
	void *ctx;
	int64_t n;
} pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.go = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
};

#define SPIN_NS 100000     /* 30 us did as well, 5 us far worse */

static int64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spins until *p == v, for at most SPIN_NS; 1 if it came. The spin yields
 * the CPU every 64 pauses (under a microsecond), so that with more threads
 * than free cores the thread it waits for gets to run. */
static int spin_until(const unsigned long *p, unsigned long v)
{
	int64_t end = now_ns() + SPIN_NS;

	do {
		for (int i = 0; i < 64; i++) {
			if (__atomic_load_n(p, __ATOMIC_ACQUIRE) == v)
				return 1;
			cpu_relax();
		}
		sched_yield();
	} while (now_ns() < end);
	return 0;
}

static void range(int part, int parts, int64_t n, int64_t *b, int64_t *e)
{
	*b = n * part / parts;
	*e = n * (part + 1) / parts;
}

static void *worker(void *arg)
{
	int part = (int)(intptr_t)arg;
	unsigned long seen = pool.born;

	for (;;) {
		int64_t b, e;

		if (!spin_until(&pool.gen, seen + 1)) {
			pthread_mutex_lock(&pool.mu);
			while (__atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE) == seen)
				pthread_cond_wait(&pool.go, &pool.mu);
			pthread_mutex_unlock(&pool.mu);
		}
		seen = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE);
		if (part < pool.nthreads) {     /* workers beyond the count idle */
			range(part, pool.nthreads, pool.n, &b, &e);
			if (b < e)
				pool.fn(pool.ctx, part, b, e);
		}
		if (__atomic_sub_fetch(&pool.pending, 1, __ATOMIC_ACQ_REL) == 0) {
			pthread_mutex_lock(&pool.mu);
			pthread_cond_signal(&pool.done);
			pthread_mutex_unlock(&pool.mu);
		}
	}
	return NULL;
}

void ouro_set_threads(int n)
{
	pthread_mutex_lock(&pool.lock);
	if (n < 1) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 0 ? (int)cpus : 1;
	}
	/* workers are only ever added; a smaller count leaves some idle */
	pool.nthreads = n;
	pthread_mutex_unlock(&pool.lock);
	/* OpenBLAS runs inside the pool's jobs, one thread each */
	openblas_set_num_threads(1);
}

int ouro_threads(void)
{
	if (!pool.nthreads)
		ouro_set_threads(0);
	return pool.nthreads;
}

uint64_t ouro_phys_bytes(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);

	return pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
}

void ouro_parallel_parts(void (*fn)(void *ctx, int part, int64_t begin, int64_t end),
			 void *ctx, int64_t n)
{
	int threads = ouro_threads();
	int64_t b, e;

	if (threads == 1 || n < 2) {
		fn(ctx, 0, 0, n);
		return;
	}
	pthread_mutex_lock(&pool.lock);
	pool.born = pool.gen;
	while (pool.started < threads - 1) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, (void *)(intptr_t)(pool.started + 1)))
			break;
		pthread_detach(t);
		pool.started++;
	}
	if (pool.started < threads - 1) {        /* no threads to be had: run here */
		pthread_mutex_unlock(&pool.lock);
		fn(ctx, 0, 0, n);
		return;
	}
	pthread_mutex_lock(&pool.mu);
	pool.fn = fn;
	pool.ctx = ctx;
	pool.n = n;
	__atomic_store_n(&pool.pending, pool.started, __ATOMIC_RELAXED);
	__atomic_add_fetch(&pool.gen, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&pool.go);
	pthread_mutex_unlock(&pool.mu);
	range(0, threads, n, &b, &e);
	if (b < e)
		fn(ctx, 0, b, e);
	if (!spin_until(&pool.pending, 0)) {
		pthread_mutex_lock(&pool.mu);
		while (__atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE))
			pthread_cond_wait(&pool.done, &pool.mu);
		pthread_mutex_unlock(&pool.mu);
	}
	pthread_mutex_unlock(&pool.lock);
}

struct ranges {
	void (*fn)(void *ctx, int64_t begin, int64_t end);
	void *ctx;
};

static void without_part(void *ctx, int part, int64_t begin, int64_t end)
{
	const struct ranges *r = ctx;

	(void)part;
	r->fn(r->ctx, begin, end);
}

void ouro_parallel(void (*fn)(void *ctx, int64_t begin, int64_t end), void *ctx, int64_t n)
{
	struct ranges r = {fn, ctx};

	ouro_parallel_parts(without_part, &r, n);
}
