#!/usr/bin/env python3
"""Draw docs/verify.svg from criterion's estimates of the `verify` benchmark.

Usage (after `cargo bench --bench verify --features test-utils`):

    python3 perf/scripts/verify_chart.py [CRITERION_DIR] [OUT_SVG]

Defaults: target/criterion and docs/verify.svg. Reads the median of every
verify/<function>/<body bytes>/new/estimates.json, draws time per call against body size (both
axes log scale), and prints the ratio table the README shows. Standard library only.
"""

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SIZES = [(0, "0 B"), (1024, "1 KiB"), (64 * 1024, "64 KiB"), (1024 * 1024, "1 MiB")]
SERIES = [
    ("crate", "qstash-receiver verify_at", "#1f77b4", ""),
    ("floor", "floor: SHA-256 + 1 fresh HMAC", "#2ca02c", "6 3"),
    ("crate_next_key", "verify_at, next key (2 MACs)", "#9467bd", ""),
    ("floor_two_macs", "floor: SHA-256 + 2 fresh HMACs", "#8c564b", "6 3"),
    ("jsonwebtoken", "jsonwebtoken 12 + body hash", "#d62728", "2 3"),
]
BARS = {0: 3.0, 1024: 1.8, 64 * 1024: 1.1, 1024 * 1024: 1.05}


def median_ns(base: Path, function: str, size: int):
    path = base / "verify" / function / str(size) / "new" / "estimates.json"
    try:
        return json.loads(path.read_text())["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "-"


def table(data) -> str:
    rows = [
        "| body | verify_at | floor | verify/floor (bar) | next key | 2-MAC floor | next/floor | jsonwebtoken | jsonwebtoken/verify |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, label in SIZES:
        d = data[size]
        rows.append(
            f"| {label} | {fmt_ns(d['crate'])} | {fmt_ns(d['floor'])} | "
            f"{ratio(d['crate'], d['floor'])} (≤ {BARS[size]}×) | {fmt_ns(d['crate_next_key'])} | "
            f"{fmt_ns(d['floor_two_macs'])} | {ratio(d['crate_next_key'], d['floor_two_macs'])} | "
            f"{fmt_ns(d['jsonwebtoken'])} | {ratio(d['jsonwebtoken'], d['crate'])} |"
        )
    return "\n".join(rows)


def svg(data) -> str:
    width, height = 720, 440
    left, right, top, bottom = 80, 250, 40, 60
    pw, ph = width - left - right, height - top - bottom
    # x: body size, log scale; 0 B is drawn at 1 B (labelled "0 B").
    xs = [max(size, 1) for size, _ in SIZES]
    x_lo, x_hi = math.log10(xs[0]), math.log10(xs[-1])
    values = [v for d in data.values() for v in d.values() if v]
    y_lo = math.floor(math.log10(min(values)))
    y_hi = math.ceil(math.log10(max(values)))

    def px(x):
        return left + (math.log10(x) - x_lo) / (x_hi - x_lo) * pw

    def py(ns):
        return top + ph - (math.log10(ns) - y_lo) / (y_hi - y_lo) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">'
        "Verify time per delivery against body size (median, log-log)</text>",
    ]
    for e in range(y_lo, y_hi + 1):
        y = py(10**e)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_ns(10**e)}</text>')
    for (size, label), x in zip(SIZES, xs):
        X = px(x)
        out.append(f'<line x1="{X:.1f}" y1="{top}" x2="{X:.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{X:.1f}" y="{top + ph + 18}" text-anchor="middle">{label}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 16}" text-anchor="middle">body size</text>'
    )
    for i, (key, label, color, dash) in enumerate(SERIES):
        points = [(px(x), py(data[size][key])) for (size, _), x in zip(SIZES, xs) if data[size][key]]
        if not points:
            continue
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>'
        )
        for x, y in points:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        ly = top + 10 + i * 22
        lx = left + pw + 14
        out.append(
            f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" stroke-width="2"{dash_attr}/>'
        )
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target" / "criterion"
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "verify.svg"
    data = {size: {key: median_ns(base, key, size) for key, *_ in SERIES} for size, _ in SIZES}
    if not any(v for d in data.values() for v in d.values()):
        sys.exit(f"no estimates under {base / 'verify'}: run `cargo bench --bench verify --features test-utils` first")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(svg(data))
    print(table(data))
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
