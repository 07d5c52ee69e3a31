#!/bin/sh
# t-kernels - the matrix kernels' one order of operations, end to end.
#
# ouro-forward's records must be byte-identical whichever vector unit the
# kernels run on (OURO_CPU=avx2, portable, and the best one), for float32
# products and, where the CPU has AVX512-BF16 and no AMX, for BF16
# products (OURO_MATMUL=bf16, emulated in C below AVX-512); on the
# fixture and on random models whose sizes are not multiples of 16 or 32
# (BF16, F16 and F32 weights). A greedy continuation decoded token by
# token must also be the same on every unit. An unknown OURO_CPU value is
# ignored.
. tests/lib.sh

"$PYTHON" -c "print(' '.join(str((i * 7919) % 49152) for i in range(90)))" >"$tmp/ids.fixture"
"$PYTHON" -c "print(' '.join(str((i * 37) % 300) for i in range(70)))" >"$tmp/ids.rnd"
models=models/ouro-fixture
for dt in bf16 f16 f32; do
	"$PYTHON" scripts/make-model --out "$tmp/$dt" --vocab 300 --hidden 72 --heads 3 --kv-heads 1 \
		--head-dim 24 --ffn 100 --layers 2 --steps 3 --max-pos 256 --dtype $dt --seed 5 \
		>/dev/null || fail "make-model $dt"
	models="$models $tmp/$dt"
done

units="avx2 portable"
bf=""
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && ! grep -qw amx_bf16 /proc/cpuinfo && bf=bf16
for model in $models; do
	ids=$tmp/ids.rnd
	[ "$model" = models/ouro-fixture ] && ids=$tmp/ids.fixture
	for mode in f32 $bf; do
		env=""
		[ "$mode" = bf16 ] && env="OURO_MATMUL=bf16"
		env $env ouro-forward -m "$model" "$ids" >"$tmp/best.rec" || fail "$model $mode: forward"
		head -c 40 "$ids" | env $env ouro-generate -m "$model" --prompt-ids -t -n 6 -s 2 \
			>"$tmp/best.gen" || fail "$model $mode: generate"
		for unit in $units bogus; do
			env $env OURO_CPU=$unit ouro-forward -m "$model" "$ids" >"$tmp/u.rec" ||
				fail "$model $mode $unit: forward"
			cmp -s "$tmp/best.rec" "$tmp/u.rec" ||
				fail "$model $mode: OURO_CPU=$unit changes the records"
			head -c 40 "$ids" | env $env OURO_CPU=$unit ouro-generate -m "$model" --prompt-ids \
				-t -n 6 -s 2 >"$tmp/u.gen" || fail "$model $mode $unit: generate"
			cmp -s "$tmp/best.gen" "$tmp/u.gen" ||
				fail "$model $mode: OURO_CPU=$unit changes the generated tokens"
		done
	done
done
echo "# records and tokens identical on: best unit, $units; float32${bf:+ and BF16 products}"
finish
