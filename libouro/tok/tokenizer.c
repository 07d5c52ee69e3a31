/*
 * tokenizer.c - the one tokenizer handle the programs use: reads a
 * tokenizer file, decides its kind (from its name, tokenizer.json or a
 * SentencePiece .model, else from its first byte), and passes encode and
 * decode on to the tokenizer.json files (hf.h) or spm.c. Also the ChatML
 * prompt of the Ouro chat models (ouro-model.md section 7), and the text a
 * generation has added to its prompt, cut at a stop string.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ouro.h"
#include "tok_internal.h"

struct ouro_tok {
	enum ouro_tok_kind kind;
	struct tok_hf *hf;
	struct tok_spm *spm;
};

/* Tokenizer files are a few MB; a GiB is surely not one. */
#define TOK_FILE_MAX (1u << 30)

static int read_file(const char *path, char **buf, size_t *len)
{
	uint64_t size;
	FILE *f;
	char *p;
	int rc;

	*buf = NULL;
	if ((rc = ouro_file_open(&f, &size, path, OURO_EMODEL)))
		return rc;
	if (size > TOK_FILE_MAX) {
		fclose(f);
		return ouro_fail(OURO_EMODEL, "%s: %llu bytes, too large for a tokenizer file",
				 path, (unsigned long long)size);
	}
	p = malloc((size_t)size + 1);
	if (!p) {
		fclose(f);
		return ouro_fail(OURO_ENOMEM, "%s: out of memory", path);
	}
	*len = fread(p, 1, (size_t)size, f);
	if (ferror(f) || *len != (size_t)size) {
		int e = errno;
		free(p);
		fclose(f);
		return ouro_fail(OURO_ESYS, "%s: read error: %s", path, strerror(e));
	}
	fclose(f);
	p[*len] = 0;
	*buf = p;
	return OURO_OK;
}

/* The format of the tokenizer file path holding buf[0..len): by its name
 * (.json, .model), else JSON if the first non-blank byte opens an object
 * or an array. */
static enum ouro_tok_kind kind_of(const char *path, const char *buf, size_t len)
{
	size_t n = strlen(path), i = 0;

	if (n >= 5 && strcmp(path + n - 5, ".json") == 0)
		return OURO_TOK_HF;
	if (n >= 6 && strcmp(path + n - 6, ".model") == 0)
		return OURO_TOK_SPM;
	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
		i++;
	return i < len && (buf[i] == '{' || buf[i] == '[') ? OURO_TOK_HF : OURO_TOK_SPM;
}

int ouro_tok_load(struct ouro_tok **out, const char *path)
{
	struct ouro_tok *tok;
	char *buf;
	size_t len = 0;
	int rc;

	*out = NULL;
	if ((rc = read_file(path, &buf, &len)))
		return rc;
	tok = calloc(1, sizeof *tok);
	if (!tok) {
		free(buf);
		return ouro_fail(OURO_ENOMEM, "out of memory");
	}
	if (kind_of(path, buf, len) == OURO_TOK_HF) {
		tok->kind = OURO_TOK_HF;
		rc = tok_hf_load(&tok->hf, path, buf, len);
	} else {
		tok->kind = OURO_TOK_SPM;
		rc = tok_spm_load(&tok->spm, path, buf, len);
	}
	free(buf);
	if (rc) {
		free(tok);
		return rc;
	}
	*out = tok;
	return OURO_OK;
}

int ouro_tok_load_dir(struct ouro_tok **out, const char *dir)
{
	static const char *names[] = {"tokenizer.json", "tokenizer.model"};
	char path[4096];
	struct stat st;

	*out = NULL;
	for (int i = 0; i < 2; i++) {
		if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path)
			return ouro_fail(OURO_EMODEL, "%s: path too long", dir);
		if (stat(path, &st) == 0)
			return ouro_tok_load(out, path);
		if (errno != ENOENT)
			return ouro_fail(OURO_EMODEL, "%s: %s", path, strerror(errno));
	}
	return ouro_fail(OURO_EMODEL, "%s: no tokenizer.json or tokenizer.model", dir);
}

void ouro_tok_free(struct ouro_tok *tok)
{
	if (!tok)
		return;
	tok_hf_free(tok->hf);
	tok_spm_free(tok->spm);
	free(tok);
}

enum ouro_tok_kind ouro_tok_kind(const struct ouro_tok *tok)
{
	return tok->kind;
}

int64_t ouro_tok_vocab_size(const struct ouro_tok *tok)
{
	return tok->hf ? tok_hf_vocab_size(tok->hf) : tok_spm_vocab_size(tok->spm);
}

int32_t ouro_tok_piece_id(const struct ouro_tok *tok, const char *piece)
{
	return tok->hf ? tok_hf_piece_id(tok->hf, piece) : tok_spm_piece_id(tok->spm, piece);
}

int ouro_tok_encode(struct ouro_tok *tok, const char *text, size_t len,
		    struct ouro_ids *out)
{
	size_t bad = tok_utf8_check(text, len);

	if (bad < len)
		return ouro_fail(OURO_EINPUT, "invalid UTF-8 at byte %zu (0x%02x)",
				 bad, (unsigned char)text[bad]);
	return tok->hf ? tok_hf_encode(tok->hf, text, len, out)
		       : tok_spm_encode(tok->spm, text, len, out);
}

int ouro_tok_decode(const struct ouro_tok *tok, const int32_t *ids, size_t n,
		    struct ouro_bytes *out)
{
	return tok->hf ? tok_hf_decode(tok->hf, ids, n, out)
		       : tok_spm_decode(tok->spm, ids, n, out);
}

int ouro_tok_decode_after(const struct ouro_tok *tok, const int32_t *ids, size_t n, size_t skip,
			  char *const *stop, int nstop, struct ouro_bytes *out, int *stopped)
{
	struct ouro_bytes b = {0};
	char *first = NULL;
	int rc;

	out->n = 0;
	*stopped = 0;
	if (!(rc = ouro_tok_decode(tok, ids, n, &b)) && b.n > skip &&
	    ouro_bytes_add(out, b.p + skip, b.n - skip))
		rc = ouro_fail(OURO_ENOMEM, "out of memory");
	ouro_bytes_free(&b);
	for (int i = 0; !rc && i < nstop; i++) {
		char *at = memmem(out->p ? out->p : "", out->n, stop[i], strlen(stop[i]));
		if (at && (!first || at < first))
			first = at;
	}
	if (first) {
		out->n = (size_t)(first - out->p);
		*stopped = 1;
	}
	return rc;
}

int ouro_tok_chat(struct ouro_bytes *out, const char *system,
		  const char *user, size_t user_len, int think)
{
	int rc = OURO_OK;

	if (!system)
		system = "You are a helpful assistant.";
#define ADD(s, n) do { if (!rc) rc = ouro_bytes_add(out, (s), (n)); } while (0)
#define ADDS(s) ADD((s), strlen(s))
	{
		ADDS("<|im_start|>system\n");
		ADDS(system);
		ADDS("<|im_end|>\n");
	}
	ADDS("<|im_start|>user\n");
	ADD(user, user_len);
	ADDS("<|im_end|>\n<|im_start|>assistant\n");
	if (think)
		ADDS("<think>\n");
#undef ADD
#undef ADDS
	return rc;
}
