#!/bin/sh
# t-eval-choice - ouro-eval choice against lm-evaluation-harness's rules,
# computed independently:
#
#   1. the requests of tests/eval/tiny-choice.jsonl are split and tokenized
#      here, in Python, as lm-evaluation-harness's _encode_pair does
#      (trailing whitespace of the context moved to the continuation; an
#      empty context replaced by the prefix token; the continuation = the
#      tokens of context+continuation past the context's), with
#      ouro-tokenize for the tokens; the reference (ouro_ref.py
#      eval-choice) scores them at every loop and rule; every choice's
#      log-likelihood in the --log agrees within 1e-5 relative, and acc,
#      acc_norm, greedy and average loops are equal;
#   2. a hand check of acc and acc_norm from those log-likelihoods with the
#      choice lengths written out by hand (code points, not bytes, and
#      without the delimiter);
#   3. a window shorter than the requests (left truncation) against the
#      reference;
#   4. greedy: the token ouro-generate picks is the greedy continuation at
#      the last loop and under -q 1;
#   5. scripts/convert-tasks on samples of the published files of every
#      task, checked field by field, and ouro-eval choice accepts each.
. tests/lib.sh
stop_at_fail=1
fixture=models/ouro-fixture
ref=scripts/ouro_ref.py
task=tests/eval/tiny-choice.jsonl
pub=tests/eval/published

# requests TASK OUT: the tokenized requests of TASK as eval-choice reads them.
requests() {
	"$PYTHON" - "$1" "$2" <<'EOF' || fail "building the requests of $1"
import json, subprocess, sys
prefix = 0    # the fixture's bos_token_id

def encode_all(texts):
    """Token ids of each text, by ouro-tokenize (one JSON string a line)."""
    src = "".join(json.dumps(t) + "\n" for t in texts)
    out = subprocess.run(["ouro-tokenize", "--jsonl", "-t"], input=src.encode(),
                         capture_output=True, check=True).stdout.decode()
    lines = out.split("\n")[:len(texts)]
    return [[int(x) for x in l.split()] for l in lines]

pairs = []     # (example, context, continuation, choice length)
gold = []
for line in open(sys.argv[1], encoding="utf-8"):
    d = json.loads(line)
    if "contexts" in d:
        for c in d["contexts"]:
            pairs.append((len(gold), c, d["continuation"], len(d["continuation"])))
    else:
        for c in d["choices"]:
            pairs.append((len(gold), d["context"], d.get("delimiter", "") + c, len(c)))
    gold.append(d["gold"])

# lm-evaluation-harness: loglikelihood() and _encode_pair()
texts, plan = [], []
for ex, ctx, cont, chars in pairs:
    if ctx == "":
        plan.append((ex, None, len(texts), chars))
        texts.append(cont)
        continue
    n = len(ctx) - len(ctx.rstrip())
    if n:
        cont, ctx = ctx[-n:] + cont, ctx[:-n]
    plan.append((ex, len(texts), len(texts) + 1, chars))
    texts += [ctx, ctx + cont]
ids = encode_all(texts)
examples = [{"gold": g, "pairs": []} for g in gold]
for ex, ci, wi, chars in plan:
    if ci is None:
        c, k = [prefix], ids[wi]
    else:
        c = ids[ci] or [prefix]     # a context of only whitespace
        k = ids[wi][len(ids[ci]):]
    examples[ex]["pairs"].append({"context": c, "continuation": k, "chars": chars})
json.dump(examples, open(sys.argv[2], "w"))
EOF
}

# compare NAME LOG REPORT REFERENCE
compare() {
	"$PYTHON" - "$@" >"$tmp/cmp.log" 2>&1 <<'EOF' || { cat "$tmp/cmp.log"; fail "$1: differs from the reference"; }
import json, sys
name, log, rep, refp = sys.argv[1:5]
lines = [json.loads(l) for l in open(log)][1:]
res = json.load(open(rep))["results"]
r = json.load(open(refp))
T, R = len(res["loops"]), len(res["exit_rules"])
worst = 0.0
for line in lines:
    ours, theirs = line["ll"], r["ll"][line["example"]]
    assert len(ours) == len(theirs), "choices of example %d" % line["example"]
    for a_row, b_row in zip(ours, theirs):
        for a, b in zip(a_row, b_row):
            err = abs(a - b) / abs(b)
            worst = max(worst, err)
            assert err < 1e-5, "%s: example %d: ll %r, reference %r" % (name, line["example"], a, b)
cols = res["loops"] + res["exit_rules"]
for col, x in enumerate(cols):
    for k in ("acc", "acc_norm", "greedy"):
        assert abs(x[k] - r[k][col]) < 1e-9, "%s: column %d %s %r, reference %r" % (name, col, k, x[k], r[k][col])
    assert abs(x["gold_ll"] - r["gold_ll"][col]) < 1e-5 * abs(r["gold_ll"][col]), "%s: gold_ll" % name
for q, x in enumerate(res["exit_rules"]):
    assert abs(x["avg_loops"] - r["avg_loops"][q]) < 1e-9, "%s: avg_loops of %s" % (name, x["rule"])
assert res["tokens"] == r["tokens"], "%s: tokens %d, reference %d" % (name, res["tokens"], r["tokens"])
print("%s: %d examples, %d continuation tokens, T=%d, %d rules: acc, acc_norm, greedy equal; "
      "max relative error of log-likelihoods %.2e" % (name, len(lines), res["tokens"], T, R, worst))
print("%.3e" % worst, file=open(sys.argv[5], "a"))
EOF
	echo "# $(cat "$tmp/cmp.log")"
}

# ---- 1. the tiny task against the reference
requests "$task" "$tmp/req.json"
ouro-eval choice -q 0.3,0.7 -e 3 --log "$tmp/log.jsonl" -o "$tmp/rep.json" "$task" ||
	fail "ouro-eval choice"
"$PYTHON" "$ref" eval-choice --model "$fixture" --requests "$tmp/req.json" --window 512 \
	-q 0.3,0.7 -e 3 >"$tmp/ref.json" || fail "reference eval-choice"
compare "tiny task" "$tmp/log.jsonl" "$tmp/rep.json" "$tmp/ref.json" "$tmp/errors"

# ---- 2. by hand: acc and acc_norm of loop 1..T from the logged ll
"$PYTHON" - "$tmp/log.jsonl" "$tmp/rep.json" <<'EOF' || fail "hand check"
import json, sys
# choice lengths in characters, counted by hand (delimiters excluded)
chars = [[5, 6, 8],            # Paris, London, a banana
         [1, 4, 2],            # 4, five, 22
         [11, 7],              # Hello world, Goodbye
         [5, 5],               # " mat." for both contexts
         [10, 1],              # naïve café is 10 characters, 12 bytes
         [11, 2]]              # spaces only, no
gold = [0, 1, 0, 1, 0, 1]
lines = [json.loads(l) for l in open(sys.argv[1])][1:]
res = json.load(open(sys.argv[2]))["results"]
T = len(res["loops"])
for t in range(T):
    acc = acc_norm = 0
    for line in lines:
        e = line["example"]
        ll = [row[t] for row in line["ll"]]
        best = max(range(len(ll)), key=lambda k: (ll[k], -k))
        norm = [ll[k] / chars[e][k] for k in range(len(ll))]
        best_n = max(range(len(ll)), key=lambda k: (norm[k], -k))
        acc += best == gold[e]
        acc_norm += best_n == gold[e]
    got = res["loops"][t]
    assert abs(got["acc"] - acc / 6) < 1e-9 and abs(got["acc_norm"] - acc_norm / 6) < 1e-9, \
        "loop %d: acc %r acc_norm %r, by hand %d/6 %d/6" % (t + 1, got["acc"], got["acc_norm"], acc, acc_norm)
    print("# by hand, loop %d: acc %d/6, acc_norm %d/6" % (t + 1, acc, acc_norm))
EOF

# ---- 3. a window of 6 tokens: contexts are cut from the left
ouro-eval choice -W 6 -q 0.5 --log "$tmp/log6.jsonl" -o "$tmp/rep6.json" "$task" || fail "choice -W 6"
"$PYTHON" "$ref" eval-choice --model "$fixture" --requests "$tmp/req.json" --window 6 -q 0.5 \
	>"$tmp/ref6.json" || fail "reference -W 6"
compare "tiny task -W 6" "$tmp/log6.jsonl" "$tmp/rep6.json" "$tmp/ref6.json" "$tmp/errors"

# ---- 4. greedy: the token ouro-generate picks (greedy, last loop) is the
# greedy continuation at loop T and under -q 1, and the reference agrees
word=$(ouro-generate -n 1 "The cat sat on the") || fail "ouro-generate"
printf '{"context": "The cat sat on the", "choices": ["%s", " mat"], "gold": 0}\n' "$word" >"$tmp/greedy.jsonl"
requests "$tmp/greedy.jsonl" "$tmp/greq.json"
ouro-eval choice -q 1,0.5 --log "$tmp/glog.jsonl" -o "$tmp/grep.json" "$tmp/greedy.jsonl" || fail "greedy task"
"$PYTHON" "$ref" eval-choice --model "$fixture" --requests "$tmp/greq.json" --window 512 -q 1,0.5 \
	>"$tmp/gref.json" || fail "reference (greedy task)"
compare "greedy task" "$tmp/glog.jsonl" "$tmp/grep.json" "$tmp/gref.json" "$tmp/errors"
"$PYTHON" - "$tmp/grep.json" <<'EOF' || fail "greedy of the generated token"
import json, sys
r = json.load(open(sys.argv[1]))["results"]
assert r["loops"][-1]["greedy"] == 1.0 and r["exit_rules"][0]["greedy"] == 1.0, r
EOF

# ---- 5. convert-tasks on every task's published layout
conv() {
	c_name=$1
	shift
	scripts/convert-tasks "$@" >"$tmp/$c_name.jsonl" 2>"$tmp/err" || { cat "$tmp/err"; fail "convert-tasks $c_name"; }
	ouro-eval choice -q 0.5 -o "$tmp/$c_name.json" "$tmp/$c_name.jsonl" || fail "ouro-eval choice on converted $c_name"
}
conv hellaswag hellaswag "$pub/hellaswag_val.jsonl"
conv arc arc "$pub/ARC-Challenge-Test.jsonl"
conv piqa piqa --labels "$pub/piqa-valid-labels.lst" "$pub/piqa-valid.jsonl"
conv winogrande winogrande "$pub/winogrande-dev.jsonl"
conv mmlu mmlu --dev "$pub/mmlu/dev" --shots 2 "$pub/mmlu/test/high_school_physics_test.csv"
conv lambada lambada "$pub/lambada_test.jsonl"
"$PYTHON" - "$tmp" <<'EOF' || fail "converted files"
import json, sys
d = sys.argv[1]
def rows(name):
    return [json.loads(l) for l in open("%s/%s.jsonl" % (d, name), encoding="utf-8")]
h = rows("hellaswag")
assert h[0] == {"context": "Roof shingle removal: A man is sitting on a roof. He",
                "choices": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                            "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
                "gold": 3, "delimiter": " "}, h[0]
assert h[1]["context"] == "Personal Care and Style: How to dye your hair. Pick a color. Then", h[1]
assert h[1]["choices"][:2] == ["wash it first.", "eat it."] and h[1]["gold"] == 0
a = rows("arc")
assert a[0]["context"].startswith("Question: An astronomer") and a[0]["context"].endswith("?\nAnswer:")
assert a[0]["gold"] == 2 and a[1]["gold"] == 1 and a[1]["choices"] == ["a mirror", "the Sun", "the Moon"]
p = rows("piqa")
assert p[1] == {"context": "Question: To make a cake moist,\nAnswer:", "choices": ["add oil.", "add sand."],
                "gold": 0, "delimiter": " "}, p[1]
w = rows("winogrande")
assert w[1] == {"contexts": ["The trophy doesn't fit into the suitcase because trophy",
                             "The trophy doesn't fit into the suitcase because suitcase"],
                "continuation": " is too small.", "gold": 1}, w[1]
m = rows("mmlu")
assert m[1]["context"] == ("The following are multiple choice questions (with answers) about high school physics.\n\n"
                           "What is the unit of energy?\nA. joule\nB. newton\nC. metre\nD. second\nAnswer: A\n\n"
                           "Light travels fastest in\nA. water\nB. glass\nC. vacuum\nD. diamond\nAnswer: C\n\n"
                           "What is the SI unit of force?\nA. joule\nB. watt\nC. newton\nD. pascal\nAnswer:"), m[1]
assert m[1]["choices"] == ["A", "B", "C", "D"] and m[1]["gold"] == 2 and m[0]["gold"] == 1
l = rows("lambada")
assert l[1] == {"context": "The cat sat on the", "choices": [" mat"], "gold": 0}, l[1]
for name in ("hellaswag", "arc", "piqa", "winogrande", "mmlu", "lambada"):
    r = json.load(open("%s/%s.json" % (d, name)))["results"]
    assert r["examples"] == 2, name
# LAMBADA has one choice: acc is 1, greedy is its accuracy
assert all(x["acc"] == 1.0 for x in json.load(open(d + "/lambada.json"))["results"]["loops"])
print("# convert-tasks: hellaswag, arc, piqa, winogrande, mmlu (2 shots), lambada converted and scored")
EOF
scripts/convert-tasks piqa "$pub/piqa-valid.jsonl" >/dev/null 2>"$tmp/err" && fail "piqa without --labels"
grep -q "^convert-tasks: piqa needs --labels" "$tmp/err" || fail "piqa message"
printf '{"goal": "x", "sol1": "a"}\n' >"$tmp/bad-piqa.jsonl"
scripts/convert-tasks piqa --labels "$pub/piqa-valid-labels.lst" "$tmp/bad-piqa.jsonl" >/dev/null 2>"$tmp/err" &&
	fail "piqa without sol2"
grep -q "bad-piqa.jsonl: line 1: no str 'sol2'" "$tmp/err" || { cat "$tmp/err"; fail "bad piqa message"; }

awk '{ if ($1 + 0 > m) m = $1 + 0 } END { printf "max relative error %.3e of choice log-likelihoods vs reference (tol 1e-5)\n", m }' "$tmp/errors"
