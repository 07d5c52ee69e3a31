/*
 * eval_tasks.c - the examples of an evaluation, read and checked: plain
 * text documents, documents as JSONL strings or token ids (perplexity),
 * and multiple-choice questions in the layouts of lm-evaluation-harness
 * (a context with choices, or contexts with one continuation), and
 * generative tasks (a prompt and a reference answer); and their
 * tokenization into loglikelihood requests. Every line is validated, and a
 * bad one is refused with its file and line, but for a generative task,
 * whose bad line becomes an example that carries its message (the run
 * reports it and scores the others).
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"

const char *const ouro_eval_format_names[] = {"auto", "text", "jsonl", "ids"};

int ouro_eval_slurp_stream(FILE *f, const char *name, char **buf, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	char *p;

	*buf = NULL;
	*len = 0;
	if (!(p = malloc(cap))) {
		if (f != stdin)
			fclose(f);
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", name);
	}
	for (;;) {
		if (cap - n < 2) {
			char *q = cap < ((size_t)1 << 40) ? realloc(p, cap * 2) : NULL;
			if (!q) {
				free(p);
				if (f != stdin)
					fclose(f);
				return ouro_fail(OURO_ENOMEM, "%s: out of memory", name);
			}
			p = q;
			cap *= 2;
		}
		size_t got = fread(p + n, 1, cap - n - 1, f);
		n += got;
		if (got == 0)
			break;
	}
	int err = ferror(f) ? errno : 0;
	if (f != stdin)
		fclose(f);
	if (err) {
		free(p);
		return ouro_fail(err == EISDIR ? OURO_EINPUT : OURO_ESYS, "%s: %s", name, strerror(err));
	}
	p[n] = '\0';
	*buf = p;
	*len = n;
	return OURO_OK;
}

int ouro_eval_slurp(const char *path, char **buf, size_t *len)
{
	const char *name = ouro_input_name(path);
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");

	if (!f) {
		*buf = NULL;
		*len = 0;
		return ouro_fail(OURO_EINPUT, "%s: %s", name, strerror(errno));
	}
	return ouro_eval_slurp_stream(f, name, buf, len);
}

static struct ouro_eval_example *corpus_add(struct ouro_eval_corpus *c)
{
	if (c->n == c->cap) {
		int64_t cap = c->cap ? c->cap * 2 : 64;
		struct ouro_eval_example *ex = realloc(c->ex, (size_t)cap * sizeof *ex);
		if (!ex)
			return NULL;
		c->ex = ex;
		c->cap = cap;
	}
	memset(&c->ex[c->n], 0, sizeof c->ex[c->n]);
	return &c->ex[c->n++];
}

void ouro_eval_corpus_free(struct ouro_eval_corpus *c)
{
	for (int64_t i = 0; i < c->n; i++) {
		struct ouro_eval_example *e = &c->ex[i];
		ouro_ids_free(&e->ids);
		for (int k = 0; e->pairs && k < e->npairs; k++) {
			ouro_ids_free(&e->pairs[k].cids);
			ouro_ids_free(&e->pairs[k].kids);
		}
		free(e->pairs);
		free(e->strings);
		free(e->prompt);
		free(e->answer);
		free(e->error);
		for (int k = 0; k < e->nuntil; k++)
			free(e->until[k]);
		free(e->until);
	}
	for (int i = 0; i < c->nbufs; i++)
		free(c->bufs[i]);
	free(c->bufs);
	free(c->ex);
}

/* Parses one JSONL line; blank lines give *out NULL. */
static int json_line(const char *line, size_t len, const char *where, json_t **out)
{
	json_error_t err;
	size_t i = 0;

	*out = NULL;
	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
		i++;
	if (i == len)
		return OURO_OK;
	if (!(*out = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err)))
		return ouro_fail(OURO_EINPUT, "%s: not valid JSON: %s (column %d)", where, err.text, err.column);
	return OURO_OK;
}

/* The lines of a file's contents buf[0..len), one after the other. */
struct lines {
	char *buf;
	size_t len, pos;
	const char *name;     /* the file, for messages */
	long lineno;
	char where[300];      /* "NAME: line N" of the current line */
};

/* The next line, without its newline, in *line [*n]; 0 at the end. */
static int next_line(struct lines *L, char **line, size_t *n)
{
	if (L->pos >= L->len)
		return 0;
	char *nl = memchr(L->buf + L->pos, '\n', L->len - L->pos);
	size_t end = nl ? (size_t)(nl - L->buf) : L->len;

	*line = L->buf + L->pos;
	*n = end - L->pos;
	L->pos = end + 1;
	L->lineno++;
	snprintf(L->where, sizeof L->where, "%s: line %ld", L->name, L->lineno);
	return 1;
}

/* The next line that is not blank, parsed as JSON; *out NULL at the end. */
static int next_json(struct lines *L, json_t **out)
{
	char *line;
	size_t n;
	int rc;

	*out = NULL;
	while (next_line(L, &line, &n))
		if ((rc = json_line(line, n, L->where, out)) || *out)
			return rc;
	return OURO_OK;
}

int ouro_eval_read_ppl_jsonl(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len, const char *field)
{
	struct lines L = {.buf = buf, .len = len, .name = name};
	json_t *j, *t;
	int rc;

	while (!(rc = next_json(&L, &j)) && j) {
		t = json_is_object(j) ? json_object_get(j, field) : j;
		if (!json_is_string(t)) {
			json_decref(j);
			return ouro_fail(OURO_EINPUT, "%s: expected a JSON string or an object with a string \"%s\"",
					 L.where, field);
		}
		struct ouro_eval_example *e = corpus_add(c);
		char *s = e ? malloc(json_string_length(t) + 1) : NULL;
		if (!s) {
			json_decref(j);
			return ouro_fail(OURO_ENOMEM, "%s: out of memory", L.where);
		}
		memcpy(s, json_string_value(t), json_string_length(t) + 1);
		e->strings = s;
		e->text = s;
		e->len = json_string_length(t);
		snprintf(e->where, sizeof e->where, "%s", L.where);
		json_decref(j);
	}
	return rc;
}

int ouro_eval_read_ppl_ids(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len, int64_t V)
{
	struct lines L = {.buf = buf, .len = len, .name = name};
	char *line;
	size_t n;

	while (next_line(&L, &line, &n)) {
		struct ouro_eval_example *e = NULL;

		line[n] = '\0';
		for (char *p = line;;) {
			while (*p == ' ' || *p == '\t' || *p == '\r')
				p++;
			if (!*p)
				break;
			char *q;
			errno = 0;
			long v = strtol(p, &q, 10);
			if (*p < '0' || *p > '9' || errno || v >= V || (*q && *q != ' ' && *q != '\t' && *q != '\r'))
				return ouro_fail(OURO_EINPUT, "%s: '%.*s' is not a token id in 0..%lld", L.where,
						 (int)strcspn(p, " \t\r"), p, (long long)V - 1);
			if (!e && !(e = corpus_add(c)))
				return ouro_fail(OURO_ENOMEM, "%s: out of memory", L.where);
			if (ouro_ids_push(&e->ids, (int32_t)v))
				return ouro_refail(OURO_ENOMEM, L.where);
			p = q;
		}
		if (e)
			snprintf(e->where, sizeof e->where, "%s", L.where);
	}
	return OURO_OK;
}

/* Copies the strings of one choice example into one buffer. */
static int choice_strings(struct ouro_eval_example *e, const char **ctx, const size_t *clen,
			  const char **cont, const size_t *nlen, const char *delim, size_t dlen)
{
	size_t total = 0;

	for (int k = 0; k < e->npairs; k++)
		total += clen[k] + dlen + nlen[k] + 2;
	if (!(e->strings = malloc(total + 1)) || !(e->pairs = calloc((size_t)e->npairs, sizeof *e->pairs)))
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", e->where);
	char *p = e->strings;
	for (int k = 0; k < e->npairs; k++) {
		struct ouro_eval_pair *q = &e->pairs[k];
		q->ctx = p;
		memcpy(p, ctx[k], clen[k]);
		q->ctx_len = clen[k];
		p += clen[k];
		*p++ = '\0';
		q->cont = p;
		memcpy(p, delim, dlen);
		memcpy(p + dlen, cont[k], nlen[k]);
		q->cont_len = dlen + nlen[k];
		q->chars = ouro_utf8_length(cont[k], nlen[k]);
		p += q->cont_len;
		*p++ = '\0';
	}
	return OURO_OK;
}

/* A string member, or an error naming it. */
static int get_string(json_t *o, const char *key, const char *where, int required, json_t **out)
{
	*out = json_object_get(o, key);
	if (!*out && !required)
		return OURO_OK;
	if (!*out)
		return ouro_fail(OURO_EINPUT, "%s: no \"%s\"", where, key);
	if (!json_is_string(*out))
		return ouro_fail(OURO_EINPUT, "%s: \"%s\" is not a string", where, key);
	return OURO_OK;
}

/* Validates one choice line and adds it. */
static int choice_add(struct ouro_eval_corpus *c, json_t *j, const char *where)
{
	json_t *ctx, *choices, *gold, *delim, *cont, *ctxs;
	int rc, many;

	if (!json_is_object(j))
		return ouro_fail(OURO_EINPUT, "%s: expected a JSON object with \"context\", \"choices\" and \"gold\"", where);
	ctxs = json_object_get(j, "contexts");
	many = ctxs != NULL;
	if (many) {
		if ((rc = get_string(j, "continuation", where, 1, &cont)))
			return rc;
		if (json_object_get(j, "context") || json_object_get(j, "choices"))
			return ouro_fail(OURO_EINPUT, "%s: \"contexts\" and \"continuation\" go without \"context\" and \"choices\"", where);
		choices = ctxs;
	} else {
		if ((rc = get_string(j, "context", where, 1, &ctx)))
			return rc;
		if (!(choices = json_object_get(j, "choices")))
			return ouro_fail(OURO_EINPUT, "%s: no \"choices\"", where);
	}
	const char *what = many ? "contexts" : "choices";
	if ((rc = get_string(j, "delimiter", where, 0, &delim)))
		return rc;
	if (!json_is_array(choices))
		return ouro_fail(OURO_EINPUT, "%s: \"%s\" is not an array", where, what);
	size_t nc = json_array_size(choices);
	if (nc == 0)
		return ouro_fail(OURO_EINPUT, "%s: \"%s\" is empty", where, what);
	if (nc > 1000000)
		return ouro_fail(OURO_EINPUT, "%s: %zu %s are too many", where, nc, what);
	if (!(gold = json_object_get(j, "gold")))
		return ouro_fail(OURO_EINPUT, "%s: no \"gold\"", where);
	if (!json_is_integer(gold))
		return ouro_fail(OURO_EINPUT, "%s: \"gold\" is not an integer", where);
	if (json_integer_value(gold) < 0 || json_integer_value(gold) >= (json_int_t)nc)
		return ouro_fail(OURO_EINPUT, "%s: \"gold\" is %lld, outside 0..%zu for %zu %s", where,
				 (long long)json_integer_value(gold), nc - 1, nc, what);

	const char **cs = malloc(nc * sizeof *cs), **ns = malloc(nc * sizeof *ns);
	size_t *cl = malloc(nc * sizeof *cl), *nl = malloc(nc * sizeof *nl);
	struct ouro_eval_example *e = cs && ns && cl && nl ? corpus_add(c) : NULL;
	if (!e) {
		rc = ouro_fail(OURO_ENOMEM, "%s: out of memory", where);
		goto out;
	}
	snprintf(e->where, sizeof e->where, "%s", where);
	e->npairs = (int)nc;
	e->gold = (int)json_integer_value(gold);
	for (size_t k = 0; k < nc; k++) {
		json_t *s = json_array_get(choices, k);
		if (!json_is_string(s)) {
			rc = ouro_fail(OURO_EINPUT, "%s: %s[%zu] is not a string", where, what, k);
			goto out;
		}
		if (json_string_length(s) == 0 && !many) {
			rc = ouro_fail(OURO_EINPUT, "%s: choices[%zu] is empty", where, k);
			goto out;
		}
		json_t *cx = many ? s : ctx, *cn = many ? cont : s;
		cs[k] = json_string_value(cx);
		cl[k] = json_string_length(cx);
		ns[k] = json_string_value(cn);
		nl[k] = json_string_length(cn);
	}
	if (delim && json_string_length(delim) + nl[0] == 0) {
		rc = ouro_fail(OURO_EINPUT, "%s: the continuation is empty", where);
		goto out;
	}
	if (many && nl[0] == 0 && !delim) {
		rc = ouro_fail(OURO_EINPUT, "%s: \"continuation\" is empty", where);
		goto out;
	}
	rc = choice_strings(e, cs, cl, ns, nl, delim ? json_string_value(delim) : "",
			    delim ? json_string_length(delim) : 0);
out:
	free(cs);
	free(ns);
	free(cl);
	free(nl);
	return rc;
}

int ouro_eval_read_choice_jsonl(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len)
{
	struct lines L = {.buf = buf, .len = len, .name = name};
	json_t *j;
	int rc;

	while (!(rc = next_json(&L, &j)) && j) {
		rc = choice_add(c, j, L.where);
		json_decref(j);
		if (rc)
			return rc;
	}
	return rc;
}

/* A string member of a gen line under either of two names (lm-evaluation-
 * harness's and the plain one), or NULL; "" for key2 when there is one. */
static int gen_member(json_t *j, const char *key, const char *key2, const char *where, json_t **out)
{
	json_t *a = json_object_get(j, key), *b = key2 ? json_object_get(j, key2) : NULL;

	if (a && b)
		return ouro_fail(OURO_EINPUT, "%s: give one of \"%s\" and \"%s\"", where, key, key2);
	*out = a ? a : b;
	return OURO_OK;
}

/* Validates one gen line into e. */
static int gen_example(struct ouro_eval_example *e, json_t *j, const char *where)
{
	json_t *prompt, *answer, *few = json_object_get(j, "few_shot"), *until, *mt;
	char num[64];
	const char *a;
	size_t alen;
	int rc;

	if (!json_is_object(j))
		return ouro_fail(OURO_EINPUT, "%s: expected a JSON object with \"prompt\" and \"answer\"", where);
	if ((rc = gen_member(j, "prompt", "context", where, &prompt)) ||
	    (rc = gen_member(j, "answer", "target", where, &answer)))
		return rc;
	if (!prompt || !json_is_string(prompt))
		return ouro_fail(OURO_EINPUT, "%s: no \"prompt\" (or \"context\") string", where);
	if (!answer || !(json_is_string(answer) || json_is_integer(answer) || json_is_real(answer)))
		return ouro_fail(OURO_EINPUT, "%s: no \"answer\" (or \"target\") string or number", where);
	if (few && !json_is_string(few))
		return ouro_fail(OURO_EINPUT, "%s: \"few_shot\" is not a string", where);
	if (json_is_string(answer)) {
		a = json_string_value(answer);
		alen = json_string_length(answer);
	} else {
		if (json_is_integer(answer))
			snprintf(num, sizeof num, "%lld", (long long)json_integer_value(answer));
		else
			snprintf(num, sizeof num, "%.17g", json_real_value(answer));
		a = num;
		alen = strlen(num);
	}
	size_t flen = few ? json_string_length(few) : 0, plen = json_string_length(prompt);
	if (!(e->answer = malloc(alen + 1)) || !(e->prompt = malloc(flen + plen + 1)))
		return ouro_fail(OURO_ENOMEM, "out of memory");
	memcpy(e->answer, a, alen);
	e->answer[alen] = '\0';
	e->answer_len = alen;
	if (flen)
		memcpy(e->prompt, json_string_value(few), flen);
	memcpy(e->prompt + flen, json_string_value(prompt), plen);
	e->prompt[flen + plen] = '\0';
	e->prompt_len = flen + plen;
	if ((mt = json_object_get(j, "max_tokens"))) {
		if (!json_is_integer(mt) || json_integer_value(mt) < 1 || json_integer_value(mt) > (1 << 24))
			return ouro_fail(OURO_EINPUT, "%s: \"max_tokens\" is not an integer in 1..16777216", where);
		e->max_tokens = json_integer_value(mt);
	}
	if ((until = json_object_get(j, "until"))) {
		size_t cnt = json_is_string(until) ? 1 : json_is_array(until) ? json_array_size(until) : 0;
		if ((!json_is_string(until) && !json_is_array(until)) || cnt > 64)
			return ouro_fail(OURO_EINPUT, "%s: \"until\" is not a string or an array of at most 64 strings", where);
		if (cnt && !(e->until = calloc(cnt, sizeof *e->until)))
			return ouro_fail(OURO_ENOMEM, "out of memory");
		e->nuntil = 0;
		for (size_t k = 0; k < cnt; k++) {
			json_t *x = json_is_string(until) ? until : json_array_get(until, k);
			if (!json_is_string(x) || !json_string_length(x))
				return ouro_fail(OURO_EINPUT, "%s: \"until\" holds something not a non-empty string", where);
			if (!(e->until[e->nuntil++] = strdup(json_string_value(x))))
				return ouro_fail(OURO_ENOMEM, "out of memory");
		}
	}
	return OURO_OK;
}

int ouro_eval_read_gen_jsonl(struct ouro_eval_corpus *c, const char *name, char *buf, size_t len)
{
	struct lines L = {.buf = buf, .len = len, .name = name};
	char *line;
	size_t n;
	int rc;

	while (next_line(&L, &line, &n)) {
		json_t *j;
		rc = json_line(line, n, L.where, &j);
		if (!rc && !j)
			continue;   /* a blank line */
		struct ouro_eval_example *e = corpus_add(c);
		if (!e) {
			json_decref(j);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		snprintf(e->where, sizeof e->where, "%s", L.where);
		e->nuntil = -1;
		e->max_tokens = -1;
		if (!rc)
			rc = gen_example(e, j, L.where);
		json_decref(j);
		if (rc == OURO_ENOMEM)
			return rc;
		if (rc && !(e->error = strdup(ouro_errmsg())))
			return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	return OURO_OK;
}

/* The format of input path: fmt, or with OURO_EVAL_AUTO the one its name
 * says (.jsonl or .json: JSONL, else text). */
static enum ouro_eval_format format_of(enum ouro_eval_format fmt, const char *path)
{
	size_t n = strlen(path);

	if (fmt != OURO_EVAL_AUTO)
		return fmt;
	if ((n > 6 && strcmp(path + n - 6, ".jsonl") == 0) || (n > 5 && strcmp(path + n - 5, ".json") == 0))
		return OURO_EVAL_JSONL;
	return OURO_EVAL_TEXT;
}

int ouro_eval_corpus_read(struct ouro_eval_corpus *c, enum ouro_eval_task task,
			  enum ouro_eval_format fmt, const char *field, char *const *inputs, int ninputs,
			  int64_t V)
{
	for (int i = 0; i < ninputs; i++) {
		const char *path = inputs[i], *name = ouro_input_name(path);
		char *buf, **bufs;
		size_t len;
		int rc;

		if ((rc = ouro_eval_slurp(path, &buf, &len)))
			return rc;
		if (!(bufs = realloc(c->bufs, (size_t)(c->nbufs + 1) * sizeof *bufs))) {
			free(buf);
			return ouro_fail(OURO_ENOMEM, "out of memory");
		}
		c->bufs = bufs;
		c->bufs[c->nbufs++] = buf;
		if (task == OURO_EVAL_CHOICE) {
			rc = ouro_eval_read_choice_jsonl(c, name, buf, len);
		} else if (task == OURO_EVAL_GEN) {
			rc = ouro_eval_read_gen_jsonl(c, name, buf, len);
		} else {
			switch (format_of(fmt, path)) {
			case OURO_EVAL_JSONL: rc = ouro_eval_read_ppl_jsonl(c, name, buf, len, field); break;
			case OURO_EVAL_IDS: rc = ouro_eval_read_ppl_ids(c, name, buf, len, V); break;
			default: {
				struct ouro_eval_example *e = corpus_add(c);
				if (!e)
					return ouro_fail(OURO_ENOMEM, "out of memory");
				snprintf(e->where, sizeof e->where, "%s", name);
				e->text = buf;
				e->len = len;
				rc = OURO_OK;
			}
			}
		}
		if (rc)
			return rc;
	}
	return OURO_OK;
}

int ouro_eval_tokenize(struct ouro_eval_example *e, struct ouro_tok *tok, enum ouro_eval_task task, int32_t prefix,
		    int64_t window)
{
	int rc;

	if (task == OURO_EVAL_PPL) {
		if (e->text && (rc = ouro_tok_encode(tok, e->text, e->len, &e->ids)))
			return ouro_refail(rc, e->where);
		return OURO_OK;
	}
	for (int k = 0; k < e->npairs; k++) {
		struct ouro_eval_pair *p = &e->pairs[k];
		if ((rc = ouro_request_encode(tok, p->ctx, p->ctx_len, p->cont, p->cont_len, prefix,
					      &p->cids, &p->kids))) {
			char where[340];
			snprintf(where, sizeof where, "%s: choice %d", e->where, k);
			return ouro_refail(rc, where);
		}
		if ((int64_t)p->kids.n > window)
			return ouro_fail(OURO_EINPUT, "%s: choice %d: the continuation has %zu tokens, more than the window of %lld",
					 e->where, k, p->kids.n, (long long)window);
	}
	return OURO_OK;
}

