#!/bin/sh
# t-eval-errors - ouro-eval's failures: bad input files (tests/eval/bad/),
# shard reports that do not fit together, bad options, a missing model:
# each gives its documented exit status, exactly one line on stderr that
# starts with "ouro-eval: " and names the file and line where there is
# one, and leaves no output file (nor a temporary) behind.
. tests/lib.sh
stop_at_fail=1
bad=tests/eval/bad
docs=tests/eval/docs.jsonl
task=tests/eval/tiny-choice.jsonl
n=0

# expect STATUS PATTERN CMD...: exit STATUS, one stderr line matching
# "^ouro-eval: PATTERN", nothing on stdout, no out.* file left in $tmp.
expect() {
	e_want=$1 e_pat=$2
	shift 2
	expect_fail "$e_want" "^ouro-eval: $e_pat" "$@" </dev/null
	ls "$tmp" | grep -q '^out\.' && fail "$*: left an output file behind"
	n=$((n + 1))
	echo "# exit $e_want: $(cat "$tmp/err")"
}

# ---- bad choice lines: file and line named
out="-o $tmp/out.json"   # two words, used unquoted
expect 1 "$bad/malformed.jsonl: line 3: not valid JSON: '}' expected" ouro-eval choice $out "$bad/malformed.jsonl"
expect 1 "$bad/gold-out-of-range.jsonl: line 2: \"gold\" is 2, outside 0..1 for 2 choices" \
	ouro-eval choice $out "$bad/gold-out-of-range.jsonl"
expect 1 "$bad/gold-negative.jsonl: line 1: \"gold\" is -1" ouro-eval choice $out "$bad/gold-negative.jsonl"
expect 1 "$bad/gold-not-integer.jsonl: line 1: \"gold\" is not an integer" ouro-eval choice $out "$bad/gold-not-integer.jsonl"
expect 1 "$bad/no-gold.jsonl: line 1: no \"gold\"" ouro-eval choice $out "$bad/no-gold.jsonl"
expect 1 "$bad/empty-choices.jsonl: line 1: \"choices\" is empty" ouro-eval choice $out "$bad/empty-choices.jsonl"
expect 1 "$bad/empty-choice.jsonl: line 1: choices\[1\] is empty" ouro-eval choice $out "$bad/empty-choice.jsonl"
expect 1 "$bad/choice-not-string.jsonl: line 1: choices\[1\] is not a string" \
	ouro-eval choice $out "$bad/choice-not-string.jsonl"
expect 1 "$bad/not-object.jsonl: line 1: expected a JSON object" ouro-eval choice $out "$bad/not-object.jsonl"
expect 1 "$bad/duplicate-key.jsonl: line 1: not valid JSON: duplicate object key" \
	ouro-eval choice $out "$bad/duplicate-key.jsonl"
expect 1 "$bad/no-continuation.jsonl: line 1: no \"continuation\"" ouro-eval choice $out "$bad/no-continuation.jsonl"
# a bad line after good files and lines is found before any scoring
expect 1 "$bad/gold-out-of-range.jsonl: line 2" ouro-eval choice --log "$tmp/out.log" $out "$task" "$bad/gold-out-of-range.jsonl"
expect 1 "$task: line 1: choice 2: the continuation has 2 tokens, more than the window of 1" \
	ouro-eval choice -W 1 $out "$task"

# ---- bad documents
expect 1 "$bad/ppl-no-text.jsonl: line 2: expected a JSON string or an object with a string \"text\"" \
	ouro-eval ppl $out "$bad/ppl-no-text.jsonl"
expect 1 "$bad/ppl-text-not-string.jsonl: line 2" ouro-eval ppl $out "$bad/ppl-text-not-string.jsonl"
expect 1 "$bad/ppl-bad-utf8.jsonl: line 2: not valid JSON: unable to decode byte 0xff" \
	ouro-eval ppl $out "$bad/ppl-bad-utf8.jsonl"
expect 1 "$bad/ppl-bad-utf8.txt: invalid UTF-8 at byte 4" ouro-eval ppl $out "$bad/ppl-bad-utf8.txt"
expect 1 "$bad/ppl-ids-bad.ids: line 2: 'x' is not a token id in 0..49151" ouro-eval ppl -f ids $out "$bad/ppl-ids-bad.ids"
expect 1 "$tmp/none.jsonl: No such file" ouro-eval ppl $out "$tmp/none.jsonl"

# ---- shard reports that do not fit together
ouro-eval ppl -q 0.5 --shard 0/2 -o "$tmp/a0.json" "$docs" &&
	ouro-eval ppl -q 0.5 --shard 1/2 -o "$tmp/a1.json" "$docs" &&
	ouro-eval ppl -q 0.9 --shard 1/2 -o "$tmp/b1.json" "$docs" &&
	ouro-eval ppl -q 0.5 --shard 1/3 -o "$tmp/c1.json" "$docs" &&
	ouro-eval ppl -q 0.5 -o "$tmp/whole.json" "$docs" &&
	ouro-eval ppl -q 0.5 --shard 1/2 -o "$tmp/d1.json" "$docs" tests/eval/docs.jsonl ||
	fail "shard runs"
sed 's/"examples": 3,/"examples": 2,/' "$tmp/a1.json" >"$tmp/short1.json"
head -c 200 "$tmp/a0.json" >"$tmp/cut0.json"
expect 1 "$tmp/b1.json: a run with other settings than $tmp/a0.json: config.rules differs" \
	ouro-eval merge -o "$tmp/out.json" "$tmp/a0.json" "$tmp/b1.json"
expect 1 "$tmp/c1.json: shard 1/3, but $tmp/a0.json is one of 2 shards" \
	ouro-eval merge -o "$tmp/out.json" "$tmp/a0.json" "$tmp/c1.json"
expect 1 "$tmp/a0.json: shard 0/2 is also $tmp/a0.json" ouro-eval merge -o "$tmp/out.json" "$tmp/a0.json" "$tmp/a0.json"
expect 1 "$tmp/a0.json: one of 2 shards, but 1 report is given; shards are missing" \
	ouro-eval merge -o "$tmp/out.json" "$tmp/a0.json"
expect 1 "$tmp/whole.json: not the report of a --shard run" ouro-eval merge -o "$tmp/out.json" "$tmp/whole.json"
expect 1 "$tmp/d1.json: a run with other settings than $tmp/a0.json: config.inputs differs" \
	ouro-eval merge -o "$tmp/out.json" "$tmp/a0.json" "$tmp/d1.json"
expect 1 "$tmp/short1.json: shard 1/2 scored 2 examples of 3; is the run complete?" \
	ouro-eval merge -o "$tmp/out.json" "$tmp/a0.json" "$tmp/short1.json"
expect 1 "$tmp/cut0.json: line [0-9]*: not valid JSON" ouro-eval merge -o "$tmp/out.json" "$tmp/cut0.json" "$tmp/a1.json"
expect 1 "$docs: not valid JSON\|$docs: line 2: not valid JSON" ouro-eval merge -o "$tmp/out.json" "$docs"
printf '{"format": "something else"}\n' >"$tmp/other.json"
expect 1 "$tmp/other.json: not a report of ouro-eval" ouro-eval merge -o "$tmp/out.json" "$tmp/other.json"

# ---- bad command lines: exit 2
expect 2 "expected a command" ouro-eval
expect 2 "'perplexity' is not a command" ouro-eval perplexity "$docs"
expect 2 "--threshold: '1.5' is not a number in 0..1" ouro-eval ppl -q 1.5 "$docs"
expect 2 "--threshold: '0.5,,0.7' is not a comma-separated list" ouro-eval ppl -q 0.5,,0.7 "$docs"
expect 2 "--eps: '-1' is not a number" ouro-eval ppl -e -1 "$docs"
expect 2 "--shard K: '2' is not an integer in 0..1" ouro-eval ppl --shard 2/2 "$docs"
expect 2 "--shard: '1' is not K/N" ouro-eval ppl --shard 1 "$docs"
expect 2 "--window: '0' is not an integer" ouro-eval ppl -W 0 "$docs"
expect 2 "--window: 513 is more than max_position_embeddings 512" ouro-eval ppl -W 513 "$docs"
expect 2 "--context: 9 is more than the window of 8" ouro-eval ppl -W 8 --context 9 "$docs"
expect 2 "--steps: '0' is not an integer in 1..256" ouro-eval ppl -T 0 "$docs"
expect 2 "--limit: '-1' is not an integer" ouro-eval ppl --limit -1 "$docs"
expect 2 "--prefix-token: 49152 is outside the vocabulary" ouro-eval ppl --prefix-token 49152 "$docs"
expect 2 "--format: 'csv' is not auto, text, jsonl or ids" ouro-eval ppl -f csv "$docs"
expect 2 "--per-token applies to ppl only" ouro-eval choice --per-token "$tmp/out.rec" "$task"
expect 2 "--context applies to ppl only" ouro-eval choice --context 2 "$task"
expect 2 "--resume needs --log FILE" ouro-eval ppl --resume "$docs"
expect 2 "--per-token cannot be resumed" ouro-eval ppl --log "$tmp/out.log" --resume --per-token "$tmp/out.rec" "$docs"
expect 2 "--bogus: unknown option" ouro-eval ppl --bogus "$docs"
expect 2 "merge: give the reports of every shard" ouro-eval merge

# ---- the model, the gate, the output
expect 3 ".*$tmp/nomodel" ouro-eval ppl -m "$tmp/nomodel" "$docs"
expect 3 ".*$tmp/nogate.st" ouro-eval ppl --gate "$tmp/nogate.st" "$docs"
expect 4 ".*$tmp/no/such/dir" ouro-eval ppl -o "$tmp/no/such/dir/out.json" "$docs"
[ "$(ls "$tmp" | grep -c '^out\.')" -eq 0 ] || fail "an output file was left behind"

echo "# $n failures checked"
