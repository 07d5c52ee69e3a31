#!/bin/sh
# t-tree - the shape of the source tree that its readers rely on:
#
#   1. the library's folders are layers: an object of libouro.a calls only
#      functions (and reads only data) of its own folder or of the folders
#      before it in core, tok, kernels, model, engine, eval;
#   2. no file in cmd/ is over 800 lines, none in libouro/ over 1,000;
#   3. no function is over 120 lines unless the comment above it says why
#      it must be "one piece";
#   4. one module reads and writes the step metadata of hidden records:
#      no file but libouro/core/schema.c names ouro.hidden_steps.
#
# $OURO_LIB is the library to check (default build/libouro.a). Run by
# tests/run from the repository root.
. tests/lib.sh
lib=${OURO_LIB:-build/libouro.a}
[ -f "$lib" ] || { fail "no library $lib (make first)"; finish; }

# ---- 1. layers
nm -A "$lib" >"$tmp/nm" 2>/dev/null || fail "nm $lib"
"$PYTHON" - "$tmp/nm" <<'EOF' || fail "the library's folders call a later folder"
import glob, os, sys
order = ["core", "tok", "kernels", "model", "engine", "eval"]
folder = {}
for path in glob.glob("libouro/*/*.c"):
    d = path.split("/")[1]
    assert d in order, "libouro/%s/ is not a known layer" % d
    folder[os.path.basename(path)[:-2] + ".o"] = d
defs, uses = {}, []
for line in open(sys.argv[1]):
    where, _, sym = line.rstrip("\n").rpartition(" ")
    member = where.split(":")[1]
    kind = where.split()[-1]
    if kind == "U":
        uses.append((member, sym))
    elif kind in "TDBRC":
        defs[sym] = member
bad = 0
for member, sym in uses:
    if sym not in defs:
        continue
    a, b = folder[member], folder[defs[sym]]
    if order.index(b) > order.index(a):
        print("%s (%s) uses %s of %s (%s)" % (member, a, sym, defs[sym], b))
        bad += 1
print("# %d objects in %d layers, %d calls across objects checked"
      % (len(folder), len(order), len(uses)))
sys.exit(bad > 0)
EOF

# ---- 2. and 3. sizes of files and functions; 4. the schema's one owner
"$PYTHON" - <<'EOF' || fail "files or functions too long, or a second reader of the step metadata"
import glob, re, sys
bad = 0
files = sorted(glob.glob("cmd/*.[ch]") + glob.glob("cmd/*/*.[ch]") + glob.glob("libouro/*.[ch]")
               + glob.glob("libouro/*/*.[ch]"))
longest = (0, "")
for path in files:
    lines = open(path, encoding="utf-8").read().split("\n")
    limit = 800 if path.startswith("cmd/") else 1000
    if len(lines) - 1 > limit:
        print("%s: %d lines (at most %d)" % (path, len(lines) - 1, limit))
        bad += 1
    start = None
    for i, line in enumerate(lines):
        if line.startswith("{"):
            start = i
        elif line.startswith("}") and start is not None:
            n = i - start + 1
            above = "\n".join(lines[max(0, start - 12):start])
            if n > 120 and "one piece" not in above:
                print("%s:%d: a function of %d lines" % (path, start + 1, n))
                bad += 1
            longest = max(longest, (n, "%s:%d" % (path, start + 1)))
            start = None
    if "ouro.hidden_steps" in "\n".join(lines) and path.endswith(".c") \
            and path != "libouro/core/schema.c":
        print("%s names ouro.hidden_steps" % path)
        bad += 1
print("# %d files; the longest function: %d lines (%s)" % (len(files), *longest))
sys.exit(bad > 0)
EOF
finish
