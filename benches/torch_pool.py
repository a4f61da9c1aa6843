"""PyTorch's side of the pooling benches (benches/pool.rs), one case per run.

    /work/venv/bin/python benches/torch_pool.py --case max_stem|max_k2|avg_k2|max3d|avg3d

Each case does what the matching criterion bench does on our side (benches/compare_torch.py
--suite pool names them): the pool's forward and `y.sum().backward()` on the same f32 shapes,
two threads. Prints the median over at least 2 s of runs as the last line, `ms=<value>`.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

CASES = {
    "max_stem": ((32, 64, 112, 112), lambda x: F.max_pool2d(x, 3, 2, 1)),
    "max_k2": ((32, 128, 56, 56), lambda x: F.max_pool2d(x, 2)),
    "avg_k2": ((32, 128, 56, 56), lambda x: F.avg_pool2d(x, 2)),
    "max3d": ((4, 32, 32, 64, 64), lambda x: F.max_pool3d(x, 2)),
    "avg3d": ((4, 32, 32, 64, 64), lambda x: F.avg_pool3d(x, 2)),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=sorted(CASES), required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape, pool = CASES[args.case]
    x = torch.randn(*shape).requires_grad_(True)

    def step():
        x.grad = None
        pool(x).sum().backward()

    for _ in range(2):
        step()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < 2.0 or len(times) < 5:
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    print(f"ms={statistics.median(times):.3f}")


if __name__ == "__main__":
    main()
