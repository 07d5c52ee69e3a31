#!/bin/sh
# t-lens - ouro-lens against the pipeline and the independent reference,
# and its failures.
#
#   1. pipeline: for every prefix of a sequence,
#      ouro-forward | ouro-gate | ouro-sample -s S --logprobs K scores the
#      last position after loop S; ouro-lens -k K on the whole sequence
#      must show, at that position and loop, the same K tokens with
#      log-probabilities within 1e-4 (a token may differ only where two
#      candidates are within 1e-4: a rounding tie), and the same exit step,
#      exit pdf and cdf as ouro-gate (pdf within 1e-6), whose own choice
#      (ouro-sample without -s) is the row the lens marks.
#   2. reference: the same against scripts/ouro_ref.py (float64 forward
#      pass, lm_head, gate), within 1e-4.
#   3. the three inputs agree: text (tokenized as ouro-tokenize does),
#      --prompt-ids and ouro-forward records on stdin; -T and -q change the
#      loops and the exit step as the reference says; under --kl, --entropy
#      and --stable the lens marks the exit steps of ouro-gate's rule.
#   4. the table: a header, one row per position and loop, one exit mark
#      per position, columns aligned.
#   5. failures: bad option values, an empty prompt, non-numeric ids, ids
#      outside the vocabulary, records without hidden or with only some
#      loops, -T with records, an unwritable -o; each exits with its
#      documented status and one stderr line, writes nothing on stdout and
#      leaves no file.
#
# Run by tests/run from the repository root with bin/ on PATH; uses
# $PYTHON (NumPy) and $TMPDIR.
. tests/lib.sh
model=models/ouro-fixture
K=4
ids='19556 905 17 216 33 34 35 13'

# ---- the pipeline, one record per prefix
echo "$ids" | awk '{ for (i = 1; i <= NF; i++) { s = $1; for (j = 2; j <= i; j++) s = s " " $j; print s } }' \
	>"$tmp/prefixes.txt"
ouro-forward "$tmp/prefixes.txt" | ouro-gate >"$tmp/gate.rec" ||
	{ echo "FAIL: ouro-forward | ouro-gate"; exit 1; }
for s in 0 1 2 3; do
	ouro-sample -s "$s" --logprobs "$K" "$tmp/gate.rec" >"$tmp/sample$s.rec" ||
		fail "ouro-sample -s $s --logprobs $K"
done
ouro-sample --logprobs "$K" "$tmp/gate.rec" >"$tmp/sample-exit.rec" || fail "ouro-sample --logprobs $K"
# shellcheck disable=SC2086
ouro-lens -k "$K" --json --prompt-ids $ids >"$tmp/lens.json" || fail "ouro-lens --prompt-ids"

cat >"$tmp/check.py" <<'EOF'
import json
import sys

import numpy as np

sys.path.insert(0, "scripts")
import ouro_ref as ref

tol = 1e-4
model, lens_path, gate_path, tmp, K = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
lens = json.loads(open(lens_path).read())
pos = lens["positions"]
T = lens["steps"]
bad = []
err = 0.0

def compare(what, got, want_ids, want_lp):
    """got: the lens's predictions; want: ids and log-probabilities."""
    global err
    g_ids = [p["id"] for p in got]
    g_lp = np.array([p["logprob"] for p in got])
    err = max(err, float(np.max(np.abs(g_lp - want_lp))))
    if np.max(np.abs(g_lp - want_lp)) > tol:
        bad.append("%s: logprobs %s, expected %s" % (what, g_lp, want_lp))
    for k, (a, b) in enumerate(zip(g_ids, want_ids)):
        if a != b and abs(want_lp[k] - (want_lp[k + 1] if k + 1 < len(want_lp) else -1e9)) > tol \
                and abs(want_lp[k] - (want_lp[k - 1] if k else 1e9)) > tol:
            bad.append("%s: top %d is id %d, expected %d" % (what, k + 1, a, b))

# 1. the pipeline: record p holds the prefix of p+1 tokens
gate = ref.read_records(gate_path)
if len(gate) != len(pos):
    sys.exit("%d gate records for %d positions" % (len(gate), len(pos)))
samples = {s: ref.read_records("%s/sample%d.rec" % (tmp, s)) for s in range(T)}
exit_samples = ref.read_records("%s/sample-exit.rec" % tmp)
for i, p in enumerate(pos):
    tensors = gate[i][0]
    if p["exit_step"] != int(tensors["exit_step"].data[i]):
        bad.append("position %d: exit step %d, ouro-gate says %d"
                   % (i, p["exit_step"], tensors["exit_step"].data[i]))
    for name in ("exit_pdf", "exit_cdf"):
        d = np.max(np.abs(np.array(p[name]) - tensors[name].data[:, i]))
        if d > 1e-6:
            bad.append("position %d: %s differs from ouro-gate's by %g" % (i, name, d))
    for s in range(T):
        t = samples[s][i][0]
        compare("position %d loop %d (ouro-sample -s %d)" % (i, s, s), p["predictions"][s],
                t["top_ids"].data, t["top_logprobs"].data.astype(np.float64))
    t = exit_samples[i][0]
    compare("position %d exit loop (ouro-sample)" % i, p["predictions"][p["exit_step"]],
            t["top_ids"].data, t["top_logprobs"].data.astype(np.float64))
print("# pipeline: %d positions x %d loops, max logprob error %.3g" % (len(pos), T, err))

# 2. the reference
err = 0.0
m = ref.load_model(model)
head = ref.load_lm_head(model)
hidden = ref.forward(m, np.array(lens["tokens"]), T)
_, pdf, cdf = ref.gate(m, hidden)
for i, p in enumerate(pos):
    for s in range(T):
        ids, lp = ref.topk_logprobs(head @ hidden[s, i], K)
        compare("position %d loop %d (reference)" % (i, s), p["predictions"][s], ids, lp)
    d = np.max(np.abs(np.array(p["exit_pdf"]) - pdf[:, i]))
    if d > tol:
        bad.append("position %d: exit pdf differs from the reference by %g" % (i, d))
print("# reference: max logprob error %.3g" % err)
for b in bad[:10]:
    print(b)
sys.exit(1 if bad else 0)
EOF
"$PYTHON" "$tmp/check.py" "$model" "$tmp/lens.json" "$tmp/gate.rec" "$tmp" "$K" ||
	fail "ouro-lens differs from the pipeline or the reference"

# ---- 3. inputs, -T, -q
text='The loop thinks twice, then speaks.'
echo "$text" | ouro-lens -k 2 --json >"$tmp/text.json" || fail "ouro-lens on text from stdin"
ouro-lens -k 2 --json "$text" >"$tmp/arg.json" || fail "ouro-lens on text arguments"
tok=$(echo "$text" | ouro-tokenize -t) || fail "ouro-tokenize"
# shellcheck disable=SC2086
ouro-lens -k 2 --json --prompt-ids $tok >"$tmp/ids.json" || fail "ouro-lens --prompt-ids"
echo "$tok" | ouro-forward | ouro-lens -k 2 --json >"$tmp/rec.json" || fail "ouro-lens on records"
cmp -s "$tmp/text.json" "$tmp/arg.json" || fail "text on stdin and as arguments differ"
cmp -s "$tmp/text.json" "$tmp/ids.json" || fail "text and --prompt-ids differ"
cmp -s "$tmp/text.json" "$tmp/rec.json" || fail "text and ouro-forward records differ"
ouro-lens -T 6 -q 0.5 --json --prompt-ids 1 2 3 >"$tmp/t6.json" || fail "ouro-lens -T 6 -q 0.5"
"$PYTHON" - "$model" "$tmp/t6.json" <<'EOF' || fail "-T 6 -q 0.5: loops or exit steps differ from the reference"
import json
import sys

import numpy as np

sys.path.insert(0, "scripts")
import ouro_ref as ref

lens = json.loads(open(sys.argv[2]).read())
assert lens["steps"] == 6 and lens["threshold"] == 0.5, lens
m = ref.load_model(sys.argv[1])
_, pdf, cdf = ref.gate(m, ref.forward(m, np.array([1, 2, 3]), 6))
for i, p in enumerate(lens["positions"]):
    assert len(p["predictions"]) == 6
    want = next((t for t in range(6) if cdf[t, i] >= 0.5), 5)
    assert p["exit_step"] == want, (i, p["exit_step"], want)
EOF

# the rules of the next-token distribution: the steps ouro-gate chooses
# (which t-gate checks against the reference)
echo "$ids" | ouro-forward >"$tmp/lm.rec" || fail "ouro-forward"
for rule in "--kl 0.15" "--entropy 10.32" "--stable 2"; do
	# shellcheck disable=SC2086
	ouro-lens $rule --json <"$tmp/lm.rec" >"$tmp/lm.json" &&
		ouro-gate $rule "$tmp/lm.rec" >"$tmp/lm-gate.rec" || fail "ouro-lens and ouro-gate $rule"
	"$PYTHON" - "$tmp/lm.json" "$tmp/lm-gate.rec" "$rule" <<'EOF' || fail "$rule: exit steps differ from ouro-gate's"
import json, sys
sys.path.insert(0, "scripts")
import ouro_ref as ref
lens = json.loads(open(sys.argv[1]).read())
steps = ref.read_records(sys.argv[2])[0][0]["exit_step"].ints()
assert lens["exit_rule"] == sys.argv[3][2:], lens["exit_rule"]
assert [p["exit_step"] for p in lens["positions"]] == list(steps), (lens["positions"], steps)
print("# lens %s: exit steps %s" % (sys.argv[3], list(steps)))
EOF
done

# ---- 4. the table
# shellcheck disable=SC2086
ouro-lens -k 3 --prompt-ids $ids >"$tmp/table.txt" || fail "ouro-lens table"
n=$(echo "$ids" | wc -w)
[ "$(wc -l <"$tmp/table.txt")" -eq $((2 + 4 * n)) ] || fail "the table has $(wc -l <"$tmp/table.txt") lines, expected $((2 + 4 * n))"
[ "$(grep -c '^ *\(pos\|[0-9]\+\)\? .*\* [0-3] ' "$tmp/table.txt")" -eq "$n" ] ||
	fail "the table does not mark one exit loop per position"
sed -n 2p "$tmp/table.txt" | grep -q '^pos  token .* loop  p(exit)  *cdf  top 1 .* top 2 .* top 3' ||
	fail "the table header is '$(sed -n 2p "$tmp/table.txt")'"
# the p(exit) column ends at the same place on every row
awk 'NR == 2 { c = index($0, "p(exit)") + 6 } NR > 2 { if (substr($0, c - 4, 5) !~ /^[0-9]\.[0-9][0-9][0-9]$/) bad++ }
	END { exit bad > 0 }' "$tmp/table.txt" || fail "the p(exit) column is not aligned"

# ---- 5. failures (expect_fail: tests/lib.sh)
expect_fail 2 "^ouro-lens: -k: '0' is not an integer in 1..1000$" ouro-lens -k 0 hello
expect_fail 2 "^ouro-lens: -q: '1.5' is not a number in 0..1$" ouro-lens -q 1.5 hello
expect_fail 2 "^ouro-lens: -q and --stable choose different exit rules; give one$" ouro-lens -q 1 --stable 2 hello
expect_fail 2 "^ouro-lens: --stable: '1' is not an integer in 2..256$" ouro-lens --stable 1 hello
expect_fail 2 "^ouro-lens: -T: 'x' is not an integer" ouro-lens -T x hello
expect_fail 2 "^ouro-lens: --bogus: unknown option" ouro-lens --bogus hello
expect_fail 1 "^ouro-lens: the prompt is empty$" sh -c "ouro-lens </dev/null"
expect_fail 1 "^ouro-lens: prompt: 'x1' is not a token id$" ouro-lens --prompt-ids 1 x1
expect_fail 1 "outside the vocabulary" ouro-lens --prompt-ids 1 49152
ouro-gate --drop-hidden "$tmp/gate.rec" >"$tmp/nohidden.rec"
expect_fail 1 "^ouro-lens: stdin: record 1: no tensor 'hidden'" sh -c "ouro-lens <'$tmp/nohidden.rec'"
echo 1 2 3 | ouro-forward -k 3 >"$tmp/kept.rec"
expect_fail 1 "^ouro-lens: stdin: record 1: hidden holds steps 3 of 4; every step 0..3 is needed" \
	sh -c "ouro-lens <'$tmp/kept.rec'"
expect_fail 2 "^ouro-lens: -T: the records hold their own loop steps$" sh -c "ouro-lens -T 2 <'$tmp/gate.rec'"
mkdir "$tmp/clean"
expect_fail 4 "^ouro-lens: $tmp/nodir/x.txt: cannot create" ouro-lens -o "$tmp/nodir/x.txt" hello
expect_fail 1 "outside the vocabulary" ouro-lens -o "$tmp/clean/x.txt" --prompt-ids 99999999
[ -z "$(ls "$tmp/clean")" ] || fail "a failed ouro-lens -o left files behind: $(ls "$tmp/clean")"

finish
