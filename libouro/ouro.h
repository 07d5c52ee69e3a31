/*
 * ouro.h - the public interface of libouro, the library behind the ouro
 * programs: tensor records and safetensors files, the model configuration,
 * the checkpoint loader and the looped forward pass.
 *
 * Conventions: functions return an enum ouro_status (OURO_OK on success)
 * and, on failure, leave a one-line message for ouro_errmsg(). Handles are
 * opaque and come in init/free pairs. Shapes are written [d0, d1, ...]
 * row-major, outermost first.
 *
 * The interface is in parts, each a header of its own that this one
 * includes: gate.h (the exit gate and the exit rules), sampler.h (logits
 * to the next token), tokenizer.h (text <-> ids) and export.h (NumPy
 * files). eval.h, the pieces of ouro-eval, builds on this header and on
 * jansson; include it beside ouro.h. The code behind them lives in the
 * library's folders: core/ (messages, dtypes, files, safetensors, the
 * record schema, NumPy export), model/ (configuration, checkpoint, the
 * forward pass, the gate, gate training, the sampler, quantization),
 * kernels/ (matrix products, norms, the thread pool), engine/ (the batch
 * engine and its KV blocks), tok/ (the tokenizers) and eval/.
 */
#ifndef OURO_H
#define OURO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "export.h"
#include "gate.h"
#include "sampler.h"
#include "tokenizer.h"

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
/* Fails again with status: `where: ` put before the last message. */
int ouro_refail(int status, const char *where);

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

/* ---- the record schema between programs (schema.c) ---------------------
 * The loop-axis tensor `hidden` [K, n, D] holds K of the T loops a
 * producer ran: row k is the state after loop step[k], as metadata
 * ouro.hidden_steps lists them (ouro.steps gives T); without them the rows
 * are loops 0..K-1 of K. */

/* The most loops a run may have, everywhere. */
#define OURO_MAX_STEPS 256

/* Checks that t is a float state tensor (F32, BF16 or F16) of ndim
 * dimensions, [lead..., D]: each lead[i] >= 0 (lead may be NULL) and D >= 0
 * must match, -1 matches any; every dimension at least 1. `model` names the
 * model whose hidden_size D is, `where` the record, in messages. */
int ouro_state_check(const struct ouro_tensor *t, int ndim, const int64_t *lead, int64_t D,
		     const char *model, const char *where);

struct ouro_hidden {
	const struct ouro_tensor *t;   /* hidden [K, n, D] */
	int64_t K;
	int total;                     /* T: the loops the producer ran */
	int step[OURO_MAX_STEPS];      /* [K] the loop of each row, increasing */
};

/* Finds and validates rec's `hidden` and its step metadata; n and D as
 * for ouro_state_check ([K, n, D], -1: any). */
int ouro_hidden_find(struct ouro_hidden *h, const struct ouro_st *rec, int64_t n, int64_t D,
		     const char *model, const char *where);
/* Fails unless h holds every loop 0..T-1. */
int ouro_hidden_complete(const struct ouro_hidden *h, const char *where);
/* The row of h holding loop `step` (-1: the last row). */
int ouro_hidden_row(const struct ouro_hidden *h, long step, const char *where, int64_t *row);
/* Sets ouro.steps (total) and ouro.hidden_steps (steps [K]) in r. */
int ouro_hidden_meta(struct ouro_record *r, const int *steps, int K, int total);

/* ---- program input and output -----------------------------------------
 * Inputs are files or "-" for stdin, holding either a record stream or
 * text; the first bytes tell which (a record has bytes 4..7 zero and
 * byte 8 '{', which text never has); a pipe is read like a file. Outputs
 * are stdout or files written atomically: a temporary file in the same
 * directory, renamed over the destination only when everything was
 * written. /dev/stdout, /dev/stderr, /dev/fd/N and /proc/self/fd/N are
 * written through that descriptor, and an existing pipe or device (a
 * FIFO, /dev/null) in place.
 */

enum ouro_input_kind { OURO_INPUT_EMPTY, OURO_INPUT_TEXT, OURO_INPUT_RECORDS };

/* Opens path ("-": stdin) for reading from its start and classifies it. */
int ouro_input_open(FILE **f, enum ouro_input_kind *kind, const char *path);
void ouro_input_close(FILE *f);
/* The name of path in messages ("stdin" for "-"). */
const char *ouro_input_name(const char *path);

/* Opens path for reading when it is a regular file (or a link to one),
 * *size getting its length (size may be NULL). Anything else is refused
 * with status and a message that says what it is ("PATH: is a named pipe,
 * not a regular file"), without blocking: for the files that cannot be
 * streams, the model's files, a gate, a log to resume. A file that cannot
 * be opened fails with status too, with the system's reason. */
int ouro_file_open(FILE **f, uint64_t *size, const char *path, int status);

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
/* The same for nseq sequences in one pass over the weights: ids holds
 * them back to back, lens [nseq] their lengths, and hidden gets each
 * one's [steps, lens[j], D] back to back. A sequence's states are those
 * of ouro_forward over it alone, bit for bit. */
int ouro_forward_batch(struct ouro_model *m, const int32_t *ids, const int64_t *lens, int nseq,
		       int steps, float *hidden);

/* logits [n, V] = h [n, D] * lm_head^T (no norm: h is already normed). */
int ouro_logits(struct ouro_model *m, const float *h, int64_t n, float *logits);

/* Sets the number of threads used by the numerical kernels (0: all cores). */
void ouro_set_threads(int n);

/* ---- generation ---------------------------------------------------------
 * A prompt keeps every (loop, layer) KV slot; a decoded token runs loops
 * until its exit rule fires, and the policy says what later tokens find
 * for it (see engine.c): full, every slot (skipped loops repeat the exit
 * loop's); last, one per layer holding the last computed loop's; mean,
 * one per layer holding the mean over the computed loops. */

enum ouro_kv_policy { OURO_KV_FULL, OURO_KV_LAST, OURO_KV_MEAN };

/* ---- the batch engine ---------------------------------------------------
 * Many sequences generated at once (engine.c): sequences are added at any
 * time and wait in arrival order until the KV memory budget and max_seqs
 * let them run; each ouro_engine_step makes one pass over the layers for
 * every ready (sequence, position, loop) item, whatever loop each is at.
 * A sequence's tokens, exit loops and states do not depend on what else
 * runs, on the order of arrival or on the thread count. */

enum ouro_finish {
	OURO_FINISH_NONE,     /* still running */
	OURO_FINISH_LENGTH,   /* max_tokens made, or the context is full */
	OURO_FINISH_STOP,     /* ended by the caller (a stop string) */
	OURO_FINISH_EOS,      /* a stop id was sampled (not kept) */
};

struct ouro_engine_opts {
	int steps;                      /* T */
	enum ouro_kv_policy kv;
	enum ouro_dtype kv_dtype;       /* OURO_F32 or OURO_BF16 */
	const struct ouro_gate *gate;   /* NULL: the model's own */
	uint64_t kv_memory;             /* bytes of KV blocks; 0: half the available memory */
	int max_seqs;                   /* sequences running at once, >= 1 */
	int64_t chunk;                  /* prompt positions of one pass, all sequences; 0: 64 */
	/* Speculative decoding (spec.c): a sequence under the full policy
	 * drafts up to draft_tokens positions with draft_steps loops
	 * (1..steps-1) and verifies them in one item over the loops left;
	 * greedy tokens are those of decoding without it, sampled ones
	 * follow its distribution. 0: off. */
	int draft_tokens;               /* 0..OURO_MAX_DRAFT */
	int draft_steps;
};

#define OURO_MAX_DRAFT 64

struct ouro_seq_opts {
	struct ouro_exit_rule rule;
	struct ouro_sampler_opts samp;
	int64_t max_tokens;             /* new tokens at most */
	const int32_t *stop;            /* [nstop] ids that end the sequence (copied) */
	int nstop;
};

/* What one step did for one sequence: a new token, or the end. */
struct ouro_engine_event {
	int64_t seq;
	int32_t token;       /* the new token; -1 when none */
	int loops;           /* loops run by the state the token was sampled from */
	int finish;          /* enum ouro_finish; when set the sequence is gone */
	const float *h;      /* [D] that state (NULL without one), valid until the next step */
};

struct ouro_engine_stats {
	uint64_t steps;             /* passes over the layers */
	uint64_t items, rows;       /* sums over the passes of sequences and positions */
	uint64_t prefill_tokens;
	uint64_t decoded_tokens;
	uint64_t decoded_loops;     /* loops run by decoded positions */
	uint64_t new_tokens;        /* tokens sampled and kept */
	uint64_t kv_budget;         /* bytes */
	uint64_t kv_block_bytes;
	int64_t kv_peak_blocks;     /* most blocks in use at once */
	/* speculative decoding: rounds (one verify each), the drafted tokens
	 * checked and those accepted, the passes the speculating sequences
	 * took part in (those of verify items, and their rows), and the loops
	 * their tokens would have run without it */
	uint64_t spec_rounds, spec_drafted, spec_accepted;
	uint64_t spec_passes, spec_vpasses, spec_vrows, spec_loops;
};

struct ouro_engine;

int ouro_engine_new(struct ouro_engine **e, struct ouro_model *m,
		    const struct ouro_engine_opts *o);
void ouro_engine_free(struct ouro_engine *e);
/* Queues the prompt ids [n]; *seq gets its number for the events. Fails,
 * queuing nothing, for a bad prompt or options, or when the sequence could
 * not fit in the KV memory budget even alone. */
int ouro_engine_add(struct ouro_engine *e, const int32_t *ids, int64_t n,
		    const struct ouro_seq_opts *o, int64_t *seq);
/* Removes a sequence (waiting or running) at once, its memory returned. */
int ouro_engine_cancel(struct ouro_engine *e, int64_t seq);
/* Sequences added and not yet finished. */
int64_t ouro_engine_pending(const struct ouro_engine *e);
/* One pass; *ev [*nev] are its events in the order of arrival of their
 * sequences, valid until the next call. */
int ouro_engine_step(struct ouro_engine *e, const struct ouro_engine_event **ev, int *nev);
const struct ouro_engine_stats *ouro_engine_stats(const struct ouro_engine *e);

#endif
