"""The transformer study: a small ViT-style encoder trained on the bundled digits, compressed every
way the package offers for transformers (``python -m compress_kernels transformer``, ~15 s).

The model (:class:`DigitsTransformer`) reads an 8x8 digit as 16 patches of 2x2 pixels, adds a class
token and learned positions, runs pre-norm encoder blocks (fused qkv projection, scaled dot-product
attention, a GELU MLP) and classifies the class token. Its forward refuses an input of the wrong
shape, as real vision transformers do; that check is control flow on the input's shape, which
torch.fx cannot trace, so ``calibrate`` and ``prepare_qat_`` take the module-level (hooks) path here,
as they do on Hugging Face models.

Variants (top-1 on the held-out quarter of the digits):

* fp32: the trained model (AdamW, a fixed seeded number of steps; the checkpoint is cached);
* static int8: every nn.Linear a QuantLinearFloatIO calibrated by hooks (min-max observers);
  smoothed: the same with SmoothQuant's migration (``smooth_alpha``);
* QAT: module-level quantization-aware training, converted to the integer model;
* 2:4 magnitude / Wanda / SparseGPT: one shot, no fine-tuning, on the Linear layers of the encoder
  blocks (the patch embedding, K = 4, and the classifier stay dense, as the papers leave the
  embeddings and the head);
* 2:4 + fine-tune: the better calibrated 2:4 model fine-tuned with its mask fixed (prune_ with
  ``PruneConfig(granularity="2:4", criterion=...)``: the Pruner zeroes the pruned weights' gradients
  and re-applies the mask after every optimizer step).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

IMAGE, PATCH, CLASSES = 8, 2, 10


# ---------------------------------------------------------------- the model


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(
            2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.proj(attended)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class DigitsTransformer(nn.Module):
    """A ViT-style classifier of 8x8 images [B, 1, 8, 8]: 16 patches of 2x2 pixels, a class token,
    learned positions, `depth` pre-norm encoder blocks, LayerNorm, a linear head on the class token."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, hidden: int = 128):
        super().__init__()
        if dim % heads:
            raise ValueError(f"DigitsTransformer: dim must be a multiple of heads, got dim={dim}, heads={heads}")
        tokens = (IMAGE // PATCH) ** 2
        self.patch_embed = nn.Linear(PATCH * PATCH, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1:] != (1, IMAGE, IMAGE):  # control flow on shapes: fx cannot trace
            raise ValueError(f"DigitsTransformer: images must be [batch, 1, {IMAGE}, {IMAGE}], got "
                             f"{tuple(images.shape)}")
        batch = images.shape[0]
        side = IMAGE // PATCH
        patches = images.reshape(batch, side, PATCH, side, PATCH).permute(0, 1, 3, 2, 4).reshape(
            batch, side * side, PATCH * PATCH)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), self.patch_embed(patches)], 1) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def block_linears(model: nn.Module, name: str) -> bool:
    """filter_fn of the 2:4 variants: the Linear layers of the encoder blocks (not the patch
    embedding, K = 4, nor the classifier)."""
    return name.startswith("blocks.")


# ---------------------------------------------------------------- data and training


@dataclass
class TransformerSettings:
    """Everything that decides the numbers of a transformer study run (saved in report.json)."""

    dim: int = 64
    depth: int = 2
    heads: int = 4
    hidden: int = 128
    steps: int = 600                  # fp32 training steps (AdamW, cosine schedule)
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    finetune_steps: int = 200         # 2:4 fine-tuning steps
    finetune_lr: float = 1e-3
    calibration_batches: int = 4      # batches of batch_size training images (int8 static, Wanda, SparseGPT)
    qat_steps: int = 100
    qat_lr: float = 2e-4
    smooth_alpha: float = 0.5
    out: str = "study_out/transformer"
    cache_dir: str | None = None      # fp32 checkpoint cache (None: ~/.cache/compress_kernels)
    progress: bool = True


def load_digits_images(seed: int = 0):
    """(x_train, y_train, x_test, y_test): the digits at their own 8x8 size, one channel, normalized,
    the training split shuffled once (seeded) so any prefix holds every class."""
    from .data import load_digits

    x_train, y_train, x_test, y_test = load_digits(size=IMAGE, seed=seed, channels=1)
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    return x_train[order], y_train[order], x_test, y_test


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch_size: int = 64,
                seed: int = 0, weight_decay: float = 0.05, after_step=None, progress: bool = False,
                desc: str = "train") -> nn.Module:
    """AdamW for exactly `steps` steps on seeded random batches of (x, y), cosine schedule with a 5%
    warm-up; after_step(model) runs after every optimizer step (a Pruner's step keeps the mask).
    Returns the model in evaluation mode."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        return (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(
            1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if after_step is not None:
            after_step(model)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def checkpoint_path(settings: TransformerSettings) -> str:
    """The cache key covers everything the trained weights depend on."""
    key = json.dumps([settings.dim, settings.depth, settings.heads, settings.hidden, settings.steps, settings.lr,
                      settings.batch_size, settings.seed, torch.__version__])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    folder = settings.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "compress_kernels")
    return os.path.join(folder, f"digits_transformer_d{settings.dim}_s{settings.steps}_{digest}.pt")


def train_fp32(settings: TransformerSettings, x_train: torch.Tensor, y_train: torch.Tensor,
               use_cache: bool = True) -> tuple[DigitsTransformer, bool]:
    """The trained fp32 model, from the checkpoint cache when it is there. Returns (model, cached)."""
    torch.manual_seed(settings.seed)
    model = DigitsTransformer(settings.dim, settings.depth, settings.heads, settings.hidden)
    path = checkpoint_path(settings)
    if use_cache and os.path.exists(path):
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), True
    train_steps(model, x_train, y_train, settings.steps, settings.lr, settings.batch_size, settings.seed,
                progress=settings.progress, desc="train fp32 transformer")
    if use_cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".tmp{os.getpid()}"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: a concurrent run never reads a half-written checkpoint
    return model.eval(), False
