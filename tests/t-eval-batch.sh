#!/bin/sh
# t-eval-batch - ouro-eval -P N scores many windows in one pass over the
# weights and changes nothing: for ppl and choice, with exit thresholds
# and hidden-difference rules, the report, the --log and the --per-token
# records of -P 1, -P 3 and -P 16 under 1 and 2 threads are byte for
# byte the same (cmp):
#
#   1. the fixture tasks (tests/eval/docs.jsonl with windows of 24 and of
#      the whole document, tests/eval/tiny-choice.jsonl);
#   2. a generated set of many short questions (2 to 5 choices, empty
#      contexts among them) and of documents of every length, an empty one
#      among them, cut into windows that straddle the passes;
#   3. a long document whose windows together pass the positions of one
#      pass (OURO_EVAL_PASS_ROWS), so that passes are cut by positions;
#   4. shards run at other -P values merge into the -P 1 report, and a log
#      cut short at -P 1 resumes at -P 3 into it;
#   5. a bad -P value is one line and status 2.
. tests/lib.sh
stop_at_fail=1
docs=tests/eval/docs.jsonl
task=tests/eval/tiny-choice.jsonl

# same TASK NAME OPTIONS... -- INPUT...: runs TASK at -P 1, 3, 16 and
# -j 1, 2 with a log (and --per-token records for ppl); every report, log
# and record file equals the -P 1 -j 1 one.
same() {
	s_task=$1 s_name=$2
	shift 2
	s_opts=
	while [ "$1" != -- ]; do
		s_opts="$s_opts $1"
		shift
	done
	shift
	for s_p in 1 3 16; do
		for s_j in 1 2; do
			s_out=$tmp/$s_name-$s_p-$s_j
			s_pt=
			[ "$s_task" = ppl ] && s_pt="--per-token $s_out.rec"
			rm -f "$s_out.log"
			# shellcheck disable=SC2086  # s_opts and s_pt are lists of words
			ouro-eval "$s_task" $s_opts -P "$s_p" -j "$s_j" --log "$s_out.log" $s_pt \
				-o "$s_out.json" "$@" || fail "$s_name: ouro-eval $s_task -P $s_p -j $s_j"
			for s_ext in json log rec; do
				[ -e "$tmp/$s_name-1-1.$s_ext" ] || continue
				cmp -s "$tmp/$s_name-1-1.$s_ext" "$s_out.$s_ext" ||
					fail "$s_name: the .$s_ext of -P $s_p -j $s_j differs from -P 1 -j 1"
			done
		done
	done
	echo "# $s_name: $(grep -c . "$tmp/$s_name-1-1.log") log lines; report, log$([ "$s_task" = ppl ] && echo ' and records') identical for -P 1, 3, 16 and -j 1, 2"
}

# ---- 1. the fixture tasks
same ppl docs-W24 -q 0.4,0.8 -e 3 -W 24 -- "$docs"
same ppl docs -q 0.3,0.95 -- "$docs"
same choice tiny -q 0.5,0.9 -e 3 -- "$task"

# ---- 2. many short examples
"$PYTHON" - "$tmp/many.jsonl" "$tmp/docs.jsonl" <<'EOF'
import json, random, sys
rng = random.Random(5)
words = "the of and to in he was that it his with as for on they God land house".split()
def text(n):
    return " ".join(rng.choice(words) for _ in range(n))
with open(sys.argv[1], "w") as f:
    for i in range(40):
        k = rng.randint(2, 5)
        ctx = "" if i % 9 == 4 else text(rng.randint(1, 12))
        f.write(json.dumps({"context": ctx, "choices": [" " + text(rng.randint(1, 4)) for _ in range(k)],
                            "gold": rng.randrange(k)}) + "\n")
with open(sys.argv[2], "w") as f:
    for i in range(24):
        f.write(json.dumps({"text": "" if i == 7 else text(rng.choice([1, 3, 10, 30, 80]))}) + "\n")
EOF
same choice many -q 0.5 -e 2,5 -- "$tmp/many.jsonl"
same ppl many-docs -q 0.6 -e 4 -W 16 --context 3 -- "$tmp/docs.jsonl"

# ---- 3. passes cut by positions: windows of 400 inputs (each scoring 11
# new tokens), five to a pass of OURO_EVAL_PASS_ROWS 2048
"$PYTHON" - "$tmp/long.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    f.write(json.dumps({"text": " ".join("w%d" % (j * 13 % 89) for j in range(230))}) + "\n")
EOF
for p in 1 16; do
	ouro-eval ppl -q 0.5 -W 400 --context 390 -P $p -v -o "$tmp/long$p.json" "$tmp/long.jsonl" \
		2>"$tmp/long$p.err" || fail "long document -P $p"
done
cmp -s "$tmp/long1.json" "$tmp/long16.json" || fail "long document: -P 16 differs from -P 1"
nw=$(sed 's/.* \([0-9]*\) windows in .*/\1/' "$tmp/long1.err")
grep -q " $nw windows in $(((nw + 4) / 5)) passes" "$tmp/long16.err" ||
	{ cat "$tmp/long16.err"; fail "long document: not five windows to a pass"; }
echo "# long document: $nw windows in $(((nw + 4) / 5)) passes at -P 16, identical to -P 1"

# ---- 4. shards and resumed logs across -P values
ouro-eval ppl -q 0.4,0.8 -e 3 -W 24 -P 3 --shard 0/2 -o "$tmp/s0.json" "$docs" &&
	ouro-eval ppl -q 0.4,0.8 -e 3 -W 24 -P 16 --shard 1/2 -o "$tmp/s1.json" "$docs" &&
	ouro-eval merge -o "$tmp/merged.json" "$tmp/s0.json" "$tmp/s1.json" || fail "shards at -P 3 and 16"
cmp -s "$tmp/merged.json" "$tmp/docs-W24-1-1.json" || fail "shards at -P 3 and 16 merged differ from -P 1"
head -n 3 "$tmp/tiny-1-1.log" >"$tmp/cut.log"
ouro-eval choice -q 0.5,0.9 -e 3 -P 3 --log "$tmp/cut.log" --resume -o "$tmp/resumed.json" "$task" ||
	fail "resume at -P 3"
cmp -s "$tmp/resumed.json" "$tmp/tiny-1-1.json" && cmp -s "$tmp/cut.log" "$tmp/tiny-1-1.log" ||
	fail "a -P 1 log resumed at -P 3 differs"
echo "# shards at -P 3 and 16 merged, and a -P 1 log resumed at -P 3: the -P 1 report and log"

# ---- 5. bad values
for p in 0 4097 -1 2x ''; do
	expect_fail 2 "^ouro-eval: --parallel: '$p' is not an integer in 1..4096" ouro-eval choice -P "$p" "$task"
done
echo "# bad -P values refused"
finish
