/*
 * fuzz.c - the helpers of fuzz.h, linked into every harness.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"

const char *fuzz_path(const void *data, size_t size)
{
	static int fd = -1;
	static char path[64];

	if (fd < 0) {
		if ((fd = memfd_create("ouro-fuzz", MFD_CLOEXEC)) < 0) {
			perror("memfd_create");
			abort();
		}
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
		perror("fuzz_path");
		abort();
	}
	return path;
}

char *fuzz_copy(const void *data, size_t size, int nul)
{
	char *p = malloc(size + (nul || !size));

	if (!p)
		abort();
	if (size)
		memcpy(p, data, size);
	if (nul)
		p[size] = '\0';
	return p;
}

unsigned fuzz_touch(const void *p, size_t n)
{
	const volatile unsigned char *b = p;
	unsigned s = 0;

	for (size_t i = 0; i < n; i++)
		s += b[i];
	return s;
}
