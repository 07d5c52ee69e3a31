#!/bin/sh
# t-eval-runs - sharded, merged, logged and resumed runs of ouro-eval give
# byte for byte the report of one plain run; the table, the plot and the
# progress bar.
#
#   1. ppl in 3 and in 8 shards (some empty), choice in 2: `ouro-eval merge`
#      in any order writes exactly the unsharded report (cmp);
#   2. --resume from a log cut in the middle of a line: the report is the
#      plain one, the log lists every example once, and logged examples are
#      not scored again (a doctored logged sum shows up in the report);
#   3. a run killed with SIGKILL midway (two windows a pass, so that the
#      log grows pass by pass), then resumed with the default -P: the same
#      report;
#   4. --log on an existing log without --resume, or of another run;
#   5. --table, --plot (well-formed SVG with the curves), and the progress
#      bar only when stderr is a terminal.
. tests/lib.sh
stop_at_fail=1
docs=tests/eval/docs.jsonl
task=tests/eval/tiny-choice.jsonl

# ---- 1. shards and merge
opts="-q 0.4,0.8 -e 3 -W 24"
# shellcheck disable=SC2086  # opts is a list of words
ouro-eval ppl $opts -o "$tmp/whole.json" "$docs" || fail "plain ppl run"
for n in 3 8; do
	k=0
	parts=""
	while [ "$k" -lt "$n" ]; do
		# shellcheck disable=SC2086
		ouro-eval ppl $opts --shard "$k/$n" -o "$tmp/p$k.json" "$docs" || fail "ppl --shard $k/$n"
		parts="$parts $tmp/p$k.json"
		k=$((k + 1))
	done
	# shellcheck disable=SC2086
	ouro-eval merge -o "$tmp/merged.json" $parts || fail "merge of $n shards"
	cmp -s "$tmp/merged.json" "$tmp/whole.json" || { diff "$tmp/merged.json" "$tmp/whole.json" | head; fail "$n shards merged differ from the plain run"; }
	# shellcheck disable=SC2086
	ouro-eval merge $(echo $parts | tr ' ' '\n' | sort -r) >"$tmp/merged2.json" || fail "merge in reverse order"
	cmp -s "$tmp/merged2.json" "$tmp/whole.json" || fail "$n shards merged in reverse order differ"
	echo "# ppl in $n shards, merged: identical to the plain report"
done
ouro-eval choice -q 0.5 -e 3 -o "$tmp/cwhole.json" "$task" || fail "plain choice run"
ouro-eval choice -q 0.5 -e 3 --shard 0/2 -o "$tmp/c0.json" "$task" &&
	ouro-eval choice -q 0.5 -e 3 --shard 1/2 -o "$tmp/c1.json" "$task" || fail "choice shards"
ouro-eval merge "$tmp/c1.json" "$tmp/c0.json" >"$tmp/cmerged.json" || fail "choice merge"
cmp -s "$tmp/cmerged.json" "$tmp/cwhole.json" || fail "choice shards merged differ from the plain run"
ouro-eval merge --table "$tmp/c0.json" "$tmp/c1.json" >"$tmp/mt.txt" &&
	ouro-eval choice -q 0.5 -e 3 --table "$task" >"$tmp/pt.txt" || fail "--table"
cmp -s "$tmp/mt.txt" "$tmp/pt.txt" || fail "merge --table differs from the plain --table"
echo "# choice in 2 shards, merged: identical report and table"

# ---- 2. resume from a log cut mid-line; logged examples are not redone
# shellcheck disable=SC2086
ouro-eval ppl $opts --log "$tmp/full.log" -o "$tmp/logged.json" "$docs" || fail "run with --log"
cmp -s "$tmp/logged.json" "$tmp/whole.json" || fail "--log changed the report"
[ "$(wc -l <"$tmp/full.log")" -eq 7 ] || fail "the log has $(wc -l <"$tmp/full.log") lines, expected 1 + 6"
{ head -n 3 "$tmp/full.log"; sed -n 4p "$tmp/full.log" | head -c 50; } >"$tmp/cut.log"
# shellcheck disable=SC2086
ouro-eval ppl $opts --log "$tmp/cut.log" --resume -o "$tmp/resumed.json" "$docs" || fail "--resume"
cmp -s "$tmp/resumed.json" "$tmp/whole.json" || fail "the resumed report differs from the plain one"
"$PYTHON" - "$tmp/cut.log" <<'EOF' || fail "the resumed log"
import json, sys
lines = open(sys.argv[1]).read().split("\n")
assert lines[-1] == "", "the log does not end in a newline"
ex = sorted(json.loads(l)["example"] for l in lines[1:-1])
assert ex == list(range(6)), ex
EOF
{ head -n 1 "$tmp/full.log"; sed -n 2p "$tmp/full.log" | sed 's/"nll":\[\([0-9]*\)/"nll":[1\1/'; } >"$tmp/doctored.log"
# shellcheck disable=SC2086
ouro-eval ppl $opts --log "$tmp/doctored.log" --resume -o "$tmp/doctored.json" "$docs" || fail "--resume doctored"
"$PYTHON" - "$tmp/doctored.json" "$tmp/whole.json" "$tmp/full.log" <<'EOF' || fail "a logged example was scored again"
import json, sys
a, b = (json.load(open(p))["sums"] for p in sys.argv[1:3])
first = json.loads(open(sys.argv[3]).readlines()[1])["sums"]["nll"][0]
assert a["nll"][0] - b["nll"][0] == int("1" + str(first)) - first, (a["nll"][0], b["nll"][0])
assert a["nll"][1:] == b["nll"][1:]
EOF
# a complete log: nothing is scored, the report is the same
# shellcheck disable=SC2086
ouro-eval ppl $opts --log "$tmp/full.log" --resume -o "$tmp/again.json" "$docs" || fail "--resume complete"
cmp -s "$tmp/again.json" "$tmp/whole.json" || fail "resuming a complete log changed the report"
echo "# --resume: from a log cut mid-line, and from a complete one: identical reports; logged examples not redone"

# ---- 3. SIGKILL midway, then resume
"$PYTHON" - "$tmp/many.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(16):
        f.write(json.dumps({"text": " ".join("w%d" % ((i * 31 + j * 17) % 101) for j in range(40))}) + "\n")
EOF
ouro-eval ppl -q 0.5 -o "$tmp/many.json" "$tmp/many.jsonl" || fail "plain run (many)"
ouro-eval ppl -q 0.5 -P 2 --log "$tmp/kill.log" -o "$tmp/killed.json" "$tmp/many.jsonl" &
kill_at_lines $! "$tmp/kill.log" 5
done_before=$((lines_then - 1))
[ -e "$tmp/killed.json" ] && [ "$done_before" -lt 16 ] && fail "a killed run left its report"
ouro-eval ppl -q 0.5 --log "$tmp/kill.log" --resume -o "$tmp/killed.json" "$tmp/many.jsonl" ||
	fail "resume after SIGKILL"
cmp -s "$tmp/killed.json" "$tmp/many.json" || fail "killed and resumed report differs"
echo "# killed after $done_before of 16 examples, resumed: identical report"

# ---- 4. logs that do not fit
# shellcheck disable=SC2086
ouro-eval ppl $opts --log "$tmp/full.log" -o /dev/null "$docs" 2>"$tmp/err" && fail "an existing log without --resume"
[ $? -eq 2 ] || fail "existing log: exit status"
grep -q "full.log exists; add --resume" "$tmp/err" || fail "existing log: message"
ouro-eval ppl -q 0.5 --log "$tmp/full.log" --resume -o /dev/null "$docs" 2>"$tmp/err" && fail "a log of another run"
grep -q "^ouro-eval: .*full.log: line 1: the log is of another run: its rules differs" "$tmp/err" ||
	{ cat "$tmp/err"; fail "log of another run: message"; }
# shellcheck disable=SC2086
ouro-eval ppl $opts --shard 0/2 --log "$tmp/full.log" --resume -o /dev/null "$docs" 2>"$tmp/err" &&
	fail "a log of another shard"
grep -q "line 1: the log is of another run: its shard differs" "$tmp/err" || { cat "$tmp/err"; fail "shard log: message"; }
printf '%s\n' "$(head -n 1 "$tmp/full.log")" 'not json' "$(sed -n 2p "$tmp/full.log")" >"$tmp/bad.log"
# shellcheck disable=SC2086
ouro-eval ppl $opts --log "$tmp/bad.log" --resume -o /dev/null "$docs" 2>"$tmp/err" && fail "a corrupt log"
grep -q "bad.log: line 2: not valid JSON" "$tmp/err" || { cat "$tmp/err"; fail "corrupt log: message"; }
echo "# logs of other runs and corrupt logs are refused"

# ---- 5. table, plot, progress
ouro-eval ppl -q 0.3,0.6,0.9 -e 3 --table --plot "$tmp/ppl.svg" "$docs" >"$tmp/table.txt" || fail "--table --plot"
grep -q '^threshold 0.6 ' "$tmp/table.txt" && grep -q '^4 ' "$tmp/table.txt" && grep -q 'Stage I objective' "$tmp/table.txt" ||
	{ cat "$tmp/table.txt"; fail "ppl table"; }
ouro-eval merge --plot "$tmp/choice.svg" -o /dev/null "$tmp/c0.json" "$tmp/c1.json" || fail "merge --plot"
"$PYTHON" - "$tmp/ppl.svg" "$tmp/choice.svg" <<'EOF' || fail "the plots"
import sys
import xml.etree.ElementTree as ET
ns = "{http://www.w3.org/2000/svg}"
# left: a curve per metric; right: the fixed loop counts per metric and a
# curve per family of rules (thresholds, eps) and metric
for path, lines in ((sys.argv[1], 1 + 1 + 2), (sys.argv[2], 2 + 2 + 2 * 2)):
    root = ET.parse(path).getroot()
    assert root.tag == ns + "svg", root.tag
    poly = root.findall(ns + "polyline")
    assert len(poly) == lines, "%s: %d curves, expected %d" % (path, len(poly), lines)
    texts = " ".join(t.text or "" for t in root.iter(ns + "text"))
    assert "average loops" in texts and "loops" in texts, texts
print("# plots: well-formed SVG with the expected curves")
EOF
ouro-eval ppl -o /dev/null "$docs" 2>"$tmp/quiet" || fail "quiet run"
[ -s "$tmp/quiet" ] && fail "progress written to a stderr that is not a terminal"
if command -v script >/dev/null 2>&1; then
	script -qec "ouro-eval ppl -o /dev/null $docs" /dev/null >"$tmp/tty" 2>&1 </dev/null || fail "run under script(1)"
	grep -q '6/6 examples, .* tokens/s, ETA done' "$tmp/tty" || { cat "$tmp/tty"; fail "no progress bar on a terminal"; }
	echo "# progress bar on a terminal: $(tr '\r' '\n' <"$tmp/tty" | grep 'ETA done' | tail -n 1 | sed 's/.\[K//')"
fi
exit 0
