#!/bin/sh
# The gate's false-alarm check (issue 16): N consecutive `make gate` on unchanged code, each
# run's verdicts kept verbatim, the exit codes counted at the end.
#
#   scripts/gate-aa.sh [N] | tee results/gate/<date>-<host>-aa.log
#
# Exits 0 when every run exited 0, 1 otherwise. Run it on a clean tree (the log names the commit).
set -u
n=${1:-10}
cd "$(dirname "$0")/.." || exit 2
dirty=$(git status --porcelain --untracked-files=no | head -1)
echo "commit $(git rev-parse HEAD)${dirty:+ (dirty tree)}; $(date -u +%Y-%m-%dT%H:%M:%SZ); load $(cut -d' ' -f1-3 /proc/loadavg)"
passed=0
i=1
while [ "$i" -le "$n" ]; do
    echo "== gate run $i of $n, $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    make --no-print-directory gate 2>&1
    rc=$?
    echo "gate run $i exit $rc"
    [ "$rc" -eq 0 ] && passed=$((passed + 1))
    i=$((i + 1))
done
echo "== $passed of $n gate runs exited 0; $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$passed" -eq "$n" ]
