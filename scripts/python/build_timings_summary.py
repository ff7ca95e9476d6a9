#!/usr/bin/env python3
"""Summary of a `cargo build --timings` report (cargo-timing-*.html).

Prints the number of units, their summed compile time, the largest units and the shares of
the crate families that dominate this project's build (polars, candle and gemm, faer, this
crate). Used by scripts/bench_build.sh; stdlib only.

    python3 scripts/python/build_timings_summary.py target/cargo-timings/cargo-timing.html --top 8
"""
import argparse
import json
import re
import sys

FAMILIES = [
    ("polars (all crates)", ("polars",)),
    ("candle and gemm", ("candle", "gemm", "private-gemm", "nano-gemm")),
    ("faer and its kernels", ("faer",)),
    ("cdsr-lab (library, binary, tests, examples)", ("cdsr-lab",)),
]


def units(path):
    text = open(path, encoding="utf-8").read()
    # cargo embeds the per-unit table as a JSON array assigned to UNIT_DATA.
    m = re.search(r"const UNIT_DATA = (\[.*?\]);\n", text, re.S)
    if not m:
        sys.exit(f"{path}: no UNIT_DATA table (not a cargo --timings report?)")
    return json.loads(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="a cargo-timing-*.html file")
    ap.add_argument("--top", type=int, default=6, help="how many of the largest units to list")
    args = ap.parse_args()
    data = units(args.report)
    total = sum(u["duration"] for u in data)
    print(f"  {len(data)} units, {total:.0f} s of summed unit time")
    for name, prefixes in FAMILIES:
        t = sum(u["duration"] for u in data if u["name"].startswith(prefixes))
        if t > 0:
            print(f"  {name}: {t:.0f} s ({100 * t / total:.0f}%)")
    print(f"  largest units:")
    for u in sorted(data, key=lambda u: -u["duration"])[: args.top]:
        target = u.get("target", "").strip() or "lib"
        print(f"    {u['name']} {target}: {u['duration']:.1f} s ({100 * u['duration'] / total:.0f}%)")


if __name__ == "__main__":
    main()
