/*
 * config.c - config.json of a Hugging Face Ouro checkpoint -> struct
 * ouro_config. Every hyper-parameter comes from the file; the few that
 * Ouro's configuration class gives defaults for (num_key_value_heads,
 * head_dim, total_ut_steps, early_exit_threshold, tie_word_embeddings) take
 * those defaults when absent. Features this implementation does not
 * compute (RoPE scaling, sliding-window attention, activations other than
 * SiLU) are refused rather than silently ignored.
 */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "ouro.h"

/* Upper bounds that keep every size product well inside 64 bits. */
#define MAX_DIM   (1 << 20)
#define MAX_VOCAB (1 << 24)

static int get_int(json_t *root, const char *path, const char *key, int64_t *out,
		   int64_t def, int64_t lo, int64_t hi)
{
	json_t *v = json_object_get(root, key);

	if (!v || json_is_null(v)) {
		if (def == INT64_MIN)
			return ouro_fail(OURO_EMODEL, "%s: %s is missing", path, key);
		*out = def;
		return OURO_OK;
	}
	if (!json_is_integer(v))
		return ouro_fail(OURO_EMODEL, "%s: %s is not an integer", path, key);
	*out = json_integer_value(v);
	if (*out < lo || *out > hi)
		return ouro_fail(OURO_EMODEL, "%s: %s is %lld, expected %lld..%lld", path, key,
				 (long long)*out, (long long)lo, (long long)hi);
	return OURO_OK;
}

static int get_real(json_t *root, const char *path, const char *key, double *out,
		    double def, double lo, double hi)
{
	json_t *v = json_object_get(root, key);

	if (!v || json_is_null(v)) {
		if (isnan(def))
			return ouro_fail(OURO_EMODEL, "%s: %s is missing", path, key);
		*out = def;
		return OURO_OK;
	}
	if (!json_is_number(v))
		return ouro_fail(OURO_EMODEL, "%s: %s is not a number", path, key);
	*out = json_number_value(v);
	if (!(*out >= lo && *out <= hi))
		return ouro_fail(OURO_EMODEL, "%s: %s is %g, expected %g..%g", path, key, *out, lo, hi);
	return OURO_OK;
}

/* Refuses settings whose computation this implementation does not do. */
static int check_unsupported(json_t *root, const char *path, int64_t layers)
{
	json_t *v;
	size_t i;

	v = json_object_get(root, "model_type");
	if (!json_is_string(v) || strcmp(json_string_value(v), "ouro") != 0)
		return ouro_fail(OURO_EMODEL, "%s: model_type is %s, expected \"ouro\"", path,
				 json_is_string(v) ? json_string_value(v) : "missing");
	v = json_object_get(root, "hidden_act");
	if (v && !(json_is_string(v) && strcmp(json_string_value(v), "silu") == 0))
		return ouro_fail(OURO_EMODEL, "%s: hidden_act must be \"silu\"", path);
	v = json_object_get(root, "rope_scaling");
	if (v && !json_is_null(v))
		return ouro_fail(OURO_EMODEL, "%s: rope_scaling is not supported (must be null)", path);
	v = json_object_get(root, "use_sliding_window");
	if (v && !json_is_false(v) && !json_is_null(v))
		return ouro_fail(OURO_EMODEL, "%s: use_sliding_window is not supported (must be false)", path);
	v = json_object_get(root, "layer_types");
	if (v && !json_is_null(v)) {
		json_t *e;

		if (!json_is_array(v) || (int64_t)json_array_size(v) != layers)
			return ouro_fail(OURO_EMODEL, "%s: layer_types must list %lld layers", path,
					 (long long)layers);
		json_array_foreach(v, i, e)
			if (!json_is_string(e) || strcmp(json_string_value(e), "full_attention") != 0)
				return ouro_fail(OURO_EMODEL, "%s: layer_types[%zu] is not \"full_attention\"",
						 path, i);
	}
	return OURO_OK;
}

int ouro_config_load(struct ouro_config *c, const char *path)
{
	json_error_t jerr;
	json_t *root, *tie;
	FILE *f;
	int rc;

	memset(c, 0, sizeof *c);
	if ((rc = ouro_file_open(&f, NULL, path, OURO_EMODEL)))
		return rc;
	root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	fclose(f);
	if (!root) {
		if (jerr.line < 0 || jerr.position == 0)
			return ouro_fail(OURO_EMODEL, "%s: %s", path, jerr.text);
		return ouro_fail(OURO_EMODEL, "%s:%d: %s", path, jerr.line, jerr.text);
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return ouro_fail(OURO_EMODEL, "%s: not a JSON object", path);
	}
	if ((rc = get_int(root, path, "vocab_size", &c->vocab_size, INT64_MIN, 1, MAX_VOCAB)) ||
	    (rc = get_int(root, path, "hidden_size", &c->hidden_size, INT64_MIN, 1, MAX_DIM)) ||
	    (rc = get_int(root, path, "intermediate_size", &c->intermediate_size, INT64_MIN, 1, MAX_DIM)) ||
	    (rc = get_int(root, path, "num_hidden_layers", &c->num_hidden_layers, INT64_MIN, 1, 4096)) ||
	    (rc = get_int(root, path, "num_attention_heads", &c->num_attention_heads, INT64_MIN, 1, 4096)) ||
	    (rc = get_int(root, path, "num_key_value_heads", &c->num_key_value_heads,
			  c->num_attention_heads, 1, c->num_attention_heads)) ||
	    (rc = get_int(root, path, "head_dim", &c->head_dim,
			  c->hidden_size / c->num_attention_heads, 2, 65536)) ||
	    (rc = get_int(root, path, "max_position_embeddings", &c->max_position_embeddings,
			  INT64_MIN, 1, 1 << 24)) ||
	    (rc = get_int(root, path, "total_ut_steps", &c->total_ut_steps, 4, 1, OURO_MAX_STEPS)) ||
	    (rc = get_int(root, path, "bos_token_id", &c->bos_token_id, -1, -1, c->vocab_size - 1)) ||
	    (rc = get_int(root, path, "eos_token_id", &c->eos_token_id, -1, -1, c->vocab_size - 1)) ||
	    (rc = get_int(root, path, "pad_token_id", &c->pad_token_id, -1, -1, c->vocab_size - 1)) ||
	    (rc = get_real(root, path, "rope_theta", &c->rope_theta, NAN, 1e-3, 1e12)) ||
	    (rc = get_real(root, path, "rms_norm_eps", &c->rms_norm_eps, NAN, 0, 1)) ||
	    (rc = get_real(root, path, "early_exit_threshold", &c->early_exit_threshold, 1.0, 0, 1)) ||
	    (rc = check_unsupported(root, path, c->num_hidden_layers)))
		goto out;
	if (c->num_attention_heads % c->num_key_value_heads) {
		rc = ouro_fail(OURO_EMODEL, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld",
			       path, (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
		goto out;
	}
	/* also when head_dim defaults to hidden_size / heads, which may be 0 */
	if (c->head_dim < 2 || c->head_dim % 2 || c->num_attention_heads * c->head_dim > MAX_DIM) {
		rc = ouro_fail(OURO_EMODEL, "%s: head_dim %lld must be even, at least 2, and heads * head_dim at most %d",
			       path, (long long)c->head_dim, MAX_DIM);
		goto out;
	}
	tie = json_object_get(root, "tie_word_embeddings");
	if (tie && !json_is_boolean(tie) && !json_is_null(tie)) {
		rc = ouro_fail(OURO_EMODEL, "%s: tie_word_embeddings is not a boolean", path);
		goto out;
	}
	c->tie_word_embeddings = json_is_true(tie);
out:
	json_decref(root);
	return rc;
}
