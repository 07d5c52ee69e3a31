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
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <cblas.h>

#include "internal.h"

static struct {
	pthread_mutex_t lock;      /* one job at a time */
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	int nthreads;              /* workers + the caller */
	int started;               /* workers running */
	unsigned long gen;         /* job generation */
	int pending;               /* workers still busy with this job */
	void (*fn)(void *, int, int64_t, int64_t);
	void *ctx;
	int64_t n;
} pool = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.go = PTHREAD_COND_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
};

static void range(int part, int parts, int64_t n, int64_t *b, int64_t *e)
{
	*b = n * part / parts;
	*e = n * (part + 1) / parts;
}

static void *worker(void *arg)
{
	int part = (int)(intptr_t)arg;
	unsigned long seen = 0;

	for (;;) {
		int64_t b, e;

		pthread_mutex_lock(&pool.mu);
		while (pool.gen == seen)
			pthread_cond_wait(&pool.go, &pool.mu);
		seen = pool.gen;
		pthread_mutex_unlock(&pool.mu);
		if (part < pool.nthreads) {     /* workers beyond the count idle */
			range(part, pool.nthreads, pool.n, &b, &e);
			if (b < e)
				pool.fn(pool.ctx, part, b, e);
		}
		pthread_mutex_lock(&pool.mu);
		if (--pool.pending == 0)
			pthread_cond_signal(&pool.done);
		pthread_mutex_unlock(&pool.mu);
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
	pool.pending = pool.started;
	pool.gen++;
	pthread_cond_broadcast(&pool.go);
	pthread_mutex_unlock(&pool.mu);
	range(0, threads, n, &b, &e);
	if (b < e)
		fn(ctx, 0, b, e);
	pthread_mutex_lock(&pool.mu);
	while (pool.pending)
		pthread_cond_wait(&pool.done, &pool.mu);
	pthread_mutex_unlock(&pool.mu);
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
