#!/usr/bin/env python3
"""Our benches at two commits, interleaved in one run: the before/after table of
docs/PERFORMANCE.md.

    git worktree add --detach /tmp/old <commit> && (cd /tmp/old && cargo bench --no-run)
    cargo bench --no-run
    python3 benches/compare_commits.py /tmp/old . --rounds 2 > /tmp/table.md

For every bench file and round it runs the old checkout's benches, then the new one's (only
the ids matching FILTER: our own code, not candle's), each side writing criterion's estimates
to its own directory, and prints each side's minimum median over the rounds (this machine is
noisy; the minimum is the least disturbed run) and the ratio new / old. Standard library only.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys

BENCHES = ["conv", "norm", "ssm", "optim", "attention"]
FILTER = "ours|mamba_fwd"


def run(checkout, bench, home, filt):
    env = dict(os.environ, CRITERION_HOME=str(home))
    subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", bench, "--", filt],
        cwd=checkout, env=env, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def medians(home):
    """{'group/function': median ns} of every estimate under `home`."""
    out = {}
    for est in pathlib.Path(home).rglob("new/estimates.json"):
        bench_dir = est.parent.parent
        meta = json.loads((bench_dir / "new" / "benchmark.json").read_text())
        out[meta["full_id"]] = json.loads(est.read_text())["median"]["point_estimate"]
    return out


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="/tmp/compare_commits")
    ap.add_argument("--bench", action="append", help="bench files (default: all)")
    ap.add_argument("--filter", default=FILTER, help="criterion id regex")
    args = ap.parse_args()
    best = {"old": {}, "new": {}}
    for r in range(args.rounds):
        for bench in args.bench or BENCHES:
            for side in ("old", "new"):
                home = pathlib.Path(args.out) / side / str(r)
                print(f"round {r}: {bench} ({side})", file=sys.stderr)
                run(getattr(args, side), bench, home, args.filter)
        for side in ("old", "new"):
            for k, v in medians(pathlib.Path(args.out) / side / str(r)).items():
                best[side][k] = min(v, best[side].get(k, v))
    print("| bench | old | new | new / old |")
    print("|---|---:|---:|---:|")
    for k in sorted(set(best["old"]) & set(best["new"])):
        o, n = best["old"][k], best["new"][k]
        print(f"| `{k}` | {fmt(o)} | {fmt(n)} | {n / o:.2f} |")


if __name__ == "__main__":
    main()
