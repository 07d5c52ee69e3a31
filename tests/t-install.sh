#!/bin/sh
# t-install - make install and make uninstall.
#
#   1. make install DESTDIR=STAGE PREFIX=/usr puts every file in its place:
#      the programs (one per cmd/ouro-*.c) in bin/, libouro.a and ouro.pc in
#      lib/, the public headers (every libouro/*.h but the *internal.h,
#      with every header they include) in include/ouro/, each man page in
#      share/man/manN/, the bundled model in share/ouro/models/ouro-kjv-tiny/,
#      each the same bytes as in the tree; the programs have /usr/share/ouro/... compiled in and
#      run a pipeline from the staged tree.
#   2. make uninstall with the same variables removes all of it.
#   3. make install PREFIX=P (a scratch directory): from outside the source
#      tree, without $OURO_MODEL and with only P/bin and the system on
#      PATH, the installed ouro-forward | ouro-gate | ouro-sample pipeline
#      finds the model under P/share/ouro (its records say so) and prints
#      what the in-tree build prints; ouro-lens and ouro-dump --npz run.
#   4. a small C program compiled and linked with
#      `pkg-config --cflags --libs ouro` (PKG_CONFIG_PATH=P/lib/pkgconfig)
#      against the installed header and library loads the installed
#      default model and runs the forward pass.
#
# Run by tests/run from the repository root with bin/ on PATH and $TMPDIR.
. tests/lib.sh
root=$PWD
make=${MAKE:-make}

# ---- 1. a staged install
stage=$tmp/stage
if ! $make -s -C "$root" install DESTDIR="$stage" PREFIX=/usr >"$tmp/log" 2>&1; then
	sed 's/^/    /' "$tmp/log"
	echo "FAIL: make install DESTDIR=$stage PREFIX=/usr"
	exit 1
fi
: >"$tmp/want"
for c in cmd/ouro-*.c; do
	p=$(basename "$c" .c)
	echo "usr/bin/$p" >>"$tmp/want"
	[ -x "$stage/usr/bin/$p" ] || fail "usr/bin/$p is not executable"
done
printf 'usr/lib/libouro.a\nusr/lib/pkgconfig/ouro.pc\n' >>"$tmp/want"
for f in libouro/*.h; do
	h=$(basename "$f")
	case $h in *internal.h) continue ;; esac
	echo "usr/include/ouro/$h" >>"$tmp/want"
	cmp -s "$f" "$stage/usr/include/ouro/$h" || fail "usr/include/ouro/$h differs from $f"
	# what it includes from the library is installed too
	for i in $(sed -n 's/^#include "\(.*\)"$/\1/p' "$f"); do
		[ -f "$stage/usr/include/ouro/$i" ] || fail "usr/include/ouro/$h includes $i, which is not installed"
	done
done
for m in man/*.[0-9]; do
	echo "usr/share/man/man${m##*.}/$(basename "$m")" >>"$tmp/want"
	cmp -s "$m" "$stage/usr/share/man/man${m##*.}/$(basename "$m")" || fail "the installed $m differs"
done
for f in models/ouro-kjv-tiny/*; do
	echo "usr/share/ouro/models/ouro-kjv-tiny/$(basename "$f")" >>"$tmp/want"
	cmp -s "$f" "$stage/usr/share/ouro/models/ouro-kjv-tiny/$(basename "$f")" ||
		fail "the installed $f differs"
done
(cd "$stage" && find . -type f | sed 's|^\./||' | sort) >"$tmp/have"
sort -o "$tmp/want" "$tmp/want"
comm -23 "$tmp/want" "$tmp/have" | while read -r f; do echo "FAIL: $f is not installed"; done |
	tee "$tmp/missing"
[ -s "$tmp/missing" ] && failures=$((failures + 1))
comm -13 "$tmp/want" "$tmp/have" | sed 's/^/FAIL: unexpected file installed: /' | tee "$tmp/extra"
[ -s "$tmp/extra" ] && failures=$((failures + 1))
echo "# $(wc -l <"$tmp/have" | tr -d ' ') files installed"
grep -q '^prefix=/usr$' "$stage/usr/lib/pkgconfig/ouro.pc" || fail "ouro.pc does not say prefix=/usr"
grep -q -a '/usr/share/ouro/models/ouro-kjv-tiny' "$stage/usr/bin/ouro-forward" ||
	fail "the installed ouro-forward does not look for /usr/share/ouro/models/ouro-kjv-tiny"
# the staged programs run, given the staged model
m=$stage/usr/share/ouro/models/ouro-kjv-tiny
echo '100 200 300' | "$stage/usr/bin/ouro-forward" -m "$m" | "$stage/usr/bin/ouro-gate" -m "$m" |
	"$stage/usr/bin/ouro-sample" -m "$m" -t >"$tmp/staged.txt" || fail "the staged pipeline"

# ---- 2. uninstall
$make -s -C "$root" uninstall DESTDIR="$stage" PREFIX=/usr >"$tmp/log" 2>&1 || fail "make uninstall"
left=$(cd "$stage" && find . -type f)
[ -z "$left" ] || fail "make uninstall leaves $left"
[ ! -e "$stage/usr/share/ouro" ] && [ ! -e "$stage/usr/include/ouro" ] ||
	fail "make uninstall leaves share/ouro or include/ouro"

# ---- 3. an installed prefix, used from elsewhere
prefix=$tmp/prefix
if ! $make -s -C "$root" install PREFIX="$prefix" >"$tmp/log" 2>&1; then
	sed 's/^/    /' "$tmp/log"
	echo "FAIL: make install PREFIX=$prefix"
	exit 1
fi
mkdir "$tmp/elsewhere"
(
	unset OURO_MODEL
	cd "$tmp/elsewhere" || exit 1
	PATH=$prefix/bin:/usr/bin:/bin
	echo '100 200 300' | ouro-forward >fwd.rec &&
		ouro-gate <fwd.rec | ouro-sample -t >installed.txt &&
		ouro-dump --json fwd.rec >fwd.json &&
		ouro-dump --npz fwd.npz fwd.rec &&
		ouro-lens --prompt-ids 100 200 300 >lens.txt
) || fail "the installed pipeline fails"
grep -q "\"ouro.model\":\"$prefix/share/ouro/models/ouro-kjv-tiny\"" "$tmp/elsewhere/fwd.json" ||
	fail "the installed ouro-forward did not use the installed model: $(cat "$tmp/elsewhere/fwd.json" | head -c 300)"
(unset OURO_MODEL; echo '100 200 300' | ouro-forward | ouro-gate | ouro-sample -t) >"$tmp/intree.txt"
cmp -s "$tmp/intree.txt" "$tmp/elsewhere/installed.txt" ||
	fail "installed pipeline prints '$(cat "$tmp/elsewhere/installed.txt")', in-tree '$(cat "$tmp/intree.txt")'"
cmp -s "$tmp/intree.txt" "$tmp/staged.txt" || fail "the staged pipeline prints '$(cat "$tmp/staged.txt")'"
[ -s "$tmp/elsewhere/fwd.npz" ] && [ -s "$tmp/elsewhere/lens.txt" ] ||
	fail "the installed ouro-dump --npz or ouro-lens wrote nothing"

# ---- 4. a program built against the installed library
cat >"$tmp/prog.c" <<'EOF'
/* Loads the default model, runs three tokens through the loop and prints
 * the model's directory, hidden size and the most likely next token. */
#include <stdio.h>
#include <stdlib.h>

#include <ouro.h>
#include <tokenizer.h>

int main(void)
{
	const int32_t ids[3] = {100, 200, 300};
	struct ouro_model *m;
	struct ouro_tok *tok;
	int32_t top;
	float lp;

	if (ouro_model_load(&m, ouro_model_path(NULL)) ||
	    ouro_tok_load_dir(&tok, ouro_model_dir(m))) {
		fprintf(stderr, "prog: %s\n", ouro_errmsg());
		return 1;
	}
	const struct ouro_config *c = ouro_model_config(m);
	int64_t D = c->hidden_size, T = c->total_ut_steps;
	float *h = malloc((size_t)(T * 3 * D) * sizeof *h);
	float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
	if (!h || !logits || ouro_forward(m, ids, 3, (int)T, h) ||
	    ouro_logits(m, h + ((T - 1) * 3 + 2) * D, 1, logits)) {
		fprintf(stderr, "prog: %s\n", ouro_errmsg());
		return 1;
	}
	ouro_logprobs_topk(logits, c->vocab_size, 1, &top, &lp);
	printf("%s %lld %d\n", ouro_model_dir(m), (long long)D, top);
	ouro_tok_free(tok);
	ouro_model_free(m);
	free(h);
	free(logits);
	return 0;
}
EOF
flags=$(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs ouro) ||
	fail "pkg-config --cflags --libs ouro"
# a sanitizer build (make SANITIZE=1) installs a library that needs them
san=
nm "$prefix/lib/libouro.a" 2>/dev/null | grep -q __asan_ && san=-fsanitize=address,undefined
# shellcheck disable=SC2086
if ${CC:-cc} -std=c11 -Wall $san -o "$tmp/prog" "$tmp/prog.c" $flags 2>"$tmp/cc.log"; then
	out=$(cd "$tmp/elsewhere" && unset OURO_MODEL && "$tmp/prog") || fail "the program fails"
	want="$prefix/share/ouro/models/ouro-kjv-tiny 256 $(awk '{ print $NF }' "$tmp/intree.txt")"
	[ "$out" = "$want" ] || fail "the program prints '$out', expected '$want'"
else
	sed 's/^/    /' "$tmp/cc.log"
	fail "a program does not build with pkg-config --cflags --libs ouro"
fi

finish
