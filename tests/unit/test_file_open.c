/*
 * test_file_open - ouro_file_open on every kind of file a path can name:
 * a regular file (and a link to one) opens with its size; a named pipe
 * with no writer, a character device, a socket and a directory are
 * refused at once with the caller's status and a message that names the
 * file and says what it is; a missing file fails with the system's reason.
 * An alarm ends the test if an open blocks.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ouro.h"
#include "unit.h"

/* ouro_file_open(path) fails with status 3 and the message "PATH: WHAT". */
static int refused(const char *path, const char *what)
{
	char want[512];
	FILE *f = (FILE *)&f;   /* must be reset */

	snprintf(want, sizeof want, "%s: %s", path, what);
	if (ouro_file_open(&f, NULL, path, OURO_EMODEL) != OURO_EMODEL || f) {
		if (f)
			fclose(f);
		return 0;
	}
	if (strcmp(ouro_errmsg(), want)) {
		fprintf(stderr, "got '%s', expected '%s'\n", ouro_errmsg(), want);
		return 0;
	}
	return 1;
}

int main(void)
{
	char dir[] = "/tmp/ouro-file-open.XXXXXX", path[256], link_path[256];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	uint64_t size = 0;
	FILE *f;
	int s;

	alarm(20);   /* a blocking open ends the test by SIGALRM */
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}

	snprintf(path, sizeof path, "%s/regular", dir);
	f = fopen(path, "wb");
	CHECK(f && fwrite("hello\n", 1, 6, f) == 6 && fclose(f) == 0);
	CHECK(ouro_file_open(&f, &size, path, OURO_EMODEL) == OURO_OK);
	CHECK(size == 6);
	if (f) {
		char buf[8] = {0};
		CHECK(fread(buf, 1, sizeof buf, f) == 6 && memcmp(buf, "hello\n", 6) == 0);
		fclose(f);
	}
	snprintf(link_path, sizeof link_path, "%s/link", dir);
	CHECK(symlink(path, link_path) == 0);
	CHECK(ouro_file_open(&f, NULL, link_path, OURO_EMODEL) == OURO_OK);
	if (f)
		fclose(f);
	remove(link_path);
	remove(path);

	snprintf(path, sizeof path, "%s/fifo", dir);
	CHECK(mkfifo(path, 0600) == 0);
	CHECK(refused(path, "is a named pipe, not a regular file"));
	/* through a link too, as a model directory's files often are */
	CHECK(symlink(path, link_path) == 0);
	CHECK(refused(link_path, "is a named pipe, not a regular file"));
	remove(link_path);
	remove(path);

	CHECK(refused("/dev/null", "is a character device, not a regular file"));
	CHECK(refused(dir, "is a directory, not a regular file"));

	snprintf(sa.sun_path, sizeof sa.sun_path, "%s/sock", dir);
	snprintf(path, sizeof path, "%s", sa.sun_path);
	s = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
	CHECK(refused(path, "is a socket, not a regular file"));
	if (s >= 0)
		close(s);
	remove(path);

	snprintf(path, sizeof path, "%s/missing", dir);
	CHECK(refused(path, "No such file or directory"));
	/* the caller's status, whatever it is */
	CHECK(ouro_file_open(&f, NULL, path, OURO_EINPUT) == OURO_EINPUT);

	rmdir(dir);
	return unit_done("test_file_open");
}
