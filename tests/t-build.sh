#!/bin/sh
# t-build - the Makefile's promises to packagers, checked with make -n
# (nothing is compiled) in a scratch BUILD/BIN:
#
#   1. make CFLAGS='-O3 -march=native' CPPFLAGS=-DX LDFLAGS=-Wl,-O1 keeps
#      the flags the build needs on every compile (the C standard, the
#      include path, the bundled model's path) and adds the user's after
#      them, so that the user's -O wins; DEBUG=1 and SANITIZE=1 put their
#      own flags after the user's.
#   2. every compile writes its header dependencies (-MMD into BUILD/dep).
#   3. a library pkg-config cannot find is named in one line, before
#      anything is built.
#
# Run by tests/run from the repository root.
. tests/lib.sh
# a make of its own, not a part of the make that runs the tests
make="env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL ${MAKE:-make}"
dry() {
	$make -s -n -B BUILD="$tmp/build" BIN="$tmp/bin" "$@" all 2>"$tmp/err" | grep '^cc\|^gcc\|^clang' >"$tmp/cc"
	[ -s "$tmp/cc" ] || { fail "make -n $* printed no compile"; cat "$tmp/err"; return 1; }
}

# ---- 1. user flags add to the required ones
if dry CFLAGS='-O3 -march=native' CPPFLAGS=-DOURO_T_BUILD LDFLAGS=-Wl,-O1; then
	n=$(wc -l <"$tmp/cc")
	for want in -std=c11 -Ilibouro -DOURO_DEFAULT_MODEL= '-O3 -march=native' -DOURO_T_BUILD; do
		have=$(grep -c -- "$want" "$tmp/cc")
		[ "$have" -eq "$n" ] || fail "CFLAGS=-O3: '$want' on $have of $n compiles"
	done
	grep -- '-O3' "$tmp/cc" | grep -q -- '-O3 .*-std=c11' &&
		fail "the user's CFLAGS come before the required flags"
	[ "$(grep -c -- '-Wl,-O1' "$tmp/cc")" -gt 0 ] || fail "LDFLAGS=-Wl,-O1 is on no link"
fi
if dry CFLAGS=-O3 DEBUG=1; then
	grep -v -- '-O3.*-O0' "$tmp/cc" | grep -q . && fail "DEBUG=1: -O0 does not follow the user's -O3"
fi
if dry CFLAGS=-O3 SANITIZE=1; then
	grep -v -- '-O3.*-fsanitize=address' "$tmp/cc" | grep -q . &&
		fail "SANITIZE=1: the sanitizer flags are missing or before the user's"
fi

# ---- 2. header dependencies
if dry; then
	grep -v -- "-MMD -MP -MF $tmp/build/dep/" "$tmp/cc" | grep -q . &&
		fail "a compile writes no dependency file"
fi

# ---- 3. a missing library
expect_fail 2 'pkg-config finds no ouro-no-such-lib: run scripts/install-deps.sh' \
	$make -s -n BUILD="$tmp/build" BIN="$tmp/bin" PKGS='zlib ouro-no-such-lib' all
finish
