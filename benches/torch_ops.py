"""PyTorch's side of the fwd+bwd cases of issue 12 (docs/PERFORMANCE.md), one case per run.

    /work/venv/bin/python benches/torch_ops.py --case softmax|batch_norm|layer_norm|group_norm|
        sdpa|depthwise_1x32x112x112|depthwise_8x384x14x14|adamw|cross_entropy_256x1000|
        cross_entropy_1024x10000|lstm|gru|linear_f32|linear_int8_dynamic|conv_transpose_k2|
        conv_transpose_k4|conv_transpose3d_k2

Each case does what the matching criterion bench does on our side (benches/compare_torch.py
--suite ops names them): forward (training mode) and `y.sum().backward()` on the same shapes (the
transposed convolutions: `y.backward(ones_like(y))`, as `y.backward()` in candle), or
one AdamW step over 25 M parameters (100 tensors of 500 x 500, `fused=True`), or a linear
layer's inference forward (batch 64, 1024 -> 4096: f32 `F.linear`, or
`torch.ao.nn.quantized.dynamic.Linear` on the x86 / fbgemm engine). f32, two threads.
Prints the median over at least 2 s of runs as the last line, `ms=<value>`.
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def leaf(*shape, std=1.0):
    return (torch.randn(*shape) * std).requires_grad_(True)


def case_step(name):
    """A closure that runs one step of case `name`."""
    if name == "softmax":
        x = leaf(8, 12, 197, 197, std=2.0)
        return lambda: F.softmax(x, -1).sum().backward()
    if name == "batch_norm":
        bn = torch.nn.BatchNorm2d(256).train()
        x = leaf(16, 256, 56, 56)
        return lambda: bn(x).sum().backward()
    if name == "layer_norm":
        x, w, b = leaf(32, 512, 768), leaf(768), leaf(768)
        return lambda: F.layer_norm(x, (768,), w, b, 1e-5).sum().backward()
    if name == "group_norm":
        x, w, b = leaf(16, 256, 56, 56), leaf(256), leaf(256)
        return lambda: F.group_norm(x, 32, w, b, 1e-5).sum().backward()
    if name == "sdpa":
        q, k, v = leaf(8, 12, 197, 64), leaf(8, 12, 197, 64), leaf(8, 12, 197, 64)
        return lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()
    if name.startswith("depthwise_"):
        b, c, h, w = (int(s) for s in name.removeprefix("depthwise_").split("x"))
        x, k = leaf(b, c, h, w), leaf(c, 1, 3, 3)
        return lambda: F.conv2d(x, k, padding=1, groups=c).sum().backward()
    if name.startswith("conv_transpose"):
        # benches/conv_transpose.rs: decoder upsampling layers, no bias; backward from the
        # output with an upstream gradient of ones, as candle's `y.backward()` there.
        def backward_ones(y):
            y.backward(torch.ones_like(y))

        if name == "conv_transpose3d_k2":
            x, w = leaf(2, 32, 16, 32, 32), leaf(32, 16, 2, 2, 2, std=0.1)
            return lambda: backward_ones(F.conv_transpose3d(x, w, stride=2))
        k, p = (2, 0) if name == "conv_transpose_k2" else (4, 1)
        x, w = leaf(16, 64, 32, 32), leaf(64, 32, k, k, std=0.1)
        return lambda: backward_ones(F.conv_transpose2d(x, w, stride=2, padding=p))
    if name.startswith("cross_entropy_"):
        n, c = (int(s) for s in name.removeprefix("cross_entropy_").split("x"))
        x = leaf(n, c, std=3.0)
        y = torch.arange(n) * 7 % c
        return lambda: F.cross_entropy(x, y).backward()
    if name in ("lstm", "gru"):
        # benches/rnn.rs: one layer, batch-first (32, 256, 256), hidden 256, output summed.
        cls = torch.nn.LSTM if name == "lstm" else torch.nn.GRU
        net = cls(256, 256, batch_first=True)
        x = leaf(32, 256, 256)
        return lambda: net(x)[0].sum().backward()
    if name in ("linear_f32", "linear_int8_dynamic"):
        torch.backends.quantized.engine = "x86"
        w, b, x = torch.randn(4096, 1024) * 0.03, torch.randn(4096) * 0.1, torch.randn(64, 1024)
        if name == "linear_f32":
            return lambda: F.linear(x, w, b)
        qw = torch.quantize_per_channel(w, w.abs().amax(1) / 127.5, torch.zeros(4096, dtype=torch.long),
                                        0, torch.qint8)
        layer = torch.ao.nn.quantized.dynamic.Linear(1024, 4096, dtype=torch.qint8)
        layer.set_weight_bias(qw, b)
        return lambda: layer(x)
    if name == "adamw":
        params = [torch.randn(500, 500).requires_grad_(True) for _ in range(100)]
        for p in params:
            p.grad = torch.randn(500, 500) * 1e-2
        opt = torch.optim.AdamW(params, lr=1e-6, fused=True)
        return opt.step
    sys.exit(f"unknown case {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    step = case_step(args.case)
    for _ in range(3):
        step()
    times = []
    start = time.perf_counter()
    while len(times) < 10 or time.perf_counter() - start < args.min_time:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(f"torch {torch.__version__}, {args.case}: min {min(times) * 1e3:.3f} ms", file=sys.stderr)
    print(f"ms={ms:.4f}")


if __name__ == "__main__":
    main()
