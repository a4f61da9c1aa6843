"""torchvision v2 timing for benches/augment.rs: the same chains on a (64, 3, 224, 224) f32
batch, applied per image in a loop (what a torchvision data pipeline does: transforms take one
sample at a time, random parameters per sample), 2 intra-op threads.

Run from the repository root:
    /work/venv/bin/python benches/torch_augment.py [rounds]
Prints the min over `rounds` (default 5) timed repeats, per chain, in ms per batch.
"""
import sys
import time

import torch
from torchvision.transforms import v2

torch.set_num_threads(2)
torch.manual_seed(0)

B, C, S = 64, 3, 224
x = torch.rand(B, C, S, S)
jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
chains = {
    "flip_crop_jitter": v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomCrop(S, padding=4), jitter]),
    "resized_crop_flip_jitter": v2.Compose(
        [v2.RandomResizedCrop(S, antialias=False), v2.RandomHorizontalFlip(0.5), jitter]
    ),
}


def batch(t):
    return torch.stack([t(img) for img in x])


rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
for name, t in chains.items():
    batch(t)  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        batch(t)
        times.append(time.perf_counter() - t0)
    print(f"torchvision {name}/{B}x{C}x{S}x{S}: {min(times) * 1e3:8.1f} ms")
