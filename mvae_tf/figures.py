"""Labelled PNG figures of the paper's qualitative experiments (Figs. 2-6)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from mvae_tf import config
from mvae_tf import evaluation

TRAVERSAL_VALUES = np.linspace(-2.25, 2.25, 7)  # Paper Figs. 4a and 5.


def image_grid(rows, row_labels, column_labels=None, title=None, cmap=None):
  """A figure of images: `rows` is a list of lists of [H, W(, 3)] arrays."""
  num_rows, num_cols = len(rows), max(len(r) for r in rows)
  fig, axes = plt.subplots(num_rows, num_cols, figsize=(1.3 * num_cols + 1.2, 1.3 * num_rows),
                           squeeze=False)
  for r, row in enumerate(rows):
    for c in range(num_cols):
      ax = axes[r, c]
      ax.set_xticks([])
      ax.set_yticks([])
      if c < len(row):
        image = row[c]
        ax.imshow(np.clip(image, 0, 1) if image.ndim == 3 else image,
                  cmap=cmap if image.ndim == 2 else None, interpolation="nearest")
      else:
        ax.axis("off")
      if c == 0:
        ax.set_ylabel(row_labels[r], fontsize=8, rotation=0, ha="right", va="center")
      if column_labels and r == 0 and c < len(column_labels):
        ax.set_title(column_labels[c], fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


def save(fig, path):
  """Writes `fig` to `path` in the format its extension names, atomically (an earlier
  evaluation's figure there stays whole until the new one replaces it), and closes it."""
  image_format = os.path.splitext(path)[1].lstrip(".") or "png"
  try:
    config.write_file_atomic(path, lambda f: fig.savefig(f, format=image_format, dpi=80),
                             mode="wb")
  finally:
    plt.close(fig)


def reconstructions_and_samples(codec, images, rng):
  """Fig. 6: inputs, reconstructions from the posterior means, samples from the prior."""
  encoded = codec.encode(images)
  recon = evaluation.sigmoid(codec.decode(encoded["loc"]))
  z = rng.standard_normal((len(images), codec.num_objects, codec.latent_dim))
  samples = evaluation.sigmoid(codec.decode(z))
  return image_grid([list(images), list(recon), list(samples)],
                    ["data", "reconstruction", "prior sample"],
                    title="Reconstructions and samples (paper Fig. 6)")


def kl_maps(codec, images):
  """Fig. 2b: inputs and their KL maps (brighter: more nats)."""
  maps = codec.encode(images)["kl_map"]
  return image_grid([list(images), list(maps)], ["data", "KL map"], cmap="magma",
                    title="KL divergence per candidate (paper Fig. 2b)")


def entity_exchange(codec, images_a, images_b):
  """Fig. 3: swap the highest-KL object of each pair of scenes."""
  z_a, z_b = codec.encode(images_a)["loc"], codec.encode(images_b)["loc"]
  swap_a = np.concatenate([z_b[:, :1], z_a[:, 1:]], axis=1)
  swap_b = np.concatenate([z_a[:, :1], z_b[:, 1:]], axis=1)
  sig = evaluation.sigmoid
  rows = [list(images_a), list(images_b), list(sig(codec.decode(z_a))),
          list(sig(codec.decode(z_b))), list(sig(codec.decode(swap_a))),
          list(sig(codec.decode(swap_b)))]
  return image_grid(rows, ["input A", "input B", "recon A", "recon B", "A with B's top",
                           "B with A's top"],
                    title="Entity exchange of the highest-KL objects (paper Fig. 3)")


def sequential_decoding(codec, images):
  """Fig. 4b: decode objects one at a time in descending KL."""
  loc = codec.encode(images)["loc"]
  sig = evaluation.sigmoid
  rows = [[image] + [sig(codec.decode(loc[i:i + 1, :k]))[0]
                     for k in range(1, codec.num_objects + 1)]
          for i, image in enumerate(images)]
  return image_grid(rows, [f"scene {i}" for i in range(len(images))],
                    ["data"] + [f"z1..z{k}" for k in range(1, codec.num_objects + 1)],
                    title="Sequential decoding in KL order (paper Fig. 4b)")


def traversals(codec, image, dims=None, title="Within-object traversals (paper Fig. 4a)"):
  """Figs. 4a and 5: each latent dimension of the top-KL object from -2.25 to 2.25, the
  other objects and dimensions held at their posterior means."""
  encoded = codec.encode(image[None])
  loc = encoded["loc"][0]  # [N, D]
  dims = range(codec.latent_dim) if dims is None else dims
  rows = []
  for d in dims:
    latents = np.repeat(loc[None], len(TRAVERSAL_VALUES), axis=0)  # [T, N, D]
    latents[:, 0, d] = TRAVERSAL_VALUES
    rows.append(list(evaluation.sigmoid(codec.decode(latents))))
  return image_grid(rows, [f"dim {d}" for d in dims],
                    [f"{v:+.2f}" for v in TRAVERSAL_VALUES], title=title)


def training_curves(curves):
  """Fig. 2a: {label: (steps, elbo)} as lines."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (steps, values) in curves.items():
    ax.plot(steps, values, label=label)
  ax.set_xlabel("training step")
  ax.set_ylabel("ELBO (nats per image)")
  ax.set_title("Training curves (paper Fig. 2a)")
  ax.legend()
  fig.tight_layout()
  return fig
