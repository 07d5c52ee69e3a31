/*
 * config.c - fuzzes the config.json reader (ouro_config_load in
 * libouro/model/config.c) through an in-memory file. An accepted configuration
 * must satisfy what the loader and the forward pass rely on.
 */
#include "fuzz.h"
#include "ouro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ouro_config c;

	if (ouro_config_load(&c, fuzz_path(data, size)) != OURO_OK)
		return 0;
	FUZZ_ASSERT(c.vocab_size >= 1 && c.hidden_size >= 1 && c.intermediate_size >= 1);
	FUZZ_ASSERT(c.num_hidden_layers >= 1 && c.num_attention_heads >= 1);
	FUZZ_ASSERT(c.num_key_value_heads >= 1 &&
		    c.num_attention_heads % c.num_key_value_heads == 0);
	FUZZ_ASSERT(c.head_dim >= 2 && c.head_dim % 2 == 0);
	FUZZ_ASSERT(c.max_position_embeddings >= 1 && c.total_ut_steps >= 1);
	FUZZ_ASSERT(c.bos_token_id < c.vocab_size && c.eos_token_id < c.vocab_size &&
		    c.pad_token_id < c.vocab_size);
	FUZZ_ASSERT(c.rope_theta > 0 && c.rms_norm_eps >= 0);
	FUZZ_ASSERT(c.early_exit_threshold >= 0 && c.early_exit_threshold <= 1);
	return 0;
}
