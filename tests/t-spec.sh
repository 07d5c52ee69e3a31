#!/bin/sh
# t-spec - ouro-generate --speculate: self-speculative decoding gives the
# output of decoding without it.
#
#   1. Greedy answers (--jsonl: the ids and each token's exit loops) with
#      --speculate are byte-identical to those without, on the fixture, on
#      a fresh random model (T = 5) and on the bundled trained model, for
#      many prompts (-f, -P 3; prompts of 1 to 90 ids) and for one: under
#      --kv full for the config's threshold, -q 0.5, -q 0.2, -s 1, -s 2,
#      -e 4, -w, and the rules reading each loop's logits (--kl, --stable 2,
#      --entropy, with values that exit at different loops on each model),
#      and under --kv last and mean (where speculation is off) for two rules; each run with its own --draft-steps S and
#      --draft-tokens K, so that every S in 1..T-1 and K in 1..8 is run
#      under --kv full on every model.
#   2. -v on the bundled model: drafts are checked and some accepted; with
#      -s 0 every token is final after drafting, so the speculating
#      sequence's passes equal its tokens' loops (no verify pass).
#   3. Bad options: one stderr line, exit status 2.
#   4. Sampled: the distribution of the new tokens over many seeds with and
#      without --speculate, by a chi-square test (see there); sampled
#      --speculate answers are the same for -P 64 and -P 1 -j 1.
. tests/lib.sh
test_seed

rnd=$tmp/rnd
"$PYTHON" scripts/make-model --out "$rnd" --vocab 300 --hidden 32 --heads 4 --kv-heads 2 \
	--head-dim 8 --ffn 48 --layers 2 --steps 5 --max-pos 128 --dtype bf16 \
	--seed "$seed" >/dev/null || fail "make-model"
kjv=models/ouro-kjv-tiny
random_prompts "$tmp/fixture.jsonl" 1 49152 24
random_prompts "$tmp/rnd.jsonl" "$seed" 300 24
printf '%s\n' '{"prompt": "And God said unto Moses,"}' '{"prompt": "In the beginning"}' \
	'{"prompt": "Blessed are the meek", "max_tokens": 7}' '{"prompt": "And"}' >"$tmp/kjv.jsonl"

cases=0
# combo T: --draft-steps and --draft-tokens of run $i: runs 0..8(T-1)-1
# go round every S in 1..T-1 and K in 1..8
combo() {
	echo "--draft-steps $((i % ($1 - 1) + 1)) --draft-tokens $((i / ($1 - 1) % 8 + 1))"
}

for name in fixture rnd kjv; do
	case $name in
	fixture) model=models/ouro-fixture T=4 kl=0.5 ent=10.5 ;;
	rnd) model=$rnd T=5 kl=0.5 ent=5.6 ;;
	kjv) model=$kjv T=4 kl=0.1 ent=4 ;;
	esac
	in=$tmp/$name.jsonl
	i=0
	for kv in full last mean; do
		if [ "$kv" = full ]; then
			set -- "" "-q 0.5" "-q 0.2" "-s 1" "-s 2" "-e 4" "-w" "--kl $kl" "--stable 2" \
				"--entropy $ent"
			per=$((((T - 1) * 8 + $# - 1) / $#))   # runs of each rule, to cover them all
		else
			set -- "-q 0.5" "-w"
			per=1
		fi
		for rule in "$@"; do
			run() {
				ouro-generate -m "$model" --kv "$kv" $rule -n 20 "$@"
			}
			what="$name --kv $kv ${rule:-(the config's threshold)}"
			run --jsonl -f "$in" -P 3 >"$tmp/ref" || { fail "$what: failed"; continue; }
			for _ in $(seq "$per"); do
				c=$(combo "$T")
				i=$((i + 1))
				run --jsonl -f "$in" -P 3 --speculate $c >"$tmp/got" ||
					fail "$what --speculate $c: failed"
				cmp -s "$tmp/ref" "$tmp/got" || fail "$what --speculate $c: answers differ"
				cases=$((cases + 1))
			done
			# one prompt
			p=$([ "$name" = kjv ] && echo "And the LORD spake" || echo "--prompt-ids -t 5 6 7")
			ref=$(run $p) || fail "$what: one prompt failed"
			c=$(combo "$T")
			i=$((i + 1))
			got=$(run --speculate $c $p) || fail "$what: one prompt --speculate $c failed"
			[ "$ref" = "$got" ] || fail "$what: one prompt --speculate $c: '$got', not '$ref'"
			cases=$((cases + 1))
		done
	done
done
echo "# $cases --speculate runs identical to their reference"

# 2. -v: the acceptance line; an exit before the draft's last loop is final
spec_line() {
	ouro-generate -m "$kjv" -n 30 -v "$@" "And God said" 2>&1 >/dev/null |
		grep 'speculation: '
}
line=$(spec_line --speculate) || fail "-v: no speculation line"
echo "# $line"
echo "$line" | grep -Eq ' [1-9][0-9]* of [1-9][0-9]* drafted tokens accepted' ||
	fail "-v: no draft accepted: $line"
line=$(spec_line -s 0 --speculate --draft-steps 3)
echo "# -s 0: $line"
echo "$line" | grep -q '(29 passes for tokens of 29 loops; 0 verify passes' ||
	fail "-s 0 --draft-steps 3: not one pass per token: $line"

# 4. sampled: speculative sampling keeps the full-depth distribution. On a
# fixed tiny model (16 ids), 4000 sequences of the same prompt with seeds
# 0..3999, at temperature 1: the new tokens 2 to 4 (the first comes from
# the prefill: the same) with and without --speculate are compared by a
# chi-square test of homogeneity per position (categories: the ids, and
# "ended", merged while a count is under 5 expected). The bound is the
# 0.999 quantile of chi-square (Wilson-Hilferty), so a correct rule fails
# a position with probability 1e-3 (all is seeded: the run is fixed; it
# gives 12.1, 16.8 and 12.0 against 37.8). Wrong rules fail it, measured:
# keeping every draft 2323, 2062, 297; drawing a rejected token from p
# instead of max(0, p - q) 157, 160, 21; a stop id drafted ending the
# round without its acceptance test 67, 143, 93.
tiny=$tmp/tiny
"$PYTHON" scripts/make-model --out "$tiny" --vocab 16 --hidden 32 --heads 4 --kv-heads 2 \
	--head-dim 8 --ffn 48 --layers 2 --steps 4 --max-pos 64 --seed 11 >/dev/null ||
	fail "make-model tiny"
"$PYTHON" -c 'import json
for i in range(4000): print(json.dumps({"prompt_ids": [3, 4, 5], "seed": i}))' >"$tmp/seeds.jsonl"
for mode in plain spec; do
	ouro-generate -m "$tiny" --jsonl -f "$tmp/seeds.jsonl" -P 64 -n 4 --temperature 1 -v \
		$([ "$mode" = spec ] && echo --speculate --draft-tokens 4) \
		>"$tmp/$mode.out" 2>"$tmp/$mode.err" || fail "sampled $mode: failed"
done
grep -Eq ' [1-9][0-9]* of [1-9][0-9]* drafted tokens accepted' "$tmp/spec.err" ||
	fail "sampled --speculate: no draft accepted: $(cat "$tmp/spec.err")"
# reproducible, and the same whatever runs with it
head -n 300 "$tmp/seeds.jsonl" >"$tmp/seeds300.jsonl"
ouro-generate -m "$tiny" --jsonl -f "$tmp/seeds300.jsonl" -P 1 -j 1 -n 4 --temperature 1 \
	--speculate --draft-tokens 4 >"$tmp/spec300.out" || fail "sampled -P 1: failed"
head -n 300 "$tmp/spec.out" | cmp -s - "$tmp/spec300.out" ||
	fail "sampled --speculate: -P 1 -j 1 differs from -P 64"
"$PYTHON" - "$tmp/plain.out" "$tmp/spec.out" <<'PY' || fail "sampled: distributions differ"
import json, math, sys
runs = [[json.loads(l)["ids"] for l in open(f)] for f in sys.argv[1:]]
bad = 0
for pos in (1, 2, 3):
    counts = []
    for ids in runs:
        c = {}
        for seq in ids:
            k = seq[pos] if len(seq) > pos else -1
            c[k] = c.get(k, 0) + 1
        counts.append(c)
    n = [sum(c.values()) for c in counts]
    cats = sorted(set(counts[0]) | set(counts[1]), key=lambda k: counts[0].get(k, 0) + counts[1].get(k, 0))
    groups, cur = [], [0, 0]
    for k in cats:      # rarest first, merged until each group expects >= 5
        cur = [cur[0] + counts[0].get(k, 0), cur[1] + counts[1].get(k, 0)]
        if (cur[0] + cur[1]) * min(n) / sum(n) >= 5:
            groups.append(cur)
            cur = [0, 0]
    if cur[0] + cur[1]:
        groups[-1] = [groups[-1][0] + cur[0], groups[-1][1] + cur[1]]
    chi = 0.0
    for g in groups:
        tot = g[0] + g[1]
        for j in (0, 1):
            e = tot * n[j] / sum(n)
            chi += (g[j] - e) ** 2 / e
    df = len(groups) - 1
    z = 3.0902   # the 0.999 quantile of the normal
    bound = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    print("# new token %d: chi-square %.1f, %d degrees of freedom, bound %.1f" % (pos + 1, chi, df, bound))
    bad += chi > bound
sys.exit(bad > 0)
PY

# 3. bad options
expect_fail 2 'ouro-generate: --draft-steps and --draft-tokens go with --speculate' \
	ouro-generate --draft-steps 2 hello
expect_fail 2 'ouro-generate: --draft-steps: 4 is outside 1..3' \
	ouro-generate -T 4 --speculate --draft-steps 4 hello
expect_fail 2 'ouro-generate: --speculate: 1 loop, at least 2 needed' \
	ouro-generate -T 1 --speculate hello
expect_fail 2 'ouro-generate: --draft-tokens: ' ouro-generate --speculate --draft-tokens 0 hello
finish
