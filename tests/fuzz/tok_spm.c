/*
 * tok_spm.c - fuzzes the SentencePiece .model loader (tok_spm_load in
 * libouro/tok/spm.c: the protobuf reader, the normalizer spec and its
 * precompiled character map, the pieces); then encodes and decodes with
 * what loaded (tok_common.h).
 */
#include "tok_common.h"

static int enc(void *t, const char *s, size_t n, struct ouro_ids *out)
{
	return tok_spm_encode(t, s, n, out);
}

static int dec(const void *t, const int32_t *ids, size_t n, struct ouro_bytes *out)
{
	return tok_spm_decode(t, ids, n, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fuzz_copy(data, size, 0);
	struct tok_spm *t;

	if (tok_spm_load(&t, "fuzz", buf, size) == OURO_OK) {
		fuzz_tok_exercise(t, tok_spm_vocab_size(t), enc, dec);
		tok_spm_piece_id(t, "<unk>");
		tok_spm_piece_id(t, "\xE2\x96\x81");
		tok_spm_free(t);
	}
	free(buf);
	return 0;
}
