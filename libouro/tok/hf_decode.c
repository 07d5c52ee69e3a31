/*
 * hf_decode.c - the decoders of a tokenizer.json (ByteLevel,
 * ByteFallback, Metaspace, Replace "▁" -> " ", Strip, and Sequences of
 * them): reading them and turning ids back into the bytes they stand for.
 */
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "hf.h"

/* ---- reading ------------------------------------------------------------ */

int tok_hf_load_decoder(struct tok_hf *t, json_t *d, const char *what)
{
	const char *type;
	int rc;

	if ((rc = tok_hf_load_component(t, d, what, "decoder", "decoders", 0, tok_hf_load_decoder,
					&type)) || !type)
		return rc;
	if (!strcmp(type, "ByteLevel")) {
		t->dec_bytelevel = 1;
	} else if (!strcmp(type, "ByteFallback")) {
		t->dec_bytefallback = 1;
	} else if (!strcmp(type, "Metaspace")) {
		const char *r = hf_jstr(d, "replacement");
		const char *scheme = hf_jstr(d, "prepend_scheme");
		if (r && strlen(r) <= 4) {
			t->dec_repl_len = strlen(r);
			memcpy(t->dec_repl, r, t->dec_repl_len);
		}
		t->dec_metaspace = 1;
		t->dec_strip_first = scheme ? strcmp(scheme, "never") != 0 : hf_jbool(d, "add_prefix_space", 1);
	} else if (!strcmp(type, "Replace")) {
		/* the SentencePiece-style "▁" -> " " */
		const char *pat = hf_jstr(json_object_get(d, "pattern"), "String");
		if (pat && strlen(pat) <= 4 && !strcmp(hf_jstr(d, "content") ? hf_jstr(d, "content") : "", " ")) {
			t->dec_repl_len = strlen(pat);
			memcpy(t->dec_repl, pat, t->dec_repl_len);
			t->dec_metaspace = 1;
		}
	} else if (!strcmp(type, "Strip")) {
		json_t *start = json_object_get(d, "start");
		if (json_integer_value(start) > 0)
			t->dec_strip_first = 1;
	}
	/* Fuse and others change nothing in the bytes */
	return OURO_OK;
}

/* ---- decoding ----------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tok_hf_decode(const struct tok_hf *t, const int32_t *ids, size_t n,
		  struct ouro_bytes *out)
{
	size_t start = out->n;
	int rc = OURO_OK;

	for (size_t i = 0; i < n && !rc; i++) {
		int32_t id = ids[i];
		if (id < 0 || id >= t->nids || !t->id_str[id])
			return ouro_fail(OURO_EINPUT, "token id %d is out of range [0, %d)", id, t->nids);
		const char *s = t->id_str[id];
		size_t l = t->id_len[id];
		if (t->id_special[id] && t->dec_bytelevel) {
			/* added tokens go through the byte-level decoder too: a
			 * text of alphabet characters stands for its bytes, any
			 * other is its own UTF-8 */
			char *tmp = malloc(l + 1);
			long bl = tmp ? tok_hf_byte_level_decode(s, l, tmp) : -1;
			rc = bl >= 0 ? ouro_bytes_add(out, tmp, (size_t)bl) : ouro_bytes_add(out, s, l);
			free(tmp);
			continue;
		}
		if (t->id_special[id] || t->byte_level) {
			/* raw bytes: added tokens, and byte-level tokens, which
			 * were mapped back to bytes when loaded */
			rc = ouro_bytes_add(out, s, l);
			continue;
		}
		if (t->dec_bytefallback && l == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' &&
		    s[5] == '>' && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
			char c = (char)(hexval(s[3]) * 16 + hexval(s[4]));
			rc = ouro_bytes_add(out, &c, 1);
			continue;
		}
		if (t->dec_metaspace && t->dec_repl_len) {
			size_t last = 0;
			for (size_t k = 0; k + t->dec_repl_len <= l && !rc; k++) {
				if (!memcmp(s + k, t->dec_repl, t->dec_repl_len)) {
					rc = ouro_bytes_add(out, s + last, k - last);
					if (!rc)
						rc = ouro_bytes_add(out, " ", 1);
					k += t->dec_repl_len - 1;
					last = k + 1;
				}
			}
			if (!rc)
				rc = ouro_bytes_add(out, s + last, l - last);
		} else {
			rc = ouro_bytes_add(out, s, l);
		}
	}
	if (!rc && t->dec_strip_first && out->n > start && out->p[start] == ' ') {
		memmove(out->p + start, out->p + start + 1, out->n - start - 1);
		out->n--;
		out->p[out->n] = 0;
	}
	return rc;
}
