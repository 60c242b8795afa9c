#!/bin/sh
# Instructions per request (callgrind) of the axum route, bare / under a no-op layer /
# verified / memory dedup / Redis dedup (the client side: a redis-server this script starts on
# a free loopback port serves it; its own work and the kernel's are not counted):
# only `drive` (the requests, not their signing) is counted; each mode runs with 200 and 2200
# requests, and the difference / 2000 cancels the first requests' one-time costs.
# Usage, from the repository root: perf/scripts/instructions.sh [modes...]
# (after: cargo build --release -p qstash-receiver-perf)
set -eu
bin=${INSTRUCTIONS_BIN:-target/release/instructions}
[ -x "$bin" ] || { echo "build first: cargo build --release -p qstash-receiver-perf" >&2; exit 1; }
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        --collect-atstart=no "--toggle-collect=instructions::drive" "$bin" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
modes=${*:-bare identity verified memory redis}
for mode in $modes; do
    if [ "$mode" = redis ]; then
        command -v redis-server >/dev/null || { echo "redis: redis-server not installed, skipped" >&2; continue; }
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no >/dev/null &
        redis_pid=$!
        trap 'kill $redis_pid 2>/dev/null' EXIT
        until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
        export QSTASH_REDIS_URL="redis://127.0.0.1:$port"
    fi
    small=$(count "$mode" 200)
    large=$(count "$mode" 2200)
    echo "$mode $(( (large - small) / 2000 )) instructions/request"
done
