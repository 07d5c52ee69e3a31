#!/bin/sh
# t-threads - results do not depend on the number of threads.
#
# Every program that computes (ouro-forward, ouro-gate and ouro-gate train,
# ouro-sample, ouro-generate greedy and sampled with a seed, ouro-lens,
# ouro-eval ppl and choice, ouro-quantize -t q4 and the programs on its
# q4 weights) is run with OURO_THREADS=1, 2 and 3 and -j where
# the program has it; every output must be byte-identical to the one-thread
# run. Models: the bundled fixture and a fresh random model (make-model)
# whose sizes are not multiples of the kernels' chunk of 64 and whose
# sequences are longer than one attention block of 64 queries.
#
# Run by tests/run from the repository root with the programs on PATH;
# uses $PYTHON and $TMPDIR.
. tests/lib.sh
checks=0

fixture=models/ouro-fixture
rand=$tmp/rand
"$PYTHON" scripts/make-model --out "$rand" --vocab 300 --hidden 96 --heads 3 --kv-heads 1 \
	--head-dim 32 --ffn 200 --layers 2 --steps 3 --max-pos 256 --dtype bf16 --seed 11 \
	>/dev/null || { echo "FAIL: make-model"; exit 1; }

# same NAME CMD...: runs CMD (a shell command line, stdout to the file
# named by $out) with 1, 2 and 3 threads; the outputs must be equal.
same() {
	name=$1
	shift
	for j in 1 2 3; do
		out=$tmp/$name.$j
		OURO_THREADS=$j J=$j out=$out sh -c "$*" 2>"$tmp/err"
		rc=$?
		if [ "$rc" -ne 0 ]; then
			fail "$name with $j threads (exit $rc): $(head -n 3 "$tmp/err")"
			return
		fi
	done
	checks=$((checks + 1))
	[ -s "$tmp/$name.1" ] || fail "$name: empty output"
	for j in 2 3; do
		cmp -s "$tmp/$name.1" "$tmp/$name.$j" || fail "$name: $j threads differ from 1"
	done
}

# long id sequences (within both vocabularies)
awk 'BEGIN { for (s = 0; s < 3; s++) { n = 70 + 40 * s
	for (i = 0; i < n; i++) printf "%d%s", (i * 37 + s * 11 + 5) % 300, i < n - 1 ? " " : "\n" } }' \
	>"$tmp/long.ids"

for m in fixture rand; do
	eval dir=\$$m
	ids=$tmp/long.ids
	same "$m-forward" 'ouro-forward -m '"$dir"' -j $J '"$ids"' >$out'
	same "$m-forward-bf16" 'ouro-forward -m '"$dir"' -j $J --dtype bf16 -T 5 '"$ids"' >$out'
	ouro-forward -m "$dir" -j 1 "$ids" >"$tmp/$m.rec" || fail "$m: ouro-forward"
	same "$m-gate" 'ouro-gate -m '"$dir"' -q 0.6 '"$tmp/$m.rec"' >$out'
	same "$m-gate-weighted" 'ouro-gate -m '"$dir"' -w '"$tmp/$m.rec"' >$out'
	same "$m-gate-train" 'ouro-gate train -m '"$dir"' -n 2 --batch 32 -j $J -o $out '"$tmp/$m.rec"
	ouro-gate -m "$dir" -q 0.6 "$tmp/$m.rec" >"$tmp/$m.gate" || fail "$m: ouro-gate"
	same "$m-sample" 'ouro-sample -m '"$dir"' -j $J --temperature 0.8 --top-p 0.9 --seed 7 --logprobs 3 '"$tmp/$m.gate"' >$out'
	same "$m-generate-greedy" 'ouro-generate -m '"$dir"' -j $J -n 24 --prompt-ids -t "1 2 3 4 5" >$out'
	same "$m-generate-sampled" 'ouro-generate -m '"$dir"' -j $J -n 24 --temperature 0.9 --top-k 50 --seed 42 -q 0.5 --kv last --prompt-ids -t "1 2 3 4 5" >$out'
	same "$m-generate-long" 'ouro-generate -m '"$dir"' -j $J -n 8 -e 0.05 --kv mean --prompt-ids -t "$(head -n 2 '"$ids"' | tail -n 1)" >$out'
	same "$m-eval-ppl" 'ouro-eval ppl -m '"$dir"' -j $J -q 0.5,0.9 -e 0.1 -W 64 -f ids -o $out '"$ids"
done
same "fixture-eval-text" 'ouro-eval ppl -m '"$fixture"' -j $J -T 5 -W 48 --per-token $out.pt tests/eval/docs.jsonl >$out && cat $out.pt >>$out'
same "fixture-lens" 'ouro-lens -m '"$fixture"' -j $J -k 4 --json --prompt-ids "$(head -n 1 '"$tmp/long.ids"')" >$out'
same "fixture-eval-choice" 'ouro-eval choice -m '"$fixture"' -j $J -q 0.5 tests/eval/tiny-choice.jsonl >$out'
same "fixture-generate-text" 'ouro-generate -m '"$fixture"' -j $J -n 16 --temperature 1 --seed 3 "In the beginning" >$out'

# q4 weights (rows of 96 and 200: partial sub-blocks): the quantizer, the
# prefill's widening and the decode kernels
same "rand-q4-quantize" 'ouro-quantize -m '"$rand"' -t q4 -j $J -o $out.d && cat $out.d/model.safetensors >$out'
ouro-quantize -m "$rand" -t q4 -o "$tmp/rand-q4" || fail "ouro-quantize -t q4"
same "rand-q4-forward" 'ouro-forward -m '"$tmp/rand-q4"' -j $J '"$tmp/long.ids"' >$out'
same "rand-q4-generate-greedy" 'ouro-generate -m '"$tmp/rand-q4"' -j $J -n 24 --prompt-ids -t "1 2 3 4 5" >$out'

echo "# $checks programs and settings, each byte-identical with 1, 2 and 3 threads"
finish
