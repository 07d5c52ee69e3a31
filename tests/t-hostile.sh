#!/bin/sh
# t-hostile - every program on malformed data it did not write itself.
#
#   1. Model directories: every broken model of tests/bad/ (model-*, st-*,
#      shard-*; made by tests/bad/make-bad, one failure mode each) given to
#      each program that loads a model other than ouro-forward (which
#      t-forward-errors covers): ouro-generate, ouro-lens, ouro-gate,
#      ouro-sample, ouro-eval ppl and ouro-quantize. Each must exit 3 with
#      one stderr line that names the directory, write nothing to stdout,
#      and with -o leave no file and no temporary.
#   2. Records (made here): truncated, a header length past the limit, a
#      header that is not JSON, a newer format version, tensors of the
#      wrong dtype, shape or size, ids outside the vocabulary, NaN and
#      infinite states, empty sequences, and tensors at unaligned offsets
#      (valid safetensors; a careless reader would load an int32 or a float
#      from an odd address, which the sanitizer build catches). Given to
#      every program that reads records: ouro-forward, ouro-gate, ouro-gate
#      train, ouro-sample, ouro-lens, ouro-dump and ouro-tokenize -d. Each
#      must refuse with status 1 and one stderr line, or (for data that is
#      valid, if odd) succeed; never crash, hang or report from a sanitizer.
#      After a good record, a truncated one leaves on stdout the good
#      record's output, whole.
#   3. Gate files (--gate of ouro-gate, ouro-generate and ouro-eval):
#      truncated, NaN weights, the wrong width, text: exit 3.
#   4. Reports given to ouro-eval merge with a config or sums it cannot
#      use (missing or mistyped keys, sizes out of range): exit 1.
#   5. Files that are not files. In a model directory (single file,
#      sharded, with a SentencePiece tokenizer.model) each file the
#      programs read is made in turn a named pipe that nobody writes, a
#      character device and a socket; so are the files of --gate,
#      --tokenizer and ouro-eval's --log (ppl, choice and gen; with and
#      without --resume). Every
#      program that loads a model and reads that file (ouro-forward,
#      ouro-gate, ouro-gate train, ouro-sample, ouro-generate, ouro-lens,
#      ouro-eval, ouro-quantize, ouro-tokenize) must refuse it at once
#      (within 5 seconds: opening a pipe that has no writer waits forever)
#      with status 3 (the log: 1) and one stderr line naming the file and
#      what it is, writing nothing. A tokenizer.json that is valid JSON
#      but not an object is refused as a bad tokenizer.json, not as a bad
#      SentencePiece model.
#
# Run by tests/run from the repository root with the programs on PATH;
# uses $PYTHON and $TMPDIR.
. tests/lib.sh
cases=0
fixture=models/ouro-fixture
bad=tests/bad
to="timeout 120"

# run LABEL CMD...: runs CMD (stdin from $input, else /dev/null) with
# stdout, stderr and the status in $tmp/out, $tmp/err and $rc.
run() {
	label=$1
	shift
	cases=$((cases + 1))
	$to "$@" <"${input:-/dev/null}" >"$tmp/out" 2>"$tmp/err"
	rc=$?
}

# one_line PROG NEEDLE: $tmp/err is one line "PROG: ..." containing NEEDLE.
one_line() {
	if [ "$(wc -l <"$tmp/err")" -ne 1 ] || ! grep -q "^$1: " "$tmp/err"; then
		fail "$label: stderr is not one '$1: ' line: $(head -n 3 "$tmp/err")"
	elif ! grep -qF -- "$2" "$tmp/err"; then
		fail "$label: stderr does not name '$2': $(cat "$tmp/err")"
	fi
}

# ---- 1. broken model directories
printf '1 2 3\n' >"$tmp/ids"
ouro-forward -m "$bad/model-ok" "$tmp/ids" >"$tmp/ok.rec" || { echo "FAIL: ouro-forward"; exit 1; }
ouro-gate -m "$bad/model-ok" "$tmp/ok.rec" >"$tmp/ok.gate" || { echo "FAIL: ouro-gate"; exit 1; }
models=0
for dir in "$bad"/model-* "$bad"/st-* "$bad"/shard-*; do
	[ "$dir" = "$bad/model-ok" ] && continue
	models=$((models + 1))
	rm -rf "$tmp/o" && mkdir "$tmp/o" || exit 1
	for prog in generate lens gate sample eval quantize; do
		case $prog in
		generate) set -- ouro-generate -m "$dir" -n 2 --prompt-ids -t "1 2 3" ;;
		lens) set -- ouro-lens -m "$dir" -o "$tmp/o/out" --prompt-ids "1 2 3" ;;
		gate) set -- ouro-gate -m "$dir" -o "$tmp/o/out" "$tmp/ok.rec" ;;
		sample) set -- ouro-sample -m "$dir" -o "$tmp/o/out" "$tmp/ok.gate" ;;
		eval) set -- ouro-eval ppl -m "$dir" -f ids -o "$tmp/o/out" "$tmp/ids" ;;
		quantize) set -- ouro-quantize -m "$dir" -o "$tmp/o/q" ;;
		esac
		run "$* (model $(basename "$dir"))" "$@"
		[ "$rc" -eq 3 ] || fail "$label: exit $rc, expected 3"
		one_line "$1" "$dir"
		[ -s "$tmp/out" ] && fail "$label: wrote to stdout"
		left=$(find "$tmp/o" -type f)
		[ -z "$left" ] || fail "$label: left $left"
	done
done
echo "# $models broken model directories x 6 programs"

# ---- 2. hostile records
"$PYTHON" - "$tmp" <<'EOF' || { echo "FAIL: writing the records"; exit 1; }
import json, struct, sys

tmp = sys.argv[1]
T, D, V = 4, 32, 49152   # the bundled fixture


def image(tensors, meta=None, raw_header=None, pad=True):
    header = {"__metadata__": meta if meta is not None else {"ouro.version": "1"}}
    off, blobs = 0, []
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        off += len(blob)
        blobs.append(blob)
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def i32(xs):
    return struct.pack("<%di" % len(xs), *xs)


def f32(xs):
    return struct.pack("<%df" % len(xs), *xs)


def states(n, value=None):
    return f32([value if value is not None else 0.01 * ((i * 7) % 13 - 6) for i in range(T * n * D)])


def rec(n=3, tokens=None, hidden=None, hshape=None, extra=(), meta=None, first=()):
    tokens = tokens if tokens is not None else list(range(1, n + 1))
    ts = list(first) + [("tokens", "I32", [len(tokens)], i32(tokens))]
    ts.append(("hidden", "F32", hshape or [T, n, D], hidden if hidden is not None else states(n)))
    ts += list(extra)
    return image(ts, meta)


good = rec()
cases = {
    "truncated": good + good[:len(good) // 2],
    "header-too-long": struct.pack("<Q", 200000000) + b"{" + b" " * 64,
    "header-not-json": image([], raw_header=b'{"tokens": [1, 2'),
    "header-length-past-end": struct.pack("<Q", 4096) + b'{"tokens":{}}',
    "version-2": rec(meta={"ouro.version": "2"}),
    "tokens-f32": image([("tokens", "F32", [3], f32([1, 2, 3])), ("hidden", "F32", [T, 3, D], states(3))]),
    "tokens-2d": image([("tokens", "I32", [1, 3], i32([1, 2, 3])), ("hidden", "F32", [T, 3, D], states(3))]),
    "tokens-empty": rec(n=0, tokens=[]),
    "id-negative": rec(tokens=[1, -5, 3]),
    "id-past-vocab": rec(tokens=[1, V, 3]),
    "id-int-max": rec(tokens=[1, 2, 2147483647]),
    "hidden-missing": image([("tokens", "I32", [3], i32([1, 2, 3]))]),
    "hidden-wrong-width": rec(hidden=f32([0.5] * (T * 3 * 7)), hshape=[T, 3, 7]),
    "hidden-wrong-length": rec(hidden=states(2), hshape=[T, 2, D]),
    "hidden-i64": image([("tokens", "I32", [3], i32([1, 2, 3])),
                         ("hidden", "I64", [T, 3, D], b"\0" * (8 * T * 3 * D))]),
    "hidden-1d": image([("tokens", "I32", [3], i32([1, 2, 3])), ("hidden", "F32", [T * 3 * D], states(3))]),
    "hidden-nan": rec(hidden=states(3, float("nan"))),
    "hidden-inf": rec(hidden=states(3, float("inf"))),
    "hidden-huge": rec(hidden=states(3, 3e38)),
    "exit-hidden-nan": rec(extra=[("exit_hidden", "F32", [3, D], f32([float("nan")] * (3 * D)))]),
    "exit-step-wild": rec(extra=[("exit_step", "I32", [3], i32([-7, 99, 2147483647]))]),
    # valid safetensors with tensors at unaligned offsets
    "unaligned": image([("pad", "U8", [1], b"\x07"), ("tokens", "I32", [3], i32([1, 2, 3])),
                        ("hidden", "F32", [T, 3, D], states(3))]),
    "unaligned-bf16": image([("pad", "U8", [3], b"\x07\x07\x07"), ("tokens", "I32", [3], i32([1, 2, 3])),
                             ("hidden", "BF16", [T, 3, D], b"\x80\x3f" * (T * 3 * D))]),
    "unpadded-header": image([("tokens", "I32", [3], i32([1, 2, 3])), ("hidden", "F32", [T, 3, D], states(3))],
                             pad=False),
    "zero-steps": rec(hidden=b"", hshape=[0, 3, D]),
    "many-records": good * 50,
}
for name, blob in cases.items():
    with open("%s/%s.rec" % (tmp, name), "wb") as f:
        f.write(blob)
EOF

# Each program on each record file: status 0 (valid data), 1 with one
# stderr line (refused), or, for ouro-forward, the model's exit on an id it
# cannot embed; never a signal (a crash, a sanitizer's abort), a timeout
# or a sanitizer's report.
for r in "$tmp"/*.rec; do
	case $r in "$tmp/ok.rec") continue ;; esac
	name=$(basename "$r" .rec)
	for prog in forward gate train sample lens dump dump-steps tokenize; do
		rm -rf "$tmp/o" && mkdir "$tmp/o" || exit 1
		input=
		case $prog in
		forward) set -- ouro-forward -m "$fixture" -o "$tmp/o/out" "$r" ;;
		gate) set -- ouro-gate -m "$fixture" -q 0.5 -o "$tmp/o/out" "$r" ;;
		train) set -- ouro-gate train -m "$fixture" -n 1 -o "$tmp/o/out" "$r" ;;
		sample) set -- ouro-sample -m "$fixture" --temperature 0.7 --top-p 0.9 -o "$tmp/o/out" "$r" ;;
		lens) set -- ouro-lens -m "$fixture" -o "$tmp/o/out"; input=$r ;;   # records on stdin
		dump) set -- ouro-dump --text -o "$tmp/o/out" "$r" ;;
		dump-steps) set -- ouro-dump --per-step --per-token -o "$tmp/o/out" "$r" ;;
		tokenize) set -- ouro-tokenize -m "$fixture" -d "$r" ;;
		esac
		run "$* ($name)" "$@"
		if [ "$rc" -eq 1 ]; then
			one_line "${1}$([ "$2" = train ] && echo ' train')" "$([ -n "$input" ] && echo stdin || basename "$r")"
			left=$(find "$tmp/o" -type f)
			[ -z "$left" ] || fail "$label: left $left"
		elif [ "$rc" -ne 0 ]; then
			fail "$label: exit $rc: $(head -n 5 "$tmp/err")"
		elif grep -q "runtime error\|Sanitizer" "$tmp/err"; then
			fail "$label: $(head -n 5 "$tmp/err")"
		fi
		[ "$rc" -eq 0 ] && echo "$prog $name" >>"$tmp/accepted"
	done
done
input=
# data that is plainly invalid is refused by every program that reads it
for name in truncated header-too-long header-not-json header-length-past-end version-2; do
	grep -q " $name\$" "$tmp/accepted" 2>/dev/null &&
		fail "accepted by $(grep " $name\$" "$tmp/accepted" | cut -d' ' -f1 | tr '\n' ' ')on $name"
done
echo "# $(($(ls "$tmp"/*.rec | wc -l) - 1)) record files x 8 programs, $(wc -l <"$tmp/accepted") runs on valid data accepted"

# a bad record after a good one: stdout holds the good one's output whole
cat >"$tmp/whole.py" <<'EOF'
import json, struct, sys
buf = open(sys.argv[1], "rb").read()
pos = n = 0
while pos < len(buf):
    if len(buf) - pos < 8:
        sys.exit("partial record at byte %d" % pos)
    (hl,) = struct.unpack_from("<Q", buf, pos)
    if hl > len(buf) - pos - 8:
        sys.exit("partial record at byte %d" % pos)
    h = json.loads(buf[pos + 8:pos + 8 + hl])
    end = pos + 8 + hl + max([v["data_offsets"][1] for k, v in h.items() if k != "__metadata__"] or [0])
    if end > len(buf):
        sys.exit("partial record at byte %d" % pos)
    pos, n = end, n + 1
print(n)
EOF
for prog in forward gate sample; do
	case $prog in
	forward) set -- ouro-forward -m "$fixture" "$tmp/truncated.rec" ;;
	gate) set -- ouro-gate -m "$fixture" "$tmp/truncated.rec" ;;
	sample) set -- ouro-sample -m "$fixture" "$tmp/truncated.rec" ;;
	esac
	run "$* > stdout (truncated)" "$@"
	[ "$rc" -eq 1 ] || fail "$label: exit $rc, expected 1"
	n=$("$PYTHON" "$tmp/whole.py" "$tmp/out") || fail "$label: stdout ends in a partial record"
	[ "$n" = 1 ] || fail "$label: stdout holds $n records, expected the 1 of the good record"
done

# ---- 3. hostile gate files
"$PYTHON" - "$tmp" <<'EOF' || { echo "FAIL: writing the gate files"; exit 1; }
import json, struct, sys

tmp, D = sys.argv[1], 32


def image(tensors):
    header, off, blobs = {}, 0, []
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        off += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def gate(w, b=0.5, dim=D):
    return image([("model.early_exit_gate.weight", "F32", [1, dim], struct.pack("<%df" % dim, *w)),
                  ("model.early_exit_gate.bias", "F32", [1], struct.pack("<f", b))])


good = gate([0.01] * D)
for name, blob in {"truncated": good[:len(good) - 8], "nan": gate([float("nan")] * D),
                   "inf-bias": gate([0.0] * D, float("inf")), "width": gate([0.0] * 16, dim=16),
                   "text": b"not a safetensors file\n", "empty": b""}.items():
    with open("%s/gate-%s.st" % (tmp, name), "wb") as f:
        f.write(blob)
EOF
ouro-forward -m "$fixture" "$tmp/ids" >"$tmp/fix.rec" || fail "ouro-forward"
for g in "$tmp"/gate-*.st; do
	for prog in gate generate eval; do
		case $prog in
		gate) set -- ouro-gate -m "$fixture" --gate "$g" "$tmp/fix.rec" ;;
		generate) set -- ouro-generate -m "$fixture" --gate "$g" -n 2 --prompt-ids -t "1 2 3" ;;
		eval) set -- ouro-eval ppl -m "$fixture" --gate "$g" -f ids "$tmp/ids" ;;
		gen) set -- ouro-eval gen -m "$fixture" --gate "$g" -n 1 "$tmp/task.jsonl"; prog=ouro-eval ;;
		esac
		run "$* ($(basename "$g"))" "$@"
		[ "$rc" -eq 3 ] || fail "$label: exit $rc, expected 3: $(head -n 3 "$tmp/err")"
		one_line "$1" "$g"
		[ -s "$tmp/out" ] && fail "$label: wrote to stdout"
	done
done

# ---- 4. hostile reports given to ouro-eval merge
ouro-eval ppl -m "$fixture" --limit 2 --shard 0/1 -o "$tmp/r.json" tests/eval/docs.jsonl ||
	fail "ouro-eval ppl --shard 0/1"
"$PYTHON" - "$tmp" <<'EOF' || { echo "FAIL: writing the reports"; exit 1; }
import copy, json, sys

tmp = sys.argv[1]
r = json.load(open(tmp + "/r.json"))
cases = {}
c = copy.deepcopy(r); del c["config"]["model"]; cases["no-model"] = c
c = copy.deepcopy(r); c["config"]["gate"] = 7; cases["gate-not-string"] = c
c = copy.deepcopy(r); c["config"]["steps"] = 100000; cases["steps-huge"] = c
c = copy.deepcopy(r); c["config"]["rules"] = ["x"] * 1000; cases["rules-many"] = c
c = copy.deepcopy(r); c["sums"]["nll"] = c["sums"]["nll"][:1]; cases["sums-short"] = c
c = copy.deepcopy(r); c["sums"]["examples"] = 2 ** 63 - 1; cases["sums-huge"] = c
c = copy.deepcopy(r); c["shard"] = {"index": 0, "count": 1 << 30}; cases["shards-many"] = c
c = copy.deepcopy(r); c["examples_total"] = -1; cases["total-negative"] = c
for name, c in cases.items():
    json.dump(c, open("%s/report-%s.json" % (tmp, name), "w"))
EOF
for f in "$tmp"/report-*.json; do
	run "ouro-eval merge --table $(basename "$f")" ouro-eval merge --table "$f"
	[ "$rc" -eq 1 ] || fail "$label: exit $rc, expected 1: $(head -n 3 "$tmp/err")"
	one_line ouro-eval "$f"
	[ -s "$tmp/out" ] && fail "$label: wrote to stdout"
done

# ---- 5. files that are not files
to="timeout 5"
"$PYTHON" - "$fixture" "$tmp" <<'EOF' || { echo "FAIL: writing the model directories"; exit 1; }
import json, os, struct, sys

fixture, tmp = os.path.abspath(sys.argv[1]), sys.argv[2]
shard = "model-00001-of-00001.safetensors"
layouts = {
    "m": {f: f for f in os.listdir(fixture)},
    "sh": {"config.json": "config.json", shard: "model.safetensors"},
    "spm": {"config.json": "config.json", "model.safetensors": "model.safetensors"},
}
for d, files in layouts.items():
    os.mkdir(os.path.join(tmp, d))
    for name, target in files.items():
        os.symlink(os.path.join(fixture, target), os.path.join(tmp, d, name))
with open(os.path.join(fixture, "model.safetensors"), "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    names = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
with open(os.path.join(tmp, "index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": {k: shard for k in names}}, f)
EOF
cp "$tmp/index.json" "$tmp/sh/model.safetensors.index.json" || exit 1
ouro-gate -m "$fixture" "$tmp/fix.rec" >"$tmp/fix.gate" || fail "ouro-gate"
echo "In the beginning" >"$tmp/prompt"
printf '{"prompt": "In the", "answer": "beginning"}\n' >"$tmp/task.jsonl"

# special KIND PATH: PATH becomes a named pipe, a character device (a link
# to /dev/null) or a socket; $what is how the programs call it.
special() {
	rm -f "$2"
	case $1 in
	pipe) mkfifo "$2"; what="is a named pipe" ;;
	device) ln -s /dev/null "$2"; what="is a character device" ;;
	socket) "$PYTHON" -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$2"
		what="is a socket" ;;
	esac || fail "making $2 $1"
	what="$what, not a regular file"
}

# refused STATUS FILE WHAT: the last run exited STATUS with one stderr line
# "$prog: FILE: WHAT", wrote nothing to stdout and left no file in $tmp/o.
refused() {
	if [ "$rc" -eq 124 ]; then
		fail "$label: still running after 5 seconds"
	else
		[ "$rc" -eq "$1" ] || fail "$label: exit $rc, expected $1: $(head -n 3 "$tmp/err")"
		one_line "$prog" "$2: $3"
	fi
	[ -s "$tmp/out" ] && fail "$label: wrote to stdout"
	left=$(find "$tmp/o" -type f)
	[ -z "$left" ] || fail "$label: left $left"
}

# run_on NAME DIR WHAT: runs program NAME on the model DIR (a prompt on
# stdin), with a fresh, empty $tmp/o for its outputs; $prog is the name its
# messages begin with.
run_on() {
	rm -rf "$tmp/o" && mkdir "$tmp/o" || exit 1
	prog=ouro-$1
	case $1 in
	forward) set -- "$prog, $3" ouro-forward -m "$2" "$tmp/ids" ;;
	gate) set -- "$prog, $3" ouro-gate -m "$2" -o "$tmp/o/out" "$tmp/fix.rec" ;;
	train) prog="ouro-gate train"; set -- "$prog, $3" ouro-gate train -m "$2" -n 1 -o "$tmp/o/out" "$tmp/fix.rec" ;;
	sample) set -- "$prog, $3" ouro-sample -m "$2" -o "$tmp/o/out" "$tmp/fix.gate" ;;
	generate) set -- "$prog, $3" ouro-generate -m "$2" -n 2 ;;
	lens) set -- "$prog, $3" ouro-lens -m "$2" -o "$tmp/o/out" ;;
	eval) set -- "$prog, $3" ouro-eval ppl -m "$2" --limit 1 -o "$tmp/o/out" tests/eval/docs.jsonl ;;
	quantize) set -- "$prog, $3" ouro-quantize -m "$2" -o "$tmp/o/q" ;;
	tokenize) set -- "$prog, $3" ouro-tokenize -m "$2" -t ;;
	esac
	input=$tmp/prompt run "$@"
}

model_readers="forward gate train sample generate lens eval quantize"
tok_readers="generate lens eval quantize tokenize"
for entry in m/config.json m/model.safetensors m/tokenizer.json sh/model.safetensors.index.json \
	sh/model-00001-of-00001.safetensors spm/tokenizer.model; do
	dir=$tmp/${entry%%/*} name=${entry#*/}
	case $name in
	tokenizer.*) progs=$tok_readers ;;
	*) progs=$model_readers ;;
	esac
	for kind in pipe device socket; do
		special "$kind" "$dir/$name"
		for p in $progs; do
			run_on "$p" "$dir" "$entry $kind"
			refused 3 "$dir/$name" "$what"
		done
	done
	rm -f "$dir/$name"
	case $entry in
	sh/model.safetensors.index.json) cp "$tmp/index.json" "$dir/$name" ;;
	sh/model-*) ln -s "$PWD/$fixture/model.safetensors" "$dir/$name" ;;
	spm/*) ;;
	*) ln -s "$PWD/$fixture/$name" "$dir/$name" ;;
	esac
done

# the path options that name a file read whole: --gate, --tokenizer, and
# --log (read back by --resume; refused without it too)
for kind in pipe device socket; do
	special "$kind" "$tmp/special"
	for c in gate generate eval gen tokenizer log resume choice-log gen-log; do
		rm -rf "$tmp/o" && mkdir "$tmp/o" || exit 1
		g=$tmp/special st=3 prog=ouro-$c input=
		case $c in
		gate) set -- ouro-gate -m "$fixture" --gate "$g" "$tmp/fix.rec" ;;
		generate) set -- ouro-generate -m "$fixture" --gate "$g" -n 2 --prompt-ids -t "1 2 3" ;;
		eval) set -- ouro-eval ppl -m "$fixture" --gate "$g" -f ids "$tmp/ids" ;;
		gen) set -- ouro-eval gen -m "$fixture" --gate "$g" -n 1 "$tmp/task.jsonl"; prog=ouro-eval ;;
		tokenizer) set -- ouro-tokenize --tokenizer "$g" -t; prog=ouro-tokenize input=$tmp/prompt ;;
		log) set -- ouro-eval ppl -m "$fixture" --log "$g" -f ids "$tmp/ids"; prog=ouro-eval st=1 ;;
		resume) set -- ouro-eval ppl -m "$fixture" --log "$g" --resume -f ids "$tmp/ids"; prog=ouro-eval st=1 ;;
		choice-log) set -- ouro-eval choice -m "$fixture" --log "$g" --resume tests/eval/tiny-choice.jsonl
			prog=ouro-eval st=1 ;;
		gen-log) set -- ouro-eval gen -m "$fixture" --log "$g" -n 1 "$tmp/task.jsonl"; prog=ouro-eval st=1 ;;
		esac
		run "$* ($kind)" "$@"
		refused "$st" "$g" "$what"
	done
done
input=

# a tokenizer.json that is JSON but not an object is a bad tokenizer.json
rm "$tmp/m/tokenizer.json" && printf '[1, 2]\n' >"$tmp/m/tokenizer.json" || exit 1
for p in generate lens eval tokenize; do
	run_on "$p" "$tmp/m" "tokenizer.json an array"
	refused 3 "$tmp/m/tokenizer.json" "not a tokenizer.json (the JSON is an array, not an object)"
done
input=
echo "# 6 model files x 3 kinds x the programs that read them; --gate, --tokenizer, --log x 3 kinds"

echo "# $cases cases"
finish
