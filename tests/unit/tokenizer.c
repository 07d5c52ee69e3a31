/*
 * tokenizer.c - unit tests of libouro's tokenizer API (tokenizer.h):
 *
 *   - the Ouro tokenizer from the bundled model directory: kind, vocab
 *     size, special-token lookup, the README's sample encodings, decoding
 *     back, appending to the id buffer, the empty text;
 *   - failures: invalid UTF-8 (position in the message), ids out of range,
 *     missing, empty, truncated and garbage tokenizer files of both kinds;
 *   - the ChatML helper, byte for byte;
 *   - SentencePiece models (BPE and unigram) against ids from spm_encode.
 * Run from the repository root (tests/run does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ouro.h"
#include "tokenizer.h"
#include "unit.h"

static int ids_are(const struct ouro_ids *v, const int32_t *want, size_t n)
{
	if (v->n != n) {
		fprintf(stderr, "  got %zu ids, expected %zu:", v->n, n);
		for (size_t i = 0; i < v->n && i < 40; i++)
			fprintf(stderr, " %d", v->v[i]);
		fputc('\n', stderr);
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if (v->v[i] != want[i]) {
			fprintf(stderr, "  id %zu is %d, expected %d\n", i, v->v[i], want[i]);
			return 0;
		}
	return 1;
}

/* Encodes text and compares with want[0..n). */
static int encodes_to(struct ouro_tok *tok, const char *text, const int32_t *want, size_t n)
{
	struct ouro_ids v = {0};
	int ok = ouro_tok_encode(tok, text, strlen(text), &v) == OURO_OK && ids_are(&v, want, n);

	if (!ok)
		fprintf(stderr, "  text: \"%s\"\n", text);
	ouro_ids_free(&v);
	return ok;
}

/* Decodes the encoding of text and compares with text. */
static int round_trips(struct ouro_tok *tok, const char *text, size_t len)
{
	struct ouro_ids v = {0};
	struct ouro_bytes b = {0};
	int ok = ouro_tok_encode(tok, text, len, &v) == OURO_OK &&
		 ouro_tok_decode(tok, v.v, v.n, &b) == OURO_OK &&
		 b.n == len && memcmp(b.p, text, len) == 0;

	ouro_ids_free(&v);
	ouro_bytes_free(&b);
	return ok;
}

static void write_str(const char *path, const char *s);

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	if (f) {
		fwrite(p, 1, n, f);
		fclose(f);
	}
}

static void write_str(const char *path, const char *s)
{
	write_file(path, s, strlen(s));
}

static char *read_prefix(const char *path, size_t n, size_t *got)
{
	FILE *f = fopen(path, "rb");
	char *p = malloc(n);

	*got = 0;
	if (f && p)
		*got = fread(p, 1, n, f);
	if (f)
		fclose(f);
	return p;
}

static void test_ouro(void)
{
	struct ouro_tok *tok = NULL;
	struct ouro_ids v = {0};
	struct ouro_bytes b = {0};

	CHECK(ouro_tok_load_dir(&tok, "models/ouro-fixture") == OURO_OK);
	if (!tok)
		return;
	CHECK(ouro_tok_kind(tok) == OURO_TOK_HF);
	CHECK(ouro_tok_vocab_size(tok) == 49152);
	CHECK(ouro_tok_piece_id(tok, "<|endoftext|>") == 0);
	CHECK(ouro_tok_piece_id(tok, "<|im_end|>") == 2);
	CHECK(ouro_tok_piece_id(tok, "</think>") == 4);
	CHECK(ouro_tok_piece_id(tok, "Hello") == 19556);
	CHECK(ouro_tok_piece_id(tok, "\xC4\xA0" "world") == 905);   /* "Ġworld" */
	CHECK(ouro_tok_piece_id(tok, "no such token at all") == -1);

	/* the README's samples */
	static const int32_t s1[] = {19556, 905, 17, 216, 33, 34, 35, 36, 37, 13855};
	CHECK(encodes_to(tok, "Hello world! 12345 apples", s1, 10));
	static const int32_t s2[] = {1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198,
				     1, 520, 9531, 198, 3, 198};
	CHECK(encodes_to(tok, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n",
			 s2, 18));
	static const int32_t s3[] = {216, 5600, 256, 284, 197, 100, 7366, 198, 198, 2241, 5110};
	CHECK(encodes_to(tok, "  spaces   and\ttabs\n\nnewlines", s3, 11));
	CHECK(encodes_to(tok, "", NULL, 0));
	/* the 21 bytes without a symbol are dropped: U+0004 and U+40000 */
	static const int32_t s4[] = {81};
	CHECK(encodes_to(tok, "\x04" "a", s4, 1));

	/* encode appends */
	CHECK(ouro_tok_encode(tok, "Hello", 5, &v) == OURO_OK);
	CHECK(ouro_tok_encode(tok, "Hello", 5, &v) == OURO_OK);
	CHECK(v.n == 2 && v.v[0] == 19556 && v.v[1] == 19556);

	/* decoding */
	CHECK(round_trips(tok, "Hello world! 12345 apples", 25));
	static const char mixed[] = "a\0b\r\n\t<|im_end|>\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD";
	CHECK(round_trips(tok, mixed, sizeof mixed - 1));
	CHECK(ouro_tok_decode(tok, s2, 18, &b) == OURO_OK);
	const char *s2text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n";
	CHECK(b.n == strlen(s2text) && !memcmp(b.p, s2text, b.n));
	/* a partial character is the bytes it is */
	static const int32_t partial[] = {187};
	b.n = 0;
	CHECK(ouro_tok_decode(tok, partial, 1, &b) == OURO_OK);
	CHECK(b.n == 1 && (unsigned char)b.p[0] == 0xF0);

	/* failures */
	v.n = 0;
	CHECK(ouro_tok_encode(tok, "ab\xC3(", 4, &v) == OURO_EINPUT);
	CHECK(strstr(ouro_errmsg(), "invalid UTF-8 at byte 2") != NULL);
	CHECK(ouro_tok_encode(tok, "\xED\xA0\x80", 3, &v) == OURO_EINPUT);   /* a surrogate */
	CHECK(ouro_tok_encode(tok, "\xF4\x90\x80\x80", 4, &v) == OURO_EINPUT); /* > U+10FFFF */
	static const int32_t bad1[] = {5, 49152};
	static const int32_t bad2[] = {-1};
	CHECK(ouro_tok_decode(tok, bad1, 2, &b) == OURO_EINPUT);
	CHECK(strstr(ouro_errmsg(), "49152 is out of range [0, 49152)") != NULL);
	CHECK(ouro_tok_decode(tok, bad2, 1, &b) == OURO_EINPUT);

	ouro_ids_free(&v);
	ouro_bytes_free(&b);
	ouro_tok_free(tok);
}

static void test_chat(void)
{
	struct ouro_bytes b = {0};
	const char *want1 = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
			    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
	const char *want2 = "<|im_start|>system\nBe brief.<|im_end|>\n"
			    "<|im_start|>user\nA\nB<|im_end|>\n<|im_start|>assistant\n<think>\n";

	CHECK(ouro_tok_chat(&b, NULL, "Hi", 2, 0) == OURO_OK);
	CHECK(b.n == strlen(want1) && !memcmp(b.p, want1, b.n));
	b.n = 0;
	CHECK(ouro_tok_chat(&b, "Be brief.", "A\nB", 3, 1) == OURO_OK);
	CHECK(b.n == strlen(want2) && !memcmp(b.p, want2, b.n));
	ouro_bytes_free(&b);
}

static void test_spm(void)
{
	struct ouro_tok *tok = NULL;

	/* ids from spm_encode --output_format=id */
	CHECK(ouro_tok_load(&tok, "tests/tokenizer/spm/uni-nfkc.model") == OURO_OK);
	if (tok) {
		static const int32_t u[] = {420, 2732, 106, 9, 847, 550, 34, 271, 1326, 6, 3, 5, 7, 11};
		CHECK(ouro_tok_kind(tok) == OURO_TOK_SPM);
		CHECK(ouro_tok_vocab_size(tok) == 3000);
		CHECK(ouro_tok_piece_id(tok, "<unk>") == 0);
		CHECK(encodes_to(tok, "Hello world, this is a test. 123", u, 14));
		CHECK(encodes_to(tok, "   ", NULL, 0));
		ouro_tok_free(tok);
	}
	tok = NULL;
	CHECK(ouro_tok_load(&tok, "tests/tokenizer/spm/bpe-bf-id.model") == OURO_OK);
	if (tok) {
		static const int32_t b1[] = {1007, 279, 2513, 545, 2539, 271, 362, 376, 270, 1131, 275, 2532, 382, 1094};
		static const int32_t b2[] = {2511, 4, 2577, 2588, 2662};
		CHECK(encodes_to(tok, "Hello world, this is a test. 123", b1, 14));
		CHECK(encodes_to(tok, "<|im_start|>x\xC3\xA9\xE2\x82\xAC", b2, 5));
		CHECK(ouro_tok_piece_id(tok, "<|im_start|>") == 4);
		CHECK(ouro_tok_piece_id(tok, "<0x41>") >= 0);
		/* byte fallback and identity normalisation: lossless but for the
		 * dummy prefix, which decoding removes */
		CHECK(round_trips(tok, "x \xF0\x93\x80\x80 y", 8));
		ouro_tok_free(tok);
	}
}

static void test_bad_files(void)
{
	struct ouro_tok *tok = (struct ouro_tok *)&tok;   /* must be reset */
	char dir[] = "/tmp/ouro-tok-unit.XXXXXX", path[256];
	size_t n;
	char *p;

	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	CHECK(ouro_tok_load(&tok, "/nonexistent/tokenizer.json") == OURO_EMODEL);
	CHECK(tok == NULL);
	CHECK(ouro_tok_load_dir(&tok, dir) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "no tokenizer.json or tokenizer.model") != NULL);

	snprintf(path, sizeof path, "%s/empty", dir);
	write_file(path, "", 0);
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "no pieces") != NULL);

	snprintf(path, sizeof path, "%s/garbage.model", dir);
	write_file(path, "\x0a\xff\xff\xff\xff\x0f garbage", 14);
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "malformed protobuf") != NULL);

	/* every truncation of a real model, and flipped bytes anywhere in it,
	 * are refused or read, never a crash */
	static const char *models[] = {"tests/tokenizer/spm/bpe-bf-id.model",
				       "tests/tokenizer/spm/uni-nfkc.model"};
	for (int mi = 0; mi < 2; mi++) {
		p = read_prefix(models[mi], 1 << 20, &n);
		snprintf(path, sizeof path, "%s/trunc.model", dir);
		int refused = 0;
		for (size_t cut = 1; cut < n; cut += cut < 64 ? 1 : 997) {
			write_file(path, p, cut);
			int rc = ouro_tok_load(&tok, path);
			CHECK(rc == OURO_OK || rc == OURO_EMODEL);
			refused += rc != OURO_OK;
			ouro_tok_free(tok);
			tok = NULL;
		}
		CHECK(refused > 0);
		for (size_t k = 0; k < n; k += 131) {
			char save = p[k];
			p[k] = (char)(p[k] ^ 0x5A);
			write_file(path, p, n);
			int rc = ouro_tok_load(&tok, path);
			CHECK(rc == OURO_OK || rc == OURO_EMODEL);
			if (rc == OURO_OK) {
				struct ouro_ids v = {0};
				rc = ouro_tok_encode(tok, "Hello w\xC3\xB6rld 123 \xEF\xBC\xA1\t x", 23, &v);
				CHECK(rc == OURO_OK);
				ouro_ids_free(&v);
			}
			ouro_tok_free(tok);
			tok = NULL;
			p[k] = save;
		}
		free(p);
	}

	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	write_str(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, "
			"\"merges\": [\"a b\"]}}");
	CHECK(ouro_tok_load_dir(&tok, dir) == OURO_OK);
	if (tok) {
		static const int32_t ab[] = {2, 0};
		CHECK(ouro_tok_vocab_size(tok) == 3);
		CHECK(encodes_to(tok, "aba", ab, 2));
		ouro_tok_free(tok);
		tok = NULL;
	}
	/* valid JSON that is not an object is a bad tokenizer.json, never a
	 * bad SentencePiece model; the name decides the format first */
	write_str(path, "[1, 2]");
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "tokenizer.json: not a tokenizer.json (the JSON is an array, not an object)") != NULL);
	write_str(path, " 42");
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "not a tokenizer.json (the JSON is a number, not an object)") != NULL);
	write_str(path, "\x0a\x05\x0a\x01a\x15");
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "not a tokenizer.json (invalid JSON at line 2") != NULL);
	snprintf(path, sizeof path, "%s/garbage.model", dir);
	write_str(path, "{\"model\": {}}");
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "not a SentencePiece model") != NULL);
	/* a name that says neither: the first non-blank byte */
	snprintf(path, sizeof path, "%s/empty", dir);
	write_str(path, "\n [\"a\"]");
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "empty: not a tokenizer.json (the JSON is an array") != NULL);
	snprintf(path, sizeof path, "%s/tokenizer.json", dir);
	write_str(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}");
	CHECK(ouro_tok_load(&tok, path) == OURO_EMODEL);
	CHECK(strstr(ouro_errmsg(), "merge 0: token \"b\" is not in the vocabulary") != NULL);
	remove(path);
	snprintf(path, sizeof path, "%s/empty", dir);
	remove(path);
	snprintf(path, sizeof path, "%s/garbage.model", dir);
	remove(path);
	snprintf(path, sizeof path, "%s/trunc.model", dir);
	remove(path);
	rmdir(dir);
}

int main(void)
{
	test_ouro();
	test_chat();
	test_spm();
	test_bad_files();
	return unit_done("tokenizer");
}
