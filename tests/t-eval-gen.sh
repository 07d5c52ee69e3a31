#!/bin/sh
# t-eval-gen - ouro-eval gen on the bundled model (ouro-kjv-tiny):
#
#   1. accuracy checked independently: a first run records the greedy
#      texts (--per-example); a task file is made from them whose answers
#      are known (every other example answered by its own generated word,
#      written in another case; the rest by the verse's real last word);
#      Python extracts and normalises the texts of the second run on its
#      own and counts the correct ones per rule, which must equal the
#      report's exactly, and be at least the known half;
#   2. the report is the same to the byte for -P 1 and -P 8, for two
#      shards merged, for a run whose log is cut mid-line after its second
#      example and resumed, and for a run killed with SIGKILL midway and
#      resumed;
#   3. bad lines (invalid JSON, no answer, a prompt longer than the
#      model's context) are each named in one stderr line, the other
#      examples are scored and the exit status is 1;
#   4. scripts/convert-tasks gsm8k and math on samples in the published
#      layouts;
#   5. the table of ouro-eval(1)'s EXAMPLES (the verses under four
#      thresholds) is the one the program prints, the plot, and bad
#      options;
#   6. an example's max_tokens, until (over --stop) and few_shot, --chat,
#      and sampled runs the same for -P 1 and -P 8;
#   7. --speculate: greedy, the report of a run without it (under a
#      threshold and --kl, with other draft settings); sampled, the same
#      for -P 1 and -P 8, other draws than without it, and its config
#      records the draft settings.
# models/ouro-kjv-tiny/complete-verses.jsonl: every tenth verse of the model's
# held-out Revelation (models/ouro-kjv-tiny/heldout.txt, verses 1, 11,
# 21, ...), the prompt the verse less its last word, the answer that word
# without its punctuation.
. tests/lib.sh
stop_at_fail=1
task=models/ouro-kjv-tiny/complete-verses.jsonl
re='regex:^\s*([A-Za-z]+)'
run() { ouro-eval gen -m models/ouro-kjv-tiny -q 0.5,1 -s 1 -n 3 --extract "$re" "$@"; }

# 1. known answers, and an independent count
run --per-example "$tmp/first.jsonl" -o /dev/null "$task" || fail "first run"
"$PYTHON" - "$task" "$tmp/first.jsonl" "$tmp/known.jsonl" <<'PY' || fail "building the known answers"
import json, re, sys
tasks = [json.loads(l) for l in open(sys.argv[1])]
recs = [json.loads(l) for l in open(sys.argv[2])]
with open(sys.argv[3], "w") as out:
    for i, (t, r) in enumerate(zip(tasks, recs)):
        m = re.match(r"\s*([A-Za-z]+)", r["results"][0]["text"])
        if i % 2 == 0 and m:
            t["answer"] = " " + m.group(1).swapcase() + "."
        out.write(json.dumps(t) + "\n")
PY
run --per-example "$tmp/known-recs.jsonl" -o "$tmp/known.json" "$tmp/known.jsonl" || fail "known run"
"$PYTHON" - "$tmp/known.jsonl" "$tmp/known-recs.jsonl" "$tmp/known.json" <<'PY' || fail "accuracy differs from the independent count"
import json, re, sys, unicodedata
tasks = [json.loads(l) for l in open(sys.argv[1])]
recs = [json.loads(l) for l in open(sys.argv[2])]
rep = json.load(open(sys.argv[3]))
def norm(s):
    s = unicodedata.normalize("NFC", s.strip().casefold())
    s = re.sub(r"\s+", " ", s)
    return s.rstrip(".,;:!? ")
rules = rep["config"]["rules"]
for q, rule in enumerate(rules):
    want = 0
    for t, r in zip(tasks, recs):
        m = re.match(r"\s*([A-Za-z]+)", r["results"][q]["text"])
        want += bool(m) and norm(m.group(1)) == norm(t["answer"])
    got = rep["results"]["exit_rules"][q]
    known = [i for i, t in enumerate(tasks) if i % 2 == 0 and t["answer"].endswith(".")]
    print("# %s: %d of %d correct (report %d), %.3f loops a token" % (rule, want, len(tasks), got["correct"], got["avg_loops"]))
    if got["correct"] != want or abs(got["acc"] - want / len(tasks)) > 1e-11:
        sys.exit(1)
    for i in known if q == 0 else []:
        if not recs[i]["results"][0]["correct"]:
            sys.exit("example %d has a known answer but is not correct" % i)
PY

# 2. the same report for -P, shards merged, a resumed run (the first 12
# examples, to keep the test short)
small=$tmp/small.jsonl
head -12 "$task" >"$small"
run -P 1 -o "$tmp/p1.json" "$small" && run -P 8 -o "$tmp/p8.json" "$small" &&
	cmp "$tmp/p1.json" "$tmp/p8.json" || fail "-P 1 and -P 8 differ"
run --shard 0/2 -o "$tmp/s0.json" "$small" && run --shard 1/2 -P 3 -o "$tmp/s1.json" "$small" &&
	ouro-eval merge -o "$tmp/merged.json" "$tmp/s1.json" "$tmp/s0.json" &&
	cmp "$tmp/merged.json" "$tmp/p1.json" || fail "two shards merged differ from one run"
run --log "$tmp/log.jsonl" -o /dev/null "$small" || fail "logged run"
head -3 "$tmp/log.jsonl" >"$tmp/cut.jsonl" && sed -n 4p "$tmp/log.jsonl" | head -c 50 >>"$tmp/cut.jsonl"
mv "$tmp/cut.jsonl" "$tmp/log.jsonl"
run --log "$tmp/log.jsonl" --resume -o "$tmp/resumed.json" "$small" &&
	cmp "$tmp/resumed.json" "$tmp/p1.json" || fail "a resumed run differs from one run"
[ "$(wc -l <"$tmp/log.jsonl")" -eq 13 ] || fail "the resumed log does not hold every example once"
run -n 8 -o "$tmp/whole8.json" "$small" || fail "plain run (-n 8)"
run -n 8 -P 2 --log "$tmp/kill.log" -o "$tmp/killed.json" "$small" &
kill_at_lines $! "$tmp/kill.log" 4
done_before=$((lines_then - 1))
[ -e "$tmp/killed.json" ] && [ "$done_before" -lt 12 ] && fail "a killed run left its report"
run -n 8 --log "$tmp/kill.log" --resume -o "$tmp/killed.json" "$small" 2>/dev/null &&
	cmp "$tmp/killed.json" "$tmp/whole8.json" || fail "killed and resumed report differs"
echo "# killed after $done_before of 12 examples, resumed: identical report"

# 3. bad lines: each named, the others scored, status 1
{
	head -2 "$task"
	echo '{"prompt": "And I saw", "answer": '
	echo '{"prompt": "And I saw"}'
	"$PYTHON" -c 'import json; print(json.dumps({"prompt": "and the Lamb " * 300, "answer": "x"}))'
	sed -n 3p "$task"
} >"$tmp/bad.jsonl"
run -o "$tmp/bad.json" "$tmp/bad.jsonl" 2>"$tmp/err"
[ $? -eq 1 ] || fail "bad lines: exit status is not 1"
[ "$(wc -l <"$tmp/err")" -eq 3 ] &&
	grep -q 'bad.jsonl: line 3: not valid JSON' "$tmp/err" &&
	grep -q 'bad.jsonl: line 4: no "answer"' "$tmp/err" &&
	grep -q "bad.jsonl: line 5: the prompt has [0-9]* tokens; the model's context of 512" "$tmp/err" ||
	fail "bad lines: stderr is not one line for each: $(cat "$tmp/err")"
"$PYTHON" - "$tmp/bad.json" "$tmp/p1.json" <<'PY' || fail "bad lines: the good examples are not scored"
import json, sys
bad, good = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
r = bad["results"]
assert r["examples"] == 6 and r["failed"] == 3, r
assert all(x["tokens"] == 9 for x in r["exit_rules"]), r
PY

# 4. convert-tasks: GSM8K and MATH layouts into gen tasks
printf '%s\n' '{"question": "Tom has 3 apples and buys 1,204 more. How many?", "answer": "3 + 1204 = <<3+1204=1207>>1207\n#### 1,207"}' >"$tmp/gsm8k.jsonl"
printf '%s\n' '{"problem": "What is $\\frac{1}{2}+\\frac{1}{2}$?", "solution": "It is $\\boxed{1}$, or $\\boxed{\\frac{2}{2}}$.", "level": "Level 1", "type": "Algebra"}' >"$tmp/math.jsonl"
scripts/convert-tasks gsm8k "$tmp/gsm8k.jsonl" >"$tmp/g.jsonl" && scripts/convert-tasks math "$tmp/math.jsonl" >"$tmp/m.jsonl" ||
	fail "convert-tasks gsm8k/math"
"$PYTHON" - "$tmp/g.jsonl" "$tmp/m.jsonl" <<'PY' || fail "convert-tasks: fields"
import json, sys
g = json.loads(open(sys.argv[1]).read())
m = json.loads(open(sys.argv[2]).read())
assert g == {"prompt": "Question: Tom has 3 apples and buys 1,204 more. How many?\nAnswer:", "answer": "1,207", "until": ["Question:"]}, g
assert m == {"prompt": "Problem:\nWhat is $\\frac{1}{2}+\\frac{1}{2}$?\n\nSolution:", "answer": "\\frac{2}{2}", "until": ["Problem:"]}, m
PY
echo '{"question": "q", "answer": "no marker"}' >"$tmp/gbad.jsonl"
expect_fail 1 'gbad.jsonl: line 1: .*####' scripts/convert-tasks gsm8k "$tmp/gbad.jsonl"

# 5. the man page's numbers, and bad options
ouro-eval gen -m models/ouro-kjv-tiny -q 0.2,0.5,0.9,1 --kl 0.05,0.2 --stable 2 -n 3 \
	--extract "$re" --table "$task" |
	tail -n +2 >"$tmp/table" || fail "the man page's example"
sed -n '/^    --table "\$OURO_MODEL"\/complete-verses.jsonl$/,/^\.Ed$/p' man/ouro-eval.1 |
	sed '1,2d;$d' >"$tmp/man-table"
[ -s "$tmp/man-table" ] && cmp "$tmp/table" "$tmp/man-table" || fail "ouro-eval(1) shows another table than the program prints"
# the plot: the -s rules are the fixed loop counts (left, and grey on the
# right), and each family of rules has its line: 2 + 2 + 2 + 2 points
run -s 0 -o /dev/null --plot "$tmp/gen.svg" "$small" &&
	[ "$(grep -c '<circle' "$tmp/gen.svg")" -eq 8 ] &&
	[ "$(grep -c '<polyline' "$tmp/gen.svg")" -eq 4 ] || fail "the plot of a gen report"
expect_fail 2 '^ouro-eval: --chat applies to gen only$' ouro-eval ppl --chat "$task"
expect_fail 2 "^ouro-eval: --extract: '(' is not a regular expression" ouro-eval gen --extract 'regex:(' "$task"
expect_fail 2 "^ouro-eval: --extract: 'box' is not" ouro-eval gen --extract box "$task"
expect_fail 2 '^ouro-eval: --step: 4 is outside 0..3$' ouro-eval gen -m models/ouro-kjv-tiny -s 4 "$task"
expect_fail 2 '^ouro-eval: --window applies to ppl and choice only$' ouro-eval gen -W 10 "$task"

# 6. per-example settings, chat, sampling
p0=$(sed -n 1p "$task" | "$PYTHON" -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["prompt"]))')
{
	echo "{\"prompt\": $p0, \"answer\": \"x\", \"max_tokens\": 2, \"until\": \"zzz\"}"
	echo "{\"prompt\": $p0, \"answer\": \"x\", \"until\": [\"and\"], \"max_tokens\": 8}"
	echo "{\"prompt\": $p0, \"answer\": \"x\", \"max_tokens\": 8}"
	echo "{\"few_shot\": \"And I saw. \", \"prompt\": $p0, \"target\": 3}"
} >"$tmp/opts.jsonl"
run -n 5 --stop , --per-example "$tmp/opts-recs.jsonl" -o "$tmp/opts.json" "$tmp/opts.jsonl" &&
	run -n 5 --chat --per-example "$tmp/chat-recs.jsonl" -o "$tmp/chat.json" "$tmp/opts.jsonl" ||
	fail "per-example settings"
"$PYTHON" - "$tmp/opts-recs.jsonl" "$tmp/opts.json" "$tmp/chat.json" <<'PY' || fail "per-example settings are not followed"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
rep, chat = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
for x in recs[0]["results"]:           # max_tokens 2; until "zzz" replaces --stop ","
    assert x["tokens"] == 2 and x["finish"] == "length" and x["text"].startswith(","), x
for x in recs[1]["results"]:           # until "and" replaces --stop ","
    assert "and" not in x["text"] and x["finish"] == "stop", x
assert any("," in x["text"] for x in recs[1]["results"]), recs[1]
for x in recs[2]["results"]:           # --stop ","
    assert "," not in x["text"], x
assert recs[3]["answer"] == "3" and all(x["tokens"] <= 5 for x in recs[3]["results"]), recs[3]
assert rep["results"]["prompt_tokens"] > 0
assert chat["results"]["prompt_tokens"] > rep["results"]["prompt_tokens"] + 4 * 10, (chat, rep)
assert chat["config"]["chat"] is True and rep["config"]["stop"] == [","]
PY
run -n 6 --temperature 1 --seed 11 -P 1 -o "$tmp/t1.json" "$small" &&
	run -n 6 --temperature 1 --seed 11 -P 8 -o "$tmp/t8.json" "$small" &&
	cmp "$tmp/t1.json" "$tmp/t8.json" || fail "sampled runs differ between -P 1 and -P 8"

# 7. speculative decoding
run -n 6 -q 0.5 --kl 0.1 -o "$tmp/g0.json" "$small" &&
	run -n 6 -q 0.5 --kl 0.1 --speculate -P 5 -o "$tmp/g1.json" "$small" &&
	run -n 6 -q 0.5 --kl 0.1 --speculate --draft-steps 2 --draft-tokens 7 -o "$tmp/g2.json" "$small" &&
	cmp "$tmp/g0.json" "$tmp/g1.json" && cmp "$tmp/g0.json" "$tmp/g2.json" ||
	fail "greedy --speculate changes the report"
run -n 6 --temperature 1 --seed 11 --speculate -P 1 -o "$tmp/u1.json" "$small" &&
	run -n 6 --temperature 1 --seed 11 --speculate -P 8 -o "$tmp/u8.json" "$small" &&
	cmp "$tmp/u1.json" "$tmp/u8.json" || fail "sampled --speculate runs differ between -P 1 and -P 8"
"$PYTHON" - "$tmp/t1.json" "$tmp/u1.json" <<'PY' || fail "sampled --speculate: not recorded, or not run"
import json, sys
plain, spec = (json.load(open(f)) for f in sys.argv[1:])
assert spec["config"]["speculate"] == {"draft_steps": 1, "draft_tokens": 4}, spec["config"]
assert "speculate" not in plain["config"]
# other draws of the same distribution: the answers differ somewhere
assert plain["results"] != spec["results"]
PY
expect_fail 2 '^ouro-eval: sampling or speculation applies to gen only$' ouro-eval ppl --speculate "$task"
finish
