#!/bin/sh
# t-sample - ouro-sample against the independent reference and in
# pipelines, and its failures.
#
#   1. differential: on the bundled fixture and on a fresh random model
#      (scripts/make-model), for greedy decoding and for sampling settings
#      and seeds, the new token equals that of scripts/ouro_ref.py (the
#      lm_head from the stored weights, float64, applied to the record's own
#      state; ouro_ref.sample from the definitions), and --logprobs K gives
#      the reference's top K within 1e-4. A token may differ only where the
#      reference is within 1e-5 of picking it too (ouro_ref.sample_distance:
#      a rounding tie). States come from exit_hidden (F32 and BF16), from
#      hidden's last step, from -s, and from ouro-gate (threshold and
#      weighted exits) once it is built.
#   2. chained: ouro-forward | ouro-sample | ouro-forward | ouro-sample
#      gives the tokens the reference's own forward pass and sampler give.
#   3. -t output, determinism of the seed, -o atomicity.
#   4. failures: records without a state, D mismatch with the model, shape
#      and step errors, text input, bad option values; each exits with its
#      documented status, prints one stderr line and nothing on stdout.
#   5. the EXAMPLES of man/ouro-sample.1 run verbatim with the bundled
#      default model, as t-man runs them, and print the output they show
#      (commands using ouro-gate only when it is built).
#
# The random model draws from a seed printed as "# seed S"; rerun with
# OURO_TEST_SEED=S to replay it. Run by tests/run from the repository root
# with bin/ on PATH; uses $PYTHON (NumPy) and $TMPDIR.
. tests/lib.sh
root=$PWD
fixture=models/ouro-fixture
tol=1e-4

# check.py MODEL IN OUT [OPTION ...]: OUT is what ouro-sample OPTION ...
# wrote for the records IN; compares it with the reference. Prints
# "logprob error E" and exits 1 on a difference.
cat >"$tmp/check.py" <<'EOF'
import argparse
import sys

import numpy as np

sys.path.insert(0, "scripts")
import ouro_ref as ref

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("inp")
ap.add_argument("out")
ap.add_argument("-s", "--step", type=int)
ap.add_argument("-t", "--ids", action="store_true")
ap.add_argument("--temperature", type=float, default=0.0)
ap.add_argument("--top-k", type=int, default=0)
ap.add_argument("--top-p", type=float, default=1.0)
ap.add_argument("--min-p", type=float, default=0.0)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--logprobs", type=int, default=0)
ap.add_argument("--tol", type=float, default=1e-4)
ap.add_argument("--tie", type=float, default=1e-5)
a = ap.parse_args()

W = ref.load_lm_head(a.model)
ins = ref.read_records(a.inp)
if a.ids:
    outs = [np.array([int(x) for x in line.split()])
            for line in open(a.out).read().splitlines()]
else:
    outs = [t["tokens"].ints() for t, _ in ref.read_records(a.out)]
    tops = [t for t, _ in ref.read_records(a.out)]
bad = []
worst = 0.0
if len(outs) != len(ins):
    bad.append("%d outputs for %d records" % (len(outs), len(ins)))
for r, ((t, meta), got) in enumerate(zip(ins, outs)):
    ids = t["tokens"].ints()
    n = len(ids)
    if a.step is not None:
        steps = [int(s) for s in meta["ouro.hidden_steps"].split(",")]
        h = t["hidden"].floats()[steps.index(a.step), n - 1]
    elif "exit_hidden" in t:
        h = t["exit_hidden"].floats()[n - 1]
    else:
        h = t["hidden"].floats()[-1, n - 1]
    logits = W @ h
    opts = (a.temperature, a.top_k, a.top_p, a.min_p, a.seed)
    want = ref.sample(logits, n, *opts)
    if len(got) != n + 1 or not np.array_equal(got[:n], ids):
        bad.append("record %d: tokens are not the input's plus one" % r)
        continue
    if got[n] != want:
        dist = ref.sample_distance(logits, n, int(got[n]), *opts)
        if dist < a.tie:
            print("# record %d: token %d, reference %d: a rounding tie (distance %.1e)"
                  % (r, got[n], want, dist))
        else:
            bad.append("record %d: token %d, reference %d (%.2e away)"
                       % (r, got[n], want, dist))
    if a.logprobs:
        lp = ref.log_softmax(logits)
        tids = tops[r]["top_ids"].ints()
        tlp = tops[r]["top_logprobs"].floats()
        best = np.sort(lp)[::-1][:a.logprobs]
        if tids.shape != (a.logprobs,) or tlp.shape != (a.logprobs,):
            bad.append("record %d: top_ids/top_logprobs have shapes %s %s"
                       % (r, tids.shape, tlp.shape))
            continue
        # each listed id is one of the K best, up to ties within tol, and
        # carries its log-probability
        err = max(np.max(np.abs(tlp - lp[tids])), np.max(np.abs(lp[tids] - best)))
        worst = max(worst, err)
        if not err < a.tol or len(set(tids.tolist())) != a.logprobs:
            bad.append("record %d: top-%d log-probabilities differ by %.3e"
                       % (r, a.logprobs, err))
for b in bad:
    print("FAIL " + b)
print("logprob error %.3e" % worst)
sys.exit(1 if bad else 0)
EOF

# chain.py MODEL IDS OUT ROUNDS [OPTION ...]: OUT holds text ids after
# ROUNDS rounds of ouro-forward | ouro-sample OPTION ...; the reference
# redoes them with its own forward pass.
cat >"$tmp/chain.py" <<'EOF'
import sys

import numpy as np

sys.path.insert(0, "scripts")
import ouro_ref as ref

model, idsfile, out, rounds = sys.argv[1:5]
opts = dict(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, seed=0)
args = sys.argv[5:]
for k, v in zip(args[::2], args[1::2]):
    key = k.lstrip("-").replace("-", "_")
    opts[key] = int(v) if key in ("top_k", "seed") else float(v)
m = ref.load_model(model)
W = ref.load_lm_head(model)
got = [[int(x) for x in line.split()] for line in open(out).read().splitlines()]
seqs = ref.read_ids(idsfile)
bad = 0
if len(got) != len(seqs):
    print("FAIL %d lines for %d sequences" % (len(got), len(seqs)))
    sys.exit(1)
for r, ids in enumerate(seqs):
    # teacher-forced: each round's token from the reference on the
    # program's own prefix, so that a rounding tie does not cascade
    n0 = len(ids)
    if len(got[r]) != n0 + int(rounds) or got[r][:n0] != list(ids):
        print("FAIL sequence %d: %s does not extend %s" % (r, got[r], list(ids)))
        bad += 1
        continue
    for i in range(int(rounds)):
        prefix = got[r][:n0 + i]
        h = ref.forward(m, prefix)[-1, -1]
        tok = ref.sample(W @ h, len(prefix), **opts)
        if tok != got[r][n0 + i]:
            dist = ref.sample_distance(W @ h, len(prefix), got[r][n0 + i], **opts)
            tie = dist < 1e-5
            print("%s sequence %d round %d: token %d, reference %d (%.1e away)"
                  % ("#" if tie else "FAIL", r, i, got[r][n0 + i], tok, dist))
            bad += not tie
    print("# chain %d: + %s" % (r, " ".join(map(str, got[r][n0:]))))
sys.exit(1 if bad else 0)
EOF

# ---- 1. differential, on the fixture and a random model
test_seed

# random.py SEED DIR: a make-model command line and ids for it
"$PYTHON" - "$seed" "$tmp" >"$tmp/random.opts" <<'EOF' || { echo "FAIL: drawing the random model"; exit 1; }
import sys
import numpy as np
seed, tmp = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(seed)
V = int(rng.integers(300, 2001))
H = int(rng.choice([2, 4]))
opts = ["--vocab", V, "--hidden", int(rng.choice([16, 24, 40])), "--heads", H,
        "--kv-heads", H, "--head-dim", int(rng.choice([4, 8])), "--ffn", 48,
        "--layers", int(rng.integers(1, 3)), "--steps", int(rng.integers(2, 5)),
        "--dtype", str(rng.choice(["bf16", "f16", "f32"])),
        "--seed", int(rng.integers(0, 2 ** 31))]
if rng.random() < 0.5:
    opts.append("--tie")
with open(tmp + "/random.ids", "w") as f:
    for n in (1, int(rng.integers(2, 40)), int(rng.integers(2, 40))):
        f.write(" ".join(str(x) for x in rng.integers(0, V, n)) + "\n")
print(" ".join(str(o) for o in opts))
EOF
# shellcheck disable=SC2046  # the options are words
"$PYTHON" scripts/make-model --out "$tmp/random" $(cat "$tmp/random.opts") >/dev/null ||
	{ echo "FAIL: make-model $(cat "$tmp/random.opts")"; exit 1; }
echo "# random model: $(cat "$tmp/random.opts")"
{
	echo "19556 905 17 216 33 34 35 36 37 13855"
	echo "0"
	echo "1 4093 198 1780 314 216 34 27 34 47 2 198"
} >"$tmp/fixture.ids"

# exit.py IN OUT DTYPE: adds exit_hidden [n, D] to records, each position
# taking a random step of hidden, stored as DTYPE.
cat >"$tmp/exit.py" <<'EOF'
import sys
import numpy as np
sys.path.insert(0, "scripts")
import ouro_ref as ref
rng = np.random.default_rng(7)
with open(sys.argv[2], "wb") as f:
    for t, meta in ref.read_records(sys.argv[1]):
        hid = t["hidden"].floats(np.float32)
        n = hid.shape[1]
        eh = hid[rng.integers(0, hid.shape[0], n), np.arange(n)]
        out = {k: (v.dtype, v.data) for k, v in t.items()}
        out["exit_hidden"] = (sys.argv[3], ref.encode(eh, sys.argv[3]))
        ref.write_safetensors(f, out, meta)
EOF

errors=$tmp/errors
: >"$errors"
# differ NAME MODEL IN OPTION ...: runs ouro-sample on IN and checks it.
differ() {
	name=$1 model=$2 in=$3
	shift 3
	ouro-sample -m "$model" "$@" "$in" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		fail "$name: ouro-sample $* exits $rc: $(cat "$tmp/err")"
		return
	fi
	if ! (cd "$root" && "$PYTHON" "$tmp/check.py" --tol "$tol" "$model" "$in" "$tmp/out" "$@") \
		>"$tmp/check.log" 2>&1; then
		fail "$name: ouro-sample $* differs from the reference"
		sed 's/^/    /' "$tmp/check.log"
		return
	fi
	grep '^#' "$tmp/check.log"
	awk '/^logprob error/ { print $3 }' "$tmp/check.log" >>"$errors"
}

for which in fixture random; do
	if [ "$which" = fixture ]; then model=$fixture; ids=$tmp/fixture.ids; else model=$tmp/random; ids=$tmp/random.ids; fi
	V=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json")
	ouro-forward -m "$model" "$ids" >"$tmp/$which.rec" || { fail "$which: ouro-forward"; continue; }
	ouro-forward -m "$model" -k 0,1 --dtype bf16 "$ids" >"$tmp/$which-k.rec" ||
		{ fail "$which: ouro-forward -k 0,1"; continue; }
	"$PYTHON" "$tmp/exit.py" "$tmp/$which.rec" "$tmp/$which-exit.rec" F32 &&
		"$PYTHON" "$tmp/exit.py" "$tmp/$which-k.rec" "$tmp/$which-exitbf.rec" BF16 ||
		{ fail "$which: writing exit_hidden records"; continue; }
	echo "# $which: greedy and --logprobs"
	differ "$which greedy" "$model" "$tmp/$which.rec" --logprobs 20
	differ "$which full vocabulary" "$model" "$tmp/$which.rec" --logprobs "$V"
	differ "$which exit_hidden" "$model" "$tmp/$which-exit.rec" --logprobs 5
	differ "$which exit_hidden bf16" "$model" "$tmp/$which-exitbf.rec" --logprobs 3
	differ "$which -s 0" "$model" "$tmp/$which-exitbf.rec" -s 0 --logprobs 4
	differ "$which -s 1, -t" "$model" "$tmp/$which-k.rec" --step 1 -t
	if command -v ouro-gate >/dev/null 2>&1; then
		for rule in "" -w; do
			# shellcheck disable=SC2086  # rule is zero or one word
			if ouro-gate -m "$model" $rule "$tmp/$which.rec" >"$tmp/$which-gate.rec"; then
				differ "$which ouro-gate $rule" "$model" "$tmp/$which-gate.rec" --logprobs 5
			else
				fail "$which: ouro-gate $rule exits $?"
			fi
		done
	fi
	echo "# $which: sampling"
	for s in 0 1 12345 18446744073709551615; do
		differ "$which T=1 seed $s" "$model" "$tmp/$which.rec" --temperature 1 --seed "$s"
		differ "$which top-k seed $s" "$model" "$tmp/$which.rec" --temperature 0.7 --top-k 40 --seed "$s" -t
		differ "$which top-p seed $s" "$model" "$tmp/$which-exit.rec" --temperature 1 --top-p 0.7 --seed "$s"
		differ "$which min-p seed $s" "$model" "$tmp/$which.rec" --temperature 1.5 --min-p 0.05 --seed "$s"
		differ "$which all seed $s" "$model" "$tmp/$which.rec" --temperature 0.3 \
			--top-k 200 --top-p 0.9 --min-p 0.01 --seed "$s" --logprobs 2
	done
done
awk 'BEGIN { m = 0 } { if ($1 + 0 > m) m = $1 + 0 }
	END { printf "max logprob error %.3e over %d checks (tol %s)\n", m, NR, tol }' \
	tol="$tol" "$errors"

# ---- 2. chained: records through two rounds, against the reference's
# own forward pass
chain() {
	name=$1 model=$2 ids=$3
	shift 3
	if ! ouro-forward -m "$model" "$ids" | ouro-sample -m "$model" "$@" |
		ouro-forward -m "$model" | ouro-sample -m "$model" "$@" -t >"$tmp/chain.out"; then
		fail "$name: the pipeline failed"
		return
	fi
	(cd "$root" && "$PYTHON" "$tmp/chain.py" "$model" "$ids" "$tmp/chain.out" 2 "$@") \
		>"$tmp/chain.log" 2>&1 || { fail "$name: differs from the reference"; }
	sed 's/^/    /' "$tmp/chain.log"
}
echo "# chained twice"
chain "fixture greedy" "$fixture" "$tmp/fixture.ids"
chain "fixture sampled" "$fixture" "$tmp/fixture.ids" --temperature 0.8 --top-p 0.95 --seed 3
chain "random greedy" "$tmp/random" "$tmp/random.ids"
chain "random sampled" "$tmp/random" "$tmp/random.ids" --temperature 1 --top-k 50 --seed 99

# ---- 3. -t, the seed, -o
echo '19556 905 17' | ouro-forward >"$tmp/one.rec" || fail "ouro-forward on one line"
ouro-sample -t "$tmp/one.rec" >"$tmp/t.out" 2>"$tmp/err" || fail "ouro-sample -t exits $?"
grep -Eq '^19556 905 17 [0-9]+$' "$tmp/t.out" && [ "$(wc -l <"$tmp/t.out")" -eq 1 ] ||
	fail "-t prints '$(cat "$tmp/t.out")', not one line '19556 905 17 ID'"
[ -s "$tmp/err" ] && fail "-t writes to stderr: $(cat "$tmp/err")"
ouro-sample -t "$tmp/fixture.rec" | awk 'END { if (NR != 3) exit 1 }' ||
	fail "-t on three records does not print three lines"
: >"$tmp/seeds"
for s in 1 2 3 4 5 6; do
	a=$(ouro-sample -t --temperature 1 --seed "$s" "$tmp/one.rec")
	b=$(ouro-sample -t --temperature 1 --seed "$s" "$tmp/one.rec")
	[ "$a" = "$b" ] || fail "--seed $s gives '$a', then '$b'"
	echo "$a" >>"$tmp/seeds"
done
[ "$(sort -u "$tmp/seeds" | wc -l)" -ge 4 ] || fail "six seeds give fewer than four tokens at T=1"
[ "$(ouro-sample -t --temperature 1 "$tmp/one.rec")" = "$(ouro-sample -t --temperature 1 --seed 0 "$tmp/one.rec")" ] ||
	fail "the default seed is not 0"
ouro-sample -t <"$tmp/fixture.rec" >"$tmp/stdin.out" && ouro-sample -t - <"$tmp/fixture.rec" | cmp -s - "$tmp/stdin.out" ||
	fail "records on stdin, with and without '-', differ"
ouro-sample --logprobs 3 -o "$tmp/o.rec" "$tmp/fixture.rec" >"$tmp/out" || fail "-o exits $?"
[ -s "$tmp/out" ] && fail "-o also writes to stdout"
ouro-sample --logprobs 3 "$tmp/fixture.rec" | cmp -s - "$tmp/o.rec" || fail "-o FILE and stdout differ"
cp "$tmp/o.rec" "$tmp/keep.rec"
cat "$tmp/fixture.rec" "$tmp/random.rec" | ouro-sample -o "$tmp/o.rec" 2>/dev/null &&
	fail "a bad second record is accepted"
cmp -s "$tmp/o.rec" "$tmp/keep.rec" || fail "a failed run changed the -o FILE"
ls "$tmp" | grep -q '^o\.rec\.tmp' && fail "a failed run left a temporary file"
ouro-sample "$tmp/fixture.rec" | "$PYTHON" -c '
import sys; sys.path.insert(0, "scripts"); import ouro_ref as r
recs = r.read_records("-")
ins = r.read_records(sys.argv[1])
assert len(recs) == 3
for (t, m), (ti, mi) in zip(recs, ins):
    assert sorted(t) == ["tokens"], sorted(t)
    assert m["ouro.producer"] == "ouro-sample" and m["ouro.model"] == mi["ouro.model"], m
' "$tmp/fixture.rec" || fail "output records: tensors or metadata not as documented"

# ---- 4. failures
# bad.py DIR: malformed inputs, one file per case
"$PYTHON" - "$tmp" <<'EOF' || fail "writing the bad records"
import sys
import numpy as np
sys.path.insert(0, "scripts")
import ouro_ref as ref
d = sys.argv[1]
tok = np.array([19556, 905, 17], dtype=np.int32)
h = np.zeros((4, 3, 32), dtype=np.float32)
meta = {"ouro.version": "1", "ouro.hidden_steps": "0,1,2,3"}
def w(name, tensors, m=meta):
    with open("%s/%s.rec" % (d, name), "wb") as f:
        ref.write_safetensors(f, tensors, m)
w("no-state", {"tokens": ("I32", tok)})
w("hidden-2d", {"tokens": ("I32", tok), "hidden": ("F32", h[0])})
w("hidden-n", {"tokens": ("I32", tok), "hidden": ("F32", h[:, :2])})
w("hidden-i32", {"tokens": ("I32", tok), "hidden": ("I32", h.astype(np.int32))})
w("exit-n", {"tokens": ("I32", tok), "exit_hidden": ("F32", h[0, :2])})
w("exit-3d", {"tokens": ("I32", tok), "exit_hidden": ("F32", h)})
w("exit-only", {"tokens": ("I32", tok), "exit_hidden": ("F32", h[0])})
w("id-outside", {"tokens": ("I32", np.array([1, 60000, 2], dtype=np.int32)),
                 "hidden": ("F32", h)})
w("steps-bad", {"tokens": ("I32", tok), "hidden": ("F32", h)},
  {"ouro.hidden_steps": "0,1,x,3"})
w("steps-short", {"tokens": ("I32", tok), "hidden": ("F32", h)},
  {"ouro.hidden_steps": "0,1"})
EOF

# expect STATUS NEEDLE ARGS...: ouro-sample ARGS exits STATUS with one
# stderr line "ouro-sample: ..." containing NEEDLE, and nothing on stdout.
expect() {
	e_want=$1 e_needle=$2
	shift 2
	expect_fail "$e_want" "^ouro-sample: .*$e_needle" ouro-sample "$@" </dev/null
}
ncase=0
for c in \
	"1|no tensor 'exit_hidden'|$tmp/no-state.rec" \
	"1|no tensor 'hidden'|-s 0 $tmp/exit-only.rec" \
	"1|has 3 dimensions, expected 2|$tmp/exit-3d.rec" \
	"1|has 2 dimensions, expected 3|$tmp/hidden-2d.rec" \
	"1|has 2 positions, expected 3|$tmp/hidden-n.rec" \
	"1|has 2 positions, expected 3|$tmp/exit-n.rec" \
	"1|dtype I32|$tmp/hidden-i32.rec" \
	"1|id 60000 is outside the vocabulary|$tmp/id-outside.rec" \
	"1|ouro.hidden_steps '0,1,x,3'|$tmp/steps-bad.rec" \
	"1|is not a list of 4 steps|$tmp/steps-short.rec" \
	"1|step 2 is not in 'hidden'|-s 2 $tmp/fixture-k.rec" \
	"1|D = |-t $tmp/random.rec" \
	"1|hidden_size|-m $tmp/random $tmp/fixture.rec" \
	"1|text ids carry no state|$tmp/fixture.ids" \
	"1|no-such-file|-t $tmp/no-such-file" \
	"3|no-such-model|-m $tmp/no-such-model $tmp/fixture.rec" \
	"2|--temperature|--temperature -1 $tmp/one.rec" \
	"2|--temperature|--temperature nan $tmp/one.rec" \
	"2|--temperature|--temperature inf $tmp/one.rec" \
	"2|--temperature|--temperature 1e999 $tmp/one.rec" \
	"2|--temperature|--temperature 0.5x $tmp/one.rec" \
	"2|--top-k|--top-k -1 $tmp/one.rec" \
	"2|--top-k|--top-k 1.5 $tmp/one.rec" \
	"2|--top-p|--top-p 0 $tmp/one.rec" \
	"2|--top-p|--top-p 1.01 $tmp/one.rec" \
	"2|--top-p|--top-p -0.5 $tmp/one.rec" \
	"2|--min-p|--min-p -0.1 $tmp/one.rec" \
	"2|--min-p|--min-p 2 $tmp/one.rec" \
	"2|--seed|--seed -1 $tmp/one.rec" \
	"2|--seed|--seed 18446744073709551616 $tmp/one.rec" \
	"2|--seed|--seed 1e3 $tmp/one.rec" \
	"2|--logprobs|--logprobs 0 $tmp/one.rec" \
	"2|--logprobs|--logprobs 49153 $tmp/one.rec" \
	"2|-t|--logprobs 5 -t $tmp/one.rec" \
	"2|--step|-s 256 $tmp/one.rec" \
	"2|--step|-s -1 $tmp/one.rec" \
	"2|--threads|-j 0 $tmp/one.rec"
do
	ncase=$((ncase + 1))
	IFS='|' read -r st needle args <<EOF
$c
EOF
	# shellcheck disable=SC2086  # args is a list of words
	expect "$st" "$needle" $args
done
expect 2 "--temperature" --temperature "" "$tmp/one.rec"
expect 2 "--top-p" --top-p " 0.5" "$tmp/one.rec"
ouro-sample --bogus "$tmp/one.rec" >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown option does not exit 2"
echo "# $((ncase + 3)) failure cases"

# ---- 5. the man page's examples
(cd "$root" && "$PYTHON" - man/ouro-sample.1 "$tmp/examples" "$root/models/ouro-kjv-tiny") <<'EOF' || fail "man/ouro-sample.1 EXAMPLES"
import os
import re
import subprocess
import sys

page, work, model = sys.argv[1:4]
os.makedirs(work)
with open(os.path.join(work, "ids.txt"), "w") as f:
    f.write("1032 262 2098 393 3408\n301 393 394\n")
env = dict(os.environ, OURO_MODEL=model)
have_gate = os.access("bin/ouro-gate", os.X_OK)

def unescape(s):
    return s.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "").replace("\\(aq", "'")

# (command, shown output lines) from the .Bd -literal blocks of EXAMPLES
examples, section, literal = [], None, False
for line in open(page, encoding="utf-8").read().splitlines():
    if line.startswith(".Sh "):
        section = line[4:].strip()
    elif section != "EXAMPLES":
        continue
    elif line.startswith(".Bd -literal"):
        literal = True
    elif line.startswith(".Ed"):
        literal = False
    elif literal and line.startswith("$ "):
        examples.append((unescape(line[2:]), []))
    elif literal and examples:
        examples[-1][1].append(unescape(line))
bad = run = 0
for cmd, shown in examples:
    if "ouro-gate" in cmd and not have_gate:
        print("# example skipped (no ouro-gate yet): " + cmd)
        continue
    run += 1
    p = subprocess.run(["sh", "-c", cmd], cwd=work, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print("FAIL example exits %d: %s\n    %s" % (p.returncode, cmd, p.stderr.strip()))
        bad += 1
    elif shown and p.stdout.splitlines() != shown:
        print("FAIL example prints %r, the page shows %r: %s" % (p.stdout, shown, cmd))
        bad += 1
print("# %d example commands run" % run)
sys.exit(1 if bad or not run else 0)
EOF

finish
