#!/bin/sh
# t-man - the manual pages in man/ stay clean and true to the programs.
#
#   1. every page man/*.[0-9] is clean under `mandoc -Tlint -Wwarning`;
#   2. for every man/ouro-*.1 whose program is in bin/, the long options
#      that `PROGRAM --help` prints and the long options the page
#      documents (every `Fl -NAME` in its SYNOPSIS, DESCRIPTION and OPTIONS
#      sections) are the same set;
#   2b. every program and subcommand that --help documents answers an
#      unknown option, and an option without its argument, with one stderr
#      line naming the option, status 2 and nothing on stdout;
#   3. the EXAMPLES of the pages in $example_pages run: every line of a
#      `.Bd -literal` block there that starts with "$ " is a command, run
#      with bash -o pipefail (a failing stage of a pipeline fails it), in
#      order, in one scratch directory (later commands see the files of
#      earlier ones), with the bundled default model as $OURO_MODEL (what
#      a user without -m runs, so an example whose ids or text do not fit
#      that model fails) and an ids.txt of its text ids; each must exit 0. Lines without "$ " are shown
#      output and are not checked, and `.Dl` displays are not run: use them
#      for commands that need what a test machine lacks (a real checkpoint).
#      With $OURO_EXAMPLES_KEEP set to a directory, each page's commands'
#      stdout, stderr and status and the files they made are kept there
#      (scripts/same-outputs compares two builds with them).
#
# Run by tests/run from the repository root with bin/ on PATH and $TMPDIR.
. tests/lib.sh
root=$PWD
PATH=${OURO_BIN:-$root/bin}:$PATH
OURO_MODEL=$root/models/ouro-fixture
export PATH OURO_MODEL
default_model=$root/models/ouro-kjv-tiny

# Pages whose examples are run (add a page once its programs exist).
example_pages="man/ouro-forward.1 man/ouro-generate.1 man/ouro-dump.1 man/ouro-gate.1 man/ouro-sample.1 man/ouro-lens.1 man/ouro-eval.1 man/ouro-tokenize.1 man/ouro-quantize.1"


# page_long_options PAGE: the long options PAGE documents, sorted, one a
# line ("--model"): each `Fl -NAME` on a macro line of its SYNOPSIS,
# DESCRIPTION and OPTIONS sections.
page_long_options() {
	awk '
	/^\.Sh[ \t]/ {
		sec = $0
		sub(/^\.Sh[ \t]+/, "", sec)
		keep = sec == "SYNOPSIS" || sec == "DESCRIPTION" || sec == "OPTIONS"
		next
	}
	keep && /^\./ {
		for (i = 1; i < NF; i++) {
			o = $(i + 1)
			gsub(/\\/, "", o)
			if ($i == "Fl" && o ~ /^-[A-Za-z0-9]/) {
				sub(/[^A-Za-z0-9-].*$/, "", o)
				print "-" o
			}
		}
	}' "$1" | sort -u
}

# help_long_options PROGRAM: the long options PROGRAM --help prints, sorted,
# one a line. Fails if --help does not exit 0.
help_long_options() {
	"$1" --help >"$tmp/help" 2>&1 || return 1
	awk '{
		s = $0
		while (match(s, /--[A-Za-z0-9][A-Za-z0-9-]*/)) {
			print substr(s, RSTART, RLENGTH)
			s = substr(s, RSTART + RLENGTH)
		}
	}' "$tmp/help" | sort -u
}

# page_examples PAGE: the example commands of PAGE, one a line: the lines
# starting with "$ " in the .Bd -literal blocks of its EXAMPLES section,
# without the "$ ", with the mdoc escapes \e \- \& \(aq \(dq \(ti \(ha \(ga
# undone; a command whose line ends in a backslash (\e), a | or && goes on
# with the next line of the block, as in sh.
page_examples() {
	awk '
	function unescape(s,    out, c, name) {
		out = ""
		while (s != "") {
			c = substr(s, 1, 1)
			if (c != "\\") {
				out = out c
				s = substr(s, 2)
				continue
			}
			c = substr(s, 2, 1)
			if (c == "e") {
				out = out "\\"
				s = substr(s, 3)
			} else if (c == "-") {
				out = out "-"
				s = substr(s, 3)
			} else if (c == "&") {
				s = substr(s, 3)
			} else if (c == "(") {
				name = substr(s, 3, 2)
				out = out (name in glyph ? glyph[name] : "\\(" name)
				s = substr(s, 5)
			} else {
				out = out "\\" c
				s = substr(s, 3)
			}
		}
		return out
	}
	BEGIN {
		glyph["aq"] = "\047"; glyph["dq"] = "\""; glyph["ti"] = "~"
		glyph["ha"] = "^"; glyph["ga"] = "`"
	}
	/^\.Sh[ \t]/ { ex = $0 ~ /^\.Sh[ \t]+EXAMPLES[ \t]*$/; lit = 0; next }
	!ex { next }
	/^\.Bd[ \t]+-literal/ { lit = 1; next }
	/^\.Ed/ {
		if (cont)
			print cmd
		lit = cont = 0
		next
	}
	!lit { next }
	{
		line = unescape($0)
		if (cont)
			cmd = cmd line
		else if (substr(line, 1, 2) == "$ ")
			cmd = substr(line, 3)
		else
			next
		cont = 1
		if (cmd ~ /\\$/)
			cmd = substr(cmd, 1, length(cmd) - 1)
		else if (cmd ~ /(\||&&)[ \t]*$/)
			cmd = cmd " "
		else {
			cont = 0
			print cmd
		}
	}' "$1"
}

# run_examples PAGE: runs the example commands of PAGE as described above.
run_examples() {
	dir=$tmp/examples.$(basename "$1")
	mkdir "$dir" || exit 1
	printf '1032 262 2098 393 3408\n301 393 394\n' >"$dir/ids.txt"
	page_examples "$1" >"$tmp/commands"
	if [ ! -s "$tmp/commands" ]; then
		fail "$1: no example commands (\"\$ \" lines in .Bd -literal) in EXAMPLES"
		return
	fi
	n=0
	while IFS= read -r cmd; do
		n=$((n + 1))
		(cd "$dir" && OURO_MODEL=$default_model exec bash -o pipefail -c "$cmd") </dev/null >"$tmp/out" 2>"$tmp/err"
		rc=$?
		if [ "$rc" -ne 0 ]; then
			fail "$1: example exits $rc: $cmd"
			sed 's/^/    /' "$tmp/err"
		fi
		if [ -n "${OURO_EXAMPLES_KEEP:-}" ]; then
			keep=$OURO_EXAMPLES_KEEP/$(basename "$1")
			mkdir -p "$keep"
			cp "$tmp/out" "$keep/stdout.$n"
			cp "$tmp/err" "$keep/stderr.$n"
			echo "$rc" >"$keep/status.$n"
		fi
	done <"$tmp/commands"
	[ -z "${OURO_EXAMPLES_KEEP:-}" ] || cp -R "$dir" "$OURO_EXAMPLES_KEEP/$(basename "$1")/files"
	echo "# $1: $n example commands run"
}

command -v mandoc >/dev/null 2>&1 ||
	{ echo "FAIL: mandoc is not installed (scripts/install-deps.sh installs it)"; exit 1; }

# ---- 1. lint
npages=0
for page in man/*.[0-9]; do
	[ -e "$page" ] || continue
	npages=$((npages + 1))
	out=$(mandoc -Tlint -Wwarning "$page" 2>&1)
	rc=$?
	if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
		fail "$page: mandoc -Tlint -Wwarning (exit $rc):"
		printf '%s\n' "$out" | sed 's/^/    /'
	fi
done
[ "$npages" -gt 0 ] || fail "no man pages in man/"

# ---- 2. options: --help and the page agree
for page in man/ouro-*.1; do
	[ -e "$page" ] || continue
	prog=$(basename "$page" .1)
	[ -x "bin/$prog" ] || continue
	if ! help_long_options "bin/$prog" >"$tmp/help.opts"; then
		fail "$prog --help does not exit 0"
		continue
	fi
	page_long_options "$page" >"$tmp/page.opts"
	if cmp -s "$tmp/help.opts" "$tmp/page.opts"; then
		echo "# $page: $(wc -l <"$tmp/help.opts" | tr -d ' ') long options match --help"
		continue
	fi
	for o in $(comm -23 "$tmp/help.opts" "$tmp/page.opts"); do
		fail "$page: $o is in $prog --help but not in the page"
	done
	for o in $(comm -13 "$tmp/help.opts" "$tmp/page.opts"); do
		fail "$page: $o is in the page but not in $prog --help"
	done
done

# ---- 2b. a bad option: one line
for cmd in ouro-forward ouro-gate "ouro-gate train" ouro-sample ouro-generate ouro-lens \
	ouro-dump ouro-tokenize ouro-quantize "ouro-eval ppl" "ouro-eval choice" "ouro-eval merge"; do
	# the name in messages: ouro-gate train says so, ouro-eval's commands do not
	case $cmd in "ouro-eval "*) name=ouro-eval ;; *) name=$cmd ;; esac
	# shellcheck disable=SC2086  # the subcommand is a word of its own
	expect_fail 2 "^$name: --no-such-option: unknown option or missing argument$" \
		$cmd --no-such-option </dev/null
	expect_fail 2 "^$name: -o: unknown option or missing argument$" $cmd -o </dev/null
done

# ---- 3. examples
for page in $example_pages; do
	run_examples "$page"
done

finish
