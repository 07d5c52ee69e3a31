/*
 * test_extract.c - the answer extraction and normalisation of ouro-eval
 * gen (eval_extract.c) on texts written out by hand with the answer each
 * rule must find: GSM8K's "####" and its fallback, the last number, the
 * last balanced \boxed{}, a regular expression's first group, a thinking
 * section dropped first, and the normal forms of numbers and strings.
 */
#include <string.h>

#include "eval.h"
#include "unit.h"

/* The answer `how` extracts from text, normalised, is want (NULL: none). */
static void expect(const char *how, const char *text, const char *want)
{
	struct ouro_extract x;
	struct ouro_bytes got = {0}, norm = {0};
	int found = -1;

	CHECK(ouro_extract_init(&x, how) == OURO_OK);
	CHECK(ouro_extract_answer(&x, text, strlen(text), &got, &found) == OURO_OK);
	CHECK(found == (want != NULL));
	if (want && found) {
		CHECK(ouro_answer_normalize(got.p ? got.p : "", got.n, &norm) == OURO_OK);
		int ok = norm.n == strlen(want) && memcmp(norm.p, want, norm.n) == 0;
		CHECK(ok);
		if (!ok)
			fprintf(stderr, "  %s on \"%s\": got \"%.*s\", want \"%s\"\n", how, text,
				(int)norm.n, norm.p ? norm.p : "", want);
	}
	ouro_bytes_free(&got);
	ouro_bytes_free(&norm);
	ouro_extract_free(&x);
}

static void norm_is(const char *s, const char *want)
{
	struct ouro_bytes b = {0};

	CHECK(ouro_answer_normalize(s, strlen(s), &b) == OURO_OK);
	int ok = b.n == strlen(want) && memcmp(b.p, want, b.n) == 0;
	CHECK(ok);
	if (!ok)
		fprintf(stderr, "  normalize \"%s\": got \"%.*s\", want \"%s\"\n", s, (int)b.n,
			b.p ? b.p : "", want);
	ouro_bytes_free(&b);
}

int main(void)
{
	/* gsm8k: the number after ####, else the last number */
	expect("gsm8k", "She has 3 apples and buys 4.\n#### 7", "7");
	expect("gsm8k", "#### 1,234 then 5 more", "1234");
	expect("gsm8k", "It costs $18 in all, then 2 more.", "2");
	expect("gsm8k", "The total is 1,000,000.", "1000000");
	expect("gsm8k", "no numbers here", NULL);
	expect("gsm8k", "####  -$5.50 is owed", "-5.5");
	/* a thinking section is dropped first */
	expect("gsm8k", "<think>maybe 12, or #### 13</think>\nSo #### 14", "14");
	expect("gsm8k", "reasoning 5 </think> the answer is 6", "6");
	expect("last-number", "Answer 42<think>no wait, 43", "42");
	expect("last-number", "1, 2, 3.0 and 4.50", "4.5");
	expect("last-number", "it is 3.", "3");
	/* boxed: the last one whose braces balance */
	expect("boxed", "so \\boxed{\\frac{1}{2}} and \\boxed{x^{2}}", "x^{2}");
	expect("boxed", "\\boxed{12} then \\boxed{broken", "12");
	expect("boxed", "\\boxed{1,000}", "1000");
	expect("boxed", "nothing boxed", NULL);
	/* regex: the first group, else the whole match */
	expect("regex:answer is (\\w+)", "The answer is Paris. The answer is Rome.", "paris");
	expect("regex:[0-9]+", "abc 77 88", "77");
	expect("regex:zzz(q)", "no match", NULL);
	expect("text", "  In the  BEGINNING.\n", "in the beginning");
	/* normal forms */
	norm_is(" $1,234.00 ", "1234");
	norm_is("-0.0", "0");
	norm_is("+007", "7");
	norm_is("12.", "12");
	norm_is("0.250", "0.25");
	norm_is("1,2,", "1,2");
	norm_is("The  Lamb\tof God!", "the lamb of god");
	norm_is("ÄRGER", "ärger");

	struct ouro_extract x;
	CHECK(ouro_extract_init(&x, "regex:(") == OURO_EUSAGE);
	CHECK(ouro_extract_init(&x, "lastnumber") == OURO_EUSAGE);
	return unit_done("test_extract");
}
