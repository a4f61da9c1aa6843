#!/usr/bin/env python3
"""Our training steps against PyTorch's, interleaved: the issue-12 table of docs/PERFORMANCE.md.

    cargo bench --bench train --no-run
    python3 benches/compare_torch.py --python /work/venv/bin/python --rounds 5 > /tmp/train.md

For every round and model it runs our bench (`cargo bench --bench train -- train_step/ours/<model>`,
criterion's estimates written to a directory of their own per round, CRITERION_HOME) and then
`benches/torch_train.py --model <model>` with the given Python (which must have torch), one
right after the other, so both see the same machine state. It keeps each side's minimum over the
rounds (ours: criterion's median of the round; torch: the script's median, its `ms=` line; this
machine is noisy and the minimum is the least disturbed run) and prints a markdown table with the
ratio ours / torch (< 1: we are faster). `--skip-torch` runs ours only. Standard library only.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

MODELS = ["vit", "resnet", "mobilenet", "mamba"]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def ours(model, home):
    """Criterion's median (ms) of `train_step/ours/<model>`, run with CRITERION_HOME=home."""
    env = dict(os.environ, CRITERION_HOME=str(home))
    subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "train", "--", f"^train_step/ours/{model}$"],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    want = f"train_step/ours/{model}"
    for est in pathlib.Path(home).rglob("new/estimates.json"):
        meta = json.loads((est.parent / "benchmark.json").read_text())
        if meta["full_id"] == want:
            return json.loads(est.read_text())["median"]["point_estimate"] / 1e6
    sys.exit(f"no criterion estimate for {want} under {home}")


def torch(python, model, steps):
    """The PyTorch script's median step (ms): its last `ms=<value>` line."""
    out = subprocess.run(
        [python, str(ROOT / "benches" / "torch_train.py"), "--model", model, "--steps", str(steps)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    found = re.findall(r"^ms=([0-9.eE+-]+)$", out, flags=re.M)
    if not found:
        sys.exit(f"torch_train.py --model {model} printed no ms= line:\n{out}")
    return float(found[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python", default=sys.executable, help="a Python with torch")
    ap.add_argument("--model", action="append", choices=MODELS, help="models (default: all)")
    ap.add_argument("--steps", type=int, default=10, help="timed torch steps per round")
    ap.add_argument("--out", default="/tmp/compare_torch", help="criterion homes, per round")
    ap.add_argument("--skip-torch", action="store_true", help="time ours only")
    args = ap.parse_args()
    models = args.model or MODELS
    if not args.skip_torch:
        probe = subprocess.run([args.python, "-c", "import torch"], capture_output=True)
        if probe.returncode != 0:
            sys.exit(f"{args.python} cannot import torch: pass --python or --skip-torch")
    best = {"ours": {}, "torch": {}}

    def keep(side, model, ms):
        best[side][model] = min(ms, best[side].get(model, ms))

    for r in range(args.rounds):
        for model in models:
            print(f"round {r}: {model} (ours)", file=sys.stderr)
            keep("ours", model, ours(model, pathlib.Path(args.out) / str(r)))
            if not args.skip_torch:
                print(f"round {r}: {model} (torch)", file=sys.stderr)
                keep("torch", model, torch(args.python, model, args.steps))
    print(f"Training step, ms (min over {args.rounds} rounds, interleaved)\n")
    print("| model | ours | PyTorch | ours / PyTorch |")
    print("|---|---:|---:|---:|")
    for model in models:
        o, t = best["ours"][model], best["torch"].get(model)
        if t is None:
            print(f"| {model} | {o:.1f} | — | — |")
        else:
            print(f"| {model} | {o:.1f} | {t:.1f} | {o / t:.2f} |")


if __name__ == "__main__":
    main()
