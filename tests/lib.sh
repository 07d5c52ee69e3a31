# lib.sh - what the shell tests share. Each tests/t-*.sh sources it first
# thing with ". tests/lib.sh" (tests/run starts every test from the
# repository root), and gets:
#
#   $tmp              a scratch directory, removed when the test exits
#   $PYTHON           the Python of the reference scripts
#   fail MESSAGE      prints "FAIL: MESSAGE" and counts the failure; a test
#                     whose later steps build on the earlier ones sets
#                     stop_at_fail=1 to end at the first
#   finish            ends the test: the count and status 1 if anything
#                     failed, else status 0
#   expect_exit STATUS PATTERN CMD...
#                     CMD exits STATUS and its stderr ($tmp/err) is one line
#                     matching the grep pattern PATTERN (stdout: $tmp/out);
#                     returns 1 after a failure
#   expect_fail STATUS PATTERN CMD...
#                     the same, and CMD writes nothing to stdout
#   kill_at_lines PID FILE N
#                     kills PID with SIGKILL once FILE has N lines (or
#                     after 20 s), waits for it, and sets $lines_then to
#                     the lines FILE had then (a run killed midway)
#   test_seed         sets $seed for random cases: $OURO_TEST_SEED, else a
#                     fresh one, and prints how to run again with it
#   random_prompts FILE SEED VOCAB [NEW]
#                     writes 8 JSONL prompts of random ids (1 to 90), each
#                     with a random max_tokens below NEW (default 12) and
#                     half of them with a seed
set -u
: "${PYTHON:=/usr/bin/python3}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/$(basename "$0" .sh).XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
failures=0
stop_at_fail=0

fail() {
	printf 'FAIL: %s\n' "$*"
	failures=$((failures + 1))
	[ "$stop_at_fail" -eq 0 ] || exit 1
}

finish() {
	[ "$failures" -eq 0 ] || { echo "$failures failures"; exit 1; }
	exit 0
}

expect_exit() {
	want=$1 pattern=$2
	shift 2
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		fail "$* exits $rc, expected $want: $(cat "$tmp/err")"
	elif [ "$(wc -l <"$tmp/err")" -ne 1 ] || ! grep -q -- "$pattern" "$tmp/err"; then
		fail "$*: stderr is not one line matching '$pattern': $(cat "$tmp/err")"
	else
		return 0
	fi
	return 1
}

expect_fail() {
	expect_exit "$@" || return 1
	shift 2
	[ ! -s "$tmp/out" ] || fail "$*: wrote to stdout"
}

kill_at_lines() {
	i=0
	while [ "$i" -lt 400 ] && [ "$( [ -e "$2" ] && wc -l <"$2" || echo 0)" -lt "$3" ]; do
		sleep 0.05
		i=$((i + 1))
	done
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	lines_then=$( [ -e "$2" ] && wc -l <"$2" || echo 0)
}

test_seed() {
	seed=${OURO_TEST_SEED:-$(( $(date +%s) % 1000000 * 1000 + $$ % 1000 ))}
	case $seed in
	'' | *[!0-9]*) echo "FAIL: OURO_TEST_SEED '$seed' is not a non-negative integer"; exit 1 ;;
	esac
	echo "# seed $seed (rerun with OURO_TEST_SEED=$seed)"
}

random_prompts() {
	"$PYTHON" - "$2" "$3" "${4:-12}" >"$1" <<'PY'
import json, random, sys
r = random.Random(int(sys.argv[1]))
V = int(sys.argv[2])
for i in range(8):
    n = r.choice([1, 2, 5, 17, 40, 70, 90])
    o = {"prompt_ids": [r.randrange(3, V) for _ in range(n)],
         "max_tokens": r.randrange(0, int(sys.argv[3]))}
    if r.random() < 0.5:
        o["seed"] = r.randrange(1 << 40)
    print(json.dumps(o))
PY
}
