#!/bin/sh
# t-forward-errors - ouro-forward on every malformed input in tests/bad/
# (made by tests/bad/make-bad) and on bad command lines. Each case must:
#
#   - exit with the documented status (1 input, 2 usage, 3 model);
#   - print exactly one stderr line, "ouro-forward: ...", naming the
#     offending file (and the tensor, line or record where there is one);
#   - leave stdout empty when the first sequence is bad, or holding exactly
#     the whole records of the good sequences before the bad one (compared
#     byte for byte with a run on those sequences alone);
#   - with -o FILE, leave no FILE and no FILE.tmp.*, and an existing FILE
#     untouched.
#
# Also: a reader that goes away (ouro-forward | head -c 1) ends the program
# quietly, with SIGPIPE at its default and ignored. Every failure is listed
# before the test exits. Run by tests/run from the repository root with
# bin/ on PATH; uses $PYTHON and $TMPDIR.
. tests/lib.sh
bad=tests/bad
ok=$bad/model-ok
cases=0

# records.py FILE [FIRST]: prints the number of whole records in FILE and
# exits 1 if it ends in part of one; with FIRST, copies the first there.
cat >"$tmp/records.py" <<'EOF'
import json
import struct
import sys

buf = open(sys.argv[1], "rb").read()
pos = count = 0
while pos < len(buf):
    if len(buf) - pos < 8:
        sys.exit("%s: partial record at byte %d" % (sys.argv[1], pos))
    (hlen,) = struct.unpack_from("<Q", buf, pos)
    if hlen > len(buf) - pos - 8:
        sys.exit("%s: partial record at byte %d" % (sys.argv[1], pos))
    header = json.loads(buf[pos + 8:pos + 8 + hlen])
    end = pos + 8 + hlen + max([v["data_offsets"][1] for k, v in header.items()
                                if k != "__metadata__"] or [0])
    if end > len(buf):
        sys.exit("%s: partial record at byte %d" % (sys.argv[1], pos))
    if count == 0 and len(sys.argv) > 2:
        with open(sys.argv[2], "wb") as f:
            f.write(buf[pos:end])
    pos = end
    count += 1
print(count)
EOF

# check_err LABEL NEEDLES: the stderr of the last run ($tmp/err) is one
# whole line that starts with "ouro-forward: " and contains every
# '|'-separated string of NEEDLES.
check_err() {
	lines=$(wc -l <"$tmp/err")
	if [ "$lines" -ne 1 ] || [ "$(wc -c <"$tmp/err")" -ne "$(head -n 1 "$tmp/err" | wc -c)" ]; then
		fail "$1: stderr has $lines lines, not exactly one:"
		sed -n '1,3s/^/    | /p' "$tmp/err"
		return
	fi
	line=$(cat "$tmp/err")
	case $line in
	"ouro-forward: "*) ;;
	*) fail "$1: stderr does not start with 'ouro-forward: ': $line" ;;
	esac
	rest=$2
	while [ -n "$rest" ]; do
		needle=${rest%%|*}
		case $rest in
		*"|"*) rest=${rest#*|} ;;
		*) rest= ;;
		esac
		case $line in
		*"$needle"*) ;;
		*) fail "$1: stderr does not name '$needle': $line" ;;
		esac
	done
}

# expect STATUS NEEDLES ARGS...: runs "ouro-forward ARGS" with stdin from
# $stdin, to stdout and then with -o, and checks the case as above. stdout
# must equal the file $keep, or be empty when $keep is empty.
stdin=/dev/null
keep=
expect() {
	status=$1
	needles=$2
	shift 2
	label="ouro-forward $*"
	cases=$((cases + 1))

	ouro-forward "$@" <"$stdin" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ "$rc" -eq "$status" ] || fail "$label: exit $rc, expected $status"
	check_err "$label" "$needles"
	if [ -n "$keep" ]; then
		n=$("$PYTHON" "$tmp/records.py" "$tmp/out") ||
			fail "$label: stdout ends in a partial record"
		cmp -s "$tmp/out" "$keep" ||
			fail "$label: stdout ($n records) is not the records of the good sequences alone"
	elif [ -s "$tmp/out" ]; then
		fail "$label: wrote $(wc -c <"$tmp/out") bytes to stdout"
	fi

	rm -rf "$tmp/o" && mkdir "$tmp/o" || exit 1
	ouro-forward -o "$tmp/o/out.rec" "$@" <"$stdin" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ "$rc" -eq "$status" ] || fail "$label -o FILE: exit $rc, expected $status"
	check_err "$label -o FILE" "$needles"
	[ -s "$tmp/out" ] && fail "$label -o FILE: wrote $(wc -c <"$tmp/out") bytes to stdout"
	left=$(ls -A "$tmp/o")
	[ -z "$left" ] && return
	fail "$label -o FILE: left $left"
}

# ---- the control: the good model and good ids work
printf '1 2 3\n' >"$tmp/line1.txt"
printf '1 2 3\n4 5 6 7\n' >"$tmp/lines12.txt"
for f in line1 lines12; do
	ouro-forward -m "$ok" "$tmp/$f.txt" >"$tmp/$f.rec" 2>"$tmp/err" ||
		{ cat "$tmp/err"; echo "FAIL: ouro-forward -m $ok on good ids (exit $?)"; exit 1; }
done
[ "$("$PYTHON" "$tmp/records.py" "$tmp/lines12.rec")" = 2 ] ||
	{ echo "FAIL: the control run did not write 2 records"; exit 1; }

# ---- the model directory
printf '1 2 3\n' >"$tmp/ids"
stdin=$tmp/ids
expect 3 "$bad/no-such-model|No such file" -m "$bad/no-such-model"
cases=$((cases + 1))
OURO_MODEL=$bad/no-such-model ouro-forward <"$stdin" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 3 ] || fail "OURO_MODEL=$bad/no-such-model ouro-forward: exit $rc, expected 3"
check_err "OURO_MODEL=$bad/no-such-model ouro-forward" "$bad/no-such-model"
[ -s "$tmp/out" ] && fail "OURO_MODEL=$bad/no-such-model ouro-forward: wrote to stdout"
expect 3 "$bad/model-dir-is-file" -m "$bad/model-dir-is-file"
expect 3 "$bad/model-no-weights|model.safetensors" -m "$bad/model-no-weights"
expect 3 "$bad/model-config-is-dir/config.json" -m "$bad/model-config-is-dir"
expect 3 "$bad/model-weights-is-dir/model.safetensors" -m "$bad/model-weights-is-dir"

# ---- config.json
for c in not-json not-object duplicate-key; do
	expect 3 "$bad/model-config-$c/config.json" -m "$bad/model-config-$c"
done
expect 3 "config.json|hidden_size" -m "$bad/model-config-missing-key"
expect 3 "config.json|num_hidden_layers" -m "$bad/model-config-wrong-type"
expect 3 "config.json|num_key_value_heads" -m "$bad/model-config-out-of-range"
expect 3 "config.json|rope_scaling" -m "$bad/model-config-rope-scaling"
expect 3 "config.json|model_type" -m "$bad/model-config-model-type"
expect 3 "config.json|hidden_act" -m "$bad/model-config-hidden-act"
expect 3 "config.json|use_sliding_window" -m "$bad/model-config-sliding-window"

# ---- model.safetensors: framing, then tensor entries (all in model.norm.weight)
for c in empty too-short header-truncated header-len-past-end header-not-json \
	header-not-object offsets-past-end metadata-not-string; do
	expect 3 "$bad/st-$c/model.safetensors" -m "$bad/st-$c"
done
for c in offsets-reversed overlap gap dtype-size-mismatch unknown-dtype absurd-shape \
	negative-shape too-many-dims entry-extra-key duplicate-tensor; do
	expect 3 "$bad/st-$c/model.safetensors|model.norm.weight" -m "$bad/st-$c"
done

# ---- valid files whose tensors do not fit config.json
expect 3 "$bad/model-tensor-missing|model.norm.weight" -m "$bad/model-tensor-missing"
expect 3 "$bad/model-tensor-misshaped/model.safetensors|model.layers.0.mlp.up_proj.weight|[16,32]|[32,16]" \
	-m "$bad/model-tensor-misshaped"
expect 3 "$bad/model-tensor-wrong-dtype/model.safetensors|model.norm.weight|I16" \
	-m "$bad/model-tensor-wrong-dtype"

# ---- quantized matrices (up_proj q4, down_proj q8_0): the control loads;
# each broken one is refused naming the tensor and what was expected
echo "1 2 3" | ouro-forward -m "$bad/quant-ok" >"$tmp/out" 2>"$tmp/err" ||
	fail "ouro-forward -m $bad/quant-ok: $(cat "$tmp/err")"
q4=model.layers.0.mlp.up_proj.weight.q4
q8=model.layers.0.mlp.down_proj.weight.q8_0
expect 3 "$bad/model-q4-wrong-dtype/model.safetensors|$q4 has dtype I8, expected U8" \
	-m "$bad/model-q4-wrong-dtype"
expect 3 "$bad/model-q4-misshaped/model.safetensors|$q4 has shape [32,64], expected [32,128]" \
	-m "$bad/model-q4-misshaped"
expect 3 "$bad/model-q4-no-scale|${q4}_scale is missing" -m "$bad/model-q4-no-scale"
expect 3 "$bad/model-q4-scale-misshaped/model.safetensors|${q4}_scale has shape [32,8], expected [32,16]" \
	-m "$bad/model-q4-scale-misshaped"
expect 3 "$bad/model-q4-scale-wrong-dtype/model.safetensors|${q4}_scale has dtype F16, expected U8" \
	-m "$bad/model-q4-scale-wrong-dtype"
expect 3 "$bad/model-q8-no-scale|${q8}_scale is missing" -m "$bad/model-q8-no-scale"
expect 3 "$bad/model-q8-wrong-dtype/model.safetensors|$q8 has dtype U8, expected I8" \
	-m "$bad/model-q8-wrong-dtype"

# ---- sharded checkpoints
expect 3 "$bad/shard-missing/model-00002-of-00002.safetensors" -m "$bad/shard-missing"
expect 3 "$bad/shard-path-slash/model.safetensors.index.json" -m "$bad/shard-path-slash"
expect 3 "$bad/shard-index-not-json/model.safetensors.index.json" -m "$bad/shard-index-not-json"

# ---- token ids as text
stdin=/dev/null
expect 1 "$bad/ids-too-large.txt|line 1|64" -m "$ok" "$bad/ids-too-large.txt"
expect 1 "$bad/ids-too-long.txt|line 1|33" -m "$ok" "$bad/ids-too-long.txt"
expect 1 "$bad/ids-non-numeric.txt|line 1|six" -m "$ok" "$bad/ids-non-numeric.txt"
expect 1 "$bad/ids-negative.txt|line 1|-6" -m "$ok" "$bad/ids-negative.txt"
expect 1 "$bad/ids-over-32-bits.txt|line 1|4294967301" -m "$ok" "$bad/ids-over-32-bits.txt"
expect 1 "$bad/ids-nul-byte.txt|line 1" -m "$ok" "$bad/ids-nul-byte.txt"
stdin=$bad/ids-non-numeric.txt
expect 1 "stdin|line 1|six" -m "$ok"
expect 1 "stdin|line 1|six" -m "$ok" -
stdin=/dev/null
keep=$tmp/line1.rec
expect 1 "$bad/ids-empty-line.txt|line 2" -m "$ok" "$bad/ids-empty-line.txt"
keep=$tmp/lines12.rec
expect 1 "$bad/ids-later-bad.txt|line 3|nine" -m "$ok" "$bad/ids-later-bad.txt"
# a good file, then a bad one: the good file's records are kept
expect 1 "$bad/ids-non-numeric.txt|line 1" -m "$ok" "$tmp/lines12.txt" "$bad/ids-non-numeric.txt"
keep=

# ---- input files that cannot be read
expect 1 "$bad/no-such-input|No such file" -m "$ok" "$bad/no-such-input"
expect 1 "$bad/model-ok|directory" -m "$ok" "$bad/model-ok"

# ---- records
for c in no-tokens tokens-i64 tokens-2d tokens-empty header-not-json header-too-long \
	id-out-of-vocab; do
	expect 1 "$bad/record-$c.rec|record 1" -m "$ok" "$bad/record-$c.rec"
done
"$PYTHON" "$tmp/records.py" "$bad/record-truncated.rec" "$tmp/first.rec" >/dev/null 2>&1
ouro-forward -m "$ok" "$tmp/first.rec" >"$tmp/first.out" ||
	fail "ouro-forward on the good first record of record-truncated.rec"
keep=$tmp/first.out
expect 1 "$bad/record-truncated.rec|record 2|truncated" -m "$ok" "$bad/record-truncated.rec"
stdin=$bad/record-truncated.rec
expect 1 "stdin|record 2|truncated" -m "$ok"
keep=
stdin=$bad/record-no-tokens.rec
expect 1 "stdin|record 1|tokens" -m "$ok"

# ---- usage errors
stdin=$tmp/ids
expect 2 "--steps|0" -m "$ok" --steps 0
expect 2 "--steps|x" -m "$ok" --steps x
expect 2 "--steps|257" -m "$ok" -T 257
expect 2 "--keep|9" -m "$ok" --steps 4 --keep 9
expect 2 "--keep|1,,0" -m "$ok" --keep 1,,0
expect 2 "--keep" -m "$ok" --keep ''
expect 2 "--keep|1," -m "$ok" --keep 1,
expect 2 "--dtype|f64" -m "$ok" --dtype f64
expect 2 "--threads|0" -m "$ok" -j 0
expect 2 "frobnicate" -m "$ok" --frobnicate
expect 2 "" -m "$ok" -x
expect 2 "" -m
export OURO_LOAD=mmap
expect 2 "OURO_LOAD|mmap" -m "$ok"
# weights read into memory: the same checks of the same files
export OURO_LOAD=read
expect 3 "$bad/model-tensor-missing|model.norm.weight" -m "$bad/model-tensor-missing"
expect 3 "$bad/shard-missing/model-00002-of-00002.safetensors" -m "$bad/shard-missing"
expect 3 "$bad/model-weights-is-dir/model.safetensors" -m "$bad/model-weights-is-dir"
unset OURO_LOAD

# ---- an existing -o FILE survives a failed run, and no temporary is left
printf 'old contents\n' >"$tmp/old.rec"
cases=$((cases + 1))
ouro-forward -m "$ok" -o "$tmp/old.rec" "$bad/ids-later-bad.txt" 2>"$tmp/err"
[ $? -eq 1 ] || fail "ouro-forward -o over an existing file: exit status is not 1"
[ "$(cat "$tmp/old.rec")" = "old contents" ] || fail "a failed run changed the existing -o file"
for f in "$tmp"/old.rec.tmp.*; do
	[ -e "$f" ] && fail "a failed run left $f"
done
ouro-forward -m "$ok" -o "$tmp/old.rec" "$tmp/lines12.txt" ||
	fail "ouro-forward -o over an existing file (exit $?)"
cmp -s "$tmp/old.rec" "$tmp/lines12.rec" || fail "-o FILE differs from stdout"

# ---- an -o FILE that cannot be written: a system error (4)
for out in "$tmp/no-such-dir/out.rec" "$tmp/o"; do
	rm -rf "$tmp/o" && mkdir "$tmp/o" || exit 1
	cases=$((cases + 1))
	ouro-forward -m "$ok" -o "$out" "$tmp/lines12.txt" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ "$rc" -eq 4 ] || fail "ouro-forward -o $out: exit $rc, expected 4"
	check_err "ouro-forward -o $out" "$out"
	[ -s "$tmp/out" ] && fail "ouro-forward -o $out: wrote to stdout"
	left=$(ls -A "$tmp" | grep '\.tmp\.')
	[ -z "$left" ] || fail "ouro-forward -o $out: left $left"
done

# ---- a reader that goes away
awk 'BEGIN { for (i = 0; i < 300; i++) { for (j = 0; j < 32; j++)
	printf "%d%s", (i + j) % 64, j < 31 ? " " : "\n" } }' >"$tmp/many.txt"
cases=$((cases + 1))
ouro-forward -m "$ok" "$tmp/many.txt" 2>"$tmp/err" | head -c 1 >/dev/null
[ -s "$tmp/err" ] && fail "ouro-forward | head -c 1: $(cat "$tmp/err")"
cases=$((cases + 1))
(
	trap '' PIPE
	ouro-forward -m "$ok" "$tmp/many.txt" 2>"$tmp/err" | head -c 1 >/dev/null
)
[ -s "$tmp/err" ] && fail "ouro-forward | head -c 1, SIGPIPE ignored: $(cat "$tmp/err")"

# ---- tests/bad matches its generator (a note, not a failure: it may lag
# behind scripts/make-model and still test what it should)
if "$PYTHON" "$bad/make-bad" "$tmp/regen" >/dev/null 2>&1; then
	diff -r -q -x make-bad "$bad" "$tmp/regen" >/dev/null ||
		echo "# tests/bad differs from what tests/bad/make-bad writes now; rerun it"
fi

echo "# $cases cases, $failures failures"
[ "$failures" -eq 0 ]
