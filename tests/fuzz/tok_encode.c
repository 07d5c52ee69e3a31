/*
 * tok_encode.c - fuzzes encoding and decoding on arbitrary bytes with the
 * real tokenizers: the bundled model's tokenizer.json (byte-level BPE)
 * and SentencePiece models of tests/tokenizer/spm/ (unigram and BPE,
 * NFKC, byte fallback). The first byte picks the tokenizer and what to
 * do with the rest:
 *   encode   the rest as text (invalid UTF-8 is refused; then its valid
 *            prefix is encoded), then the ids decoded again;
 *   decode   the rest as little-endian 32-bit ids, some outside the
 *            vocabulary (refused);
 *   request  the rest split at its first 0x01 byte into the context and
 *            continuation of an lm-evaluation-harness request
 *            (ouro_request_encode in libouro/eval/eval.c), after a ChatML wrap.
 */
#include <string.h>

#include "eval.h"
#include "fuzz.h"
#include "ouro.h"
#include "tok/tok_internal.h"
#include "tokenizer.h"

static const char *const files[] = {
	FUZZ_ROOT "/models/ouro-fixture/tokenizer.json",
	FUZZ_ROOT "/tests/tokenizer/spm/uni-nfkc.model",
	FUZZ_ROOT "/tests/tokenizer/spm/bpe-bf-id.model",
	FUZZ_ROOT "/tests/tokenizer/spm/uni-bf-id.model",
	FUZZ_ROOT "/tests/tokenizer/spm/bpe-suffix.model",
};
#define NTOK (int)(sizeof files / sizeof *files)
static struct ouro_tok *toks[NTOK];

static struct ouro_tok *get(int k)
{
	if (!toks[k] && ouro_tok_load(&toks[k], files[k])) {
		fprintf(stderr, "tok_encode: %s\n", ouro_errmsg());
		abort();
	}
	return toks[k];
}

static void encode(struct ouro_tok *tok, const char *s, size_t n)
{
	struct ouro_ids ids = {0};
	struct ouro_bytes out = {0};
	int64_t V = ouro_tok_vocab_size(tok);
	size_t valid = tok_utf8_check(s, n);

	if (valid < n) {
		FUZZ_ASSERT(ouro_tok_encode(tok, s, n, &ids) == OURO_EINPUT);
		n = valid;
	}
	ids.n = 0;
	FUZZ_ASSERT(ouro_tok_encode(tok, s, n, &ids) == OURO_OK);
	for (size_t i = 0; i < ids.n; i++)
		FUZZ_ASSERT(ids.v[i] >= 0 && ids.v[i] < V);
	FUZZ_ASSERT(ouro_tok_decode(tok, ids.v, ids.n, &out) == OURO_OK);
	fuzz_touch(out.p, out.n);
	ouro_ids_free(&ids);
	ouro_bytes_free(&out);
}

static void decode(struct ouro_tok *tok, const unsigned char *p, size_t n)
{
	struct ouro_bytes out = {0};
	int64_t V = ouro_tok_vocab_size(tok);
	size_t nids = n / 4;
	int32_t *ids = malloc(nids ? nids * sizeof *ids : 1);
	int bad = 0;

	FUZZ_ASSERT(ids);
	for (size_t i = 0; i < nids; i++) {
		uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
			     (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
		/* mostly in range, the top bit asks for an id outside it */
		ids[i] = u >> 31 ? (int32_t)u : (int32_t)(u % (uint32_t)V);
		bad |= ids[i] < 0 || ids[i] >= V;
	}
	int rc = ouro_tok_decode(tok, ids, nids, &out);
	if (bad)
		FUZZ_ASSERT(rc == OURO_EINPUT);
	else if (rc == OURO_OK)
		fuzz_touch(out.p, out.n);
	free(ids);
	ouro_bytes_free(&out);
}

static void request(struct ouro_tok *tok, const char *s, size_t n)
{
	const char *sep = memchr(s, 1, n);
	size_t clen = sep ? (size_t)(sep - s) : n / 2;
	const char *cont = sep ? sep + 1 : s + clen;
	size_t nlen = n - clen - (sep != NULL);
	struct ouro_ids ci = {0}, ki = {0};
	struct ouro_bytes chat = {0};

	if (ouro_request_encode(tok, s, clen, cont, nlen, 0, &ci, &ki) == OURO_OK) {
		FUZZ_ASSERT(ci.n >= 1 && ki.n >= 1);
		fuzz_touch(ci.v, ci.n * sizeof *ci.v);
		fuzz_touch(ki.v, ki.n * sizeof *ki.v);
	}
	FUZZ_ASSERT(ouro_tok_chat(&chat, NULL, s, clen, clen & 1) == OURO_OK);
	if (tok_utf8_check(chat.p, chat.n) == chat.n) {
		ci.n = 0;
		FUZZ_ASSERT(ouro_tok_encode(tok, chat.p, chat.n, &ci) == OURO_OK);
	}
	ouro_ids_free(&ci);
	ouro_ids_free(&ki);
	ouro_bytes_free(&chat);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct ouro_tok *tok = get(data[0] % NTOK);
	char *rest = fuzz_copy(data + 1, size - 1, 0);

	switch (data[0] / NTOK % 3) {
	case 0: encode(tok, rest, size - 1); break;
	case 1: decode(tok, (const unsigned char *)rest, size - 1); break;
	case 2: request(tok, rest, size - 1); break;
	}
	free(rest);
	return 0;
}
