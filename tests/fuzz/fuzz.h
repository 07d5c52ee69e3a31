/*
 * fuzz.h - what the fuzz harnesses in tests/fuzz/ share.
 *
 * Each harness defines LLVMFuzzerTestOneInput(data, size): it hands the
 * bytes to one parser of outside data and touches everything the parser
 * says is valid, so that AddressSanitizer sees any read past what was
 * checked. A harness must neither leak nor keep state that changes how a
 * later input is handled (a lazily loaded, read-only fixture is fine).
 *
 * Two builds: with clang's -fsanitize=fuzzer, libFuzzer supplies main()
 * and mutates (make fuzz); with any compiler, replay.c supplies a main()
 * that runs every file of the seed and crash corpora once (make check).
 *
 * Parsers that take a path read the bytes from an in-memory file
 * (fuzz_path): a memfd reopened through /proc/self/fd, so no disk is
 * touched and nothing is left behind.
 */
#ifndef OURO_FUZZ_H
#define OURO_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A path whose file holds data[0..size) until the next call. */
const char *fuzz_path(const void *data, size_t size);

/* data[0..size) copied into a fresh allocation of exactly size bytes
 * (plus a NUL when nul is set), so ASan catches a read past the end. */
char *fuzz_copy(const void *data, size_t size, int nul);

/* Reads every byte of p[0..n) so that ASan checks them; returns their sum
 * (to keep the reads). */
unsigned fuzz_touch(const void *p, size_t n);

/* The repository root (compiled in), for fixtures the harnesses load. */
#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif

/* A failed invariant: a crash the fuzzer reports, in any build. */
#define FUZZ_ASSERT(c) do { if (!(c)) { \
	fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #c); \
	abort(); } } while (0)

#endif
