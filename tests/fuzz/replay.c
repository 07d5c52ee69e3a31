/*
 * replay.c - main() for the harnesses without libFuzzer: runs
 * LLVMFuzzerTestOneInput once on every file named, descending into
 * directories, and prints how many inputs it ran. A crash is a crash of
 * this program (under the sanitizer build, a report and a failing exit).
 *
 *     build/fuzz/st tests/fuzz/st/
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static long count;

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, got;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	do {
		if (cap - len < 65536) {
			char *p = realloc(buf, cap = cap ? 2 * cap : 65536);
			if (!p) {
				fprintf(stderr, "replay: %s: out of memory\n", path);
				exit(1);
			}
			buf = p;
		}
		got = fread(buf + len, 1, cap - len, f);
		len += got;
	} while (got);
	if (ferror(f)) {
		fprintf(stderr, "replay: %s: read error\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	/* an exact-size copy, as libFuzzer gives */
	char *data = fuzz_copy(buf, len, 0);
	free(buf);
	LLVMFuzzerTestOneInput((const uint8_t *)data, len);
	free(data);
	count++;
	return 0;
}

static int run_path(const char *path)
{
	struct stat st;
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;
	int rc = 0;
	DIR *d;

	if (stat(path, &st)) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return run_file(path);
	if (!(d = opendir(path))) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		names = realloc(names, (n + 1) * sizeof *names);
		if (!names || asprintf(&names[n], "%s/%s", path, e->d_name) < 0)
			exit(1);
		n++;
	}
	closedir(d);
	qsort(names, n, sizeof *names, cmp);
	for (size_t i = 0; i < n; i++) {
		rc |= run_path(names[i]);
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	int rc = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR ...\n", argv[0]);
		return 2;
	}
	for (int i = 1; i < argc; i++)
		rc |= run_path(argv[i]);
	printf("%s: %ld inputs\n", strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0], count);
	return rc ? 1 : 0;
}
