#!/bin/sh
# t-dump - ouro-dump's export to NumPy and its views, and their failures.
#
#   1. --npz: the records of ouro-forward (F32 and BF16 hidden), of
#      ouro-gate (F32, I32) and the bundled model's weight file (BF16),
#      written as .npz (to a file and through a pipe), load with numpy.load;
#      every member equals the tensor the independent reader
#      (scripts/ouro_ref.py) finds in the record, bit for bit (BF16 as its
#      exact float32 widening), the member names are record<K>/<NAME>, and
#      zipfile's CRC check passes. --npy TENSOR (with --record K) likewise.
#   2. --text prints every value (--limit 0) so that it reads back as the
#      same float32; --limit N stops after N; --json --text holds them too.
#   3. --per-step labels the steps that ouro-forward -k kept.
#   4. failures: --per-step without a loop-axis tensor, an unknown tensor,
#      an unwritable output path, a record past the end, bad options; each
#      exits with its documented status, prints one stderr line, writes
#      nothing on stdout and leaves no file (an old file stays as it was).
#
# Run by tests/run from the repository root with bin/ on PATH; uses
# $PYTHON (NumPy) and $TMPDIR.
. tests/lib.sh
weights=models/ouro-fixture/model.safetensors

# ---- inputs
printf '19556 905 17 216 33\n1 4093 198\n' >"$tmp/ids.txt"
ouro-forward "$tmp/ids.txt" >"$tmp/f32.rec" &&
	ouro-forward --dtype bf16 "$tmp/ids.txt" >"$tmp/bf16.rec" &&
	ouro-gate "$tmp/f32.rec" >"$tmp/gate.rec" &&
	ouro-gate --drop-hidden "$tmp/f32.rec" >"$tmp/nohidden.rec" &&
	ouro-forward -k 1,3 "$tmp/ids.txt" >"$tmp/kept.rec" ||
	{ echo "FAIL: cannot make the input records"; exit 1; }

# every dtype, a scalar, an empty tensor, non-finite values and a name
# that is not ASCII, in two records
"$PYTHON" - "$tmp/dtypes.rec" <<'EOF' || { echo "FAIL: cannot write dtypes.rec"; exit 1; }
import sys

import numpy as np

sys.path.insert(0, "scripts")
import ouro_ref as ref

rng = np.random.default_rng(7)
f32 = rng.standard_normal((3, 5)).astype(np.float32)
f32[0, :3] = [np.nan, np.inf, -np.inf]
t = {
    "f64": ("F64", rng.standard_normal(4)),
    "f32": ("F32", f32),
    "f16": ("F16", rng.standard_normal((2, 3)).astype(np.float16)),
    "bf16": ("BF16", ref.f32_to_bf16(rng.standard_normal((2, 2, 2)))),
    "i64": ("I64", np.array([-2**62, 5, 2**62], dtype=np.int64)),
    "i32": ("I32", np.array([[-7, 0], [2**31 - 1, -2**31]], dtype=np.int32)),
    "i16": ("I16", np.array([-300, 300], dtype=np.int16)),
    "i8": ("I8", np.array([-128, 127], dtype=np.int8)),
    "u8": ("U8", np.array([0, 255], dtype=np.uint8)),
    "bool": ("BOOL", np.array([True, False, True])),
    "scalar": ("F32", np.array(2.5, dtype=np.float32)),
    "empty": ("F32", np.zeros((0, 3), dtype=np.float32)),
    "sch\u00e4tzung/\u03bb": ("F32", np.arange(3, dtype=np.float32)),
}
with open(sys.argv[1], "wb") as f:
    ref.write_safetensors(f, t, {"ouro.version": "1"})
    ref.write_safetensors(f, {"x": ("I8", np.array([1], dtype=np.int8))})
EOF

# check.py KIND OUT INPUT...: OUT (.npz, or .npy with KIND "npy:K:NAME")
# holds the tensors of the records of INPUT... exactly.
cat >"$tmp/check.py" <<'EOF'
import sys
import zipfile

import numpy as np

sys.path.insert(0, "scripts")
import ouro_ref as ref

kind, out, inputs = sys.argv[1], sys.argv[2], sys.argv[3:]
records = [r for path in inputs for r in ref.read_records(path)]

def expect(t):
    """The array a .npy of t must hold: the stored values, BF16 widened."""
    if t.dtype == "BF16":
        return ref.bf16_to_f32(t.data)
    return t.data

def same(name, got, t):
    want = expect(t)
    if got.dtype != want.dtype or got.shape != want.shape:
        sys.exit("%s: %s %s, expected %s %s" % (name, got.dtype, got.shape, want.dtype, want.shape))
    a, b = np.ascontiguousarray(got), np.ascontiguousarray(want)
    if a.tobytes() != b.tobytes():
        sys.exit("%s: values differ from the record" % name)
    if t.dtype == "BF16" and not np.array_equal(a.view(np.uint32) >> 16, t.data.astype(np.uint32)):
        sys.exit("%s: the float32 does not give back the stored bf16 bits" % name)

if kind.startswith("npy:"):
    _, k, name = kind.split(":", 2)
    same(name, np.load(out), records[int(k) - 1][0][name])
    print("# %s: 1 tensor equal" % out.split("/")[-1])
    sys.exit(0)

with zipfile.ZipFile(out) as z:
    bad = z.testzip()
    if bad is not None:
        sys.exit("%s: CRC check fails" % bad)
want = ["record%d/%s" % (k + 1, name) for k, (tensors, _) in enumerate(records) for name in tensors]
with np.load(out) as z:
    if sorted(z.files) != sorted(want):
        sys.exit("members %s, expected %s" % (z.files, want))
    n = 0
    for k, (tensors, _) in enumerate(records):
        for name, t in tensors.items():
            same("record%d/%s" % (k + 1, name), z["record%d/%s" % (k + 1, name)], t)
            n += 1
print("# %s: %d tensors equal" % (out.split("/")[-1], n))
EOF

check() {
	"$PYTHON" "$tmp/check.py" "$@" || fail "check.py $*"
}

# ---- 1. export
for rec in f32 bf16 gate dtypes; do
	if ouro-dump --npz "$tmp/$rec.npz" "$tmp/$rec.rec"; then
		check npz "$tmp/$rec.npz" "$tmp/$rec.rec"
	else
		fail "ouro-dump --npz $rec.rec exits $?"
	fi
done
ouro-dump --npz "$tmp/weights.npz" "$weights" || fail "ouro-dump --npz of the weights"
check npz "$tmp/weights.npz" "$weights"
# several inputs, numbered on across them; stdin in, a pipe out
cat "$tmp/f32.rec" | ouro-dump --npz - "$tmp/gate.rec" - | cat >"$tmp/pipe.npz" ||
	fail "ouro-dump --npz - through pipes"
check npz "$tmp/pipe.npz" "$tmp/gate.rec" "$tmp/f32.rec"
ouro-dump --npy hidden --record 2 -o "$tmp/h2.npy" "$tmp/bf16.rec" || fail "--npy hidden --record 2"
check npy:2:hidden "$tmp/h2.npy" "$tmp/bf16.rec"
ouro-dump --npy exit_step <"$tmp/gate.rec" >"$tmp/step.npy" || fail "--npy to stdout"
check npy:1:exit_step "$tmp/step.npy" "$tmp/gate.rec"
ouro-dump --npz "$tmp/one.npz" --tensor exit_pdf --record 2 "$tmp/gate.rec" ||
	fail "--npz --tensor --record"
"$PYTHON" -c "
import numpy as np, sys
z = np.load(sys.argv[1])
assert z.files == ['record2/exit_pdf'], z.files
" "$tmp/one.npz" || fail "--npz --tensor exit_pdf --record 2 holds more than that tensor"

# ---- 2. values
ouro-dump --text --limit 0 --tensor hidden "$tmp/f32.rec" >"$tmp/values.txt" ||
	fail "--text --limit 0"
"$PYTHON" - "$tmp/values.txt" "$tmp/f32.rec" <<'EOF' || fail "--text values differ from the records"
import sys

import numpy as np

sys.path.insert(0, "scripts")
import ouro_ref as ref

lines = open(sys.argv[1]).read().split("\n")
records = ref.read_records(sys.argv[2])
got = []
for line in lines:
    if line.startswith("record"):
        got.append([])
    elif line.startswith("    [") and got:
        got[-1] += [float(v) for v in line.split("]", 1)[1].split()]
assert len(got) == len(records), (len(got), len(records))
for vals, (tensors, _) in zip(got, records):
    want = tensors["hidden"].data.ravel()
    g = np.array(vals, dtype=np.float32)
    assert g.tobytes() == want.tobytes(), "values differ"
print("# --text: %d values read back exactly" % sum(map(len, got)))
EOF
n=$(ouro-dump --text --limit 5 --tensor hidden --record 1 "$tmp/f32.rec" | grep -c '^    \[')
[ "$n" = 1 ] || fail "--text --limit 5: $n value lines, expected 1"
ouro-dump --text --limit 5 --tensor hidden "$tmp/f32.rec" | grep -q '^    \.\.\. 635 more$' ||
	fail "--text --limit 5 does not say how many values it left out"
ouro-dump --json --text --limit 3 --tensor tokens --record 1 "$tmp/f32.rec" |
	"$PYTHON" -c '
import json, sys
r = json.load(sys.stdin)
t = r["tensors"]
assert r["record"] == 1 and len(t) == 1 and t[0]["values"] == [19556, 905, 17], r
assert t[0]["values_omitted"] == 2, t
' || fail "--json --text values"

# ---- 3. kept steps
ouro-dump --per-step --record 1 "$tmp/kept.rec" | awk '/^    step/ { s = 1; next } s && NF { print $1 }' |
	tr '\n' ' ' >"$tmp/steps"
[ "$(cat "$tmp/steps")" = "1 3 " ] || fail "--per-step on ouro-forward -k 1,3 labels steps '$(cat "$tmp/steps")'"

# ---- 4. failures (expect_fail: tests/lib.sh)
expect_fail 1 "^ouro-dump: .*nohidden.rec: record 1: no loop-axis tensor 'hidden'" \
	ouro-dump --per-step "$tmp/nohidden.rec"
expect_fail 1 "no loop-axis tensor 'hidden'" ouro-dump --per-step --json "$weights"
expect_fail 1 "^ouro-dump: .*f32.rec: record 1: no tensor 'nope' (the record has tokens, hidden)$" \
	ouro-dump --npy nope -o "$tmp/nope.npy" "$tmp/f32.rec"
expect_fail 1 "record 1: no tensor 'nope'" ouro-dump --tensor nope "$tmp/f32.rec"
mkdir "$tmp/clean"
echo old >"$tmp/clean/old.npz"
expect_fail 1 "nohidden.rec: record 1: no tensor 'hidden'" \
	ouro-dump --npz "$tmp/clean/old.npz" --tensor hidden "$tmp/f32.rec" "$tmp/nohidden.rec"
[ "$(cat "$tmp/clean/old.npz")" = old ] || fail "a failed --npz changed the existing file"
[ "$(ls "$tmp/clean")" = old.npz ] || fail "a failed --npz left files behind: $(ls "$tmp/clean")"
expect_fail 1 "record 2: no tensor 'nope'" ouro-dump --npy nope --record 2 -o "$tmp/clean/x.npy" "$tmp/f32.rec"
[ "$(ls "$tmp/clean")" = old.npz ] || fail "a failed --npy left files behind: $(ls "$tmp/clean")"
: >"$tmp/file"
expect_fail 4 "^ouro-dump: .*/file/x.npz: cannot create: Not a directory$" \
	ouro-dump --npz "$tmp/file/x.npz" "$tmp/f32.rec"
expect_fail 4 "^ouro-dump: /nonexistent/x.npy: cannot create: No such file or directory$" \
	ouro-dump --npy hidden -o /nonexistent/x.npy "$tmp/f32.rec"
expect_fail 1 "^ouro-dump: --record 3: the input holds 2 records$" ouro-dump --record 3 "$tmp/f32.rec"
expect_fail 1 "not a record stream" ouro-dump --npz "$tmp/clean/x.npz" "$tmp/ids.txt"
[ "$(ls "$tmp/clean")" = old.npz ] || fail "a failed --npz left files behind: $(ls "$tmp/clean")"
expect_fail 2 "^ouro-dump: --limit needs --text$" ouro-dump --limit 3 "$tmp/f32.rec"
expect_fail 2 "^ouro-dump: --limit: 'x' is not an integer" ouro-dump --text --limit x "$tmp/f32.rec"
expect_fail 2 "^ouro-dump: --record: '0' is not an integer" ouro-dump --record 0 "$tmp/f32.rec"
expect_fail 2 "cannot go with --per-step" ouro-dump --npz "$tmp/clean/x.npz" --per-step "$tmp/f32.rec"
expect_fail 2 "^ouro-dump: --npz and --npy are different outputs" \
	ouro-dump --npz "$tmp/clean/x.npz" --npy hidden "$tmp/f32.rec"
expect_fail 2 "^ouro-dump: --npz names its own output file" \
	ouro-dump --npz "$tmp/clean/x.npz" -o "$tmp/clean/y" "$tmp/f32.rec"

finish
