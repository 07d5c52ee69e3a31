/*
 * ouro-tokenize - text to token ids, and token ids back to text (-d).
 *
 * Encoding reads text from files or stdin: by default each input is one
 * sequence (one final newline dropped, so `echo PROMPT | ouro-tokenize`
 * encodes PROMPT), with -l each line is one, with --jsonl each line is a
 * JSON string (or an object with a "text" string). --chat wraps every
 * sequence as a user turn of the ChatML chat format first. Output is one
 * record per sequence with the I32 tensor `tokens` [n], or with -t the
 * decimal ids, one sequence per line.
 *
 * Decoding (-d) reads records with `tokens` or lines of decimal ids and
 * writes each sequence's text followed by a newline (with --jsonl as a
 * JSON string per line). The bytes are written as they are, valid UTF-8
 * or not.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "tokenizer.h"

enum unit { UNIT_WHOLE, UNIT_LINES, UNIT_JSONL };

struct opts {
	const char *model, *tokfile, *system;
	enum unit unit;
	int ids, chat, think, decode;
};

/* Program state; file-scope so that what an error exit leaves is still
 * reachable (no leak reports under the sanitizers). */
static struct ouro_tok *tok;
static struct ouro_ids ids;
static struct ouro_bytes text, wrap;
static FILE *in;             /* the input being read */
static char *line;           /* its current line */
static size_t linecap;
static int32_t *idv;         /* ids parsed from a text line */
static size_t idcap;
static json_t *jline;        /* the current --jsonl value */
static struct ouro_st *rec;  /* the current input record */
static int in_owned;         /* in is ours to close (not plain stdin) */

/* Exits with status, closing the input first (tidy under the sanitizers). */
static void leave(int status)
{
	if (in && in_owned)
		fclose(in);
	exit(status);
}

/* Prints the library's last message and leaves with status. */
static void die_in(int status)
{
	fprintf(stderr, "%s: %s\n", progname, ouro_errmsg());
	leave(status);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ouro-tokenize [-m DIR] [--tokenizer FILE] [-l | --jsonl] [-t]\n"
		"                     [--chat [--system TEXT] [--think]] [FILE ...]\n"
		"       ouro-tokenize -d [-m DIR] [--tokenizer FILE] [--jsonl] [FILE ...]\n"
		"Turn text into token ids, or token ids back into text.\n"
		"\n"
		"  -m, --model DIR       model directory whose tokenizer.json (or tokenizer.model)\n"
		"                        to use (default: $OURO_MODEL, else the bundled model)\n"
		"      --tokenizer FILE  use this tokenizer.json or SentencePiece .model file\n"
		"  -l, --lines           each line is one sequence (the newline not included)\n"
		"      --jsonl           each line is a JSON string, or an object with a \"text\"\n"
		"                        string, and is one sequence; with -d, write each\n"
		"                        sequence as a JSON string line\n"
		"  -t, --ids             write decimal ids, one sequence per line, not records\n"
		"      --chat            wrap each sequence as a user turn in the ChatML format\n"
		"      --system TEXT     the system message for --chat (default: \"You are a\n"
		"                        helpful assistant.\")\n"
		"      --think           end the --chat prompt with \"<think>\\n\"\n"
		"  -d, --decode          decode records or text ids to text\n"
		"  -h, --help            show this help\n"
		"\n"
		"Without -l or --jsonl each FILE (or stdin) is one sequence, and one final\n"
		"newline of it is dropped.\n");
}

/* ---- output ------------------------------------------------------------- */

static void write_ids(const int32_t *v, size_t n)
{
	char buf[16];

	for (size_t i = 0; i < n; i++) {
		char *p = buf + sizeof buf;
		uint32_t x = (uint32_t)v[i];
		if (i)
			putchar(' ');
		do
			*--p = (char)('0' + x % 10);
		while (x /= 10);
		fwrite(p, 1, (size_t)(buf + sizeof buf - p), stdout);
	}
	putchar('\n');
}

static void write_record(const int32_t *v, size_t n)
{
	struct ouro_record *r = ouro_record_new();
	int64_t shape[1] = {(int64_t)n};
	static const int32_t none[1];
	int rc;

	if (!r) {
		ouro_fail(OURO_ENOMEM, "out of memory");
		die_in(OURO_ENOMEM);
	}
	if ((rc = ouro_record_add(r, "tokens", OURO_I32, 1, shape, n ? v : none)) ||
	    (rc = ouro_record_write(r, stdout, "stdout"))) {
		ouro_record_free(r);
		die_in(rc);
	}
	ouro_record_free(r);
}

/* Writes s[0..n) as a JSON string line; invalid UTF-8 bytes become U+FFFD. */
static void write_json_string(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			putchar('\\');
			putchar(c);
			i++;
		} else if (c < 0x20 || c == 0x7F) {
			static const char esc[] = "btn\0fr";
			if (c >= 8 && c <= 13 && c != 11)
				printf("\\%c", esc[c - 8]);
			else
				printf("\\u%04x", c);
			i++;
		} else if (c < 0x80) {
			putchar(c);
			i++;
		} else {
			/* copy one valid character, or replace one bad byte */
			size_t len = 0;
			int need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
			json_t *probe;
			if (c >= 0xC2 && c <= 0xF4 && i + (size_t)need <= n &&
			    (probe = json_stringn(s + i, (size_t)need))) {
				json_decref(probe);
				len = (size_t)need;
			}
			if (len) {
				fwrite(s + i, 1, len, stdout);
				i += len;
			} else {
				fputs("\xEF\xBF\xBD", stdout);
				i++;
			}
		}
	}
	fputs("\"\n", stdout);
}

/* ---- encoding ----------------------------------------------------------- */

static void encode_one(const struct opts *o, const char *s, size_t n, const char *where)
{
	int rc;

	ids.n = 0;
	if (o->chat) {
		wrap.n = 0;
		if ((rc = ouro_tok_chat(&wrap, o->system, s, n, o->think)))
			die_in(rc);
		s = wrap.p;
		n = wrap.n;
	}
	if ((rc = ouro_tok_encode(tok, s, n, &ids))) {
		if (rc == OURO_EINPUT && where) {
			fprintf(stderr, "%s: %s: %s\n", progname, where, ouro_errmsg());
			leave(rc);
		}
		die_in(rc);
	}
	if (o->ids)
		write_ids(ids.v, ids.n);
	else
		write_record(ids.v, ids.n);
}

static FILE *open_input(const char *path)
{
	FILE *f;

	if (!strcmp(path, "-"))
		return stdin;
	if (!(f = fopen(path, "rb"))) {
		ouro_fail(errno == ENOENT || errno == EACCES ? OURO_EINPUT : OURO_ESYS,
			  "%s: %s", path, strerror(errno));
		die_in(errno == ENOENT || errno == EACCES ? OURO_EINPUT : OURO_ESYS);
	}
	return f;
}

static void read_error(const char *name)
{
	ouro_fail(errno == EISDIR ? OURO_EINPUT : OURO_ESYS, "%s: read error: %s", name, strerror(errno));
	die_in(errno == EISDIR ? OURO_EINPUT : OURO_ESYS);
}

static void encode_file(const struct opts *o, const char *path)
{
	const char *name = ouro_input_name(path);
	FILE *f = in = open_input(path);

	in_owned = f != stdin;
	char where[512];
	int rc;

	if (o->unit == UNIT_WHOLE) {
		char buf[1 << 16];
		size_t got;
		text.n = 0;
		while ((got = fread(buf, 1, sizeof buf, f)) > 0)
			if ((rc = ouro_bytes_add(&text, buf, got)))
				die_in(rc);
		if (ferror(f))
			read_error(name);
		if (text.n && text.p[text.n - 1] == '\n')
			text.n--;
		snprintf(where, sizeof where, "%s", name);
		encode_one(o, text.p ? text.p : "", text.n, where);
	} else {
		ssize_t len;
		long lineno = 0;
		errno = 0;
		while ((len = getline(&line, &linecap, f)) >= 0) {
			lineno++;
			snprintf(where, sizeof where, "%s: line %ld", name, lineno);
			if (len && line[len - 1] == '\n')
				len--;
			if (o->unit == UNIT_LINES) {
				encode_one(o, line, (size_t)len, where);
				continue;
			}
			json_error_t jerr;
			json_t *j = jline = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
			json_t *s = json_is_object(j) ? json_object_get(j, "text") : j;
			if (!json_is_string(s)) {
				fprintf(stderr, "%s: %s: %s\n", progname, where,
					!j ? "not valid JSON" : "expected a JSON string or an object with a \"text\" string");
				leave(OURO_EINPUT);
			}
			encode_one(o, json_string_value(s), json_string_length(s), where);
			json_decref(j);
			jline = NULL;
			errno = 0;
		}
		if (ferror(f))
			read_error(name);
	}
	if (f != stdin)
		fclose(f);
	in = NULL;
}

/* ---- decoding ----------------------------------------------------------- */

static void decode_one(const struct opts *o, const int32_t *v, size_t n, const char *where)
{
	int rc;

	text.n = 0;
	if ((rc = ouro_tok_decode(tok, v, n, &text))) {
		fprintf(stderr, "%s: %s: %s\n", progname, where, ouro_errmsg());
		leave(rc);
	}
	if (o->unit == UNIT_JSONL) {
		write_json_string(text.p ? text.p : "", text.n);
	} else {
		fwrite(text.p ? text.p : "", 1, text.n, stdout);
		putchar('\n');
	}
}

static void decode_file(const struct opts *o, const char *path)
{
	const char *name = ouro_input_name(path);
	enum ouro_input_kind kind;
	char where[512];
	FILE *f;
	int rc;

	if ((rc = ouro_input_open(&f, &kind, path)))
		die_in(rc);
	in = f;
	in_owned = 1;
	if (kind == OURO_INPUT_RECORDS) {
		for (long k = 1;; k++) {
			snprintf(where, sizeof where, "%s: record %ld", name, k);
			if ((rc = ouro_st_read(&rec, f, where)))
				die_in(rc);
			if (!rec)
				break;
			const struct ouro_tensor *t = ouro_st_find(rec, "tokens");
			if (!t || t->dtype != OURO_I32 || t->ndim != 1) {
				fprintf(stderr, "%s: %s: %s\n", progname, where,
					t ? "tensor 'tokens' is not I32 [n]" : "no tensor 'tokens'");
				leave(OURO_EINPUT);
			}
			decode_one(o, t->data, (size_t)t->shape[0], where);
			ouro_st_free(rec);
			rec = NULL;
		}
	} else if (kind == OURO_INPUT_TEXT) {
		ssize_t len;
		long lineno = 0;
		size_t nv = 0;
		errno = 0;
		while ((len = getline(&line, &linecap, f)) >= 0) {
			char *p = line, *end = line + len;
			lineno++;
			snprintf(where, sizeof where, "%s: line %ld", name, lineno);
			if (p < end && end[-1] == '\n')
				end--;
			if (lineno == 1 && p < end && !(*p >= '0' && *p <= '9') && *p != ' ' && *p != '\t') {
				fprintf(stderr, "%s: %s: expected records or decimal token ids\n", progname, name);
				leave(OURO_EINPUT);
			}
			nv = 0;
			while (p < end) {
				if (*p == ' ' || *p == '\t' || *p == '\r') {
					p++;
					continue;
				}
				char *q = p;
				uint64_t x = 0;
				while (q < end && *q >= '0' && *q <= '9' && x <= INT32_MAX)
					x = x * 10 + (uint64_t)(*q++ - '0');
				if (q < end && *q == '\0') {
					fprintf(stderr, "%s: %s: contains a NUL byte; not token ids\n", progname, where);
					leave(OURO_EINPUT);
				}
				if (q == p || x > INT32_MAX || (q < end && *q != ' ' && *q != '\t' && *q != '\r')) {
					size_t w = 0;
					while (p + w < end && p[w] != ' ' && p[w] != '\t' && w < 40)
						w++;
					fprintf(stderr, "%s: %s: '%.*s' is not a token id\n", progname, where,
						(int)w, p);
					leave(OURO_EINPUT);
				}
				if (nv == idcap) {
					void *nw = realloc(idv, (idcap ? idcap * 2 : 256) * sizeof *idv);
					if (!nw) {
						ouro_fail(OURO_ENOMEM, "out of memory");
						die_in(OURO_ENOMEM);
					}
					idv = nw;
					idcap = idcap ? idcap * 2 : 256;
				}
				idv[nv++] = (int32_t)x;
				p = q;
			}
			decode_one(o, idv, nv, where);
			errno = 0;
		}
		if (ferror(f))
			read_error(name);
	}
	ouro_input_close(f);
	in = NULL;
}

int main(int argc, char **argv)
{
	enum { OPT_TOKENIZER = 256, OPT_JSONL, OPT_CHAT, OPT_SYSTEM, OPT_THINK };
	static const struct option longopts[] = {
		{"model", required_argument, NULL, 'm'},
		{"tokenizer", required_argument, NULL, OPT_TOKENIZER},
		{"lines", no_argument, NULL, 'l'},
		{"jsonl", no_argument, NULL, OPT_JSONL},
		{"ids", no_argument, NULL, 't'},
		{"chat", no_argument, NULL, OPT_CHAT},
		{"system", required_argument, NULL, OPT_SYSTEM},
		{"think", no_argument, NULL, OPT_THINK},
		{"decode", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {0};
	int c, rc, lines = 0, jsonl = 0;

	cli_init("ouro-tokenize");
	while ((c = cli_getopt(argc, argv, "m:ltdh", longopts)) != -1) {
		switch (c) {
		case 'm': o.model = optarg; break;
		case OPT_TOKENIZER: o.tokfile = optarg; break;
		case 'l': lines = 1; break;
		case OPT_JSONL: jsonl = 1; break;
		case 't': o.ids = 1; break;
		case OPT_CHAT: o.chat = 1; break;
		case OPT_SYSTEM: o.system = optarg; break;
		case OPT_THINK: o.think = 1; break;
		case 'd': o.decode = 1; break;
		case 'h': usage(stdout); return 0;
		}
	}
	if (lines && jsonl)
		usage_error("-l and --jsonl exclude each other");
	o.unit = lines ? UNIT_LINES : jsonl ? UNIT_JSONL : UNIT_WHOLE;
	if ((o.system || o.think) && !o.chat)
		usage_error("--system and --think need --chat");
	if (o.decode && (o.chat || o.ids || lines))
		usage_error("-d takes no --chat, -t or -l");
	if (!o.decode && !o.ids)
		cli_binary_stdout(NULL);

	rc = o.tokfile ? ouro_tok_load(&tok, o.tokfile)
		       : ouro_tok_load_dir(&tok, ouro_model_path(o.model));
	if (rc)
		die_in(rc);
	if (optind == argc) {
		if (o.decode)
			decode_file(&o, "-");
		else
			encode_file(&o, "-");
	}
	for (int i = optind; i < argc; i++) {
		if (o.decode)
			decode_file(&o, argv[i]);
		else
			encode_file(&o, argv[i]);
	}
	if (fflush(stdout) || ferror(stdout)) {
		ouro_fail(OURO_ESYS, "stdout: write error: %s", strerror(errno));
		die_in(OURO_ESYS);
	}
	ouro_tok_free(tok);
	ouro_ids_free(&ids);
	ouro_bytes_free(&text);
	ouro_bytes_free(&wrap);
	free(line);
	free(idv);
	return 0;
}
