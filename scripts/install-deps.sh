#!/bin/sh
# install-deps.sh - installs the Debian 12 packages ouro needs to build and
# test, and only those that are missing. Run as root (or with sudo on PATH).
# Where npm is available it also installs, into build/node, the Hugging
# Face tokenizers module that the tokenizer tests compare fresh random text
# with (without it they compare the committed reference ids only).
set -eu
cd "$(dirname "$0")/.."

# Build: compiler, BLAS, JSON, Unicode tables, compression, pkg-config.
# Tests: NumPy for the independent reference, mandoc to check man pages,
# GNU parallel for the scale-out recipe of ouro-eval(1) that t-man runs.
# Reliability: clang and its runtime libraries for make fuzz (libFuzzer),
# valgrind for make valgrind.
packages="build-essential pkg-config libopenblas-dev libjansson-dev
libutf8proc-dev zlib1g-dev python3 python3-numpy mandoc libpcre2-dev
sentencepiece clang libclang-rt-14-dev valgrind parallel"

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	echo "install-deps: installing$missing" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
fi

if command -v npm >/dev/null 2>&1 && [ ! -d build/node/node_modules/tokenizers ]; then
	npm install --silent --no-audit --no-fund --prefix build/node tokenizers@0.23.2 >&2 ||
		echo "install-deps: npm could not install tokenizers; tokenizer tests use the committed reference ids only" >&2
fi
exit 0
