/*
 * test_pool.c - the thread pool hands every index of a job to exactly one
 * thread, in the documented contiguous ranges, however the jobs follow
 * each other: back to back (the threads spinning), after a pause long
 * enough for them to sleep, and after the thread count grows (new workers
 * joining workers that have run jobs already) or shrinks.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "unit.h"

#define MAXN 1000

static int hits[MAXN];
static int owner[MAXN];

static void mark(void *ctx, int part, int64_t begin, int64_t end)
{
	(void)ctx;
	for (int64_t i = begin; i < end; i++) {
		__atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
		owner[i] = part;
	}
}

/* One job of n indices on the current threads; 1 if each index was run
 * once, by the part whose range [n*p/threads, n*(p+1)/threads) holds it
 * (part 0 alone when n < 2). */
static int job(int64_t n)
{
	int threads = ouro_threads(), ok = 1;

	memset(hits, 0, sizeof hits);
	ouro_parallel_parts(mark, NULL, n);
	for (int p = 0; p < threads; p++)
		for (int64_t i = n * p / threads; i < n * (p + 1) / threads; i++)
			ok &= hits[i] == 1 && owner[i] == (n < 2 ? 0 : p);
	return ok;
}

int main(void)
{
	static const int counts[] = {2, 3, 1, 5, 2, 4};
	struct timespec pause = {0, 3000000};   /* 3 ms: the workers sleep */

	for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
		int ok = 1;

		ouro_set_threads(counts[c]);
		for (int r = 0; r < 2000; r++)
			ok &= job(r % 7 == 0 ? 1 : 1 + r % MAXN);
		CHECK(ok);
		nanosleep(&pause, NULL);
		CHECK(job(MAXN));
		CHECK(job(0));
	}
	return unit_done("test_pool");
}
