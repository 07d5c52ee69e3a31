#!/bin/sh
# t-tokenize - ouro-tokenize as a user runs it: the man page's examples
# verbatim, the input units (whole input, -l, --jsonl), --chat, decoding,
# round trips, and every kind of bad input, each with its exit status and
# one stderr line, never a crash.
#
# Run by tests/run from the repository root with bin/ on PATH and $TMPDIR.
: "${PYTHON:=python3}"
. tests/lib.sh
root=$PWD
OURO_MODEL=$root/models/ouro-fixture
export OURO_MODEL

# expect STATUS PATTERN CMD...: CMD exits STATUS and its stderr is one line
# "ouro-tokenize: ..." that matches the grep pattern PATTERN (what it wrote
# to stdout before the failure is not checked).
expect() {
	e_want=$1 e_pat=$2
	shift 2
	expect_exit "$e_want" "^ouro-tokenize: .*$e_pat" "$@"
}

# same WANT CMD...: CMD's stdout is WANT (a string).
same() {
	want=$1
	shift
	got=$("$@" 2>"$tmp/err") || { fail "exit $?: $*"; sed 's/^/    /' "$tmp/err"; return; }
	[ "$got" = "$want" ] || fail "$*: got '$got', expected '$want'"
}

tok=ouro-tokenize

# ---- the man page's examples, verbatim (as t-man runs them) ----------------
ex=$tmp/examples
mkdir "$ex"
printf '19556 905 17 216 33\n1 4093 198\n' >"$ex/ids.txt"
awk '
/^\.Sh[ \t]/ { ex = $0 ~ /EXAMPLES/; lit = 0; next }
ex && /^\.Bd[ \t]+-literal/ { lit = 1; next }
ex && /^\.Ed/ { lit = 0; next }
lit && /^\$ / {
	s = substr($0, 3)
	gsub(/\\\(aq/, "\047", s)
	gsub(/\\e/, "\\", s)
	print s
}' man/ouro-tokenize.1 >"$tmp/examples.sh"
n=0
while IFS= read -r cmd; do
	n=$((n + 1))
	(cd "$ex" && sh -c "$cmd") </dev/null >"$tmp/out" 2>"$tmp/err" ||
		{ fail "man page example: $cmd"; sed 's/^/    /' "$tmp/err"; }
done <"$tmp/examples.sh"
[ "$n" -ge 8 ] || fail "only $n example commands found in man/ouro-tokenize.1"
# the examples' shown output is what the program prints
same '19556 905 17 216 33 34 35 36 37 13855' sh -c "echo 'Hello world! 12345 apples' | $tok -t"
same "$(printf '81 198 82\n3 198')" sh -c "printf '\"a\\\\nb\"\\n{\"text\": \"<think>\\\\n\"}\\n' | $tok --jsonl -t"
echo "# $n man page example commands run"

# ---- input units -----------------------------------------------------------
# whole input: exactly one final newline is dropped
same '19556' sh -c "printf 'Hello' | $tok -t"
same '19556' sh -c "printf 'Hello\n' | $tok -t"
same '19556 198' sh -c "printf 'Hello\n\n' | $tok -t"
same '19556 201' sh -c "printf 'Hello\r\n' | $tok -t"
same '' sh -c "printf '' | $tok -t"
# several files: one sequence each
printf 'Hello\n' >"$tmp/a"
printf 'world\n' >"$tmp/b"
same "$(printf '19556\n6693')" $tok -t "$tmp/a" "$tmp/b"
same "$(printf '19556\n6693')" sh -c "cat '$tmp/b' | $tok -t '$tmp/a' -"
# -l: the newline is not part of the line; CR stays; a last line without one counts
same "$(printf '19556\n\n6693 201\n82')" sh -c "printf 'Hello\n\nworld\r\nb' | $tok -l -t"
# --jsonl: strings and objects
same "$(printf '19556 198 6693\n19556\n0')" sh -c "printf '\"Hello\\\\nworld\"\n{\"text\": \"Hello\", \"id\": 3}\n\"<|endoftext|>\"\n' | $tok --jsonl -t"
# special tokens are matched inside text, and partial ones are not
same '1 4093 2' sh -c "printf '<|im_start|>user<|im_end|>' | $tok -t"
same "$(printf '%s' '<|im_sta' | $tok -t)" sh -c "printf '<|im_sta' | $tok -t"

# ---- records ---------------------------------------------------------------
printf 'Hello world' | $tok >"$tmp/rec" || fail "encoding to a record"
# one record: u64 header length, header with tokens I32 [2] and ouro.version
$PYTHON - "$tmp/rec" <<'EOF' || fail "the record is not what the page says"
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
t = h['tokens']
assert t['dtype'] == 'I32' and t['shape'] == [2], t
assert h['__metadata__']['ouro.version'] == '1', h
data = b[8 + n:]
assert len(data) == 8 and struct.unpack('<2i', data) == (19556, 905), data
EOF
same 'Hello world' $tok -d "$tmp/rec"
# empty input is one empty sequence, and decodes to an empty line
printf '' | $tok >"$tmp/empty.rec" || fail "encoding empty input to a record"
same '' $tok -d "$tmp/empty.rec"
# a record stream of several sequences, decoded in order
printf 'one\ntwo\n' | $tok -l >"$tmp/two.rec"
same "$(printf 'one\ntwo')" $tok -d "$tmp/two.rec"

# ---- chat ------------------------------------------------------------------
want=$(printf '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\n' | $tok -t)
same "$want" sh -c "echo Hi | $tok --chat -t"
want=$(printf '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n' | $tok -t)
same "$want" sh -c "echo Hi | $tok --chat --system 'Be brief.' --think -t"
# the Thinking prompt ends with <|im_start|> assistant \n <think> \n
case $(echo Hi | $tok --chat --think -t) in
*' 1 520 9531 198 3 198') ;;
*) fail "--chat --think does not end with '1 520 9531 198 3 198'" ;;
esac

# ---- decoding --------------------------------------------------------------
same 'Hello world! 12345 apples' sh -c "echo '19556 905 17 216 33 34 35 36 37 13855' | $tok -d"
# blanks anywhere, tabs, CRLF, an empty line is an empty sequence
same "$(printf 'Hello world\n\nHello')" sh -c "printf ' 19556\t905 \r\n\n19556\n' | $tok -d"
# a partial UTF-8 sequence is written as the bytes it is: U+13000 is 4
# ids, one per byte
ids=$(printf '\360\223\200\200' | $tok -t)
[ "$ids" = '187 237 218 218' ] || fail "U+13000 encodes as '$ids', not '187 237 218 218'"
first=${ids%% *}
printf '%s\n' "$first" | $tok -d >"$tmp/partial" || fail "decoding a partial character"
[ "$(od -An -tx1 "$tmp/partial" | tr -d ' \n')" = "f00a" ] || fail "partial character: got $(od -An -tx1 "$tmp/partial")"
# -d --jsonl writes JSON strings; invalid UTF-8 there becomes U+FFFD
same '"Hello\nworld"' sh -c "printf '\"Hello\\\\nworld\"\n' | $tok --jsonl -t | $tok -d --jsonl"
same '"\ufffd"' sh -c "printf '%s\n' '$first' | $tok -d --jsonl | $PYTHON -c 'import sys,json; print(json.dumps(json.loads(sys.stdin.read())))'"

# ---- NUL bytes and control characters are text like any other -------------
printf 'a\000b\001\nc' >"$tmp/nul"
$tok -t "$tmp/nul" >"$tmp/nul.ids" || fail "encoding text with NUL bytes"
[ "$(wc -w <"$tmp/nul.ids")" -ge 5 ] || fail "NUL bytes were dropped: $(cat "$tmp/nul.ids")"
$tok -d "$tmp/nul.ids" >"$tmp/nul.out" || fail "decoding ids of NUL bytes"
printf 'a\000b\001\nc\n' | cmp -s - "$tmp/nul.out" || fail "NUL bytes do not round-trip"
same "$(cat "$tmp/nul.ids")" sh -c "printf '\"a\\\\u0000b\\\\u0001\\\\nc\"\n' | $tok --jsonl -t"

# ---- huge lines: many megabytes in one sequence ----------------------------
$PYTHON -c "
import sys
w = 'the quick brown fox, 1234 jumps; ÉTÉ 你好 👍🏽\t'
sys.stdout.write(w * (6 * 1024 * 1024 // len(w.encode())) + 'x' * 300000 + '\n')
" >"$tmp/huge"
$tok -l -t "$tmp/huge" >"$tmp/huge.ids" || fail "encoding a 6 MB line"
[ "$(wc -l <"$tmp/huge.ids")" -eq 1 ] || fail "a 6 MB line is not one sequence"
$tok -d "$tmp/huge.ids" | cmp -s - "$tmp/huge" || fail "a 6 MB line does not round-trip"
$tok "$tmp/huge" | $tok -d | cmp -s - "$tmp/huge" || fail "a 6 MB record does not round-trip"
echo "# 6 MB line: $(wc -w <"$tmp/huge.ids" | tr -d ' ') tokens, round trip ok"
# the same through SentencePiece (unigram and BPE), a 1 MB line
head -c 1000000 "$tmp/huge" | iconv -c -f UTF-8 -t UTF-8 >"$tmp/huge1"
for m in uni-nfkc bpe-bf-id; do
	$tok --tokenizer tests/tokenizer/spm/$m.model -l -t "$tmp/huge1" >"$tmp/huge1.ids" ||
		fail "SentencePiece $m: encoding a 1 MB line"
	[ "$(wc -l <"$tmp/huge1.ids")" -eq 1 ] || fail "SentencePiece $m: a 1 MB line is not one sequence"
	if command -v spm_encode >/dev/null 2>&1; then
		spm_encode --model=tests/tokenizer/spm/$m.model --output_format=id <"$tmp/huge1" |
			cmp -s - "$tmp/huge1.ids" || fail "SentencePiece $m: a 1 MB line differs from spm_encode"
	fi
done

# ---- bad input: exit 1 -----------------------------------------------------
printf 'ok\n\377bad\n' >"$tmp/badutf"
expect 1 "line 2: invalid UTF-8 at byte 0 (0xff)" $tok -l -t "$tmp/badutf"
expect 1 "badutf: invalid UTF-8 at byte 3" $tok -t "$tmp/badutf"
printf 'a\355\240\200b' >"$tmp/surrogate"    # an encoded surrogate is not UTF-8
expect 1 "invalid UTF-8 at byte 1" $tok -t "$tmp/surrogate"
printf '\300\200' >"$tmp/overlong"
expect 1 "invalid UTF-8 at byte 0" $tok -t "$tmp/overlong"
printf '"ok"\n42\n' >"$tmp/j1"
expect 1 "line 2: expected a JSON string" $tok --jsonl -t "$tmp/j1"
printf '{"txt": "a"}\n' >"$tmp/j2"
expect 1 "line 1: expected a JSON string" $tok --jsonl -t "$tmp/j2"
printf '"unterminated\n' >"$tmp/j3"
expect 1 "line 1: not valid JSON" $tok --jsonl -t "$tmp/j3"
printf '\n' >"$tmp/j4"
expect 1 "line 1: not valid JSON" $tok --jsonl -t "$tmp/j4"
expect 1 "no-such-file: No such file" $tok -t "$tmp/no-such-file"
# ids for -d
printf '19556 49152\n' >"$tmp/range"
expect 1 "line 1: token id 49152 is out of range \[0, 49152)" $tok -d "$tmp/range"
printf '1\n2147483647\n' >"$tmp/range2"
expect 1 "line 2: token id 2147483647 is out of range" $tok -d "$tmp/range2"
printf '1\n99999999999\n' >"$tmp/range3"
expect 1 "line 2: '99999999999' is not a token id" $tok -d "$tmp/range3"
printf '1 2\n3 -4\n' >"$tmp/neg"
expect 1 "line 2: '-4' is not a token id" $tok -d "$tmp/neg"
printf '1 2x 3\n' >"$tmp/junk"
expect 1 "line 1: '2x' is not a token id" $tok -d "$tmp/junk"
printf 'Hello world\n' >"$tmp/text"
expect 1 "expected records or decimal token ids" $tok -d "$tmp/text"
printf '1 2\000 3\n' >"$tmp/nulids"
expect 1 "line 1: contains a NUL byte" $tok -d "$tmp/nulids"
# records for -d: truncated, without tokens, with the wrong dtype
head -c 30 "$tmp/two.rec" >"$tmp/trunc.rec"
expect 1 "record 1" $tok -d "$tmp/trunc.rec"
$PYTHON - "$tmp" <<'EOF'
import json, struct, sys
def rec(path, tensors):
    h, data = {'__metadata__': {'ouro.version': '1'}}, b''
    for name, (dt, shape, raw) in tensors.items():
        h[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [len(data), len(data) + len(raw)]}
        data += raw
    hb = json.dumps(h).encode()
    hb += b' ' * (-len(hb) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(hb)) + hb + data)
d = sys.argv[1]
rec(d + '/notokens.rec', {'ids': ('I32', [1], struct.pack('<i', 5))})
rec(d + '/f32.rec', {'tokens': ('F32', [1], struct.pack('<f', 5))})
rec(d + '/negid.rec', {'tokens': ('I32', [2], struct.pack('<2i', 5, -1))})
EOF
expect 1 "record 1: no tensor 'tokens'" $tok -d "$tmp/notokens.rec"
expect 1 "record 1: tensor 'tokens' is not I32" $tok -d "$tmp/f32.rec"
expect 1 "record 1: token id -1 is out of range" $tok -d "$tmp/negid.rec"

# ---- usage: exit 2 ---------------------------------------------------------
expect 2 "exclude each other" $tok -l --jsonl
expect 2 "need --chat" $tok --think -t
expect 2 "need --chat" $tok --system x -t
expect 2 "-d takes no" $tok -d -t
expect 2 "-d takes no" $tok -d --chat
$tok --bogus >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown option does not exit 2"
$tok --help >"$tmp/help" 2>&1 || fail "--help does not exit 0"
grep -q '^usage: ouro-tokenize' "$tmp/help" || fail "--help prints no usage line"

# ---- bad tokenizer files and model directories: exit 3 ---------------------
tj=$root/models/ouro-fixture/tokenizer.json
mkdir "$tmp/nomodel"
expect 3 "nomodel: no tokenizer.json or tokenizer.model" $tok -m "$tmp/nomodel" -t "$tmp/a"
OURO_MODEL=$tmp/nomodel expect 3 "no tokenizer.json" $tok -t "$tmp/a"
expect 3 "missing.json: No such file" $tok --tokenizer "$tmp/missing.json" -t "$tmp/a"
expect 3 "not a regular file" $tok --tokenizer "$tmp" -t "$tmp/a"
head -c 100000 "$tj" >"$tmp/trunc.json"
expect 3 "trunc.json: not a tokenizer.json (invalid JSON" $tok --tokenizer "$tmp/trunc.json" -t "$tmp/a"
printf '{}' >"$tmp/empty.json"
expect 3 "empty.json: no model object" $tok --tokenizer "$tmp/empty.json" -t "$tmp/a"
# edits of the real file: each must be refused with a message naming it
edit() {
	$PYTHON - "$tj" "$tmp/$1.json" "$2" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
exec(sys.argv[3])
json.dump(t, open(sys.argv[2], 'w'))
EOF
}
# bad_edit NAME EDIT PATTERN: the edit is refused, exit 3, PATTERN on stderr
bad_edit() {
	edit "$1" "$2"
	expect 3 "$3" $tok --tokenizer "$tmp/$1.json" -t "$tmp/a"
}
bad_edit unigram "t['model']['type'] = 'Unigram'" \
	"unigram.json: model type Unigram is not supported"
bad_edit badmerge "t['model']['merges'][5] = ['no-such-token', 'x']" \
	"badmerge.json: merge 5: token \"no-such-token\" is not in the vocabulary"
bad_edit badmerge2 "t['model']['merges'][7] = 'a b c'" \
	"merge 7 \"a b c\" is not two tokens"
bad_edit badmerge3 "t['model']['merges'][7] = 17" \
	"merge 7 is neither"
bad_edit badid "t['model']['vocab']['hello'] = -3" \
	"vocab entry \"hello\" has no valid id"
bad_edit novocab "t['model']['vocab'] = [1, 2]" \
	"model.vocab is not an object"
bad_edit badadded "t['added_tokens'][0]['id'] = 'x'" \
	"added token 0 has no content or no valid id"
bad_edit badpre "t['pre_tokenizer'] = {'type': 'Frobnicate'}" \
	"pre_tokenizer type Frobnicate is not supported"
bad_edit badre "t['pre_tokenizer'] = {'type': 'Split', 'pattern': {'Regex': '(unclosed'}, 'behavior': 'Isolated', 'invert': False}" \
	"badre.json: regex (unclosed"
bad_edit badnorm "t['normalizer'] = {'type': 'Frobnicate'}" \
	"normalizer type Frobnicate is not supported"
# a tokenizer.json in a model directory is preferred to a tokenizer.model
mkdir "$tmp/both"
cp "$tj" "$tmp/both/tokenizer.json"
printf 'garbage' >"$tmp/both/tokenizer.model"
same '19556' $tok -m "$tmp/both" -t "$tmp/a"

finish
