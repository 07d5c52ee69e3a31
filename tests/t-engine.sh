#!/bin/sh
# t-engine - ouro-generate -f: many prompts on the batch engine.
#
#   1. Batch invariance: on the fixture model with a fixed prompt set and on
#      a fresh random model with a fresh one (prompts of 1 to 90 ids, so
#      some are prefilled in several chunks), the --jsonl answers are
#      byte-identical for -P 1, -P 3 and -P 16, for the prompts in
#      shuffled order, and for 1, 2 and 3 threads; under --kv full, last
#      and mean, greedy and sampled, with an exit threshold. Each answer's
#      ids are those of ouro-generate run on that prompt alone. The same
#      for the rules of the next-token distribution (--kl, --stable: their
#      logits computed for all the pass's rows in one product) on the
#      random model.
#   2. Text prompts and stop strings on the bundled model: finish "stop"
#      and the text cut before the stop string; one line per prompt
#      without --jsonl.
#   3. Bad prompt lines (invalid JSON, ids outside the vocabulary, a
#      prompt longer than the context, one too big for the KV budget): one
#      stderr line each naming the line, an object with "error" in its
#      place, the other answers unchanged, exit status 1.
#   4. A run killed halfway leaves only whole lines.
. tests/lib.sh
test_seed

# shuffle IN OUT PERM: the lines of IN in a random order; PERM gets the
# original line number of each.
shuffle() {
	"$PYTHON" - "$1" "$2" "$3" "$seed" <<'PY'
import random, sys
lines = open(sys.argv[1]).read().splitlines()
order = list(range(len(lines)))
random.Random(int(sys.argv[4])).shuffle(order)
open(sys.argv[2], "w").write("".join(lines[i] + "\n" for i in order))
open(sys.argv[3], "w").write("".join("%d\n" % i for i in order))
PY
}

# unshuffle OUT PERM: the answers of a shuffled run in the original order,
# with the original indices.
unshuffle() {
	"$PYTHON" - "$1" "$2" <<'PY'
import json, sys
perm = [int(x) for x in open(sys.argv[2])]
rows = {}
for line in open(sys.argv[1]):
    o = json.loads(line)
    o["index"] = perm[o["index"]]
    rows[o["index"]] = json.dumps(o, separators=(",", ":"), ensure_ascii=False)
print("\n".join(rows[i] for i in sorted(rows)))
PY
}

rnd=$tmp/rnd
"$PYTHON" scripts/make-model --out "$rnd" --vocab 500 --hidden 48 --heads 4 --kv-heads 2 \
	--head-dim 12 --ffn 64 --layers 2 --steps 4 --max-pos 256 --dtype bf16 \
	--seed "$seed" >/dev/null || fail "make-model"
random_prompts "$tmp/fixture.jsonl" 1 49152
random_prompts "$tmp/rnd.jsonl" "$seed" 500
cases=0
for name in fixture rnd; do
	model=$([ "$name" = fixture ] && echo models/ouro-fixture || echo "$rnd")
	in=$tmp/$name.jsonl
	shuffle "$in" "$tmp/shuf.jsonl" "$tmp/perm"
	for kv in full last mean; do
		for samp in "" "--temperature 1 --top-k 40 --seed 9"; do
			run() {
				ouro-generate -m "$model" --kv "$kv" -q 0.5 $samp --jsonl "$@"
			}
			what="$name --kv $kv ${samp:-greedy}"
			run -f "$in" -P 1 -j 1 >"$tmp/ref" || { fail "$what: -P 1 failed"; continue; }
			for p in "-P 3 -j 2" "-P 16 -j 3" "-P 2 -j 1"; do
				run -f "$in" $p >"$tmp/got" || fail "$what $p: failed"
				cmp -s "$tmp/ref" "$tmp/got" || fail "$what: $p differs from -P 1 -j 1"
			done
			run -f "$tmp/shuf.jsonl" -P 3 -j 2 >"$tmp/got" || fail "$what shuffled: failed"
			unshuffle "$tmp/got" "$tmp/perm" >"$tmp/got2"
			cmp -s "$tmp/ref" "$tmp/got2" || fail "$what: shuffled input differs"
			cases=$((cases + 5))
		done
	done
	# each answer is that of the prompt run alone (greedy, and sampled
	# with the prompt's seed)
	for samp in "" "--temperature 1 --top-k 40"; do
		ouro-generate -m "$model" --kv last -q 0.5 $samp --seed 9 --jsonl -f "$in" -P 4 >"$tmp/ref"
		"$PYTHON" - "$in" "$tmp/ref" >"$tmp/alone" <<'PY'
import json, sys
for p, a in zip(open(sys.argv[1]), open(sys.argv[2])):
    p, a = json.loads(p), json.loads(a)
    print(p.get("max_tokens", 128), p.get("seed", 9), " ".join(map(str, p["prompt_ids"])), "|",
          " ".join(map(str, a["ids"])))
PY
		while IFS='|' read -r head want; do
			set -- $head
			n=$1 s=$2
			shift 2
			got=$(ouro-generate -m "$model" --kv last -q 0.5 $samp --seed "$s" -n "$n" \
				--prompt-ids -t "$*")
			[ "$got" = "$(echo $want)" ] ||
				fail "$name ${samp:-greedy}: alone '$got', in the batch '$want'"
			cases=$((cases + 1))
		done <"$tmp/alone"
	done
done
# the rules that read lm_head every loop: the same tokens and loops alone
# and in any batch
in=$tmp/rnd.jsonl
for rule in "--kl 0.2" "--stable 2"; do
	for samp in "" "--temperature 1 --top-k 40 --seed 9"; do
		run() {
			ouro-generate -m "$rnd" --kv last $rule $samp --jsonl "$@"
		}
		what="rnd $rule ${samp:-greedy}"
		run -f "$in" -P 1 -j 1 >"$tmp/ref" || { fail "$what: -P 1 failed"; continue; }
		for p in "-P 3 -j 2" "-P 16 -j 3"; do
			run -f "$in" $p >"$tmp/got" || fail "$what $p: failed"
			cmp -s "$tmp/ref" "$tmp/got" || fail "$what: $p differs from -P 1 -j 1"
		done
		cases=$((cases + 2))
		# each prompt alone: its line of the batch's answers
		i=0
		while IFS= read -r line; do
			i=$((i + 1))
			echo "$line" | run -f - | sed 's/^{"index":0,//' >"$tmp/alone"
			sed -n "${i}p" "$tmp/ref" | sed 's/^{"index":[0-9]*,//' | cmp -s - "$tmp/alone" ||
				fail "$what: prompt $i alone: $(cat "$tmp/alone"), in the batch: $(sed -n "${i}p" "$tmp/ref")"
			cases=$((cases + 1))
		done <"$in"
	done
	grep -q '"loops":\[[^]]*[123][],]' "$tmp/ref" || fail "rnd $rule: no token exits before the last loop"
done
echo "# $cases runs identical to their reference"

# 2. text prompts, stop strings and the plain output, on the bundled model
kjv=models/ouro-kjv-tiny
printf '%s\n' "And God said unto Moses," "In the beginning" "Blessed are the meek" >"$tmp/text"
ouro-generate -m "$kjv" -n 12 -f "$tmp/text" -P 2 >"$tmp/plain" || fail "plain -f"
[ "$(wc -l <"$tmp/plain")" -eq 3 ] || fail "plain -f: $(wc -l <"$tmp/plain") lines for 3 prompts"
first=$(ouro-generate -m "$kjv" -n 12 "And God said unto Moses,")
[ "$(head -n 1 "$tmp/plain")" = "$first" ] ||
	fail "plain -f: '$(head -n 1 "$tmp/plain")', alone '$first'"
printf '{"prompt": "And God said unto Moses,", "stop": ["LORD", "said"]}\n' >"$tmp/stop.jsonl"
ouro-generate -m "$kjv" -n 40 -f "$tmp/stop.jsonl" --jsonl >"$tmp/stop.out" || fail "stop strings"
"$PYTHON" - "$tmp/stop.out" <<'PY' || fail "stop strings: $(cat "$tmp/stop.out")"
import json, sys
o = json.loads(open(sys.argv[1]).read())
assert o["finish"] == "stop", o
assert "LORD" not in o["text"] and "said" not in o["text"], o
assert len(o["ids"]) == len(o["loops"]) > 0, o
PY
echo "# stop strings: $(cat "$tmp/stop.out")"

# 3. bad lines among good ones
{
	sed -n 1,2p "$tmp/rnd.jsonl"
	echo '{"prompt_ids": [1, 2'
	echo '{"prompt_ids": [1, 99999]}'
	"$PYTHON" -c 'import json; print(json.dumps({"prompt_ids": [5] * 300}))'
	echo '{"prompt_ids": [7, 8, 9], "max_tokens": 240}'
	sed -n 3p "$tmp/rnd.jsonl"
} >"$tmp/bad.jsonl"
sed -n 1,3p "$tmp/rnd.jsonl" >"$tmp/good.jsonl"
ouro-generate -m "$rnd" --jsonl -f "$tmp/good.jsonl" -P 2 --kv-type f32 --kv-memory 200K >"$tmp/good.out"
ouro-generate -m "$rnd" --jsonl -f "$tmp/bad.jsonl" -P 2 --kv-type f32 --kv-memory 200K \
	>"$tmp/bad.out" 2>"$tmp/err"
[ $? -eq 1 ] || fail "bad lines: exit status not 1"
[ "$(wc -l <"$tmp/err")" -eq 4 ] || fail "bad lines: stderr is not 4 lines: $(cat "$tmp/err")"
for l in 3 4 5 6; do
	grep -q "^ouro-generate: .*bad.jsonl: line $l: " "$tmp/err" || fail "bad lines: no message for line $l"
done
grep -q "line 6: the KV cache for 243 tokens .* needs .* MiB, more than the KV memory budget" "$tmp/err" ||
	fail "bad lines: the budget message: $(cat "$tmp/err")"
"$PYTHON" - "$tmp/bad.out" "$tmp/good.out" <<'PY' || fail "bad lines: answers"
import json, sys
bad = [json.loads(l) for l in open(sys.argv[1])]
good = [json.loads(l) for l in open(sys.argv[2])]
assert [o["index"] for o in bad] == list(range(7)), bad
assert all("error" in bad[i] for i in (2, 3, 4, 5)), bad
for i, j in ((0, 0), (1, 1), (6, 2)):
    bad[i]["index"] = good[j]["index"]
    assert bad[i] == good[j], (bad[i], good[j])
PY
echo "# bad lines: $(tr '\n' '|' <"$tmp/err")"

# 4. killed halfway: every line written is whole
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
	echo "{\"prompt\": \"And it came to pass $i\", \"max_tokens\": 60}"
done >"$tmp/many.jsonl"
: >"$tmp/killed"
ouro-generate -m "$kjv" --jsonl -f "$tmp/many.jsonl" -P 2 -j 1 >"$tmp/killed" &
pid=$!
n=0
while [ "$(wc -l <"$tmp/killed")" -lt 2 ] && [ "$n" -lt 600 ]; do
	sleep 0.05
	n=$((n + 1))
done
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
lines=$(wc -l <"$tmp/killed")
[ "$lines" -ge 2 ] && [ "$lines" -lt 20 ] || echo "# killed run: $lines lines (timing)"
"$PYTHON" - "$tmp/killed" <<'PY' || fail "killed run: a partial line"
import json, sys
data = open(sys.argv[1]).read()
assert data == "" or data.endswith("\n"), repr(data[-80:])
for i, line in enumerate(data.splitlines()):
    assert json.loads(line)["index"] == i
PY
echo "# killed run: $lines whole lines"
finish
