/*
 * ouro.h - the public interface of libouro, the library behind the ouro
 * programs: tensor records and safetensors files, the model configuration,
 * the checkpoint loader and the looped forward pass.
 *
 * Conventions: functions return an enum ouro_status (OURO_OK on success)
 * and, on failure, leave a one-line message for ouro_errmsg(). Handles are
 * opaque and come in init/free pairs. Shapes are written [d0, d1, ...]
 * row-major, outermost first.
 */
#ifndef OURO_H
#define OURO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Status codes; the programs exit with these values (see ouro(7)). */
enum ouro_status {
	OURO_OK = 0,
	OURO_EINPUT = 1,   /* input data (records, ids, text) is invalid */
	OURO_EUSAGE = 2,   /* bad command line */
	OURO_EMODEL = 3,   /* model directory, config or weights invalid */
	OURO_ESYS = 4,     /* I/O error from the system */
	OURO_ENOMEM = 5,   /* a request does not fit in memory */
};

/* The message of the last failure in this thread. */
const char *ouro_errmsg(void);

/* Records a message (printf-style) and returns status; library-internal
 * code and programs that validate their own input use it alike. */
int ouro_fail(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- dtypes and tensors ------------------------------------------------ */

enum ouro_dtype {
	OURO_F32, OURO_F16, OURO_BF16, OURO_F64,
	OURO_I8, OURO_U8, OURO_I16, OURO_I32, OURO_I64, OURO_BOOL,
	OURO_NDTYPES
};

/* safetensors name ("F32", "BF16", ...) of a dtype, and back; -1 if unknown */
const char *ouro_dtype_name(enum ouro_dtype dt);
int ouro_dtype_parse(const char *name);
size_t ouro_dtype_size(enum ouro_dtype dt);

#define OURO_MAX_DIMS 8

/* A view of one tensor: data points into a mapped file or a record buffer. */
struct ouro_tensor {
	const char *name;
	enum ouro_dtype dtype;
	int ndim;
	int64_t shape[OURO_MAX_DIMS];
	const void *data;
	uint64_t nbytes;
};

int64_t ouro_tensor_numel(const struct ouro_tensor *t);

/* Converts element i..i+n of a float tensor (F32, F16, BF16) to float. */
void ouro_to_f32(float *dst, const void *src, enum ouro_dtype dt, size_t n);
/* Converts floats to F32, F16 or BF16 (round to nearest even). */
void ouro_from_f32(void *dst, const float *src, enum ouro_dtype dt, size_t n);

/* ---- safetensors files and record streams -------------------------------
 * One parser serves weight files and the record streams the programs
 * exchange: a record is a safetensors image (u64 header length, JSON
 * header, data) and a stream is records back to back (see ouro-record(5)).
 */

struct ouro_st;   /* a parsed header: tensors and string metadata */

/* Parses one safetensors image at buf[0..len). *used gets its length,
 * which may be less than len (the next record follows). `what` names the
 * source in messages. Tensor data stays in buf. */
int ouro_st_parse(struct ouro_st **out, const char *what, const void *buf,
		  uint64_t len, uint64_t *used);

/* Reads one record from f into memory it owns, each tensor's data aligned
 * to its element size (the format allows any offset; such a record is
 * copied). Returns OURO_OK with *out NULL at a clean end of stream; a
 * truncated or invalid record is OURO_EINPUT. */
int ouro_st_read(struct ouro_st **out, FILE *f, const char *what);

void ouro_st_free(struct ouro_st *st);

int ouro_st_count(const struct ouro_st *st);
const struct ouro_tensor *ouro_st_tensor(const struct ouro_st *st, int i);
const struct ouro_tensor *ouro_st_find(const struct ouro_st *st,
				       const char *name);
/* Metadata value for key, or NULL. */
const char *ouro_st_meta(const struct ouro_st *st, const char *key);
int ouro_st_meta_count(const struct ouro_st *st);
void ouro_st_meta_at(const struct ouro_st *st, int i, const char **key,
		     const char **val);

/* A record being assembled for writing; tensors are referenced, not copied. */
struct ouro_record;

struct ouro_record *ouro_record_new(void);
void ouro_record_free(struct ouro_record *r);
int ouro_record_meta(struct ouro_record *r, const char *key, const char *val);
/* Sets every metadata entry of the record `from` (NULL: none) in r. */
int ouro_record_meta_copy(struct ouro_record *r, const struct ouro_st *from);
int ouro_record_add(struct ouro_record *r, const char *name,
		    enum ouro_dtype dt, int ndim, const int64_t *shape,
		    const void *data);
/* Writes the record to f. `what` names the destination in messages. */
int ouro_record_write(const struct ouro_record *r, FILE *f, const char *what);

/* The record format version this library writes and reads. */
#define OURO_RECORD_VERSION "1"

/* ---- program input and output -----------------------------------------
 * Inputs are files or "-" for stdin, holding either a record stream or
 * text; the first bytes tell which (a record has bytes 4..7 zero and
 * byte 8 '{', which text never has). Outputs are stdout or files written
 * atomically: a temporary file in the same directory, renamed over the
 * destination only when everything was written.
 */

enum ouro_input_kind { OURO_INPUT_EMPTY, OURO_INPUT_TEXT, OURO_INPUT_RECORDS };

/* Opens path ("-": stdin) for reading from its start and classifies it. */
int ouro_input_open(FILE **f, enum ouro_input_kind *kind, const char *path);
void ouro_input_close(FILE *f);
/* The name of path in messages ("stdin" for "-"). */
const char *ouro_input_name(const char *path);

/* Token sequences from records (tensor "tokens", I32 [n]) or text lines
 * (decimal ids separated by blanks, one sequence per line). */
struct ouro_seq_reader;

int ouro_seq_open(struct ouro_seq_reader **r, const char *path);
/* The next sequence in *ids [*n], valid until the next call; *rec is the
 * record it came from (NULL for text). At the end of input *ids is NULL. */
int ouro_seq_next(struct ouro_seq_reader *r, const int32_t **ids, int64_t *n,
		  const struct ouro_st **rec);
/* Where the last sequence came from, for messages: "FILE: line N" or
 * "FILE: record N". */
const char *ouro_seq_where(struct ouro_seq_reader *r);
void ouro_seq_close(struct ouro_seq_reader *r);

struct ouro_output;

/* Opens path ("-" or NULL: stdout) for writing; *f is the stream. */
int ouro_output_open(struct ouro_output **o, FILE **f, const char *path);
/* Flushes and closes; a file is renamed into place. Frees o. */
int ouro_output_commit(struct ouro_output *o);
/* Discards what was written (a file's temporary is removed). Frees o. */
void ouro_output_abort(struct ouro_output *o);
/* Removes the temporaries of every output still open, and nothing else:
 * async-signal-safe, for a program's handler of the signals that stop it
 * (the outputs are not usable afterwards). */
void ouro_output_cleanup(void);

/* Parses a whole decimal integer in lo..hi; OURO_EUSAGE names `what`. */
int ouro_parse_int(const char *s, long lo, long hi, long *out, const char *what);

/* ---- model configuration ----------------------------------------------- */

struct ouro_config {
	int64_t vocab_size;
	int64_t hidden_size;           /* D */
	int64_t intermediate_size;     /* F */
	int64_t num_hidden_layers;     /* N */
	int64_t num_attention_heads;
	int64_t num_key_value_heads;
	int64_t head_dim;
	int64_t max_position_embeddings;
	int64_t total_ut_steps;        /* T */
	double rope_theta;
	double rms_norm_eps;
	double early_exit_threshold;
	int tie_word_embeddings;
	int64_t bos_token_id, eos_token_id, pad_token_id;   /* -1 if absent */
};

/* Reads and validates a config.json file. */
int ouro_config_load(struct ouro_config *c, const char *path);

/* ---- model ------------------------------------------------------------- */

struct ouro_model;

/* Loads a Hugging Face Ouro directory: config.json and model.safetensors
 * or model.safetensors.index.json with its shards. Weights are mapped and
 * used in their stored dtype. */
int ouro_model_load(struct ouro_model **out, const char *dir);
void ouro_model_free(struct ouro_model *m);
const struct ouro_config *ouro_model_config(const struct ouro_model *m);
const char *ouro_model_dir(const struct ouro_model *m);

/* Quantized weight formats (see ouro-quantize(1)). */
enum ouro_quant {
	OURO_QUANT_Q8_0,   /* blocks of 32 int8 with an F16 scale: 8.5 bits a weight */
	OURO_QUANT_Q4,     /* super-blocks of 256 4-bit values with 6-bit sub-block
			    * scales and minima: 4.5 bits a weight */
};

/* Writes the model's weights to out as one safetensors file with every
 * layer matrix quantized to `type` and lm_head to q8_0; other tensors
 * are copied unchanged. */
int ouro_model_quantize(const struct ouro_model *m, FILE *out, enum ouro_quant type,
			const char *what);

/* The directory to use: dir if not NULL, else $OURO_MODEL, else the
 * bundled default model. */
const char *ouro_model_path(const char *dir);

/* ---- forward pass ------------------------------------------------------ */

/* Runs the looped forward pass over ids[0..n) (one sequence, positions
 * from 0) for `steps` loops and stores the normed state after loop t in
 * hidden[t]: hidden is [steps, n, D] float32. */
int ouro_forward(struct ouro_model *m, const int32_t *ids, int64_t n,
		 int steps, float *hidden);

/* logits [n, V] = h [n, D] * lm_head^T (no norm: h is already normed). */
int ouro_logits(struct ouro_model *m, const float *h, int64_t n, float *logits);

/* Sets the number of threads used by the numerical kernels (0: all cores). */
void ouro_set_threads(int n);

#include "gate.h"
#include "sampler.h"

/* ---- generation ---------------------------------------------------------
 * A prompt is prefilled (all loops, every KV slot), then tokens are fed
 * one at a time; each runs loops until its exit rule fires. See decode.c
 * for the KV policies. */

enum ouro_kv_policy { OURO_KV_FULL, OURO_KV_LAST, OURO_KV_MEAN };

struct ouro_gen_opts {
	int steps;                      /* T */
	enum ouro_kv_policy kv;
	struct ouro_exit_rule rule;
	const struct ouro_gate *gate;   /* NULL: the model's own */
	int64_t capacity;               /* most tokens, prompt included */
};

struct ouro_gen_stats {
	uint64_t prefill_tokens;
	uint64_t decoded_tokens;
	uint64_t decoded_loops;         /* loops run by decoded tokens */
	uint64_t layer_evals;           /* layer passes of decoded tokens */
	uint64_t kv_bytes;              /* the cache's size */
};

struct ouro_gen;

int ouro_gen_new(struct ouro_gen **g, struct ouro_model *m, const struct ouro_gen_opts *o);
void ouro_gen_free(struct ouro_gen *g);
/* Runs the prompt ids [n]; h [D] gets the state the last token exits with
 * (the input of lm_head) and *exit_step its loop. */
int ouro_gen_prefill(struct ouro_gen *g, const int32_t *ids, int64_t n, float *h,
		     int *exit_step);
/* Feeds the next token; h and *exit_step as for the prefill. */
int ouro_gen_step(struct ouro_gen *g, int32_t id, float *h, int *exit_step);
const struct ouro_gen_stats *ouro_gen_stats(const struct ouro_gen *g);

/* ---- NumPy export ------------------------------------------------------
 * .npy files and .npz archives of tensors (npy.c); see export.h. */

#include "export.h"

#endif
