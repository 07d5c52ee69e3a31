#!/bin/sh
# t-limits - requests too big for this machine fail up front.
#
# Two random models with max_position_embeddings 2^24, the largest
# config.json may ask for: one with a wide MLP (intermediate_size 65536,
# so each position of a forward pass needs over 0.5 MiB of working
# memory), one with wide keys and values (8 loops x 2 layers x 1024, so
# each token of a full KV cache needs 128 KiB). Asked for more than this
# machine's physical memory (read from /proc/meminfo: the sequence length
# is chosen to need more than it has), each program must fail at once,
# before any large allocation is touched, with exit status 5 (out of
# memory), one stderr line saying how much it needs, and nothing on
# stdout:
#   - ouro-forward, ouro-lens and ouro-eval ppl on a sequence that long;
#   - ouro-generate -n 16000000 (a KV cache of about 2 TiB);
#   - ouro-forward with OURO_LOAD=read on a (sparse) weights file twice
#     the size of this machine's memory.
# A sequence longer than max_position_embeddings is refused with status 1.
#
# Run by tests/run from the repository root with the programs on PATH;
# uses $PYTHON and $TMPDIR.
. tests/lib.sh
cases=0

mem_kib=$(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo)
[ -n "$mem_kib" ] || { echo "# no MemTotal in /proc/meminfo; nothing to test"; exit 0; }
echo "# this machine: $((mem_kib / 1024)) MiB"

"$PYTHON" scripts/make-model --out "$tmp/wide" --tokenizer models/ouro-fixture --vocab 49152 --hidden 16 --heads 2 --kv-heads 2 \
	--head-dim 8 --ffn 65536 --layers 1 --steps 2 --max-pos 16777216 --dtype bf16 >/dev/null ||
	{ echo "FAIL: make-model wide"; exit 1; }
"$PYTHON" scripts/make-model --out "$tmp/kv" --vocab 64 --hidden 16 --heads 8 --kv-heads 8 \
	--head-dim 128 --ffn 32 --layers 2 --steps 8 --max-pos 16777216 --dtype bf16 >/dev/null ||
	{ echo "FAIL: make-model kv"; exit 1; }

# expect STATUS NEEDLE CMD...: CMD (stdin from $stdin, else /dev/null)
# exits STATUS with one stderr line that starts with the program's name and
# matches NEEDLE, and writes nothing to stdout.
expect() {
	want=$1 needle=$2
	shift 2
	cases=$((cases + 1))
	"$@" <"${stdin:-/dev/null}" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ "$rc" -eq "$want" ] || fail "$1: exit $rc, expected $want: $(head -n 2 "$tmp/err")"
	[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "$1: stderr is not one line: $(head -n 3 "$tmp/err")"
	grep -q "^$1: .*$needle" "$tmp/err" || fail "$1: stderr lacks '$needle': $(head -n 1 "$tmp/err")"
	[ -s "$tmp/out" ] && fail "$1: wrote to stdout"
	sed 's/^/# /' "$tmp/err"
}

# a sequence that needs 1.25 times this machine's memory in the wide
# model's forward pass (gate and up projections: 2 x 65536 floats a
# position), at most max_position_embeddings
n=$((mem_kib / 512 * 5 / 4 + 1))
[ "$n" -le 16777216 ] || n=16777216
awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) printf "%d%s", i % 64, i < n - 1 ? " " : "\n" }' \
	>"$tmp/long.ids"
big="needs [0-9.]* MiB.*more than this machine's"
expect 5 "$n tokens $big" ouro-forward -m "$tmp/wide" "$tmp/long.ids"
stdin=$tmp/long.ids expect 5 "$big" ouro-lens -m "$tmp/wide" --prompt-ids
expect 5 "$big" ouro-eval ppl -m "$tmp/wide" -f ids "$tmp/long.ids"

# a KV cache of 8 x 2 x 1024 x 2 floats a token for 16000003 tokens
if [ "$mem_kib" -lt $((1536 * 1024 * 1024)) ]; then
	expect 5 "KV cache for 16000003 tokens .* needs [0-9.]* MiB, more than the KV memory budget" \
		ouro-generate -m "$tmp/kv" -n 16000000 --prompt-ids -t "1 2 3"
else
	echo "# over 1.5 TiB of memory: the 2 TiB KV cache case is left out"
fi

# one token more than max_position_embeddings
awk 'BEGIN { for (i = 0; i < 33; i++) printf "%d%s", i, i < 32 ? " " : "\n" }' >"$tmp/33.ids"
expect 1 "exceeds max_position_embeddings 32" ouro-forward -m tests/bad/model-ok "$tmp/33.ids"
stdin=$tmp/33.ids expect 1 "max_position_embeddings" ouro-generate -m tests/bad/model-ok --prompt-ids -t

# weights read into memory (OURO_LOAD=read) from a file twice this
# machine's memory (sparse: it takes no disk space); mapped, the same file
# is refused for its header instead (status 3)
mkdir "$tmp/huge" && cp tests/bad/model-ok/config.json "$tmp/huge/" &&
	truncate -s $((mem_kib * 2))K "$tmp/huge/model.safetensors" || fail "making the sparse model"
export OURO_LOAD=read
expect 5 "model.safetensors: reading it in $big" ouro-forward -m "$tmp/huge" "$tmp/33.ids"
unset OURO_LOAD
expect 3 "model.safetensors" ouro-forward -m "$tmp/huge" "$tmp/33.ids"

echo "# $cases cases"
finish
