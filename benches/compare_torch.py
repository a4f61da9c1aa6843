#!/usr/bin/env python3
"""Ours against PyTorch, interleaved: the issue-12 tables of docs/PERFORMANCE.md.

    cargo bench --bench train --no-run    # and --bench norm / attention / conv / optim for ops
    python3 benches/compare_torch.py --suite train --python /work/venv/bin/python --rounds 5
    python3 benches/compare_torch.py --suite ops --python /work/venv/bin/python --rounds 5
    python3 benches/compare_torch.py --suite pool --python /work/venv/bin/python --rounds 3

Suites: `train`, the whole-model training steps (`benches/train.rs` against
`benches/torch_train.py`), and `ops`, the forward + backward cases (criterion groups of
`benches/norm.rs`, `attention.rs`, `conv.rs`, `conv_transpose.rs`, `optim.rs`, `loss.rs`, `rnn.rs`, `int8.rs` against
`benches/torch_ops.py`), and `pool`, the pools of `benches/pool.rs` against `benches/torch_pool.py`.

For every round and case it runs our criterion bench (`cargo bench --bench <bench> -- ^<id>$`,
criterion's estimates written to a directory of their own per round, CRITERION_HOME) and then the
PyTorch script with the given Python (which must have torch; mambapy too for the Mamba LM's
second PyTorch side), one right after the other, so both see the same machine state. Our side
is built as cargo builds it from the environment: with `RUSTFLAGS="--cfg system_allocator"
CARGO_TARGET_DIR=<dir>` it runs on the system allocator instead of mimalloc
(benches/common/alloc.rs). It keeps each side's minimum over the rounds (ours: criterion's median
of the round; torch: the script's median, its `ms=` line; this machine is noisy and the minimum is
the least disturbed run) and prints a markdown table with the ratio ours / torch (< 1: we are
faster). `--skip-torch` runs ours only. Standard library only.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# name -> (our bench, our criterion id, [(PyTorch label, script, arguments)]).
TRAIN = {
    m: ("train", f"train_step/ours/{m}", [("PyTorch", "torch_train.py", ["--model", m])])
    for m in ["vit", "resnet", "mobilenet"]
}
TRAIN["mamba"] = (
    "train",
    "train_step/ours/mamba",
    [
        ("PyTorch, unbind scan", "torch_train.py", ["--model", "mamba", "--scan", "unbind"]),
        ("PyTorch, mambapy pscan", "torch_train.py", ["--model", "mamba", "--scan", "mambapy"]),
    ],
)


def op_case(bench, our_id, torch_case):
    return (bench, our_id, [("PyTorch", "torch_ops.py", ["--case", torch_case])])


OPS = {
    "softmax last dim (8, 12, 197, 197)": op_case(
        "norm", "softmax_last_dim/ours_fwd_bwd/8x12x197x197", "softmax"),
    "batch norm train (16, 256, 56, 56)": op_case(
        "norm", "batch_norm_train/ours_fwd_bwd/16x256x56x56", "batch_norm"),
    "layer norm (32, 512, 768)": op_case(
        "norm", "layer_norm/ours_fwd_bwd/32x512x768", "layer_norm"),
    "group norm (16, 256, 56, 56), 32 groups": op_case(
        "norm", "group_norm/ours_fwd_bwd/16x256x56x56_g32", "group_norm"),
    "sdpa (8, 12, 197, 64)": op_case(
        "attention", "sdpa_fwd_bwd/ours/vit_b_8x12x197x64", "sdpa"),
    "depthwise 3x3 (1, 32, 112, 112)": op_case(
        "conv", "depthwise_fwd_bwd/ours/1x32x112x112_s1", "depthwise_1x32x112x112"),
    "depthwise 3x3 (8, 384, 14, 14)": op_case(
        "conv", "depthwise_fwd_bwd/ours/8x384x14x14_s1", "depthwise_8x384x14x14"),
    "cross-entropy (256, 1000)": op_case(
        "loss", "cross_entropy/ours_fwd_bwd/256x1000", "cross_entropy_256x1000"),
    "cross-entropy (1024, 10000)": op_case(
        "loss", "cross_entropy/ours_fwd_bwd/1024x10000", "cross_entropy_1024x10000"),
    "LSTM (B 32, L 256, in 256, H 256)": op_case(
        "rnn", "lstm/ours_fwd_bwd/b32_l256_i256_h256", "lstm"),
    "GRU (B 32, L 256, in 256, H 256)": op_case(
        "rnn", "gru/ours_fwd_bwd/b32_l256_i256_h256", "gru"),
    "AdamW step, 25 M parameters (PyTorch fused=True)": op_case(
        "optim", "optim_step/adamw/ours/25M_100x500x500", "adamw"),
    "linear f32 forward (64, 1024 -> 4096), candle_nn::Linear": op_case(
        "int8", "linear/candle_f32/64x1024x4096", "linear_f32"),
    "int8 dynamic linear (64, 1024 -> 4096)": op_case(
        "int8", "linear/int8/64x1024x4096", "linear_int8_dynamic"),
    "conv_transpose2d k2 s2 (16, 64, 32, 32) -> 32": op_case(
        "conv_transpose", "conv_transpose/fwd_bwd/ours/16x64x32x32_to32_k2_s2",
        "conv_transpose_k2"),
    "conv_transpose2d k4 s2 p1 (16, 64, 32, 32) -> 32": op_case(
        "conv_transpose", "conv_transpose/fwd_bwd/ours/16x64x32x32_to32_k4_s2_p1",
        "conv_transpose_k4"),
    "conv_transpose3d k2 s2 (2, 32, 16, 32, 32) -> 16": op_case(
        "conv_transpose", "conv_transpose/fwd_bwd/ours/2x32x16x32x32_to16_k2_s2",
        "conv_transpose3d_k2"),
}


def pool_case(our_id, torch_case):
    return ("pool", our_id, [("PyTorch", "torch_pool.py", ["--case", torch_case])])


POOL = {
    "max_pool2d 3x3/2 pad 1 (32, 64, 112, 112)": pool_case(
        "max_pool2d/ours_fwd_bwd/stem_k3s2p1_32x64x112x112", "max_stem"),
    "max_pool2d 2x2/2 (32, 128, 56, 56)": pool_case(
        "max_pool2d/ours_fwd_bwd/k2s2_32x128x56x56", "max_k2"),
    "avg_pool2d 2x2/2 (32, 128, 56, 56)": pool_case(
        "avg_pool2d/ours_fwd_bwd/k2s2_32x128x56x56", "avg_k2"),
    "max_pool3d 2x2x2/2 (4, 32, 32, 64, 64)": pool_case(
        "max_pool3d/ours_fwd_bwd/k2s2_4x32x32x64x64", "max3d"),
    "avg_pool3d 2x2x2/2 (4, 32, 32, 64, 64)": pool_case(
        "avg_pool3d/ours_fwd_bwd/k2s2_4x32x32x64x64", "avg3d"),
}

SUITES = {"train": TRAIN, "ops": OPS, "pool": POOL}


def ours(bench, want, home):
    """Criterion's median (ms) of the bench id `want`, run with CRITERION_HOME=home."""
    env = dict(os.environ, CRITERION_HOME=str(home))
    subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", bench, "--", f"^{re.escape(want)}$"],
        cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for est in pathlib.Path(home).rglob("new/estimates.json"):
        meta = json.loads((est.parent / "benchmark.json").read_text())
        if meta["full_id"] == want:
            return json.loads(est.read_text())["median"]["point_estimate"] / 1e6
    sys.exit(f"no criterion estimate for {want} under {home}")


def torch(python, script, extra):
    """The PyTorch script's median (ms): its last `ms=<value>` line."""
    out = subprocess.run(
        [python, str(ROOT / "benches" / script)] + extra,
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    found = re.findall(r"^ms=([0-9.eE+-]+)$", out, flags=re.M)
    if not found:
        sys.exit(f"{script} {' '.join(extra)} printed no ms= line:\n{out}")
    return float(found[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(SUITES), default="train")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--python", default=sys.executable, help="a Python with torch")
    ap.add_argument("--case", action="append", help="case names of the suite (default: all)")
    ap.add_argument("--out", default="/tmp/compare_torch", help="criterion homes, per round")
    ap.add_argument("--skip-torch", action="store_true", help="time ours only")
    args = ap.parse_args()
    suite = SUITES[args.suite]
    cases = args.case or list(suite)
    for c in cases:
        if c not in suite:
            sys.exit(f"unknown case {c!r}; the suite has {list(suite)}")
    if not args.skip_torch:
        probe = subprocess.run([args.python, "-c", "import torch"], capture_output=True)
        if probe.returncode != 0:
            sys.exit(f"{args.python} cannot import torch: pass --python or --skip-torch")
    best = {}

    def keep(key, ms):
        best[key] = min(ms, best.get(key, ms))

    for r in range(args.rounds):
        home = pathlib.Path(args.out) / args.suite / str(r)
        for case in cases:
            bench, our_id, torch_runs = suite[case]
            print(f"round {r}: {case} (ours)", file=sys.stderr)
            keep((case, "ours"), ours(bench, our_id, home))
            for label, script, extra in [] if args.skip_torch else torch_runs:
                print(f"round {r}: {case} ({label})", file=sys.stderr)
                keep((case, label), torch(args.python, script, extra))
    print(f"{args.suite}, ms (min over {args.rounds} rounds, interleaved)\n")
    print("| case | ours | PyTorch side | PyTorch | ours / PyTorch |")
    print("|---|---:|---|---:|---:|")
    for case in cases:
        o = best[(case, "ours")]
        for label, _, _ in suite[case][2]:
            t = best.get((case, label))
            if t is None:
                print(f"| {case} | {o:.2f} | {label} | — | — |")
            else:
                print(f"| {case} | {o:.2f} | {label} | {t:.2f} | {o / t:.2f} |")


if __name__ == "__main__":
    main()
