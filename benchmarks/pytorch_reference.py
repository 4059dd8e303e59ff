r"""The MVAE's training step written in PyTorch, to compare frameworks on one machine.

  pip install torch numpy          # in a separate environment; not a dependency of mvae_tf
  python benchmarks/pytorch_reference.py [--sprites 3 8] [--batch 64] [--threads 2]
                                         [--layers reference|default]

The same layers and step as mvae_tf (appendix A; README "The model"): the candidate encoder
(four 3x3 convs 32-32-64-64 with ELU and 2x2 max-pooling, relative coordinates, a 3x3 conv
to 64 and a 1x1 conv to 2D), the analytic KL per cell, the top-N cells by KL and a gather,
g (dense 256, dense 1024, 8x8x16, two bilinear upsample + conv 16) folded over the objects,
a max over objects, h (conv 32, bilinear upsample, conv 16, conv 3), the Bernoulli NLL plus
the selected KL, and an Adam step. `--layers=reference` (the default) is that model, mvae_tf's
defaults when issue 8 was filed: max-pooling after all four convs (a 4x4 grid) and the top N
cells. `--layers=default` is mvae_tf's defaults today: max-pooling after the first two convs
(a 16x16 grid), greedy selection that skips the cells within 2 of each one taken, softmax
pooling over objects (weights softmax_n of each object's first channel), and the KL of the
cells left out added to the loss (mvae_tf's `benchmarks/cpu_replicas_step.py --layers`
names the two `pytorch_reference` and `default`). Tensors are channels_last, as oneDNN prefers. It times
the step on one cached batch, as benchmark.py does, and prints images/s (median of 7
repeats of 10 steps after 5 warm-up steps). It is a measuring tool only: nothing in mvae_tf
imports it, and the test suite does not run it (CI has no PyTorch).
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mvae_tf import machine  # pylint: disable=g-import-not-at-top  (no TensorFlow needed)


def _conv(c_in, c_out, k=3):
  return nn.Conv2d(c_in, c_out, k, padding=k // 2)


class Encoder(nn.Module):
  """Images [B, 3, 64, 64] -> posterior parameters [B, 2D, G, G], G = 64 / 2**num_pooling."""

  def __init__(self, latent_dim, num_pooling):
    super().__init__()
    self.trunk = nn.ModuleList([_conv(3, 32), _conv(32, 32), _conv(32, 64), _conv(64, 64)])
    self.head = _conv(66, 64)
    self.params = _conv(64, 2 * latent_dim, 1)
    self.num_pooling = num_pooling

  def forward(self, x):
    for i, conv in enumerate(self.trunk):
      x = F.elu(conv(x))
      if i < self.num_pooling:
        x = F.max_pool2d(x, 2)
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
    x = torch.cat([x, ys.contiguous(memory_format=torch.channels_last),
                   xs.contiguous(memory_format=torch.channels_last)], dim=1)
    return self.params(F.elu(self.head(x)))


def softmax_pool(x):
  """[B, N, C, H, W] -> [B, C, H, W]: sum_n w_n x_n, w_n = softmax_n(x_n[:, 0])."""
  return (torch.softmax(x[:, :, :1], dim=1) * x).sum(dim=1)


class Decoder(nn.Module):
  """Latents [B, N, D] -> logits [B, 3, 64, 64]: h(pool_n g(z_n))."""

  def __init__(self, latent_dim, aggregation):
    super().__init__()
    self.aggregation = aggregation
    self.dense1, self.dense2 = nn.Linear(latent_dim, 256), nn.Linear(256, 1024)
    self.g1, self.g2 = _conv(16, 16), _conv(16, 16)
    self.h1, self.h2, self.h3 = _conv(16, 32), _conv(32, 16), _conv(16, 3)

  def forward(self, z):
    b, n, d = z.shape
    x = F.elu(self.dense2(F.elu(self.dense1(z.reshape(b * n, d)))))
    x = x.view(b * n, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    for conv in (self.g1, self.g2):
      x = F.elu(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))
    x = x.view(b, n, 16, 32, 32)  # [B, N, 16, 32, 32]
    x = x.amax(dim=1) if self.aggregation == "max" else softmax_pool(x)
    x = x.contiguous(memory_format=torch.channels_last)  # [B, 16, 32, 32]
    x = F.elu(self.h1(x))
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return self.h3(F.elu(self.h2(x)))


# --layers: (num_pooling, suppression radius, pooling over objects, unselected cells' KL).
LAYERS = {"reference": (4, 0, "max", False), "default": (2, 2, "softmax", True)}


def suppressed_top_k(kl_map, num_objects, near):
  """Greedy selection by KL, skipping the cells near each one taken: [B, HW] -> [B, N].

  near: [HW, HW] booleans, cell j within the radius of cell i. Suppressed cells rank below
  every other (by KL, which is >= 0) and taken ones never again, as mvae_tf's TopKByKL.
  """
  with torch.no_grad():
    below = kl_map.amax(dim=1, keepdim=True) + 1.0  # [B, 1]
    suppressed = torch.zeros_like(kl_map, dtype=torch.bool)  # [B, HW]
    taken = torch.zeros_like(suppressed)
    picks = []
    for _ in range(num_objects):
      score = torch.where(suppressed, kl_map - below, kl_map).masked_fill(taken, -float("inf"))
      pick = score.argmax(dim=1)  # [B]
      picks.append(pick)
      taken[torch.arange(len(pick)), pick] = True
      suppressed |= near[pick]  # [B, HW]
    return torch.stack(picks, dim=1)  # [B, N]


class MVAE(nn.Module):

  def __init__(self, num_objects, layers, latent_dim=12):
    super().__init__()
    num_pooling, self.radius, aggregation, self.unselected_kl = LAYERS[layers]
    self.num_objects, self.latent_dim = num_objects, latent_dim
    self.encoder = Encoder(latent_dim, num_pooling)
    self.decoder = Decoder(latent_dim, aggregation)
    grid = 64 // 2 ** num_pooling
    ys, xs = np.divmod(np.arange(grid * grid), grid)
    self.near = torch.tensor((np.abs(ys[:, None] - ys[None, :]) <= self.radius)
                             & (np.abs(xs[:, None] - xs[None, :]) <= self.radius))

  def loss(self, images, noise):
    params = self.encoder(images)  # [B, 2D, H, W]
    b = params.shape[0]
    params = params.permute(0, 2, 3, 1).reshape(b, -1, 2 * self.latent_dim)  # [B, HW, 2D]
    loc, log_var = params.chunk(2, dim=-1)
    kl_map = 0.5 * (loc.square() + log_var.exp() - 1.0 - log_var).sum(-1)  # [B, HW]
    if self.radius:
      index = suppressed_top_k(kl_map, self.num_objects, self.near)  # [B, N]
      kl = kl_map.gather(1, index)  # [B, N]
    else:
      kl, index = kl_map.topk(self.num_objects, dim=1)  # [B, N]
    gather = index.unsqueeze(-1).expand(-1, -1, self.latent_dim)
    z = loc.gather(1, gather) + (0.5 * log_var.gather(1, gather)).exp() * noise  # [B, N, D]
    logits = self.decoder(z)
    nll = F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum((1, 2, 3))
    loss = nll + kl.sum(1)
    if self.unselected_kl:  # The cells left out: the map's KL less the selected objects'.
      loss = loss + kl_map.sum(1) - kl.sum(1)
    return loss.mean()


def images_per_second(num_sprites, batch, layers, repeats=7, steps=10, warmup=5):
  torch.manual_seed(0)
  model = MVAE(num_sprites + 2, layers).to(memory_format=torch.channels_last)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images = torch.rand(batch, 3, 64, 64).contiguous(memory_format=torch.channels_last)
  noise = torch.randn(batch, num_sprites + 2, 12)

  def step():
    optimizer.zero_grad(set_to_none=True)
    model.loss(images, noise).backward()
    optimizer.step()

  for _ in range(warmup):
    step()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    rates.append(steps * batch / (time.perf_counter() - start))
  return statistics.median(rates)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sprites", type=int, nargs="+", default=[3, 8])
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--layers", default="reference", choices=sorted(LAYERS))
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  result = {"torch": torch.__version__, "threads": args.threads, "batch": args.batch,
            "layers": args.layers,
            "machine": machine.cpu_facts(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            # The vector ISA ATen's kernels use (ATEN_CPU_CAPABILITY lowers it), and
            # oneDNN's limit (ONEDNN_MAX_CPU_ISA), to emulate an older CPU.
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(all)"),
            "images_per_sec": {str(n): images_per_second(n, args.batch, args.layers)
                               for n in args.sprites}}
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  np.random.seed(0)
  main()
