#!/bin/sh
# t-tiny-model - the bundled trained model, models/ouro-kjv-tiny (written
# by scripts/train-tiny), through the programs and against the independent
# NumPy reference, scripts/ouro_ref.py:
#
#   1. its SentencePiece tokenizer: fixed verses give the ids spm_encode
#      gave when the model was made, the chat specials are single ids 1
#      and 2, and decoding gives the text back;
#   2. ouro-forward on held-out text, a chat prompt, special and byte ids
#      and a 300-token sequence, at T=4 and T=6: every loop's state within
#      relative error 1e-4 of the reference;
#   3. ouro-forward | ouro-gate -q 0.5 against the reference (1e-5
#      absolute, the same exit steps), and the trained gate sends the
#      tokens of held-out text to more than one exit loop;
#   4. ouro-eval ppl on a held-out slice (the first 40 verses of
#      heldout.txt): the per-loop NLL within 1e-4 of the reference's, and
#      the perplexity at T=4 below that at T=1 and below 100.
#
# Needs NumPy, not PyTorch. Run by tests/run from the repository root with
# bin/ on PATH.
. tests/lib.sh
stop_at_fail=1
model=models/ouro-kjv-tiny
ref=scripts/ouro_ref.py

# ---- 1. tokenizer
printf '%s\n' 'In the beginning God created the heaven and the earth.' \
	'And the LORD said unto Moses, Stretch out thine hand.' \
	'<|im_start|>user' >"$tmp/verses.txt"
cat >"$tmp/verses.want" <<'EOF'
1032 262 2098 393 3408 262 760 271 262 643 4057
301 262 345 394 326 685 4049 2943 1074 329 430 652 481 4057
4034 1 404 270
EOF
ouro-tokenize -m "$model" -l -t "$tmp/verses.txt" >"$tmp/verses.ids" ||
	fail "ouro-tokenize -m $model -l -t (exit $?)"
cmp -s "$tmp/verses.ids" "$tmp/verses.want" ||
	fail "ouro-tokenize: $(tr '\n' '|' <"$tmp/verses.ids"), expected $(tr '\n' '|' <"$tmp/verses.want")"

head -n 40 "$model/heldout.txt" >"$tmp/slice.txt"
ouro-tokenize -m "$model" -t "$tmp/slice.txt" >"$tmp/slice.ids" ||
	fail "ouro-tokenize -m $model -t heldout (exit $?)"
ouro-tokenize -m "$model" -d "$tmp/slice.ids" >"$tmp/slice.back" ||
	fail "ouro-tokenize -m $model -d (exit $?)"
# the normalizer turns newlines into spaces; -d ends its text with one
printf '%s\n' "$(tr '\n' ' ' <"$tmp/slice.txt" | sed 's/ $//')" >"$tmp/slice.flat"
cmp -s "$tmp/slice.back" "$tmp/slice.flat" ||
	fail "decoding the held-out slice does not give its text back"
echo "# tokenizer: $(wc -w <"$tmp/slice.ids") ids for the held-out slice, round trip exact"

# ---- 2. ouro-forward against the reference
ouro-tokenize -m "$model" --chat -t "$tmp/verses.txt" >"$tmp/chat.ids" ||
	fail "ouro-tokenize --chat (exit $?)"
{
	head -n 3 "$model/heldout.txt" | ouro-tokenize -m "$model" -t
	cat "$tmp/chat.ids"
	echo "0 1 2 3 4 100 259 260 4095 0"
	awk '{ for (i = 1; i <= NF && i <= 300; i++) printf "%s%s", $i, i < 300 ? " " : "\n" }' \
		"$tmp/slice.ids"
} >"$tmp/fwd.ids" || fail "writing the ids"
for steps in 4 6; do
	ouro-forward -m "$model" --steps "$steps" "$tmp/fwd.ids" >"$tmp/fwd$steps.rec" ||
		fail "ouro-forward -m $model --steps $steps (exit $?)"
	"$PYTHON" "$ref" check --model "$model" --steps "$steps" --ids "$tmp/fwd.ids" \
		--records "$tmp/fwd$steps.rec" --tol 1e-4 >"$tmp/check.log" 2>&1 ||
		{ cat "$tmp/check.log"; fail "ouro-forward --steps $steps differs from the reference"; }
	echo "# T=$steps: $(tail -n 1 "$tmp/check.log")"
done

# ---- 3. the trained exit gate
ouro-gate -m "$model" -q 0.5 "$tmp/fwd4.rec" >"$tmp/gate.rec" ||
	fail "ouro-gate -m $model -q 0.5 (exit $?)"
"$PYTHON" "$ref" gate --model "$model" --records "$tmp/gate.rec" --tol 1e-5 \
	>"$tmp/gate.log" 2>&1 || { cat "$tmp/gate.log"; fail "ouro-gate differs from the reference"; }
echo "# gate: $(tail -n 1 "$tmp/gate.log")"
hist=$("$PYTHON" - "$tmp/gate.rec" <<'EOF'
import sys
sys.path.insert(0, "scripts")
import numpy as np
import ouro_ref
steps = np.concatenate([t["exit_step"].ints() for t, _ in ouro_ref.read_records(sys.argv[1])])
print(" ".join("%d" % (steps == s).sum() for s in range(4)))
EOF
) || fail "reading the exit steps"
echo "# exit loops 1..4 at -q 0.5: $hist tokens"
[ "$(echo "$hist" | tr ' ' '\n' | grep -c -v '^0$')" -ge 2 ] ||
	fail "the trained gate exits every token at the same loop ($hist)"

# ---- 4. held-out perplexity by loop
ouro-eval ppl -m "$model" -T 4 -o "$tmp/eval.json" "$tmp/slice.txt" ||
	fail "ouro-eval ppl -m $model (exit $?)"
"$PYTHON" "$ref" eval-ppl --model "$model" --steps 4 --ids "$tmp/slice.ids" \
	--window 512 --prefix 0 >"$tmp/ref.json" || fail "ouro_ref.py eval-ppl (exit $?)"
"$PYTHON" - "$tmp/eval.json" "$tmp/ref.json" <<'EOF' || fail "held-out perplexity"
import json, math, sys
ours = json.load(open(sys.argv[1]))["results"]
theirs = json.load(open(sys.argv[2]))
nll = [loop["nll"] for loop in ours["loops"]]
err = max(abs(a - b) for a, b in zip(nll, theirs["nll"]))
print("# %d held-out tokens, ppl by loop %s; max NLL difference to the "
      "reference %.2e" % (ours["tokens"], " ".join("%.2f" % math.exp(x) for x in nll), err))
ok = ours["tokens"] == theirs["tokens"] and err < 1e-4
ok = ok and nll[3] < nll[0] and math.exp(nll[3]) < 100
sys.exit(0 if ok else 1)
EOF
