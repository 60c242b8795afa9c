#!/usr/bin/env python3
"""Chart and table of the load runner's results (perf/src/bin/load.rs).

Reads target/load/results.json (written by
`./target/release/load --seconds 10 --runs 3`), writes docs/load.svg (each mode's
throughput as a ratio of the same framework's bare route, medians of the runs, with the bar
each must meet) and prints the Markdown table of the README's "HTTP under load" section.

    python3 perf/scripts/load_chart.py [results.json] [out.svg]

Standard library only.
"""

import json
import sys
from html import escape

SRC = sys.argv[1] if len(sys.argv) > 1 else "target/load/results.json"
OUT = sys.argv[2] if len(sys.argv) > 2 else "docs/load.svg"

with open(SRC, encoding="utf-8") as f:
    results = json.load(f)
rows = results["rows"]


def fmt(x, spec, none="–"):
    return none if x is None else format(x, spec)


# --- the Markdown table -------------------------------------------------------------------
print("| framework | mode | req/s | p50 | p99 | server CPU/req | ratio to bare | bar | Redis round trips/delivery |")
print("|---|---|---:|---:|---:|---:|---:|---|---:|")
for r in rows:
    ratio, bar = r["ratio_to_bare"], r["bar"]
    verdict = "–" if bar is None else f"≥ {bar:.2f}: " + ("met" if ratio is not None and ratio >= bar else "**missed**")
    print(
        f"| {r['framework']} | {r['mode']} | {r['requests_per_sec']:,.0f} | {r['p50_us'] / 1000:.2f} ms "
        f"| {r['p99_us'] / 1000:.2f} ms | {fmt(r['server_cpu_us_per_request'], '.1f')} µs "
        f"| {fmt(ratio, '.2f')}{'×' if ratio is not None else ''} | {verdict} "
        f"| {fmt(r['redis_round_trips_per_delivery'], '.2f')} |"
    )

# --- the chart ----------------------------------------------------------------------------
bars = [r for r in rows if r["ratio_to_bare"] is not None]
W, H = 640, 80 + 34 * len(bars)
left, right, top = 170, 40, 40
scale = (W - left - right) / 1.2  # ratio 0 .. 1.2


def x(v):
    return left + min(v, 1.2) * scale


out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">Throughput relative to the bare route '
    f'(1 KiB JSON, 64 connections, median of {results["runs"]} runs)</text>',
]
for t in [0, 0.25, 0.5, 0.75, 1.0]:
    out.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{H - 30}" stroke="#ddd"/>')
    out.append(f'<text x="{x(t):.1f}" y="{H - 14}" text-anchor="middle">{t:.2f}×</text>')
for i, r in enumerate(bars):
    y = top + 8 + i * 34
    ratio, bar = r["ratio_to_bare"], r["bar"]
    colour = "#4a90d9"
    label = f"{r['framework']} {r['mode']}"
    out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>')
    out.append(f'<rect x="{left}" y="{y}" width="{x(ratio) - left:.1f}" height="20" fill="{colour}"/>')
    out.append(f'<text x="{x(ratio) + 4:.1f}" y="{y + 15}">{ratio:.2f}×</text>')
out.append("</svg>")
with open(OUT, "w", encoding="utf-8") as f:
    f.write("\n".join(out) + "\n")
print(f"\nwrote {OUT}", file=sys.stderr)
