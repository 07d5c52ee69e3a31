#!/bin/sh
# t-bf16 - the opt-in BF16 products (OURO_MATMUL=bf16: AMX tiles, or
# AVX512-BF16 products without AMX) end to end.
#
# Activations are rounded to BF16 on this path, so the states are checked
# against the float64 reference with a tolerance of 2e-2 relative per loop
# (the error is printed), and must be identical for 1 and 2 threads.
# On AMX, decoding (one position at a time) does not use it; with
# AVX512-BF16 products it does (the greedy tokens of both are printed). On
# a machine with neither the variable changes nothing, which is checked
# instead.
. tests/lib.sh

"$PYTHON" scripts/make-model --out "$tmp/rnd" --vocab 600 --hidden 256 --heads 4 --kv-heads 2 \
	--head-dim 64 --ffn 512 --layers 2 --steps 4 --max-pos 1024 --dtype bf16 --seed 17 >/dev/null ||
	fail "make-model"
"$PYTHON" -c "print(' '.join(str((i * 37) % 600) for i in range(300)))" >"$tmp/ids.rnd"
"$PYTHON" -c "print(' '.join(str((i * 7919) % 49152) for i in range(200)))" >"$tmp/ids.fixture"

for name in fixture rnd; do
	model=$([ "$name" = fixture ] && echo models/ouro-fixture || echo "$tmp/rnd")
	ouro-forward -m "$model" "$tmp/ids.$name" >"$tmp/f32.rec" || fail "$name: f32 forward"
	OURO_MATMUL=bf16 ouro-forward -m "$model" -j 2 "$tmp/ids.$name" >"$tmp/bf16.rec" ||
		fail "$name: bf16 forward"
	OURO_MATMUL=bf16 ouro-forward -m "$model" -j 1 "$tmp/ids.$name" >"$tmp/bf16-1.rec"
	cmp -s "$tmp/bf16.rec" "$tmp/bf16-1.rec" || fail "$name: bf16 output depends on the thread count"
	if cmp -s "$tmp/f32.rec" "$tmp/bf16.rec"; then
		echo "# $name: no BF16 products here, OURO_MATMUL=bf16 leaves the float32 path in place"
		continue
	fi
	"$PYTHON" scripts/ouro_ref.py check --model "$model" --ids "$tmp/ids.$name" \
		--records "$tmp/bf16.rec" --tol 2e-2 >"$tmp/check" 2>&1 ||
		{ cat "$tmp/check"; fail "$name: bf16 states too far from the reference"; }
	echo "# $name, BF16 activations: $(tail -n 1 "$tmp/check")"
	a=$(head -c 60 "$tmp/ids.$name" | ouro-generate -m "$model" --prompt-ids -t -n 8 -s 3)
	b=$(head -c 60 "$tmp/ids.$name" | OURO_MATMUL=bf16 ouro-generate -m "$model" --prompt-ids -t -n 8 -s 3)
	echo "# $name greedy tokens, float32: $a; bf16 prefill: $b"
done
finish
