"""One training step of the same model in PyTorch, non-private or DP-SGD with Opacus.

The model mirrors sealtune's Llama decoder (RMSNorm, rotary embeddings in the halves
layout, grouped-query causal attention, SwiGLU, tied LM head) with LoRA adapters
(rank 8, alpha 16) on the q and v projections, frozen base weights, f32, random
weights. Run by bench/trainer.sh, one measurement per process; prints one JSON line
with the median seconds per step and the peak RSS of this process.

usage: torch_step.py SHAPE MODE STEPS THREADS   (SHAPE tiny|135m, MODE np|dp)
"""
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    "tiny": dict(hidden=64, inter=128, layers=2, heads=4, kv=2, head_dim=16, vocab=512),
    "135m": dict(hidden=576, inter=1536, layers=30, heads=9, kv=3, head_dim=64, vocab=49152),
}
BATCH, SEQ, RANK, ALPHA, LR = 8, 128, 8, 16.0, 1e-3


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (PEFT's initialisation)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.base = nn.Linear(d_in, d_out, bias=False)
        self.base.weight.requires_grad_(False)
        self.lora_A = nn.Linear(d_in, RANK, bias=False)
        self.lora_B = nn.Linear(RANK, d_out, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * (ALPHA / RANK)


def frozen_linear(d_in, d_out):
    layer = nn.Linear(d_in, d_out, bias=False)
    layer.weight.requires_grad_(False)
    return layer


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, s):
        super().__init__()
        h, hd = s["hidden"], s["head_dim"]
        self.s = s
        self.input_norm, self.post_norm = RMSNorm(h), RMSNorm(h)
        self.q = LoraLinear(h, s["heads"] * hd)
        self.k = frozen_linear(h, s["kv"] * hd)
        self.v = LoraLinear(h, s["kv"] * hd)
        self.o = frozen_linear(s["heads"] * hd, h)
        self.gate, self.up = frozen_linear(h, s["inter"]), frozen_linear(h, s["inter"])
        self.down = frozen_linear(s["inter"], h)

    def forward(self, x, cos, sin):
        s, (b, t, _) = self.s, x.shape
        xn = self.input_norm(x)
        q = self.q(xn).view(b, t, s["heads"], s["head_dim"]).transpose(1, 2)
        k = self.k(xn).view(b, t, s["kv"], s["head_dim"]).transpose(1, 2)
        v = self.v(xn).view(b, t, s["kv"], s["head_dim"]).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        group = s["heads"] // s["kv"]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attn.transpose(1, 2).reshape(b, t, -1))
        xn = self.post_norm(x)
        return x + self.down(F.silu(self.gate(xn)) * self.up(xn))


class Llama(nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s
        self.embed = nn.Embedding(s["vocab"], s["hidden"])
        self.embed.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Block(s) for _ in range(s["layers"]))
        self.norm = RMSNorm(s["hidden"])
        inv = 1.0 / (100000.0 ** (torch.arange(0, s["head_dim"], 2).float() / s["head_dim"]))
        angles = torch.outer(torch.arange(SEQ).float(), inv)
        self.register_buffer("cos", torch.cat((angles, angles), -1).cos(), persistent=False)
        self.register_buffer("sin", torch.cat((angles, angles), -1).sin(), persistent=False)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        return F.linear(self.norm(x), self.embed.weight)  # tied head


def per_example_loss(model, ids, labels):
    logits = model(ids)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return nll.view(ids.shape[0], -1).mean(1)


def main():
    shape, mode, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = SHAPES[shape]
    model = Llama(s)
    ids = torch.randint(0, s["vocab"], (BATCH, SEQ + 1))
    inputs, labels = ids[:, :-1], ids[:, 1:]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    if mode == "dp":
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        # The DP-SGD step of Opacus: per-sample gradients by hooks, clipping to C = 1,
        # Gaussian noise with sigma = 1, normalised by the expected batch size.
        model = GradSampleModule(model, batch_first=True, loss_reduction="mean")
        optimizer = DPOptimizer(optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=BATCH)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        per_example_loss(model, inputs, labels).mean().backward()
        if mode == "dp" and not all(getattr(p, "grad_sample", None) is not None for p in params):
            sys.exit("Opacus computed no per-sample gradients: this would not be DP-SGD")
        optimizer.step()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"seconds": statistics.median(times[1:]), "peak_mb": peak_mb}))


if __name__ == "__main__":
    main()
