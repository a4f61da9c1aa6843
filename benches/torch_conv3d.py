"""PyTorch timing for the `conv3d` bench group in benches/conv.rs (same shapes, 2 threads).

Run from the repository root with the project's venv:
    /work/venv/bin/python benches/torch_conv3d.py
Prints the median of several timed repeats for F.conv3d forward and forward + backward (grads
wrt input and weight of `y.sum()`), and the achieved GFLOP/s (2 * Cout * Cin * k^3 * outputs per
pass; backward counts twice the forward). For these shapes PyTorch's CPU dispatcher picks its
`Slow3d` backend (vol2col + BLAS); the oneDNN kernel, called directly, is printed for reference.
"""
import statistics
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)


def bench(fn, warmup=3, reps=15):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


for cout, s in [(16, 1), (32, 2)]:
    x = torch.randn(1, 16, 32, 32, 32)
    w = torch.randn(cout, 16, 3, 3, 3) * 0.1
    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            return F.conv3d(x, w, stride=s, padding=1)

    def fwd_bwd():
        xg.grad = None
        wg.grad = None
        F.conv3d(xg, wg, stride=s, padding=1).sum().backward()

    outputs = fwd().numel()
    flops = 2 * 16 * 27 * outputs  # per forward pass (outputs includes Cout)
    name = f"1x16x32x32x32_k3_16to{cout}_s{s}"
    tf, tb = bench(fwd), bench(fwd_bwd)
    print(f"torch fwd     {name}: {tf * 1e3:7.2f} ms  {flops / tf / 1e9:6.1f} GFLOP/s")
    print(f"torch fwd_bwd {name}: {tb * 1e3:7.2f} ms  {3 * flops / tb / 1e9:6.1f} GFLOP/s")
    if hasattr(torch, "mkldnn_convolution"):
        with torch.no_grad():
            tm = bench(lambda: torch.mkldnn_convolution(x, w, None, [1] * 3, [s] * 3, [1] * 3, 1))
        print(f"onednn fwd    {name}: {tm * 1e3:7.2f} ms  {flops / tm / 1e9:6.1f} GFLOP/s")
