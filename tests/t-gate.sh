#!/bin/sh
# t-gate - ouro-gate and ouro-gate train in pipelines, against the NumPy
# reference (scripts/ouro_ref.py gate / stage2), and their failures.
#
#   1. ouro-forward | ouro-gate on the fixture and on a fresh random model
#      (bf16 states, T=5), every exit rule: gate_logits, exit_pdf, exit_cdf
#      and exit_hidden within 1e-5 absolute of the reference, which reads
#      the same hidden states, and every exit_step identical (under --kl,
#      --entropy and --stable, whose values are chosen among the records'
#      own, positions within 1e-6 of the rule's value excepted and
#      counted); a fresh random model of another seed each run;
#   2. --drop-hidden, -o, the default rule (config early_exit_threshold);
#   3. ouro-gate train on fixture data: its loss falls, its first and last
#      loss and mean exit step equal the reference's Stage II loss for the
#      model's gate and for the trained gate file; step_loss given in the
#      records gives the same loss as step_loss computed with lm_head;
#   4. --gate round trip: the trained file works, and the model's own gate
#      saved to a file (train -n 0) gives the same tensors as no --gate;
#   5. bad input and bad options: exit status, one stderr line, and no
#      -o file left behind;
#   6. the EXAMPLES of man/ouro-gate.1, run verbatim.
. tests/lib.sh
stop_at_fail=1
fixture=models/ouro-fixture
ref=scripts/ouro_ref.py
tol=1e-5

# compare NAME MODEL RECORDS [--gate FILE]: the reference recomputes the
# gate's tensors from the records' hidden.
# (sh has no local variables: each function's are prefixed with its letter)
compare() {
	c_name=$1 c_model=$2 c_recs=$3
	shift 3
	"$PYTHON" "$ref" gate --model "$c_model" --records "$c_recs" --tol "$tol" "$@" \
		>"$tmp/cmp.log" 2>&1 || { cat "$tmp/cmp.log"; fail "$c_name: differs from the reference"; }
	echo "# $c_name: $(cat "$tmp/cmp.log")"
	sed -n 's/^max abs error gate_logits \([^,]*\), exit_pdf \([^,]*\), exit_cdf \([^,]*\), exit_hidden \([^ ]*\).*/\1\n\2\n\3\n\4/p' \
		"$tmp/cmp.log" >>"$tmp/errors"
}

# meta RECORDS KEY: the value of metadata KEY in the first record.
meta() {
	ouro-dump "$1" | sed -n "s/^  $2 = //p" | head -n 1
}

# mean_step RECORDS: the mean exit_step over all records.
mean_step() {
	"$PYTHON" - "$1" <<'EOF'
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
s = np.concatenate([t["exit_step"].ints() for t, _ in ouro_ref.read_records(sys.argv[1])])
print("%.4f" % s.mean())
EOF
}

# ---- 1. fixture and a random model, every rule
{
	echo "19556 905 17 216 33 34 35 36 37 13855"
	echo "0"
	echo "1 4093 198 1780 314 216 34 27 34 47 2 198 1 520 9531 198 3 198"
	awk 'BEGIN { for (i = 0; i < 120; i++)
		printf "%d%s", (i * 7919 + 13) % 49152, i < 119 ? " " : "\n" }'
} >"$tmp/fixed.ids"
ouro-forward -m "$fixture" "$tmp/fixed.ids" >"$tmp/fix.rec" || fail "ouro-forward on the fixture"

# an eps between the step-to-step distances, so that -e exits at several steps
eps_for() {
	"$PYTHON" - "$1" <<'EOF'
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
d = np.concatenate([np.linalg.norm(np.diff(t["hidden"].floats(), axis=0), axis=-1).ravel()
                    for t, _ in ouro_ref.read_records(sys.argv[1])])
print("%.4f" % np.median(d))
EOF
}

# the medians of KL(p_t || p_{t-1}) and of the entropy of p_t over the
# loops t >= 1 of every position: values that --kl and --entropy cross
lm_values() {
	"$PYTHON" - "$1" "$2" <<'EOF'
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
head = ouro_ref.load_lm_head(sys.argv[1])
kl, ent = [], []
for t, _ in ouro_ref.read_records(sys.argv[2]):
    lp = np.array([[ouro_ref.log_softmax(x) for x in h @ head.T] for h in t["hidden"].floats()])
    p = np.exp(lp[1:])
    kl.append((p * (lp[1:] - lp[:-1])).sum(-1).ravel())
    ent.append(-(p * lp[1:]).sum(-1).ravel())
print("%.4g %.4g" % (np.median(np.concatenate(kl)), np.median(np.concatenate(ent))))
EOF
}

rules() {
	r_model=$1 r_recs=$2 r_label=$3
	r_eps=$(eps_for "$r_recs") || fail "eps for $r_label"
	set -- $(lm_values "$r_model" "$r_recs") || fail "KL and entropy for $r_label"
	for r_rule in "" "-q 0.5" "-q 0" "-q 1" "-s 0" "-s 2" "-e $r_eps" "-w" "--kl $1" \
		"--entropy $2" "--stable 2" "--stable 3"; do
		# shellcheck disable=SC2086  # r_rule is a list of words
		ouro-gate -m "$r_model" $r_rule "$r_recs" >"$tmp/g.rec" ||
			fail "$r_label: ouro-gate $r_rule (exit $?)"
		compare "$r_label ouro-gate ${r_rule:-(default)}, mean exit step $(mean_step "$tmp/g.rec")" \
			"$r_model" "$tmp/g.rec"
	done
}
rules "$fixture" "$tmp/fix.rec" fixture

ouro-gate -m "$fixture" "$tmp/fix.rec" >"$tmp/g.rec" || fail "default rule"
[ "$(meta "$tmp/g.rec" ouro.exit_rule)" = "threshold 1" ] ||
	fail "default rule is '$(meta "$tmp/g.rec" ouro.exit_rule)', expected config's 'threshold 1'"
[ "$(meta "$tmp/g.rec" ouro.gate)" = model ] || fail "ouro.gate is not 'model'"

test_seed
"$PYTHON" scripts/make-model --out "$tmp/rand" --vocab 400 --hidden 48 --heads 4 \
	--kv-heads 2 --ffn 64 --layers 2 --steps 5 --dtype bf16 --seed "$seed" </dev/null ||
	fail "make-model"
awk 'BEGIN { for (s = 0; s < 3; s++) { n = 20 + 37 * s; for (i = 0; i < n; i++)
	printf "%d%s", (i * 131 + s * 17 + 5) % 400, i < n - 1 ? " " : "\n" } }' >"$tmp/rand.ids"
ouro-forward -m "$tmp/rand" --dtype bf16 "$tmp/rand.ids" >"$tmp/rand.rec" ||
	fail "ouro-forward on the random model"
rules "$tmp/rand" "$tmp/rand.rec" "random T=5 bf16"

# ---- 2. --drop-hidden, -o
ouro-gate -m "$fixture" -q 0.5 --drop-hidden -o "$tmp/drop.rec" "$tmp/fix.rec" || fail "--drop-hidden -o"
ouro-dump "$tmp/drop.rec" >"$tmp/drop.txt" || fail "ouro-dump"
grep -q '^  hidden ' "$tmp/drop.txt" && fail "--drop-hidden kept hidden"
for t in tokens gate_logits exit_pdf exit_cdf exit_step exit_hidden; do
	grep -q "^  $t " "$tmp/drop.txt" || fail "--drop-hidden output lacks $t"
done
ls "$tmp" | grep -q '\.tmp\.' && fail "-o left a temporary file"

# ---- 3. training
# loss LOG EPOCH: the loss an epoch line reports; steps LOG EPOCH: its mean exit step
loss() { sed -n "s/^ouro-gate train: epoch $2: loss \([^,]*\),.*/\1/p" "$1"; }
steps() { sed -n "s/^ouro-gate train: epoch $2: .*mean exit step \([^ ]*\) .*/\1/p" "$1"; }
# close A B: relative difference below 1e-4
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-4 * (b < 0 ? -b : b) + 1e-9) }'; }

ouro-forward -m "$fixture" "$tmp/fixed.ids" |
	ouro-gate train -m "$fixture" -q 0.5 -n 20 --lr 0.01 --batch 32 -o "$tmp/trained.st" \
	2>"$tmp/train.log" || { cat "$tmp/train.log"; fail "ouro-forward | ouro-gate train"; }
first=$(loss "$tmp/train.log" 0)
last=$(loss "$tmp/train.log" 20)
echo "# train (fixture, 20 epochs, lr 0.01): loss $first -> $last, mean exit step at q=0.5" \
	"$(steps "$tmp/train.log" 0) -> $(steps "$tmp/train.log" 20)"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(a != "" && b != "" && b < a) }' ||
	fail "train did not lower its loss: $first -> $last"
"$PYTHON" "$ref" stage2 --model "$fixture" --records "$tmp/fix.rec" -q 0.5 >"$tmp/s0" ||
	fail "reference stage2"
"$PYTHON" "$ref" stage2 --model "$fixture" --records "$tmp/fix.rec" -q 0.5 \
	--gate "$tmp/trained.st" >"$tmp/s1" || fail "reference stage2 --gate"
r0=$(sed -n 's/^loss //p' "$tmp/s0") r1=$(sed -n 's/^loss //p' "$tmp/s1")
echo "# reference Stage II loss: model gate $r0, trained gate $r1"
close "$first" "$r0" || fail "initial loss $first, reference $r0"
close "$last" "$r1" || fail "final loss $last, reference $r1"
m0=$(sed -n 's/^mean exit step //p' "$tmp/s0") m1=$(sed -n 's/^mean exit step //p' "$tmp/s1")
close "$(steps "$tmp/train.log" 0)" "$m0" && close "$(steps "$tmp/train.log" 20)" "$m1" ||
	fail "mean exit steps differ from the reference ($m0, $m1)"

# the same training twice: the same file, byte for byte
ouro-gate train -m "$fixture" -q 0.5 -n 20 --lr 0.01 --batch 32 -o "$tmp/again.st" \
	"$tmp/fix.rec" 2>/dev/null || fail "train again"
cmp -s "$tmp/trained.st" "$tmp/again.st" || fail "training is not deterministic"

# records that carry step_loss (as ouro-eval writes it) train the same way
"$PYTHON" - "$fixture" "$tmp/fix.rec" "$tmp/sl.rec" <<'EOF' || fail "writing step_loss records"
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
head = ouro_ref.load_lm_head(sys.argv[1])
with open(sys.argv[3], "wb") as f:
    for t, meta in ouro_ref.read_records(sys.argv[2]):
        sl = ouro_ref.step_losses(head, t["hidden"].floats(), t["tokens"].ints())
        ouro_ref.write_safetensors(f, {"tokens": ("I32", t["tokens"].data),
                                       "hidden": ("F32", t["hidden"].data),
                                       "step_loss": ("F32", sl.astype(np.float32))}, meta)
EOF
ouro-gate train -m "$fixture" -q 0.5 -n 0 -o "$tmp/sl.st" "$tmp/sl.rec" 2>"$tmp/sl.log" ||
	{ cat "$tmp/sl.log"; fail "train on step_loss records"; }
grep -q 'computed with lm_head for 0 records' "$tmp/sl.log" || fail "step_loss in the records was not used"
close "$(loss "$tmp/sl.log" 0)" "$r0" || fail "step_loss records: loss $(loss "$tmp/sl.log" 0), reference $r0"

# ---- 4. --gate round trip
ouro-gate -m "$fixture" --gate "$tmp/trained.st" -q 0.5 "$tmp/fix.rec" >"$tmp/tg.rec" ||
	fail "--gate with the trained file"
compare "fixture --gate trained.st -q 0.5, mean exit step $(mean_step "$tmp/tg.rec")" \
	"$fixture" "$tmp/tg.rec" --gate "$tmp/trained.st"
[ "$(meta "$tmp/tg.rec" ouro.gate)" = "$tmp/trained.st" ] || fail "ouro.gate is not the --gate file"

ouro-gate train -m "$fixture" -n 0 -o "$tmp/own.st" "$tmp/fix.rec" 2>/dev/null || fail "train -n 0"
for rule in "-q 0.5" "-w"; do
	# shellcheck disable=SC2086
	ouro-gate -m "$fixture" $rule "$tmp/fix.rec" >"$tmp/a.rec" &&
		ouro-gate -m "$fixture" --gate "$tmp/own.st" $rule "$tmp/fix.rec" >"$tmp/b.rec" ||
		fail "$rule with and without --gate own.st"
	"$PYTHON" - "$tmp/a.rec" "$tmp/b.rec" <<'EOF' || fail "$rule: --gate with the model's own gate differs"
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
a, b = ouro_ref.read_records(sys.argv[1]), ouro_ref.read_records(sys.argv[2])
assert len(a) == len(b)
for (ta, ma), (tb, mb) in zip(a, b):
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and np.array_equal(ta[k].data, tb[k].data), k
    ma.pop("ouro.gate"), mb.pop("ouro.gate")
    assert ma == mb
EOF
done

# ---- 5. failures: expect STATUS NAME CMD...: the exit status, one line on
# stderr that starts with the program's name, nothing on stdout, and no
# output file
expect() {
	e_want=$1 e_name=$2
	shift 2
	expect_fail "$e_want" '^ouro-gate' "$@" </dev/null
	ls "$tmp" | grep -q '^bad\.' && fail "$e_name: left an output file behind"
	echo "# $e_name: exit $e_want: $(sed "s|$tmp/||g" "$tmp/err")"
}

"$PYTHON" - "$tmp/nohidden.rec" <<'EOF' || fail "writing a record without hidden"
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
with open(sys.argv[1], "wb") as f:
    ouro_ref.write_safetensors(f, {"tokens": ("I32", np.array([1, 2, 3], dtype=np.int32))})
EOF
ouro-forward -m "$fixture" -k 1,3 "$tmp/fixed.ids" >"$tmp/k13.rec" || fail "ouro-forward -k 1,3"
ouro-forward -m "$fixture" -T 4 -k 0,1,2 "$tmp/fixed.ids" >"$tmp/k012.rec" || fail "ouro-forward -k 0,1,2"
printf 'not a safetensors file' >"$tmp/junk.st"

expect 1 "no hidden" ouro-gate -m "$fixture" -o "$tmp/bad.rec" "$tmp/nohidden.rec"
grep -q "no tensor 'hidden'" "$tmp/err" || fail "no hidden: message"
expect 1 "text ids" ouro-gate -m "$fixture" -o "$tmp/bad.rec" "$tmp/fixed.ids"
expect 1 "hidden size mismatch" ouro-gate -m "$fixture" -o "$tmp/bad.rec" "$tmp/rand.rec"
grep -q "has D = 48, but the model .* has hidden_size 32" "$tmp/err" || fail "mismatch: message"
expect 1 "missing steps 0,2" ouro-gate -m "$fixture" -o "$tmp/bad.rec" "$tmp/k13.rec"
grep -q "every step 0..3 is needed" "$tmp/err" || fail "missing steps: message"
expect 1 "missing step 3" ouro-gate -m "$fixture" -o "$tmp/bad.rec" "$tmp/k012.rec"
expect 1 "train: no hidden" ouro-gate train -m "$fixture" -o "$tmp/bad.st" "$tmp/nohidden.rec"
expect 1 "train: missing steps" ouro-gate train -m "$fixture" -o "$tmp/bad.st" "$tmp/k13.rec"
expect 1 "train: hidden size mismatch" ouro-gate train -m "$fixture" -o "$tmp/bad.st" "$tmp/rand.rec"
expect 2 "-q 1.5" ouro-gate -m "$fixture" -q 1.5 "$tmp/fix.rec"
expect 2 "-q nan" ouro-gate -m "$fixture" -q nan "$tmp/fix.rec"
expect 2 "-q 0.5x" ouro-gate -m "$fixture" -q 0.5x "$tmp/fix.rec"
expect 2 "-s 9 with T=4" ouro-gate -m "$fixture" -s 9 -o "$tmp/bad.rec" "$tmp/fix.rec"
expect 2 "-s -1" ouro-gate -m "$fixture" -s -1 "$tmp/fix.rec"
expect 2 "-e -1" ouro-gate -m "$fixture" -e -1 "$tmp/fix.rec"
expect 2 "-q and -s" ouro-gate -m "$fixture" -q 0.5 -s 1 "$tmp/fix.rec"
expect 2 "-w and -e" ouro-gate -m "$fixture" -w -e 0.1 "$tmp/fix.rec"
expect 2 "-q and --kl" ouro-gate -m "$fixture" -q 0.5 --kl 0.1 "$tmp/fix.rec"
grep -q "^ouro-gate: -q and --kl choose different exit rules; give one$" "$tmp/err" ||
	fail "-q and --kl: message"
expect 2 "--entropy and --stable" ouro-gate -m "$fixture" --entropy 1 --stable 2 "$tmp/fix.rec"
expect 2 "--kl -1" ouro-gate -m "$fixture" --kl -1 "$tmp/fix.rec"
expect 2 "--entropy x" ouro-gate -m "$fixture" --entropy x "$tmp/fix.rec"
expect 2 "--stable 1" ouro-gate -m "$fixture" --stable 1 "$tmp/fix.rec"
expect 1 "--kl, hidden size mismatch" ouro-gate -m "$fixture" --kl 0.1 -o "$tmp/bad.rec" "$tmp/rand.rec"
grep -q "has D = 48, but the model .* has hidden_size 32" "$tmp/err" || fail "--kl mismatch: message"
expect 2 "train without -o" ouro-gate train -m "$fixture" "$tmp/fix.rec"
expect 2 "train --lr 0" ouro-gate train -m "$fixture" --lr 0 -o "$tmp/bad.st" "$tmp/fix.rec"
expect 2 "train -n -1" ouro-gate train -m "$fixture" -n -1 -o "$tmp/bad.st" "$tmp/fix.rec"
expect 2 "train --batch 0" ouro-gate train -m "$fixture" --batch 0 -o "$tmp/bad.st" "$tmp/fix.rec"
expect 3 "--gate missing" ouro-gate -m "$fixture" --gate "$tmp/none.st" "$tmp/fix.rec"
expect 3 "--gate not safetensors" ouro-gate -m "$fixture" --gate "$tmp/junk.st" "$tmp/fix.rec"
expect 3 "--gate of another width" ouro-gate -m "$tmp/rand" --gate "$tmp/trained.st" \
	-o "$tmp/bad.rec" "$tmp/rand.rec"
grep -q "expected \[1, 48\]" "$tmp/err" || fail "--gate width: message"

# ---- 6. the man page's EXAMPLES, verbatim, in a scratch directory
# (only the '$ ' lines of .Bd -literal blocks; .Dl lines need a real checkpoint)
sed -n '/^\.Sh EXAMPLES/,/^\.Sh SEE/p' man/ouro-gate.1 |
	sed -n '/^\.Bd -literal/,/^\.Ed/s/^\$ //p' >"$tmp/examples"
[ -s "$tmp/examples" ] || fail "no EXAMPLES found in man/ouro-gate.1"
mkdir "$tmp/ex" || exit 1
root=$PWD
(
	cd "$tmp/ex" || exit 1
	while IFS= read -r line; do
		OURO_MODEL=$root/$fixture sh -c "$line" >/dev/null 2>"$tmp/ex.err" ||
			{ cat "$tmp/ex.err"; echo "FAIL: example: $line"; exit 1; }
		echo "# example: $line"
	done <"$tmp/examples"
) || exit 1

awk 'BEGIN { m = 0 } { if ($1 + 0 > m) m = $1 + 0 }
	END { printf "max abs error %.3e over all gate checks (tol %s)\n", m, tol }' \
	tol="$tol" "$tmp/errors"
