/*
 * tok_json.c - fuzzes the tokenizer.json loader (tok_hf_load in
 * libouro/tok/hf_load.c): normalizers, pre-tokenizers, the BPE model,
 * added tokens, decoders; then encodes and decodes with what loaded
 * (tok_common.h).
 */
#include "tok_common.h"

static int enc(void *t, const char *s, size_t n, struct ouro_ids *out)
{
	return tok_hf_encode(t, s, n, out);
}

static int dec(const void *t, const int32_t *ids, size_t n, struct ouro_bytes *out)
{
	return tok_hf_decode(t, ids, n, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = fuzz_copy(data, size, 1);
	struct tok_hf *t;

	if (tok_hf_load(&t, "fuzz", buf, size) == OURO_OK) {
		fuzz_tok_exercise(t, tok_hf_vocab_size(t), enc, dec);
		tok_hf_piece_id(t, "<|im_end|>");
		tok_hf_piece_id(t, "a");
		tok_hf_free(t);
	}
	free(buf);
	return 0;
}
