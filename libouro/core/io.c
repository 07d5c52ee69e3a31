/*
 * io.c - how the programs read their inputs and write their outputs.
 *
 * Input: a file or stdin is classified by its first nine bytes (record
 * stream or text) and then read from its start through a stdio stream
 * that replays those bytes, so pipes work like files. Token sequences come
 * from either form through one reader.
 *
 * Files that must be regular (the model's files, a gate, a log to resume)
 * are opened without blocking and refused, in one line that says what
 * they are, when they are a named pipe, a device, a socket or a directory:
 * opening a pipe that nobody writes would otherwise wait forever.
 *
 * Output: stdout, or a file written under a temporary name in the same
 * directory and renamed over the destination only after a complete, clean
 * write, so an interrupted or failed run leaves the old file or the new
 * one, never half of one; a name for a descriptor (/dev/stdout) or an
 * existing pipe or device is written in place. The names of the
 * temporaries being written are kept in a fixed table that
 * ouro_output_cleanup() can walk from a signal handler, so that a program
 * stopped by a signal removes them too.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ouro.h"

#define PEEK 9

struct replay {
	FILE *under;
	unsigned char pre[PEEK];
	size_t npre, pos;
};

static ssize_t replay_read(void *cookie, char *buf, size_t len)
{
	struct replay *r = cookie;
	size_t got = 0;

	if (r->pos < r->npre) {
		got = r->npre - r->pos < len ? r->npre - r->pos : len;
		memcpy(buf, r->pre + r->pos, got);
		r->pos += got;
		return (ssize_t)got;
	}
	got = fread(buf, 1, len, r->under);
	if (got == 0 && ferror(r->under))
		return -1;
	return (ssize_t)got;
}

static int replay_close(void *cookie)
{
	struct replay *r = cookie;
	int rc = r->under == stdin ? 0 : fclose(r->under);

	free(r);
	return rc;
}

const char *ouro_input_name(const char *path)
{
	return strcmp(path, "-") == 0 ? "stdin" : path;
}

int ouro_input_open(FILE **f, enum ouro_input_kind *kind, const char *path)
{
	cookie_io_functions_t fns = {.read = replay_read, .close = replay_close};
	struct replay *r = calloc(1, sizeof *r);
	const char *name = ouro_input_name(path);

	*f = NULL;
	if (!r)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	r->under = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!r->under) {
		free(r);
		return ouro_fail(OURO_EINPUT, "%s: %s", name, strerror(errno));
	}
	r->npre = fread(r->pre, 1, PEEK, r->under);
	if (r->npre < PEEK && ferror(r->under)) {
		int e = errno;
		replay_close(r);
		return ouro_fail(e == EISDIR ? OURO_EINPUT : OURO_ESYS, "%s: %s", name, strerror(e));
	}
	if (r->npre == 0)
		*kind = OURO_INPUT_EMPTY;
	else if (r->npre == PEEK && !r->pre[4] && !r->pre[5] && !r->pre[6] && !r->pre[7] &&
		 r->pre[8] == '{')
		*kind = OURO_INPUT_RECORDS;
	else
		*kind = OURO_INPUT_TEXT;
	if (!(*f = fopencookie(r, "r", fns))) {
		replay_close(r);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	return OURO_OK;
}

void ouro_input_close(FILE *f)
{
	if (f)
		fclose(f);
}

int ouro_parse_int(const char *s, long lo, long hi, long *out, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (!(*s == '-' || *s == '+' || (*s >= '0' && *s <= '9')) || *end || errno || v < lo || v > hi)
		return ouro_fail(OURO_EUSAGE, "%s: '%s' is not an integer in %ld..%ld", what, s, lo, hi);
	*out = v;
	return OURO_OK;
}

/* ---- files that must be regular -------------------------------------- */

/* What a file of mode m is, for the message that refuses it. */
static const char *file_kind(mode_t m)
{
	if (S_ISFIFO(m))
		return "a named pipe";
	if (S_ISCHR(m))
		return "a character device";
	if (S_ISBLK(m))
		return "a block device";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISDIR(m))
		return "a directory";
	return "something else";
}

int ouro_file_open(FILE **f, uint64_t *size, const char *path, int status)
{
	struct stat sb;
	int fd, flags;

	*f = NULL;
	/* O_NONBLOCK: opening a pipe returns at once, writer or not */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		/* a socket cannot be opened at all (ENXIO): say what it is */
		if (e == ENXIO && stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
			return ouro_fail(status, "%s: is %s, not a regular file", path, file_kind(sb.st_mode));
		return ouro_fail(status, "%s: %s", path, strerror(e));
	}
	if (fstat(fd, &sb) < 0) {
		int e = errno;
		close(fd);
		return ouro_fail(OURO_ESYS, "%s: %s", path, strerror(e));
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return ouro_fail(status, "%s: is %s, not a regular file", path, file_kind(sb.st_mode));
	}
	if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
	    !(*f = fdopen(fd, "rb"))) {
		int e = errno;
		close(fd);
		return ouro_fail(OURO_ESYS, "%s: %s", path, strerror(e));
	}
	if (size)
		*size = (uint64_t)sb.st_size;
	return OURO_OK;
}

/* ---- token sequences ------------------------------------------------- */

struct ouro_seq_reader {
	FILE *f;
	enum ouro_input_kind kind;
	char *name;
	long count;              /* lines or records read so far */
	char *line;
	size_t linecap;
	int32_t *ids;
	size_t idscap;
	struct ouro_st *rec;
	char where[300];
};

int ouro_seq_open(struct ouro_seq_reader **out, const char *path)
{
	struct ouro_seq_reader *r = calloc(1, sizeof *r);
	int rc;

	*out = NULL;
	if (!r || !(r->name = strdup(ouro_input_name(path)))) {
		free(r);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if ((rc = ouro_input_open(&r->f, &r->kind, path))) {
		ouro_seq_close(r);
		return rc;
	}
	*out = r;
	return OURO_OK;
}

static int ids_reserve(struct ouro_seq_reader *r, size_t n)
{
	int32_t *p;

	if (n <= r->idscap)
		return OURO_OK;
	if (n > SIZE_MAX / 2 / sizeof *p || !(p = realloc(r->ids, 2 * n * sizeof *p)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory for %zu token ids", r->name, n);
	r->ids = p;
	r->idscap = 2 * n;
	return OURO_OK;
}

static int next_text(struct ouro_seq_reader *r, const int32_t **ids, int64_t *n)
{
	ssize_t len;
	size_t count = 0;
	char *p;
	int rc;

	errno = 0;
	len = getline(&r->line, &r->linecap, r->f);
	if (len < 0) {
		if (ferror(r->f))
			return ouro_fail(OURO_ESYS, "%s: read error: %s", r->name, strerror(errno));
		return OURO_OK;
	}
	r->count++;
	if (memchr(r->line, '\0', (size_t)len))
		return ouro_fail(OURO_EINPUT, "%s: line %ld: contains a NUL byte; not text ids", r->name,
				 r->count);
	if (len && r->line[len - 1] == '\n')
		r->line[--len] = '\0';
	if (len && r->line[len - 1] == '\r')
		r->line[--len] = '\0';
	for (p = r->line;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		char *end = p;
		unsigned long v = 0;
		while (*end >= '0' && *end <= '9' && v <= INT32_MAX)
			v = v * 10 + (unsigned long)(*end++ - '0');
		if (end == p || (*end && *end != ' ' && *end != '\t') || v > INT32_MAX) {
			size_t w = strcspn(p, " \t");
			return ouro_fail(OURO_EINPUT, "%s: line %ld: '%.*s' is not a token id", r->name,
					 r->count, w > 40 ? 40 : (int)w, p);
		}
		if ((rc = ids_reserve(r, count + 1)))
			return rc;
		r->ids[count++] = (int32_t)v;
		p = end;
	}
	if (count == 0)
		return ouro_fail(OURO_EINPUT, "%s: line %ld: empty sequence", r->name, r->count);
	*ids = r->ids;
	*n = (int64_t)count;
	return OURO_OK;
}

static int next_record(struct ouro_seq_reader *r, const int32_t **ids, int64_t *n,
		       const struct ouro_st **rec)
{
	const struct ouro_tensor *t;
	char what[300];
	int rc;

	snprintf(what, sizeof what, "%s: record %ld", r->name, r->count + 1);
	ouro_st_free(r->rec);
	r->rec = NULL;
	if ((rc = ouro_st_read(&r->rec, r->f, what)) || !r->rec)
		return rc;
	r->count++;
	t = ouro_st_find(r->rec, "tokens");
	if (!t)
		return ouro_fail(OURO_EINPUT, "%s: no tensor 'tokens'", what);
	if (t->dtype != OURO_I32 || t->ndim != 1)
		return ouro_fail(OURO_EINPUT, "%s: tensor 'tokens' must be I32 [n], not %s with %d dimensions",
				 what, ouro_dtype_name(t->dtype), t->ndim);
	if (t->shape[0] == 0)
		return ouro_fail(OURO_EINPUT, "%s: empty sequence", what);
	if ((rc = ids_reserve(r, (size_t)t->shape[0])))
		return rc;
	memcpy(r->ids, t->data, t->nbytes);
	*ids = r->ids;
	*n = t->shape[0];
	*rec = r->rec;
	return OURO_OK;
}

int ouro_seq_next(struct ouro_seq_reader *r, const int32_t **ids, int64_t *n,
		  const struct ouro_st **rec)
{
	*ids = NULL;
	*n = 0;
	*rec = NULL;
	switch (r->kind) {
	case OURO_INPUT_TEXT:
		return next_text(r, ids, n);
	case OURO_INPUT_RECORDS:
		return next_record(r, ids, n, rec);
	default:
		return OURO_OK;
	}
}

const char *ouro_seq_where(struct ouro_seq_reader *r)
{
	snprintf(r->where, sizeof r->where, "%s: %s %ld", r->name,
		 r->kind == OURO_INPUT_RECORDS ? "record" : "line", r->count);
	return r->where;
}

void ouro_seq_close(struct ouro_seq_reader *r)
{
	if (!r)
		return;
	ouro_input_close(r->f);
	ouro_st_free(r->rec);
	free(r->line);
	free(r->ids);
	free(r->name);
	free(r);
}

/* ---- outputs --------------------------------------------------------- */

struct ouro_output {
	FILE *f;
	char *path;     /* NULL for stdout */
	char *tmp;      /* NULL when writing straight to path (not a regular file) */
	int slot;       /* its entry in pending[], or -1 */
};

/* Temporaries being written: a name is copied in before its entry is
 * marked used, and the mark cleared before the file is renamed or removed,
 * so a signal handler on any thread only ever sees whole names. A name
 * too long for an entry, or one beyond the table, is not tracked. */
#define PENDING 16
static struct {
	atomic_int used;
	char name[PATH_MAX];
} pending[PENDING];

static int pending_add(const char *name)
{
	if (strlen(name) >= sizeof pending[0].name)
		return -1;
	for (int i = 0; i < PENDING; i++) {
		int unused = 0;
		/* claim the entry (2: being filled), fill it, then publish it */
		if (atomic_compare_exchange_strong(&pending[i].used, &unused, 2)) {
			strcpy(pending[i].name, name);
			atomic_store(&pending[i].used, 1);
			return i;
		}
	}
	return -1;
}

static void pending_remove(int slot)
{
	if (slot >= 0)
		atomic_store(&pending[slot].used, 0);
}

void ouro_output_cleanup(void)
{
	for (int i = 0; i < PENDING; i++)
		if (atomic_load(&pending[i].used) == 1)
			unlink(pending[i].name);
}

/* The open descriptor that path names by itself, /dev/stdout, /dev/stderr,
 * /dev/fd/N or /proc/self/fd/N, or -1. Such a path is written through a
 * copy of that descriptor, where the shell pointed it (appending, if it
 * appends): when it is a regular file, a temporary renamed over the path
 * would replace the link in /dev, not write the file. */
static int fd_path(const char *path)
{
	const char *n = NULL;
	char *end;
	long v;

	if (strcmp(path, "/dev/stdout") == 0)
		return 1;
	if (strcmp(path, "/dev/stderr") == 0)
		return 2;
	if (strncmp(path, "/dev/fd/", 8) == 0)
		n = path + 8;
	else if (strncmp(path, "/proc/self/fd/", 14) == 0)
		n = path + 14;
	if (!n || *n < '0' || *n > '9')
		return -1;
	errno = 0;
	v = strtol(n, &end, 10);
	return *end || errno || v > INT_MAX ? -1 : (int)v;
}

int ouro_output_open(struct ouro_output **out, FILE **f, const char *path)
{
	struct ouro_output *o = calloc(1, sizeof *o);
	int fd;

	*out = NULL;
	*f = NULL;
	if (!o)
		return ouro_fail(OURO_ENOMEM, "out of memory");
	o->slot = -1;
	struct stat sb;

	if (!path || strcmp(path, "-") == 0) {
		o->f = stdout;
	} else if ((fd = fd_path(path)) >= 0) {
		if (!(o->path = strdup(path)) || (fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0 ||
		    !(o->f = fdopen(fd, "wb"))) {
			int e = errno;
			if (fd >= 0 && o->path)
				close(fd);
			ouro_output_abort(o);
			return ouro_fail(OURO_ESYS, "%s: cannot open: %s", path, strerror(e));
		}
	} else if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) {
		/* a device or a pipe (/dev/null, a FIFO) is written in place:
		 * renaming a file over it would replace it */
		if (!(o->path = strdup(path)) || !(o->f = fopen(path, "wb"))) {
			int e = errno;
			ouro_output_abort(o);
			return ouro_fail(OURO_ESYS, "%s: cannot open: %s", path, strerror(e));
		}
	} else {
		size_t len = strlen(path);
		if (!(o->path = strdup(path)) || !(o->tmp = malloc(len + 16))) {
			ouro_output_abort(o);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		snprintf(o->tmp, len + 16, "%s.tmp.XXXXXX", path);
		mode_t mask = umask(0);

		umask(mask);
		if ((fd = mkstemp(o->tmp)) >= 0)
			o->slot = pending_add(o->tmp);
		if (fd < 0 || fchmod(fd, 0666 & ~mask) || !(o->f = fdopen(fd, "wb"))) {
			int e = errno;
			if (fd >= 0) {
				close(fd);
				pending_remove(o->slot);
				o->slot = -1;
				unlink(o->tmp);
			}
			free(o->tmp);
			o->tmp = NULL;
			ouro_output_abort(o);
			return ouro_fail(OURO_ESYS, "%s: cannot create: %s", path, strerror(e));
		}
	}
	*out = o;
	*f = o->f;
	return OURO_OK;
}

int ouro_output_commit(struct ouro_output *o)
{
	const char *name = o->path ? o->path : "stdout";
	int rc = OURO_OK;

	if (fflush(o->f) || ferror(o->f))
		rc = ouro_fail(OURO_ESYS, "%s: write error: %s", name, strerror(errno));
	if (o->path) {
		if (fclose(o->f) && !rc)
			rc = ouro_fail(OURO_ESYS, "%s: write error: %s", name, strerror(errno));
		o->f = NULL;
	}
	if (o->tmp) {
		pending_remove(o->slot);
		if (!rc && rename(o->tmp, o->path))
			rc = ouro_fail(OURO_ESYS, "%s: cannot rename into place: %s", name, strerror(errno));
		if (rc)
			unlink(o->tmp);
	}
	free(o->tmp);
	free(o->path);
	free(o);
	return rc;
}

void ouro_output_abort(struct ouro_output *o)
{
	if (!o)
		return;
	if (o->path && o->f)
		fclose(o->f);
	if (o->tmp && o->f) {
		pending_remove(o->slot);
		unlink(o->tmp);
	}
	free(o->tmp);
	free(o->path);
	free(o);
}
