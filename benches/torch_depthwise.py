"""PyTorch timings for the depthwise cases of benches/conv.rs (`depthwise_fwd`, `depthwise_fwd_bwd`).

Run with the project's venv on the bench machine:
    /work/venv/bin/python benches/torch_depthwise.py
Same shapes, 3x3 kernel, padding 1, stride 1 and 2, f32, two threads (the CI machine's cores).
Prints the median over repeated runs in milliseconds.
"""
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)

SHAPES = [(1, 32, 112, 112), (8, 144, 56, 56), (8, 384, 14, 14)]


def bench(fn, min_time=2.0, min_runs=10):
    for _ in range(3):  # warm-up
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
print(f"{'case':<24} {'fwd ms':>10} {'fwd+bwd ms':>12}")
for b, c, h, w in SHAPES:
    for s in (1, 2):
        x = torch.randn(b, c, h, w)
        k = torch.randn(c, 1, 3, 3)
        with torch.no_grad():
            fwd = bench(lambda: F.conv2d(x, k, stride=s, padding=1, groups=c))
        xv = x.clone().requires_grad_(True)
        kv = k.clone().requires_grad_(True)

        def fwd_bwd():
            xv.grad = None
            kv.grad = None
            F.conv2d(xv, kv, stride=s, padding=1, groups=c).sum().backward()

        fb = bench(fwd_bwd)
        print(f"{b}x{c}x{h}x{w}_s{s:<10} {fwd:>10.3f} {fb:>12.3f}")
