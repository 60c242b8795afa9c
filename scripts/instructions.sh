#!/bin/sh
# Instructions per request (callgrind) of the axum route, bare / under a no-op layer /
# verified / memory dedup:
# only `drive` (the requests, not their signing) is counted; each mode runs with 200 and 2200
# requests, and the difference / 2000 cancels the first requests' one-time costs.
# Usage: scripts/instructions.sh [modes...]   (after: cargo build --release --example
# instructions --features axum,test-utils)
set -eu
bin=target/release/examples/instructions
[ -x "$bin" ] || { echo "build first: cargo build --release --example instructions --features axum,test-utils" >&2; exit 1; }
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --collect-atstart=no "--toggle-collect=instructions::drive" "$bin" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
modes=${*:-bare identity verified memory}
for mode in $modes; do
    small=$(count "$mode" 200)
    large=$(count "$mode" 2200)
    echo "$mode $(( (large - small) / 2000 )) instructions/request"
done
