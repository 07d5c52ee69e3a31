/*
 * hf_encode.c - encoding with a Hugging Face tokenizer.json with a BPE
 * model: byte-level BPE as every Ouro checkpoint ships (SmolLM2's, GPT-2's,
 * Qwen's and Llama-3's kind) and the SentencePiece-style variants
 * (Metaspace, byte fallback, unk). Also reads the post-processor, whose
 * special tokens encoding adds.
 *
 * Encoding follows the reference pipeline step by step:
 *   1. added tokens that are not "normalized" are cut out of the raw text,
 *      leftmost-longest, honouring single_word / lstrip / rstrip
 *      (hf_added.c);
 *   2. each remaining stretch is normalised (NFC, NFKC, Lowercase,
 *      Replace, Prepend, Strip, Sequence; hf_normalize.c), then
 *      "normalized" added tokens are cut out of it;
 *   3. the pre-tokenizers split it into pieces (Digits, ByteLevel with the
 *      GPT-2 pattern, Split with a regex, WhitespaceSplit, Metaspace,
 *      Sequence; hf_pretok.c);
 *   4. each piece goes through BPE: its characters (bytes, for byte-level
 *      models) become symbols, and the adjacent pair with the lowest merge
 *      rank, leftmost on ties, is merged until none is left (bpe.c);
 *   5. the post-processor adds its special tokens (TemplateProcessing).
 *
 * Byte-level models are run on raw bytes: the vocabulary's byte-level
 * strings (byte 0x20 is "Ġ", ...) are mapped back to the bytes they stand
 * for when the file is loaded (hf_model.c), so a piece never needs
 * re-encoding and the GPT-2 pattern is matched by hand (tok_class) instead
 * of by a regex engine. Split patterns of other tokenizers go to PCRE2,
 * with \s and \S rewritten to the reference engine's White_Space set
 * (hf_load.c).
 */
#include <stdlib.h>
#include <string.h>

#include "ouro.h"
#include "hf.h"

/* ---- the post-processor ------------------------------------------------- */

/* Reads the ids a TemplateProcessing "special_tokens" entry stands for. */
static int template_ids(struct tok_hf *t, json_t *specials, const char *name,
			int32_t **ids, int *n, const char *what)
{
	json_t *st = json_object_get(json_object_get(specials, name), "ids");
	size_t i;
	json_t *e;

	if (!json_is_array(st))
		return ouro_fail(OURO_EMODEL, "%s: post_processor special token %.60s has no ids", what, name);
	json_array_foreach(st, i, e) {
		json_int_t id = json_integer_value(e);
		/* an id no token has would be encoded and then not decode */
		if (!json_is_integer(e) || id < 0 || id >= t->nids || !t->id_str[id])
			return ouro_fail(OURO_EMODEL, "%s: post_processor special token %.60s has an id that is no token's",
					 what, name);
		void *p = realloc(*ids, (size_t)(*n + 1) * sizeof **ids);
		if (!p)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		*ids = p;
		(*ids)[(*n)++] = (int32_t)id;
	}
	return OURO_OK;
}

int tok_hf_load_post(struct tok_hf *t, json_t *p, const char *what)
{
	const char *type;
	int rc;

	if ((rc = tok_hf_load_component(t, p, what, "post_processor", "processors", 0, tok_hf_load_post,
					&type)) || !type)
		return rc;
	if (!strcmp(type, "ByteLevel"))
		return OURO_OK;   /* offsets only */
	if (!strcmp(type, "TemplateProcessing")) {
		json_t *single = json_object_get(p, "single");
		json_t *specials = json_object_get(p, "special_tokens");
		size_t i;
		json_t *e;
		int seen_a = 0;
		if (!json_is_array(single))
			return ouro_fail(OURO_EMODEL, "%s: TemplateProcessing without a single template", what);
		json_array_foreach(single, i, e) {
			json_t *sp = json_object_get(e, "SpecialToken");
			if (json_object_get(e, "Sequence")) {
				seen_a = 1;
			} else if (sp) {
				const char *name = hf_jstr(sp, "id");
				if (!name)
					return ouro_fail(OURO_EMODEL, "%s: TemplateProcessing special token without an id", what);
				if ((rc = seen_a ? template_ids(t, specials, name, &t->post_suf, &t->npost_suf, what)
						 : template_ids(t, specials, name, &t->post_pre, &t->npost_pre, what)))
					return rc;
			} else {
				return ouro_fail(OURO_EMODEL, "%s: TemplateProcessing item is neither SpecialToken nor Sequence", what);
			}
		}
		return OURO_OK;
	}
	if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
		json_t *cls = json_object_get(p, "cls"), *sep = json_object_get(p, "sep");
		json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
		if (!json_is_integer(ci) || !json_is_integer(si) ||
		    json_integer_value(ci) < 0 || json_integer_value(ci) >= t->nids ||
		    json_integer_value(si) < 0 || json_integer_value(si) >= t->nids ||
		    !t->id_str[json_integer_value(ci)] || !t->id_str[json_integer_value(si)])
			return ouro_fail(OURO_EMODEL, "%s: %s without valid cls and sep", what, type);
		t->post_pre = malloc(sizeof *t->post_pre);
		t->post_suf = malloc(sizeof *t->post_suf);
		if (!t->post_pre || !t->post_suf)
			return ouro_fail(OURO_ENOMEM, "out of memory");
		t->post_pre[0] = (int32_t)json_integer_value(ci);
		t->post_suf[0] = (int32_t)json_integer_value(si);
		t->npost_pre = t->npost_suf = 1;
		return OURO_OK;
	}
	return ouro_fail(OURO_EMODEL, "%s: post_processor type %s is not supported", what, type);
}

/* ---- encoding ----------------------------------------------------------- */

static int encode_text(struct tok_hf *t, const char *s, size_t n, int at_start,
		       struct ouro_ids *out)
{
	struct piecevec *pv = NULL;
	int rc;

	if (n == 0)
		return OURO_OK;
	if ((rc = tok_hf_pretokenize(t, s, n, at_start, &pv)))
		return rc;
	for (size_t i = 0; i < pv->n; i++)
		if ((rc = tok_hf_bpe(t, pv->v[i].p, pv->v[i].n, out)))
			return rc;
	return OURO_OK;
}

/* Normalises one stretch between raw added tokens and encodes it. */
static int encode_segment(struct tok_hf *t, const char *s, size_t n, int at_start,
			  struct ouro_ids *out)
{
	const char *ns;
	size_t nn, pos = 0, b, e, floor = 0;
	int32_t id;
	int rc;

	if (n == 0)
		return OURO_OK;
	if ((rc = tok_hf_normalize(t, s, n, &ns, &nn)))
		return rc;
	/* the normalised text may live in a scratch buffer that the next
	 * segment reuses; this segment is done with it before that */
	while (tok_hf_next_added(&t->norm_match, ns, nn, pos, floor, &b, &e, &id)) {
		if ((rc = encode_text(t, ns + pos, b - pos, at_start && pos == 0, out)))
			return rc;
		if ((rc = ouro_ids_push(out, id)))
			return rc;
		pos = floor = e;
	}
	return encode_text(t, ns + pos, nn - pos, at_start && pos == 0, out);
}

int tok_hf_encode(struct tok_hf *t, const char *s, size_t n, struct ouro_ids *out)
{
	size_t pos = 0, b, e, floor = 0;
	int32_t id;
	int rc = OURO_OK;

	tok_hf_arena_reset(&t->arena);
	for (int i = 0; i < t->npost_pre && !rc; i++)
		rc = ouro_ids_push(out, t->post_pre[i]);
	while (!rc && tok_hf_next_added(&t->raw_match, s, n, pos, floor, &b, &e, &id)) {
		rc = encode_segment(t, s + pos, b - pos, pos == 0, out);
		if (!rc)
			rc = ouro_ids_push(out, id);
		pos = floor = e;
	}
	if (!rc)
		rc = encode_segment(t, s + pos, n - pos, pos == 0, out);
	for (int i = 0; i < t->npost_suf && !rc; i++)
		rc = ouro_ids_push(out, t->post_suf[i]);
	return rc;
}
