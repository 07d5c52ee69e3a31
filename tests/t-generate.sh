#!/bin/sh
# t-generate - ouro-generate against the staged pipeline and the reference.
#
#   1. Greedy ouro-generate (all loops, q = 1, --kv full, float32 KV: the
#      pipeline keeps no cache to round) gives the same
#      tokens as running ouro-forward | ouro-gate | ouro-sample once per
#      new token, and as the independent NumPy reference (argmax of the
#      lm_head over the reference's last-step state of the whole sequence),
#      on the bundled fixture and on a fresh random model.
#   2. With a sampling temperature and a seed, generate and the pipeline
#      (same seed) draw the same tokens: randomness depends only on the
#      seed and the position.
#   3. A static exit at step s needs s+1 loops per decoded token, and a
#      threshold exit does fewer layer passes than the full loop; --kv last
#      and mean fit a KV memory budget that --kv full does not (one
#      stderr line giving the sizes).
#   4. The exit rules of the next-token distribution really stop early:
#      --kl, --entropy (values among the model's own) and --stable 2 and 3
#      on fresh random prompts (--kv full, f32 KV) give the tokens and the
#      loops per token of the reference's generation that stops each
#      position's loops by the same rule (scripts/ouro_ref.py generate),
#      compared up to a token whose decision was within 1e-6 of the rule's
#      value (counted).
#   5. Bad option values and prompts: one stderr line, exit status 2 or 1.
. tests/lib.sh
test_seed

# pipeline MODEL N SEQ [sample options]: extends the id sequence SEQ by N
# tokens, one process chain per token; prints the new ids.
pipeline() {
	model=$1 n=$2 seq=$3
	shift 3
	start=$(echo "$seq" | wc -w)
	i=0
	while [ "$i" -lt "$n" ]; do
		seq=$(echo "$seq" | ouro-forward -m "$model" | ouro-gate -m "$model" -q 1 |
			ouro-sample -m "$model" -t "$@") || return 1
		i=$((i + 1))
	done
	echo "$seq" | cut -d' ' -f$((start + 1))-
}

# reference MODEL N SEQ: the reference's greedy continuation.
reference() {
	"$PYTHON" - "$1" "$2" "$3" <<'PY'
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref as R
m = R.load_model(sys.argv[1])
head = R.load_lm_head(sys.argv[1])
seq = [int(x) for x in sys.argv[3].split()]
new = []
for _ in range(int(sys.argv[2])):
    hidden = R.forward(m, seq)
    logits = head @ hidden[-1][-1]
    tok = int(np.argmax(logits))
    new.append(tok)
    seq.append(tok)
print(" ".join(map(str, new)))
PY
}

# compare NAME MODEL PROMPT: generate vs pipeline vs reference, 5 tokens.
compare() {
	gen=$(echo "$3" | ouro-generate -m "$2" --prompt-ids -t -n 5 -q 1 --kv full --kv-type f32) ||
		{ fail "$1: ouro-generate failed"; return; }
	pipe=$(pipeline "$2" 5 "$3") || { fail "$1: pipeline failed"; return; }
	ref=$(reference "$2" 5 "$3") || { fail "$1: reference failed"; return; }
	# generate stops early at an end-of-turn id that the pipeline emits
	case "$pipe" in
	"$gen"*) ;;
	*) fail "$1: generate '$gen' != pipeline '$pipe'" ;;
	esac
	[ "$pipe" = "$ref" ] || fail "$1: pipeline '$pipe' != reference '$ref'"
	echo "# $1: generate, pipeline and reference agree: $gen"
}

fixture=models/ouro-fixture
compare "fixture" "$fixture" "19556 905 17 216 33 34 35"

rnd=$tmp/rnd
"$PYTHON" scripts/make-model --out "$rnd" --vocab 500 --hidden 48 --heads 4 --kv-heads 2 \
	--head-dim 12 --ffn 64 --layers 2 --steps 4 --max-pos 256 --dtype bf16 \
	--seed "$seed" >/dev/null || fail "make-model"
prompt=$("$PYTHON" -c "import random; r=random.Random($seed); print(' '.join(str(r.randrange(3, 500)) for _ in range(r.randrange(1, 40))))")
compare "random model" "$rnd" "$prompt"

# sampled: generate and pipeline draw the same tokens for the same seed
gen=$(echo "$prompt" | ouro-generate -m "$rnd" --prompt-ids -t -n 4 -q 1 --kv-type f32 \
	--temperature 1.5 --top-k 50 --seed "$seed")
pipe=$(pipeline "$rnd" 4 "$prompt" --temperature 1.5 --top-k 50 --seed "$seed")
case "$pipe" in
"$gen"*) echo "# sampled at temperature 1.5: generate and pipeline agree: $gen" ;;
*) fail "sampled: generate '$gen' != pipeline '$pipe'" ;;
esac

# loops and cache: -v reports them, on a copy of the random model with
# no end-of-text id (and no tokenizer: ids in and out), so that every one
# of the 20 tokens is decoded whatever the seed
mkdir "$tmp/rnd-noeos" && cp "$rnd/model.safetensors" "$tmp/rnd-noeos/" &&
	"$PYTHON" -c 'import json, sys; c = json.load(open(sys.argv[1])); c["eos_token_id"] = -1; json.dump(c, open(sys.argv[2], "w"))' \
		"$rnd/config.json" "$tmp/rnd-noeos/config.json" || fail "the random model without eos"
stats() {
	echo "$prompt" | ouro-generate -m "$tmp/rnd-noeos" --prompt-ids -t -n 20 -v "$@" 2>&1 >/dev/null
}
loops() {
	sed -n 's/.* \([0-9.]*\) loops per decoded token (\([0-9]*\) layer passes).*/\1 \2/p'
}
for s in 0 1 2 3; do
	set -- $(stats -s "$s" | loops)
	[ "${1:-}" = "$((s + 1)).00" ] || fail "-s $s: $* loops per token, expected $((s + 1))"
done
# the savings of an exit threshold, on the trained model (a random gate
# may never reach the threshold before the last loop)
trained() {
	echo "And God said unto Moses," |
		ouro-generate -m models/ouro-kjv-tiny -n 20 -v "$@" 2>&1 >/dev/null
}
full=$(trained -q 1 | loops)
early=$(trained -q 0.3 | loops)
echo "# ouro-kjv-tiny, loops per decoded token and layer passes: -q 1: $full; -q 0.3: $early"
[ "${early#* }" -lt "${full#* }" ] || fail "-q 0.3 did not save layer passes"
# KV blocks of 16 positions x 8 slots x 2 x 24 floats: 24 KiB; 200 tokens
# after a prompt of at most 40 need at most 15 blocks under full, 7 under
# last and mean
kvm() {
	echo "$prompt" | ouro-generate -m "$rnd" --prompt-ids -t -n 200 -s 1 --kv-type f32 \
		--kv-memory 200K "$@"
}
kvm --kv last >/dev/null || fail "--kv last in 200 KiB"
kvm --kv mean >/dev/null || fail "--kv mean in 200 KiB"
kvm --kv full >/dev/null 2>"$tmp/err" && fail "--kv full fits in 200 KiB"
grep -q "^ouro-generate: the KV cache for [0-9]* tokens .* needs 360.0 MiB\|needs [0-9.]* MiB, more than the KV memory budget of 0.2 MiB$" "$tmp/err" ||
	fail "--kv full in 200 KiB: $(cat "$tmp/err")"
echo "# --kv-memory 200K: $(cat "$tmp/err")"

# the rules of the next-token distribution against the reference's real
# early exit: KL and entropy values are the medians over the loops t >= 1
# of a first prompt's positions
"$PYTHON" - "$tmp/rnd-noeos" "$seed" "$tmp/lm" <<'PY' || fail "prompts and rule values"
import json, random, sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref as R
r = random.Random(int(sys.argv[2]))
prompts = [[r.randrange(3, 500) for _ in range(r.randrange(1, 30))] for _ in range(4)]
m = R.load_model(sys.argv[1])
head = R.load_lm_head(sys.argv[1])
lp = np.array([[R.log_softmax(x) for x in h @ head.T] for h in R.forward(m, prompts[0] * 3)])
p = np.exp(lp[1:])
kl = np.median((p * (lp[1:] - lp[:-1])).sum(-1))
ent = np.median(-(p * lp[1:]).sum(-1))
with open(sys.argv[3] + ".rules", "w") as f:
    f.write("kl %.4g\nentropy %.4g\nstable 2\nstable 3\n" % (kl, ent))
for i, pr in enumerate(prompts):
    open("%s.%d" % (sys.argv[3], i), "w").write(" ".join(map(str, pr)) + "\n")
PY
near=0 checked=0
while read -r kind value; do
	for i in 0 1 2 3; do
		gen=$(printf '{"prompt_ids": [%s]}\n' "$(sed 's/ /, /g' "$tmp/lm.$i")" |
			ouro-generate -m "$tmp/rnd-noeos" --"$kind" "$value" --kv full --kv-type f32 \
			-n 10 --jsonl -f -) || { fail "--$kind $value: ouro-generate failed"; continue; }
		want=$("$PYTHON" scripts/ouro_ref.py generate --model "$tmp/rnd-noeos" --ids "$tmp/lm.$i" -n 10 \
			--rule "$kind $value") || { fail "--$kind $value: the reference failed"; continue; }
		out=$("$PYTHON" - "$gen" "$want" <<'PY'
import json, sys
g, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
k = len(r["ids"]) if r["near"] is None else r["near"] + 1
same = g["ids"][:k] == r["ids"][:k] and g["loops"][:k] == r["loops"][:k]
print("%s %d %s" % ("same" if same else "differ", r["near"] is not None, r["loops"]))
PY
) || fail "--$kind $value: comparing"
		case "$out" in
		same*) ;;
		*) fail "--$kind $value, prompt $i: generate $gen, reference $want" ;;
		esac
		set -- $out
		near=$((near + $2)) checked=$((checked + 1))
		echo "# --$kind $value, prompt $i: loops ${out#* * }"
	done
done <"$tmp/lm.rules"
echo "# rules of the next-token distribution: $checked generations as the reference's," \
	"$near with a decision within 1e-6 of the rule's value (compared up to it)"

# bad input: one line on stderr, documented status, nothing on stdout
echo "19556 905" >"$tmp/prompt"
bad() {
	b_want=$1
	shift
	expect_fail "$b_want" '^ouro-generate: ' ouro-generate "$@" <"$tmp/prompt"
}
bad 2 -q 1.5
bad 2 -s 4 --prompt-ids
bad 2 -e -1
bad 2 -q 0.5 -s 1
bad 2 --kl 0.1 -e 1
bad 2 --stable 1
bad 2 --entropy -2
bad 2 --kv some
bad 2 --kv-type f16
bad 2 --kv-memory 0
bad 2 --kv-memory 12X
bad 2 --jsonl
bad 2 -P 0 -f -
bad 2 --temperature -1
bad 2 --top-p 0
bad 2 --seed x
bad 2 --system hi
bad 2 --no-such-option
echo "x y" | ouro-generate --prompt-ids >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "not a token id" "$tmp/err" || fail "non-numeric prompt ids: $(cat "$tmp/err")"
echo "99999999" | ouro-generate --prompt-ids -t >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "outside the vocabulary" "$tmp/err" || fail "id out of range: $(cat "$tmp/err")"
printf '' | ouro-generate >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "empty" "$tmp/err" || fail "empty prompt: $(cat "$tmp/err")"
ouro-generate -m "$tmp/none" hi >/dev/null 2>"$tmp/err"
[ $? -eq 3 ] || fail "missing model dir: $(cat "$tmp/err")"
finish
