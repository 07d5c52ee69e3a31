/*
 * kvpool.c - the shared pool of fixed-size KV blocks of the batch engine.
 *
 * The budget is a number of blocks of one size. A sequence is admitted
 * only when the blocks it can need at most (its prompt and its token
 * budget) can be reserved, so a running sequence never waits for memory
 * and sequences never deadlock; it then takes blocks from its reservation
 * as it grows and returns them when it ends. Block memory is allocated the
 * first time a block is taken and kept on a free list afterwards, so the
 * resident size grows only to the most blocks in use at once, never past
 * the budget.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

int ouro_kvpool_init(struct ouro_kvpool *p, size_t block_bytes, int64_t blocks)
{
	*p = (struct ouro_kvpool){.block_bytes = block_bytes, .blocks = blocks};
	if (blocks < 1 || block_bytes < 1)
		return ouro_fail(OURO_EUSAGE, "a KV pool of %lld blocks of %zu bytes",
				 (long long)blocks, block_bytes);
	if (!(p->free = malloc((size_t)blocks * sizeof *p->free)))
		return ouro_fail(OURO_ENOMEM, "out of memory for a KV pool of %lld blocks",
				 (long long)blocks);
	return OURO_OK;
}

void ouro_kvpool_free(struct ouro_kvpool *p)
{
	for (int64_t i = 0; p->free && i < p->nfree; i++)
		free(p->free[i]);
	free(p->free);
	*p = (struct ouro_kvpool){0};
}

int ouro_kvpool_reserve(struct ouro_kvpool *p, int64_t n)
{
	if (n < 0 || n > p->blocks - p->reserved)
		return 0;
	p->reserved += n;
	return 1;
}

void ouro_kvpool_unreserve(struct ouro_kvpool *p, int64_t n)
{
	p->reserved -= n;
}

void *ouro_kvpool_take(struct ouro_kvpool *p)
{
	void *b;

	if (p->nfree)
		b = p->free[--p->nfree];
	else if (!(b = malloc(p->block_bytes)))
		return NULL;
	p->used++;
	if (p->used > p->peak)
		p->peak = p->used;
	return b;
}

void ouro_kvpool_put(struct ouro_kvpool *p, void *b)
{
	p->free[p->nfree++] = b;
	p->used--;
}

uint64_t ouro_avail_bytes(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long long kib;

	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) {
			fclose(f);
			return (uint64_t)kib * 1024;
		}
	if (f)
		fclose(f);
	return ouro_phys_bytes() / 2;
}
