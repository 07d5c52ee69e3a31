#!/bin/sh
# t-eval - ouro-eval ppl against the NumPy reference (scripts/ouro_ref.py
# eval-ppl), which implements lm-evaluation-harness's rolling windows, the
# exit rules and the Stage I objective on its own, in float64.
#
#   1. the fixture on tests/eval/docs.jsonl (text in, tokenized by
#      ouro-eval; the reference gets the ids of ouro-tokenize): one window
#      per document, then windows of 16 with context 1 and of 12 with
#      context 5 (overlapping), thresholds and hidden-difference rules;
#      every mean of the report (per-loop NLL, entropy, expected NLL,
#      Stage I objective, expected loops, per-rule NLL and average loops)
#      within a relative error of 1e-5;
#   2. a fresh random model (bf16, T=5, run at T=6) and one with tied
#      embeddings (f32), on token ids, with another --beta and a gate file,
#      and the rules of the next-token distribution (--kl, --entropy,
#      --stable);
#   3. --per-token: the records hold every window once, step_loss equals
#      the reference's step losses, and `ouro-gate train` reads them;
#   4. text and ids input give the same sums; bytes and words counts;
#   5. throughput in tokens/s (printed).
. tests/lib.sh
stop_at_fail=1
fixture=models/ouro-fixture
ref=scripts/ouro_ref.py
docs=tests/eval/docs.jsonl

# compare NAME REPORT REFERENCE: every mean within 1e-5 relative; prints
# the largest relative error and appends it to $tmp/errors.
compare() {
	"$PYTHON" - "$@" >"$tmp/cmp.log" 2>&1 <<'EOF' || { cat "$tmp/cmp.log"; fail "$1: differs from the reference"; }
import json, sys
name, ours, theirs = sys.argv[1:4]
c = json.load(open(ours))["results"]
r = json.load(open(theirs))
pairs = [("loop %d nll" % (t + 1), x["nll"], r["nll"][t]) for t, x in enumerate(c["loops"])]
pairs += [(k, c["exit"][k], r[k]) for k in ("entropy", "expected_nll", "stage1", "expected_loops")]
for q, x in enumerate(c["exit_rules"]):
    pairs += [(x["rule"] + " nll", x["nll"], r["rule_nll"][q]),
              (x["rule"] + " avg_loops", x["avg_loops"], r["rule_loops"][q])]
assert c["tokens"] == r["tokens"], "tokens %d, reference %d" % (c["tokens"], r["tokens"])
assert len(c["loops"]) == len(r["nll"]) and len(c["exit_rules"]) == len(r["rule_nll"])
worst, what = 0.0, ""
for label, a, b in pairs:
    err = abs(a - b) / max(abs(b), 1e-12)
    if not err <= worst:
        worst, what = err, label
    if not err < 1e-5:
        sys.exit("%s: %s is %r, reference %r (relative error %.2e)" % (name, label, a, b, err))
print("%s: %d tokens, %d values, max relative error %.2e (%s)" % (name, c["tokens"], len(pairs), worst, what))
print("%.3e" % worst, file=open(sys.argv[4], "a"))
EOF
	echo "# $(head -n 1 "$tmp/cmp.log")"
}

# eps_for RECORDS: two eps values that split the step-to-step distances of
# the states in the --per-token RECORDS, each far from every distance.
eps_for() {
	"$PYTHON" - "$1" <<'EOF'
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
d = np.sort(np.concatenate([np.linalg.norm(np.diff(t["hidden"].floats(), axis=0), axis=-1).ravel()
                            for t, _ in ouro_ref.read_records(sys.argv[1])]))
out = []
for q in (0.3, 0.7):
    i = int(q * (len(d) - 1))
    lo, hi = max(i - 20, 0), min(i + 20, len(d) - 1)
    j = lo + int(np.argmax(np.diff(d[lo:hi + 1])))
    out.append("%.6f" % ((d[j] + d[j + 1]) / 2))
print(",".join(out))
EOF
}

# ---- 1. the fixture, text input
ouro-tokenize --jsonl -t "$docs" >"$tmp/docs.ids" || fail "ouro-tokenize"
ouro-eval ppl --per-token "$tmp/pt.rec" -o "$tmp/plain.json" "$docs" || fail "ouro-eval ppl --per-token"
eps=$(eps_for "$tmp/pt.rec") || fail "eps"
for w in "512 1" "16 1" "12 5"; do
	set -- $w
	ouro-eval ppl -W "$1" --context "$2" -q 0.3,0.6,0.95 -e "$eps" -o "$tmp/c.json" "$docs" ||
		fail "ouro-eval ppl -W $1 --context $2"
	"$PYTHON" "$ref" eval-ppl --model "$fixture" --ids "$tmp/docs.ids" --window "$1" --context "$2" \
		-q 0.3,0.6,0.95 -e "$eps" >"$tmp/r.json" || fail "reference eval-ppl -W $1"
	compare "fixture -W $1 --context $2" "$tmp/c.json" "$tmp/r.json" "$tmp/errors"
done

# ---- 2. fresh random models, token ids
"$PYTHON" scripts/make-model --out "$tmp/rand" --vocab 300 --hidden 48 --heads 4 --kv-heads 2 \
	--ffn 64 --layers 2 --steps 5 --dtype bf16 --seed 11 </dev/null || fail "make-model"
"$PYTHON" scripts/make-model --out "$tmp/tied" --vocab 200 --hidden 32 --heads 2 --kv-heads 2 \
	--ffn 48 --layers 1 --steps 3 --dtype f32 --tie --seed 12 </dev/null || fail "make-model --tie"
awk 'BEGIN { for (s = 0; s < 5; s++) { n = 3 + 29 * s; for (i = 0; i < n; i++)
	printf "%d%s", (i * 37 + s * 101 + i * i * 7) % 300, i < n - 1 ? " " : "\n" } }' >"$tmp/rand.ids"
ouro-eval ppl -m "$tmp/rand" -T 6 -f ids --per-token "$tmp/rpt.rec" -o /dev/null "$tmp/rand.ids" ||
	fail "random --per-token"
reps=$(eps_for "$tmp/rpt.rec") || fail "eps (random)"
ouro-eval ppl -m "$tmp/rand" -T 6 -f ids -W 20 --context 4 --beta 0.05 -q 0.5,0.99 -e "$reps" \
	--kl 0.02,0.2 --entropy 5.65 --stable 2,3 -o "$tmp/c.json" "$tmp/rand.ids" ||
	fail "ouro-eval ppl (random)"
"$PYTHON" "$ref" eval-ppl --model "$tmp/rand" --steps 6 --ids "$tmp/rand.ids" --window 20 --context 4 \
	--beta 0.05 -q 0.5,0.99 -e "$reps" --kl 0.02,0.2 --entropy 5.65 --stable 2,3 >"$tmp/r.json" ||
	fail "reference (random)"
compare "random bf16 T=6 -W 20 --context 4" "$tmp/c.json" "$tmp/r.json" "$tmp/errors"

ouro-gate train -m "$tmp/rand" -n 3 --lr 0.05 -o "$tmp/rgate.st" "$tmp/rpt.rec" 2>/dev/null ||
	fail "ouro-gate train on ouro-eval --per-token records"
ouro-eval ppl -m "$tmp/rand" -T 6 -f ids --gate "$tmp/rgate.st" -q 0.5,0.8 -o "$tmp/c.json" "$tmp/rand.ids" ||
	fail "ouro-eval --gate"
"$PYTHON" "$ref" eval-ppl --model "$tmp/rand" --gate "$tmp/rgate.st" --steps 6 --ids "$tmp/rand.ids" \
	--window 512 -q 0.5,0.8 >"$tmp/r.json" || fail "reference --gate"
compare "random --gate trained.st" "$tmp/c.json" "$tmp/r.json" "$tmp/errors"

ouro-eval ppl -m "$tmp/tied" -f ids -W 7 -q 0.4 -o "$tmp/c.json" "$tmp/rand.ids" 2>"$tmp/err" &&
	fail "ids beyond the tied model's vocabulary were accepted"
grep -q "rand.ids: line 2: '203' is not a token id in 0..199" "$tmp/err" || { cat "$tmp/err"; fail "vocabulary message"; }
awk '{ for (i = 1; i <= NF; i++) $i = $i % 200; print }' "$tmp/rand.ids" >"$tmp/tied.ids"
ouro-eval ppl -m "$tmp/tied" -f ids -W 7 -q 0.4 -o "$tmp/c.json" "$tmp/tied.ids" || fail "tied"
"$PYTHON" "$ref" eval-ppl --model "$tmp/tied" --ids "$tmp/tied.ids" --window 7 -q 0.4 >"$tmp/r.json" ||
	fail "reference (tied)"
compare "tied f32 T=3 -W 7" "$tmp/c.json" "$tmp/r.json" "$tmp/errors"

# ---- 3. --per-token records: one per window, step_loss as the reference's
"$PYTHON" - "$fixture" "$tmp/pt.rec" "$tmp/plain.json" <<'EOF' || fail "--per-token records"
import json, sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
head = ouro_ref.load_lm_head(sys.argv[1])
recs = ouro_ref.read_records(sys.argv[2])
report = json.load(open(sys.argv[3]))
worst, scored = 0.0, 0
for t, meta in recs:
    tokens, hidden, sl = t["tokens"].ints(), t["hidden"].floats(), t["step_loss"].floats()
    assert hidden.shape[:2] == (4, len(tokens)) and sl.shape == (4, len(tokens) - 1)
    assert meta["ouro.producer"] == "ouro-eval" and meta["ouro.hidden_steps"] == "0,1,2,3"
    worst = max(worst, float(np.max(np.abs(sl - ouro_ref.step_losses(head, hidden, tokens)), initial=0)))
    scored += len(tokens) - int(meta["ouro.scored_from"])
assert len(recs) == report["results"]["documents"], "one record per document (one window each)"
assert scored == report["results"]["tokens"], "scored positions %d, tokens %d" % (scored, report["results"]["tokens"])
assert worst < 1e-4, "step_loss differs from the reference's by %.2e" % worst
print("# --per-token: %d records, %d scored positions, step_loss max abs error %.2e" % (len(recs), scored, worst))
EOF

# ---- 4. ids input gives the sums of text input, but no bytes or words
ouro-eval ppl -f ids -o "$tmp/ids.json" "$tmp/docs.ids" || fail "-f ids"
"$PYTHON" - "$tmp/plain.json" "$tmp/ids.json" "$docs" <<'EOF' || fail "text and ids input differ"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sa, sb = a["sums"], b["sums"]
for k in sa:
    if k not in ("bytes", "words"):
        assert sa[k] == sb[k], k
assert sb["bytes"] == 0 and sb["words"] == 0
texts = [json.loads(l)["text"] for l in open(sys.argv[3], encoding="utf-8")]
assert sa["bytes"] == sum(len(t.encode()) for t in texts), "bytes"
assert sa["words"] == sum(len(t.split()) for t in texts), "words"
assert a["results"]["loops"][0]["bits_per_byte"] > 0 and b["results"]["loops"][0]["bits_per_byte"] is None
EOF

# ---- 5. throughput (the fixture: a small model with Ouro's 49152-token head)
"$PYTHON" - "$tmp/long.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(4):
        f.write(json.dumps({"text": " ".join("word%d" % ((j * 7 + i) % 97) for j in range(300))}) + "\n")
EOF
ouro-eval ppl -v -q 0.5 -o /dev/null "$tmp/long.jsonl" 2>"$tmp/rate" || fail "throughput run"
echo "# throughput: $(sed 's/^ouro-eval: //' "$tmp/rate")"

awk '{ if ($1 + 0 > m) m = $1 + 0 } END { printf "max relative error %.3e of ouro-eval ppl means vs reference (tol 1e-5)\n", m }' "$tmp/errors"
