/*
 * hf_load.c - reads a Hugging Face tokenizer.json: the JSON root, whose
 * sections each step's file loads (hf.h), and what those loaders share:
 * Sequence components, {"String"} / {"Regex"} patterns and string copies.
 * Also frees the handle.
 *
 * Regex patterns go to PCRE2, with \s and \S rewritten to the reference
 * engine's White_Space set.
 */
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "hf.h"

char *tok_hf_memdup(const char *s, size_t n)
{
	char *p = malloc(n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = 0;
	}
	return p;
}

/* ---- patterns ----------------------------------------------------------- */

/* The reference engine's \s: the White_Space code points. */
#define WS_CLASS "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}" \
		 "\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static int compile_re(pcre2_code **out, const char *pat, size_t len,
		      int literal, const char *what)
{
	struct ouro_bytes b = {0};
	int err, in_class = 0, rc = OURO_OK;
	PCRE2_SIZE off;

	if (literal) {
		rc = ouro_bytes_add(&b, pat, len);
	} else {
		for (size_t i = 0; i < len && rc == OURO_OK; i++) {
			char c = pat[i];
			if (c == '\\' && i + 1 < len) {
				char d = pat[i + 1];
				if (d == 's')
					rc = ouro_bytes_add(&b, in_class ? WS_CLASS : "[" WS_CLASS "]",
							    strlen(in_class ? WS_CLASS : "[" WS_CLASS "]"));
				else if (d == 'S' && !in_class)
					rc = ouro_bytes_add(&b, "[^" WS_CLASS "]",
							    strlen("[^" WS_CLASS "]"));
				else
					rc = ouro_bytes_add(&b, pat + i, 2);
				i++;
				continue;
			}
			if (c == '[' && !in_class) {
				in_class = 1;
				rc = ouro_bytes_add(&b, &c, 1);
				/* a ']' right after '[' or '[^' is literal */
				if (i + 1 < len && pat[i + 1] == '^')
					rc = ouro_bytes_add(&b, pat + ++i, 1);
				if (i + 1 < len && pat[i + 1] == ']')
					rc = ouro_bytes_add(&b, pat + ++i, 1);
				continue;
			}
			if (c == ']' && in_class)
				in_class = 0;
			rc = ouro_bytes_add(&b, &c, 1);
		}
	}
	if (rc) {
		ouro_bytes_free(&b);
		return rc;
	}
	*out = pcre2_compile((PCRE2_SPTR)(b.p ? b.p : ""), b.n,
			     PCRE2_UTF | PCRE2_NO_UTF_CHECK |
			     (literal ? PCRE2_LITERAL : PCRE2_UCP), &err, &off, NULL);
	ouro_bytes_free(&b);
	if (!*out) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(err, msg, sizeof msg);
		return ouro_fail(OURO_EMODEL, "%s: regex %.*s: %s", what,
				 (int)(len > 200 ? 200 : len), pat, (char *)msg);
	}
	pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);   /* falls back if it fails */
	return OURO_OK;
}

int tok_hf_load_pattern(json_t *pat, pcre2_code **re, char **lit, size_t *litlen,
			const char *what)
{
	json_t *s = json_object_get(pat, "String");
	json_t *r = json_object_get(pat, "Regex");

	if (json_is_string(s)) {
		if (lit) {
			*litlen = json_string_length(s);
			*lit = tok_hf_memdup(json_string_value(s), *litlen);
			return *lit ? OURO_OK : ouro_fail(OURO_ENOMEM, "out of memory");
		}
		return compile_re(re, json_string_value(s), json_string_length(s), 1, what);
	}
	if (json_is_string(r))
		return compile_re(re, json_string_value(r), json_string_length(r), 0, what);
	return ouro_fail(OURO_EMODEL, "%s: pattern is neither {\"String\": ...} nor {\"Regex\": ...}", what);
}

int tok_hf_load_component(struct tok_hf *t, json_t *n, const char *what, const char *kind,
			  const char *key, int strict,
			  int (*load)(struct tok_hf *, json_t *, const char *), const char **type)
{
	json_t *list, *e;
	size_t i;
	int rc;

	*type = NULL;
	if (!n || json_is_null(n))
		return OURO_OK;
	if (!(*type = hf_jstr(n, "type")))
		return ouro_fail(OURO_EMODEL, "%s: %s without a type", what, kind);
	if (strcmp(*type, "Sequence"))
		return OURO_OK;
	*type = NULL;
	list = json_object_get(n, key);
	if (strict && !json_is_array(list))
		return ouro_fail(OURO_EMODEL, "%s: Sequence %s without a %s list", what, kind, key);
	json_array_foreach(list, i, e)
		if ((rc = load(t, e, what)))
			return rc;
	return OURO_OK;
}

/* ---- the handle --------------------------------------------------------- */

void tok_hf_free(struct tok_hf *t)
{
	if (!t)
		return;
	tok_strmap_free(&t->vocab);
	tok_strmap_free(&t->raw);
	tok_strmap_free(&t->added_map);
	tok_pairmap_free(&t->merges);
	free(t->id_str);
	free(t->id_len);
	free(t->id_special);
	free(t->prefix);
	free(t->suffix);
	for (int i = 0; i < t->nadded; i++)
		free(t->added[i].content);
	free(t->added);
	free(t->raw_match.tok);
	free(t->norm_match.tok);
	for (int i = 0; i < t->nnorm; i++) {
		free(t->norm[i].a);
		free(t->norm[i].b);
		pcre2_code_free(t->norm[i].re);
	}
	free(t->norm);
	for (int i = 0; i < t->npre; i++) {
		pcre2_match_data_free(t->pre[i].md);
		pcre2_code_free(t->pre[i].re);
	}
	free(t->pre);
	free(t->post_pre);
	free(t->post_suf);
	free(t->pv[0].v);
	free(t->pv[1].v);
	ouro_bytes_free(&t->nbuf[0]);
	ouro_bytes_free(&t->nbuf[1]);
	free(t->syms);
	free(t->heap);
	tok_hf_arena_free(&t->arena);
	free(t->cache);
	free(t);
}

int tok_hf_load(struct tok_hf **out, const char *path, const char *buf, size_t len)
{
	json_error_t jerr;
	json_t *root;
	struct tok_hf *t;
	int rc;

	*out = NULL;
	root = json_loadb(buf, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
	if (!root)
		return ouro_fail(OURO_EMODEL, "%s: not a tokenizer.json (invalid JSON at line %d: %s)",
				 path, jerr.line, jerr.text);
	if (!json_is_object(root)) {
		static const char *what[] = {
			[JSON_ARRAY] = "an array", [JSON_STRING] = "a string", [JSON_INTEGER] = "a number",
			[JSON_REAL] = "a number", [JSON_TRUE] = "true", [JSON_FALSE] = "false",
			[JSON_NULL] = "null",
		};
		rc = ouro_fail(OURO_EMODEL, "%s: not a tokenizer.json (the JSON is %s, not an object)",
			       path, what[json_typeof(root)]);
		json_decref(root);
		return rc;
	}
	json_t *model = json_object_get(root, "model");
	if (!json_is_object(model)) {
		json_decref(root);
		return ouro_fail(OURO_EMODEL, "%s: no model object", path);
	}
	t = calloc(1, sizeof *t);
	if (!t) {
		json_decref(root);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	t->unk_id = -1;
	/* the pre-tokenizer decides whether the model is byte-level, which
	 * the vocabulary's keys depend on: load it first */
	rc = tok_hf_load_normalizer(t, json_object_get(root, "normalizer"), path);
	if (!rc)
		rc = tok_hf_load_pretokenizer(t, json_object_get(root, "pre_tokenizer"), path);
	if (!rc) {
		rc = tok_hf_load_model(t, model, json_object_get(root, "added_tokens"), path);
	}
	if (!rc)
		rc = tok_hf_load_added(t, json_object_get(root, "added_tokens"), path);
	if (!rc)
		rc = tok_hf_load_post(t, json_object_get(root, "post_processor"), path);
	if (!rc)
		rc = tok_hf_load_decoder(t, json_object_get(root, "decoder"), path);
	json_decref(root);
	if (!rc && t->byte_level)
		tok_hf_byte_level_initial(t);
	if (!rc && t->byte_level && !t->prefix && !t->suffix) {
		t->cache = calloc(CACHE_SLOTS, sizeof *t->cache);
		if (!t->cache)
			rc = ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if (rc) {
		tok_hf_free(t);
		return rc;
	}
	*out = t;
	return OURO_OK;
}
