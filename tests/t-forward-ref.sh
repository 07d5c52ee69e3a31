#!/bin/sh
# t-forward-ref - differential test of ouro-forward against the independent
# NumPy reference, scripts/ouro_ref.py (float64, written from the model
# definition alone). Every loop's hidden state must be within relative
# error 1e-4 (L2 over the whole [n, D] step) of the reference.
#
#   1. the reference checks itself (ouro_ref.py selftest);
#   2. the bundled fixture, models/ouro-fixture, on fixed ids at its own
#      T=4 (ids from a file) and at --steps 6 (ids from stdin);
#   3. four random models of fresh shapes (GQA, head_dim * heads != D,
#      1-3 layers, bf16/f16/f32, one sharded, one with tied embeddings,
#      other rope_theta and rms_norm_eps) at a random T in 1..6, on random
#      sequences of 1..300 tokens; each also with its weights read into
#      memory (OURO_LOAD=read), which must give the same bytes.
#
# The random part draws from a seed printed as "# seed S"; rerun with
# OURO_TEST_SEED=S to replay it. Run by tests/run from the repository root
# with bin/ on PATH; uses $PYTHON (NumPy) and $TMPDIR.
. tests/lib.sh
stop_at_fail=1
tol=1e-4

# check NAME MODEL STEPS IDS RECORDS: runs the reference comparison and
# keeps its summary line for the total.
check() {
	echo "# $1"
	"$PYTHON" scripts/ouro_ref.py check --model "$2" --steps "$3" \
		--ids "$4" --records "$5" --tol "$tol" </dev/null >"$tmp/check.log" 2>&1
	rc=$?
	cat "$tmp/check.log"
	[ "$rc" -eq 0 ] || fail "$1: ouro-forward differs from the reference (exit $rc)"
	grep '^max relative error' "$tmp/check.log" | awk '{ print $4 }' >>"$tmp/errors"
}

# ---- 1. the reference itself
"$PYTHON" scripts/ouro_ref.py selftest || fail "the reference's self-test"

# ---- 2. the bundled fixture
fixture=models/ouro-fixture
{
	echo "19556 905 17 216 33 34 35 36 37 13855"
	echo "0"
	echo "1 4093 198 1780 314 216 34 27 34 47 2 198 1 520 9531 198 3 198"
	echo "49151 2 48000 0 12345"
	awk 'BEGIN { for (i = 0; i < 300; i++)
		printf "%d%s", (i * 7919 + 13) % 49152, i < 299 ? " " : "\n" }'
} >"$tmp/fixed.ids"

ouro-forward -m "$fixture" "$tmp/fixed.ids" >"$tmp/fixed4.rec" ||
	fail "ouro-forward -m $fixture (exit $?)"
check "fixture, T=4 (config)" "$fixture" 4 "$tmp/fixed.ids" "$tmp/fixed4.rec"

ouro-forward -m "$fixture" --steps 6 <"$tmp/fixed.ids" >"$tmp/fixed6.rec" ||
	fail "ouro-forward -m $fixture --steps 6 (exit $?)"
check "fixture, --steps 6" "$fixture" 6 "$tmp/fixed.ids" "$tmp/fixed6.rec"

# ---- 3. random models
test_seed

# One line per case: index, ouro-forward steps, make-model options; and
# the case's ids in $tmp/case<index>.ids.
"$PYTHON" - "$seed" "$tmp" >"$tmp/cases" <<'EOF' || fail "drawing the random cases"
import sys
import numpy as np

seed, tmp = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(seed)
ncase = 4
dtypes = rng.permutation(["bf16", "f16", "f32", str(rng.choice(["bf16", "f16", "f32"]))])
shard_case, tie_case = rng.choice(ncase, 2, replace=False)
for i in range(ncase):
    H = int(rng.choice([2, 3, 4, 6, 8]))
    if i == 0 or rng.random() < 0.7:        # GQA: fewer kv heads than heads
        KV = int(rng.choice([d for d in range(1, H) if H % d == 0]))
    else:
        KV = H
    # head_dim >= 4 and D >= 16: much smaller random models are chaotic
    # enough to magnify float32 rounding towards the tolerance
    hd = int(rng.choice([4, 8, 16, 32]))
    D = H * hd if H * hd >= 16 and rng.random() < 0.5 else int(rng.choice([16, 24, 40, 64]))
    opts = ["--vocab", rng.integers(300, 1001), "--hidden", D, "--heads", H,
            "--kv-heads", KV, "--head-dim", hd, "--ffn", rng.integers(8, 129),
            "--layers", rng.integers(1, 4), "--steps", rng.integers(1, 7),
            "--max-pos", 512, "--dtype", dtypes[i],
            "--rope-theta", rng.choice(["10000", "500000", "1000000.0"]),
            "--rms-eps", rng.choice(["1e-06", "1e-05"]),
            "--seed", rng.integers(0, 2 ** 31)]
    if i == shard_case:
        opts += ["--shards", 2]
    if i == tie_case:
        opts += ["--tie"]
    V = opts[1]
    lengths = list(rng.integers(1, 301, rng.integers(1, 4)))
    if i == 0:
        lengths.append(1)
    with open("%s/case%d.ids" % (tmp, i), "w") as f:
        for n in lengths:
            f.write(" ".join(str(x) for x in rng.integers(0, V, n)) + "\n")
    print(i, rng.integers(1, 7), " ".join(str(o) for o in opts))
EOF

while read -r i steps opts; do
	model=$tmp/model$i
	# shellcheck disable=SC2086  # opts is a list of words
	"$PYTHON" scripts/make-model --out "$model" $opts </dev/null ||
		fail "make-model $opts (exit $?)"
	ouro-forward -m "$model" --steps "$steps" "$tmp/case$i.ids" \
		</dev/null >"$tmp/case$i.rec" ||
		fail "case $i: ouro-forward --steps $steps on make-model $opts (exit $?)"
	check "case $i: --steps $steps, make-model $opts" "$model" "$steps" \
		"$tmp/case$i.ids" "$tmp/case$i.rec"
	OURO_LOAD=read ouro-forward -m "$model" --steps "$steps" "$tmp/case$i.ids" \
		</dev/null >"$tmp/case$i.read.rec" ||
		fail "case $i: OURO_LOAD=read ouro-forward (exit $?)"
	cmp -s "$tmp/case$i.rec" "$tmp/case$i.read.rec" ||
		fail "case $i: OURO_LOAD=read gives other states than the mapped weights"
done <"$tmp/cases"

awk 'BEGIN { m = 0 } { if ($1 + 0 > m) m = $1 + 0 }
	END { printf "max relative error %.3e over all checks (tol %s)\n", m, tol }' \
	tol="$tol" "$tmp/errors"
