#!/bin/sh
# install-deps.sh - installs the Debian 12 packages ouro needs to build and
# test, and only those that are missing. Run as root (or with sudo on PATH).
set -eu

# Build: compiler, BLAS, JSON, Unicode tables, compression, pkg-config.
# Tests: NumPy for the independent reference, mandoc to check man pages.
packages="build-essential pkg-config libopenblas-dev libjansson-dev
libutf8proc-dev zlib1g-dev python3 python3-numpy mandoc libpcre2-dev
sentencepiece"

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "install-deps: installing$missing" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
