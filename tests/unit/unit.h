/*
 * unit.h - the unit tests' whole framework: CHECK records a failure with
 * its location and goes on; unit_done() prints the tally and gives the
 * exit status.
 */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>

#include "ouro.h"

static int unit_failed, unit_checked;

#define CHECK(cond) do { \
	unit_checked++; \
	if (!(cond)) { \
		unit_failed++; \
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
	} \
} while (0)

static inline int unit_done(const char *name)
{
	printf("%s: %d checks, %d failed\n", name, unit_checked, unit_failed);
	return unit_failed != 0;
}

/* f rounded to the nearest BF16 (ties to even), as the library stores it. */
static inline float unit_bf16_round(float f)
{
	uint16_t h;
	float r;

	ouro_from_f32(&h, &f, OURO_BF16, 1);
	ouro_to_f32(&r, &h, OURO_BF16, 1);
	return r;
}

#endif
