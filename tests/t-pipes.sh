#!/bin/sh
# t-pipes - pipes that close early, and runs that are interrupted.
#
#   1. Every program that writes to stdout, piped into `head -c 1`, ends
#      quietly when head goes away: nothing on stderr, and either success
#      or death by SIGPIPE, with SIGPIPE at its default and ignored.
#   2. With -o FILE, a run stopped by SIGINT or SIGTERM in the middle (its
#      input a pipe that has given only part of the data, so the program is
#      certainly mid-run with its temporary open) dies by that signal and
#      leaves the old FILE untouched, or no FILE, and no FILE.tmp.*
#      temporary. The same for programs that read files (timed: the signal
#      comes once the temporary exists).
#   3. Data inputs that are pipes: ouro-forward, ouro-eval (ppl and gen),
#      ouro-gate, ouro-dump and ouro-generate -f given a named pipe that
#      another process writes, and bash's process substitution <(...),
#      write what they write given the file. -o /dev/stdout, /dev/fd/1 and /proc/self/fd/1 write to
#      the standard output, wherever it points (a pipe, a file, a file
#      appended to), and -o a named pipe that another process reads is
#      written in place.
#
# Run by tests/run from the repository root with the programs on PATH;
# uses $PYTHON and $TMPDIR.
. tests/lib.sh
cases=0
fixture=models/ouro-fixture
ok=tests/bad/model-ok

# inputs: many sequences of ids (valid for both models), records of them
awk 'BEGIN { for (i = 0; i < 400; i++) { for (j = 0; j < 30; j++)
	printf "%d%s", (i * 7 + j * 13) % 60 + 1, j < 29 ? " " : "\n" } }' >"$tmp/many.ids"
ouro-forward -m "$ok" "$tmp/many.ids" >"$tmp/ok.rec" || { echo "FAIL: ouro-forward"; exit 1; }
ouro-gate -m "$ok" "$tmp/ok.rec" >"$tmp/ok.gate" || { echo "FAIL: ouro-gate"; exit 1; }
head -n 12 "$tmp/many.ids" | ouro-forward -m "$fixture" >"$tmp/fix.rec" || { echo "FAIL: ouro-forward"; exit 1; }
awk 'BEGIN { for (i = 0; i < 3000; i++) printf "line %d: the quick brown fox jumps over the lazy dog\n", i }' \
	>"$tmp/text.txt"
ouro-tokenize -m "$fixture" -l -t "$tmp/text.txt" >"$tmp/text.ids" || { echo "FAIL: ouro-tokenize"; exit 1; }
for i in 1 2 3 4 5 6 7 8; do cat tests/eval/docs.jsonl; done >"$tmp/docs.jsonl"

# ---- 1. a reader that closes early
# quiet LABEL COMMAND: runs the shell COMMAND | head -c 1.
quiet() {
	for ignore in no yes; do
		cases=$((cases + 1))
		rm -f "$tmp/st" "$tmp/err"
		if [ "$ignore" = yes ]; then
			( trap '' PIPE; { sh -c "$2" 2>"$tmp/err"; echo $? >"$tmp/st"; } | head -c 1 >/dev/null )
		else
			{ sh -c "$2" 2>"$tmp/err"; echo $? >"$tmp/st"; } | head -c 1 >/dev/null
		fi
		st=$(cat "$tmp/st")
		label="$1 | head -c 1 (SIGPIPE ignored: $ignore)"
		[ -s "$tmp/err" ] && fail "$label: stderr: $(head -n 2 "$tmp/err")"
		[ "$st" -eq 0 ] || [ "$st" -eq 141 ] || fail "$label: exit status $st"
	done
}
quiet ouro-tokenize "ouro-tokenize -m $fixture -l $tmp/text.txt"
quiet "ouro-tokenize -t" "ouro-tokenize -m $fixture -l -t $tmp/text.txt"
quiet "ouro-tokenize -d" "ouro-tokenize -m $fixture -d $tmp/text.ids"
quiet "ouro-tokenize -d --jsonl" "ouro-tokenize -m $fixture -d --jsonl $tmp/text.ids"
quiet ouro-forward "ouro-forward -m $ok $tmp/many.ids"
quiet ouro-gate "ouro-gate -m $ok $tmp/ok.rec"
quiet ouro-sample "ouro-sample -m $ok $tmp/ok.gate"
quiet "ouro-sample -t" "ouro-sample -m $ok -t --temperature 1 $tmp/ok.gate"
quiet ouro-generate "ouro-generate -m $fixture -n 100 -t 'In the beginning'"
quiet "ouro-generate text" "ouro-generate -m $fixture -n 100 --temperature 1 'In the beginning'"
quiet ouro-lens "ouro-lens -m $fixture -k 5 $tmp/fix.rec"
quiet "ouro-lens --json" "ouro-lens -m $fixture -k 5 --json $tmp/fix.rec"
quiet ouro-dump "ouro-dump --per-step --per-token $tmp/ok.rec"
quiet "ouro-dump --text" "ouro-dump --text --limit 0 $tmp/ok.gate"
quiet "ouro-dump --npy" "ouro-dump --npy hidden $tmp/ok.rec"
quiet "ouro-eval ppl" "ouro-eval ppl -m $fixture --table --limit 2 -W 32 tests/eval/docs.jsonl"
quiet "ouro-eval choice" "ouro-eval choice -m $fixture --limit 2 tests/eval/tiny-choice.jsonl"

# ---- 2. interrupted runs with -o
cat >"$tmp/interrupt.py" <<'EOF'
"""interrupt.py SIGNAL OUT INPUT HALF -- COMMAND...: runs COMMAND with its
stdin a pipe fed the first HALF bytes of INPUT (INPUT '-': stdin is
/dev/null), waits until OUT's temporary (OUT.tmp.*) exists, then sends
SIGNAL. The program must die by that signal, leaving OUT as it was before
(or absent) and no temporary. Prints 'finished' instead when the program
ended before its temporary was seen (nothing to interrupt)."""
import glob
import os
import signal
import subprocess
import sys
import time

sig = getattr(signal, sys.argv[1])
out, inp, half = sys.argv[2], sys.argv[3], int(sys.argv[4])
cmd = sys.argv[6:]
before = open(out, "rb").read() if os.path.exists(out) else None
# the signals at their defaults in the child, whatever this shell ignores
restore = lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)]
p = subprocess.Popen(cmd, stdin=subprocess.PIPE if inp != "-" else subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=restore)
if inp != "-":
    with open(inp, "rb") as f:
        p.stdin.write(f.read(half))
    p.stdin.flush()
deadline = time.time() + 300
seen = False
while time.time() < deadline and p.poll() is None:
    if glob.glob(glob.escape(out) + ".tmp.*"):
        seen = True
        break
    time.sleep(0.002)
if not seen:
    if inp != "-":
        p.stdin.close()
    p.wait()
    print("finished")
    sys.exit(0)
time.sleep(0.05)
p.send_signal(sig)
if inp != "-":
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
err = p.stderr.read().decode(errors="replace")
rc = p.wait()
problems = []
if rc != -sig:
    problems.append("exit status %d, not death by %s; stderr: %s" % (rc, sys.argv[1], err.strip()[:200]))
left = glob.glob(glob.escape(out) + ".tmp.*")
if left:
    problems.append("left " + " ".join(left))
after = open(out, "rb").read() if os.path.exists(out) else None
if after != before:
    problems.append("%s changed (%s)" % (out, "created" if before is None else "overwritten"))
print("; ".join(problems) if problems else "ok")
sys.exit(1 if problems else 0)
EOF

# interrupted SIGNAL OUT INPUT HALF COMMAND...: one case of interrupt.py;
# with an old OUT when $old is set.
interrupted=0
finished=0
interrupted() {
	s=$1 out=$2 inp=$3 half=$4
	shift 4
	cases=$((cases + 1))
	rm -rf "$out" "$out".tmp.*
	[ -n "${old:-}" ] && printf 'old contents\n' >"$out"
	res=$("$PYTHON" "$tmp/interrupt.py" "$s" "$out" "$inp" "$half" -- "$@")
	case $res in
	ok) interrupted=$((interrupted + 1)) ;;
	finished) finished=$((finished + 1)) ;;
	*) fail "$* stopped by $s (old file: ${old:-none}): $res" ;;
	esac
}
half=$(($(wc -c <"$tmp/ok.rec") / 2))
halfg=$(($(wc -c <"$tmp/ok.gate") / 2))
halfi=$(($(wc -c <"$tmp/many.ids") / 2))
halff=$(($(wc -c <"$tmp/fix.rec") / 2))
o=$tmp/out
for old in "" yes; do
	for s in SIGINT SIGTERM; do
		interrupted $s "$o" "$tmp/many.ids" "$halfi" ouro-forward -m "$ok" -o "$o"
		interrupted $s "$o" "$tmp/ok.rec" "$half" ouro-gate -m "$ok" -o "$o"
		interrupted $s "$o" "$tmp/ok.gate" "$halfg" ouro-sample -m "$ok" -o "$o"
		interrupted $s "$o" "$tmp/ok.rec" "$half" ouro-dump --per-step -o "$o"
		interrupted $s "$o" "$tmp/fix.rec" "$halff" ouro-lens -m "$fixture" -o "$o"
	done
	# whole files read first, then computed: timed
	interrupted SIGINT "$o" - 0 ouro-forward -m "$fixture" -o "$o" "$tmp/text.ids"
	interrupted SIGTERM "$o" - 0 ouro-eval ppl -m "$fixture" -W 32 --per-token "$o" -o "$tmp/report" "$tmp/docs.jsonl"
done
old=
echo "# $interrupted runs interrupted mid-write, $finished finished before the signal"
[ "$interrupted" -ge 20 ] || fail "only $interrupted runs were interrupted mid-write"

# ---- 3. data through pipes, named or not
# streams COMMAND...: COMMAND with one more operand, its input $in, writes
# the same to stdout when that operand names a pipe: a named pipe that
# another process writes, and bash's process substitution <(...) (where
# there is a bash), as when it names the file.
streams() {
	cases=$((cases + 1))
	"$@" "$in" >"$tmp/want" 2>"$tmp/err" || { fail "$* $in: $(head -n 3 "$tmp/err")"; return; }
	rm -f "$tmp/fifo"
	mkfifo "$tmp/fifo" || exit 1
	# the writer opens the pipe under the timeout too: a program that
	# never opened it would leave it waiting for a reader
	timeout 20 sh -c 'cat "$1" >"$2"' sh "$in" "$tmp/fifo" &
	timeout 20 "$@" "$tmp/fifo" >"$tmp/got" 2>"$tmp/err"
	rc=$?
	wait
	[ "$rc" -eq 0 ] || fail "$* FIFO: exit $rc: $(head -n 3 "$tmp/err")"
	cmp -s "$tmp/got" "$tmp/want" || fail "$* FIFO: output differs from reading the file"
	command -v bash >/dev/null || return
	cases=$((cases + 1))
	in=$in timeout 20 bash -c '"$@" <(cat "$in")' bash "$@" >"$tmp/got" 2>"$tmp/err"
	rc=$?
	[ "$rc" -eq 0 ] || fail "$* <(cat $in): exit $rc: $(head -n 3 "$tmp/err")"
	cmp -s "$tmp/got" "$tmp/want" || fail "$* <(cat $in): output differs from reading the file"
}
head -n 3 "$tmp/many.ids" >"$tmp/few.ids"
ouro-forward -m "$fixture" "$tmp/few.ids" >"$tmp/few.rec" || fail "ouro-forward"
in=$tmp/few.ids streams ouro-forward -m "$fixture"
in=$tmp/few.ids streams ouro-eval ppl -m "$fixture" -f ids --table
in=$tmp/few.rec streams ouro-gate -m "$fixture"
in=$tmp/few.rec streams ouro-dump --per-step
printf '{"prompt": "In the", "answer": "beginning"}\n{"prompt": "And God", "answer": "said"}\n' >"$tmp/task.jsonl"
in=$tmp/task.jsonl streams ouro-eval gen -m "$fixture" -n 2 --table
printf 'In the\nAnd God\n' >"$tmp/prompts"
in=$tmp/prompts streams ouro-generate -m "$fixture" -n 2 -f
# outputs: -o /dev/stdout into a pipe; the standard output by another
# name when it is a regular file, appended to (>>) or not (written
# through the descriptor: a temporary renamed over the name would replace
# the link, and as root could replace /dev/stdout itself, which is why
# that name is not tried here); and -o a named pipe that another process
# reads (written in place, not replaced by a regular file)
cases=$((cases + 4))
ouro-forward -m "$fixture" -o /dev/stdout "$tmp/few.ids" | cat >"$tmp/got" || fail "ouro-forward -o /dev/stdout"
cmp -s "$tmp/got" "$tmp/few.rec" || fail "ouro-forward -o /dev/stdout | cat: output differs"
ouro-forward -m "$fixture" -o /dev/fd/1 "$tmp/few.ids" >"$tmp/got" || fail "ouro-forward -o /dev/fd/1"
cmp -s "$tmp/got" "$tmp/few.rec" || fail "ouro-forward -o /dev/fd/1 >FILE: output differs"
printf 'first\n' >"$tmp/got"
ouro-dump -o /proc/self/fd/1 "$tmp/few.rec" >>"$tmp/got" || fail "ouro-dump -o /proc/self/fd/1"
{ printf 'first\n'; ouro-dump "$tmp/few.rec"; } | cmp -s - "$tmp/got" ||
	fail "ouro-dump -o /proc/self/fd/1 >>FILE: not appended"
rm -f "$tmp/fifo"
mkfifo "$tmp/fifo" || exit 1
timeout 20 sh -c 'cat "$1" >"$2"' sh "$tmp/fifo" "$tmp/got" &
timeout 20 ouro-forward -m "$fixture" -o "$tmp/fifo" "$tmp/few.ids" || fail "ouro-forward -o FIFO: exit $?"
wait
cmp -s "$tmp/got" "$tmp/few.rec" || fail "ouro-forward -o FIFO: output differs"
[ -p "$tmp/fifo" ] || fail "ouro-forward -o FIFO: the named pipe was replaced"

echo "# $cases cases"
finish
