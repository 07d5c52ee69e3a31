/*
 * tokenizer.h - text <-> token ids for the ouro programs.
 *
 * Two kinds of tokenizer sit behind one opaque handle:
 *   - a Hugging Face tokenizer.json with a BPE model (byte-level BPE as
 *     every Ouro checkpoint ships, and the common variants: Split regexes,
 *     byte fallback, Metaspace), see tok/hf.h;
 *   - a SentencePiece .model file (BPE or unigram), see spm.c.
 * Both give the same ids as their reference implementations (Hugging Face
 * tokenizers, spm_encode). Conventions as in ouro.h: functions return an
 * enum ouro_status and leave a message for ouro_errmsg().
 *
 * Text is UTF-8; encoding invalid UTF-8 is OURO_EINPUT. Decoding gives the
 * bytes the tokens stand for, which need not be valid UTF-8 when the ids
 * are a partial sequence.
 */
#ifndef OURO_TOKENIZER_H
#define OURO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

struct ouro_tok;

enum ouro_tok_kind {
	OURO_TOK_HF = 1,    /* tokenizer.json */
	OURO_TOK_SPM = 2,   /* SentencePiece .model */
};

/* A growable array of ids; encode appends to it. Zero-initialise. */
struct ouro_ids {
	int32_t *v;
	size_t n, cap;
};

/* A growable byte buffer; decode and the chat helper append to it. */
struct ouro_bytes {
	char *p;
	size_t n, cap;
};

void ouro_ids_free(struct ouro_ids *ids);
void ouro_bytes_free(struct ouro_bytes *b);
int ouro_ids_push(struct ouro_ids *ids, int32_t id);
int ouro_bytes_add(struct ouro_bytes *b, const void *p, size_t n);

/* Loads a tokenizer file, a regular file: a name ending in .json is read
 * as a Hugging Face tokenizer.json and one ending in .model as a
 * SentencePiece model; any other by its content, as JSON if its first
 * non-blank byte is '{' or '[', else as SentencePiece. A failure's
 * message names the format that was tried. */
int ouro_tok_load(struct ouro_tok **out, const char *path);

/* Loads dir/tokenizer.json, or dir/tokenizer.model if there is no
 * tokenizer.json. */
int ouro_tok_load_dir(struct ouro_tok **out, const char *dir);

void ouro_tok_free(struct ouro_tok *tok);

enum ouro_tok_kind ouro_tok_kind(const struct ouro_tok *tok);

/* Number of ids: one more than the largest id the tokenizer knows. */
int64_t ouro_tok_vocab_size(const struct ouro_tok *tok);

/* The id of a token given by its text (a special token such as
 * "<|im_end|>", or a vocabulary entry as stored), or -1. */
int32_t ouro_tok_piece_id(const struct ouro_tok *tok, const char *piece);

/* Encodes text[0..len) and appends the ids to out, including what the
 * tokenizer's post-processor adds (nothing for Ouro). Special tokens in
 * the text are matched verbatim. The handle caches words: one thread per
 * handle. */
int ouro_tok_encode(struct ouro_tok *tok, const char *text, size_t len,
		    struct ouro_ids *out);

/* Decodes ids[0..n) and appends the bytes to out. Special tokens decode to
 * their text. An id outside [0, vocab size) is OURO_EINPUT. */
int ouro_tok_decode(const struct ouro_tok *tok, const int32_t *ids, size_t n,
		    struct ouro_bytes *out);

/* The text of a generation so far: the decoding of ids [n] (a prompt
 * and its new tokens) past its first `skip` bytes (the prompt's own
 * decoding, so that a token's text depends on its context as the
 * tokenizer has it), into out (cleared first). With stop strings stop
 * [nstop], *stopped is 1 when that text holds one, and out then ends
 * before the first of them; else 0. */
int ouro_tok_decode_after(const struct ouro_tok *tok, const int32_t *ids, size_t n, size_t skip,
			  char *const *stop, int nstop, struct ouro_bytes *out, int *stopped);

/* Appends a ChatML prompt for one user turn to out:
 *   <|im_start|>system\n SYSTEM <|im_end|>\n
 *   <|im_start|>user\n USER <|im_end|>\n
 *   <|im_start|>assistant\n                       (+ "<think>\n" if think)
 * system NULL means the default "You are a helpful assistant.", as the
 * Ouro chat template has it. */
int ouro_tok_chat(struct ouro_bytes *out, const char *system,
		  const char *user, size_t user_len, int think);

#endif
