"""PyTorch training steps matching benches/train.rs (issue 12): same models, shapes and AdamW.

    /work/venv/bin/python benches/torch_train.py --model vit|resnet|mobilenet|mamba [--steps N]

One step = forward (training mode), cross-entropy, backward, `torch.optim.AdamW` step (PyTorch's
defaults: lr 1e-3, weight decay 1e-2, the default foreach implementation), f32, two threads
(the CI machine's cores). Prints the median step time over N steps after warm-up as the last
line, `ms=<value>` (benches/compare_torch.py reads it); details go to stderr.

The models (see benches/common/train_models.rs for ours):
- vit: patch 4 on 32x32x3, dim 192, 6 pre-LN layers, 3 heads, MLP 768 (exact GELU), final norm,
  class token -> linear to 10; batch 32.
- resnet: conv 3x3 s2 to 64 + BN + ReLU, BasicBlocks 64, 128 (s2), 256 (s2), global average
  pool, linear to 10; 64x64 inputs, batch 32.
- mobilenet: conv 3x3 s2 to 32 + BN + ReLU6, six inverted residuals (expand 1x1 + BN + ReLU6,
  depthwise 3x3 + BN + ReLU6, project 1x1 + BN), 1x1 to 256 + BN + ReLU6, pool, linear to 10;
  64x64 inputs, batch 32.
- mamba: a Mamba LM (4 layers, d_model 256, d_state 16, expand 2, vocab 256, tied head), batch 8,
  L 256, next-token cross-entropy. The block is mamba-ssm's `Mamba` without the CUDA kernels, its
  selective scan mamba-ssm's `selective_scan_ref` (a Python loop over L through `unbind`; no
  mamba-ssm import), or with `--scan mambapy` mambapy's parallel scan (`pip install mambapy`).
"""
import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = 10
VOCAB = 256
SEQ_LEN = 256


# --- ViT ---------------------------------------------------------------------------------------
class Vit(nn.Module):
    def __init__(self, img=32, patch=4, dim=192, depth=6, heads=3):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + n, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        return self.head(self.encoder(t)[:, 0])


# --- ResNet ------------------------------------------------------------------------------------
def conv_bn(cin, cout, k, stride, act):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride, nn.ReLU)
        self.conv2 = conv_bn(cout, cout, 3, 1, None)
        self.downsample = (
            conv_bn(cin, cout, 1, stride, None) if stride != 1 or cin != cout else None
        )

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + idt)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 64, 3, 2, nn.ReLU)
        self.blocks = nn.Sequential(
            BasicBlock(64, 64, 1), BasicBlock(64, 128, 2), BasicBlock(128, 256, 2)
        )
        self.fc = nn.Linear(256, CLASSES)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


# --- MobileNetV2-style -------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [] if t == 1 else [conv_bn(cin, hidden, 1, 1, nn.ReLU6)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


MOBILENET_BLOCKS = [(32, 16, 1, 1), (16, 24, 2, 6), (24, 24, 1, 6), (24, 32, 2, 6),
                    (32, 32, 1, 6), (32, 64, 2, 6)]


class MobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2, nn.ReLU6)
        self.blocks = nn.Sequential(*[InvertedResidual(*b) for b in MOBILENET_BLOCKS])
        self.last = conv_bn(64, 256, 1, 1, nn.ReLU6)
        self.fc = nn.Linear(256, CLASSES)

    def forward(self, x):
        return self.fc(self.last(self.blocks(self.stem(x))).mean((2, 3)))


# --- Mamba LM ----------------------------------------------------------------------------------
def selective_scan_ref(u, delta, A, B, C, D, z, delta_bias):
    """mamba-ssm's `selective_scan_ref` (variable B and C, softplus on delta), the loop over L
    through `unbind`. u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l); D, delta_bias: (d)."""
    delta = F.softplus(delta + delta_bias[..., None])
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    x = A.new_zeros((batch, dim, dstate))
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    ys = []
    for da, dbu, c in zip(delta_a.unbind(2), delta_b_u.unbind(2), C.unbind(2)):
        x = da * x + dbu
        ys.append(torch.einsum("bdn,bn->bd", x, c))
    y = torch.stack(ys, dim=2)
    out = y + u * D[:, None]
    return out * F.silu(z)


def selective_scan_mambapy(u, delta, A, B, C, D, z, delta_bias):
    """The same scan through mambapy's parallel scan (`mambapy.pscan`, pure PyTorch, Blelloch
    style over log2(L) levels) as mambapy's `MambaBlock.selective_scan` runs it; same arguments."""
    from mambapy.pscan import pscan

    delta = F.softplus(delta + delta_bias[..., None]).transpose(1, 2)  # (b, l, d)
    u_l, B_l, C_l = u.transpose(1, 2), B.transpose(1, 2), C.transpose(1, 2)
    delta_a = torch.exp(delta.unsqueeze(-1) * A)  # (b, l, d, n)
    bx = delta.unsqueeze(-1) * B_l.unsqueeze(2) * u_l.unsqueeze(-1)
    hs = pscan(delta_a, bx)
    y = (hs @ C_l.unsqueeze(-1)).squeeze(3) + D * u_l  # (b, l, d)
    return y.transpose(1, 2) * F.silu(z)


SCANS = {"unbind": selective_scan_ref, "mambapy": selective_scan_mambapy}
SCAN = SCANS["unbind"]


class Mamba(nn.Module):
    """mamba-ssm's `Mamba` block (no bias, conv bias, dt_rank = ceil(d_model / 16))."""

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(0.1) - math.log(1e-3))
                       + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, h):
        b, l, _ = h.shape
        xz = self.in_proj(h).transpose(1, 2)  # (b, 2d, l)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :l])
        x_dbl = self.x_proj(x.transpose(1, 2).reshape(b * l, -1))
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (self.dt_proj.weight @ dt.t()).reshape(self.d_inner, b, l).transpose(0, 1)
        B = B.reshape(b, l, self.d_state).transpose(1, 2)
        C = C.reshape(b, l, self.d_state).transpose(1, 2)
        A = -torch.exp(self.A_log)
        y = SCAN(x, dt, A, B, C, self.D, z, self.dt_proj.bias)
        return self.out_proj(y.transpose(1, 2))


class RmsNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaLM(nn.Module):
    def __init__(self, vocab=VOCAB, d_model=256, n_layer=4):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.norms = nn.ModuleList([RmsNorm(d_model) for _ in range(n_layer)])
        self.mixers = nn.ModuleList([Mamba(d_model) for _ in range(n_layer)])
        self.norm_f = RmsNorm(d_model)

    def forward(self, ids):
        h = self.embedding(ids)
        for norm, mixer in zip(self.norms, self.mixers):
            h = h + mixer(norm(h))
        return self.norm_f(h) @ self.embedding.weight.t()  # tied head


# --- the step ----------------------------------------------------------------------------------
def setup(model, batch):
    if model == "mamba":
        net = MambaLM()
        tokens = torch.randint(0, VOCAB, (batch, SEQ_LEN + 1))
        x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].reshape(-1)
    else:
        net, side = {"vit": (Vit, 32), "resnet": (ResNet, 64), "mobilenet": (MobileNet, 64)}[model]
        net = net()
        x, y = torch.randn(batch, 3, side, side), torch.randint(0, CLASSES, (batch,))
    return net.train(), x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, choices=["vit", "resnet", "mobilenet", "mamba"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scan", choices=sorted(SCANS), default="unbind",
                    help="mamba's selective scan: mamba-ssm's unbind loop or mambapy's pscan")
    args = ap.parse_args()
    global SCAN
    SCAN = SCANS[args.scan]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = 8 if args.model == "mamba" else 32
    net, x, y = setup(args.model, batch)
    opt = torch.optim.AdamW(net.parameters())  # lr 1e-3, weight decay 1e-2

    def step():
        logits = net(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, model {args.model}, "
          f"batch {batch}, {args.steps} steps: min {min(times) * 1e3:.2f} ms", file=sys.stderr)
    print(f"ms={ms:.3f}")


if __name__ == "__main__":
    main()
