#!/bin/sh
# A trial build of portunus with data-plane modules compiled to C by mypyc (mypy's compiler,
# installed with the dev extra): is CPython's per-connection cost the interpreter's?
#
#     benchmarks/alternatives/mypyc_build.sh DIR [MODULE.py ...]
#     python -m benchmarks.connrate_alternatives --kinds haproxy,portunus,min_epoll \
#         --portunus mypyc=DIR/.venv --json-out results/connrate-alternatives/<run>.json
#
# DIR gets this checkout's HEAD (git archive: committed code only), its own venv with portunus
# installed editable, and the modules (default: the event loop and the TCP connection) compiled
# in place: Python imports the extension module next to the .py first. mypyc puts the runtime it
# shares between the modules of one build at the top level; it is copied into the venv's
# site-packages so that it imports. Never a build to deploy: results/connrate-alternatives/README.md.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [MODULE.py ...]" >&2; exit 2; }
DIR=$1
shift
[ $# -ge 1 ] || set -- portunus/dataplane/loop.py portunus/dataplane/tcp.py
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
PYTHON=${PYTHON:-python3}
rm -rf "$DIR"
mkdir -p "$DIR"
git -C "$REPO" archive HEAD | tar -x -C "$DIR"
cd "$DIR"
"$PYTHON" -m venv .venv
.venv/bin/pip install --quiet -e '.[dev]'
.venv/bin/mypyc "$@"
for lib in ./*__mypyc.*.so; do
    [ -e "$lib" ] && cp "$lib" .venv/lib/python3*/site-packages/
done
cd /
for m in "$@"; do
    mod=$(echo "${m%.py}" | tr / .)
    "$DIR/.venv/bin/python" -c "import $mod as m, sys; f = m.__file__; print(f); sys.exit(not f.endswith('.so'))"
done
echo "built: $DIR/.venv/bin/portunus-standalone"
