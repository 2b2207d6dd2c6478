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


# ---------------------------------------------------------------- the variants


@dataclass
class TransformerRow:
    name: str
    top1: float
    finetune_steps: int
    seconds: float          # compression time (calibration, pruning, fine-tuning, conversion)
    detail: str


def _calibration(settings: TransformerSettings, x_train: torch.Tensor) -> list[torch.Tensor]:
    b = settings.batch_size
    return [x_train[i * b:(i + 1) * b] for i in range(settings.calibration_batches)]


def static_int8(model: nn.Module, calibration, smooth_alpha: float | None = None):
    """The module-level static int8 model (min-max observers) and convert_'s report."""
    import compress_kernels as ck

    calibrated = copy.deepcopy(model)
    ck.calibrate(calibrated, calibration)
    report = ck.convert_(calibrated, ck.Int8StaticConfig(observer="minmax", smooth_alpha=smooth_alpha))
    return report.model, report


def qat_int8(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TransformerSettings):
    """(integer model, QAT model): module-level QAT for settings.qat_steps steps, frozen, converted."""
    import compress_kernels as ck

    qat = ck.prepare_qat_(copy.deepcopy(model))
    train_steps(qat, x, y, settings.qat_steps, settings.qat_lr, settings.batch_size, settings.seed + 2,
                progress=settings.progress, desc="QAT")
    ck.freeze_qat_(qat)
    qat.eval()
    return ck.convert_(qat).model, qat


def pruned_24(model: nn.Module, criterion: str, calibration, settings: TransformerSettings, finetune_steps: int = 0,
              x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> nn.Module:
    """A 2:4 copy of `model` (the Linear layers of the encoder blocks) by `criterion` ("l1": magnitude,
    "wanda", "sparsegpt"), then `finetune_steps` AdamW steps on (x, y) with the mask fixed (the Pruner
    zeroes the pruned weights' gradients and re-applies the mask after every step). Float model, masks
    removed, pruned weights zero."""
    from ..prune import PruneConfig, prune_

    pruned = copy.deepcopy(model)
    extra = {} if criterion == "l1" else {"calibration": calibration}
    pruner = prune_(pruned, PruneConfig(granularity="2:4", criterion=criterion, module_types=(nn.Linear,),
                                        filter_fn=lambda module, name: block_linears(module, name), **extra))
    if finetune_steps:
        train_steps(pruned, x, y, finetune_steps, settings.finetune_lr, settings.batch_size, settings.seed + 1,
                    after_step=lambda _: pruner.step(), progress=settings.progress, desc=f"2:4 {criterion} fine-tune")
    pruner.remove()
    return pruned.eval()


def run(settings: TransformerSettings) -> tuple[list[TransformerRow], dict]:
    """Train (or load) the fp32 model and measure every variant on one thread (the matrices are tiny:
    more threads only add OpenMP synchronisation). Returns (rows, info)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(settings)
    finally:
        torch.set_num_threads(threads)


def _run(settings: TransformerSettings) -> tuple[list[TransformerRow], dict]:
    torch.manual_seed(settings.seed)
    x_train, y_train, x_test, y_test = load_digits_images(settings.seed)
    start = time.perf_counter()
    model, cached = train_fp32(settings, x_train, y_train)
    rows = [TransformerRow("fp32", accuracy(model, x_test, y_test), settings.steps, time.perf_counter() - start,
                           "trained fp32 (cached checkpoint)" if cached else "trained fp32")]
    calibration = _calibration(settings, x_train)

    def measure(name: str, build, steps: int, detail: str) -> nn.Module:
        began = time.perf_counter()
        compressed = build()
        rows.append(TransformerRow(name, accuracy(compressed, x_test, y_test), steps, time.perf_counter() - began,
                                   detail))
        return compressed

    info: dict = {}

    def static(alpha):
        compressed, report = static_int8(model, calibration, alpha)
        info.setdefault("static_notes", report.notes)
        info.setdefault("static_layers", len(report.converted))
        return compressed

    measure("int8 static", lambda: static(None), 0, "every Linear a QuantLinearFloatIO (hooks, min-max)")
    measure("int8 static smoothed", lambda: static(settings.smooth_alpha), 0,
            f"SmoothQuant migration, alpha={settings.smooth_alpha}")

    def qat():
        import compress_kernels as ck

        integer, qat_model = qat_int8(model, x_train, y_train, settings)
        with torch.no_grad(), ck.qat_exact_mode(qat_model):
            exact = qat_model(x_test)
        with torch.no_grad():
            info["qat_converts_exactly"] = bool(torch.equal(integer(x_test), exact))
        return integer

    measure("int8 QAT", qat, settings.qat_steps, "module-level QAT, converted to the integer model")
    for criterion, name in (("l1", "2:4 magnitude"), ("wanda", "2:4 Wanda"), ("sparsegpt", "2:4 SparseGPT")):
        measure(name, lambda c=criterion: pruned_24(model, c, calibration, settings), 0, "one shot, no fine-tuning")
    calibrated = {r.name: r.top1 for r in rows}
    best = "sparsegpt" if calibrated["2:4 SparseGPT"] >= calibrated["2:4 Wanda"] else "wanda"
    measure(f"2:4 {'SparseGPT' if best == 'sparsegpt' else 'Wanda'} + fine-tune",
            lambda: pruned_24(model, best, calibration, settings, settings.finetune_steps, x_train, y_train),
            settings.finetune_steps, "mask fixed while fine-tuning (Pruner)")
    info["fp32_checkpoint_reused"] = cached
    info["test_images"] = len(x_test)
    return rows, info


def format_rows(rows: list[TransformerRow]) -> str:
    fp32 = rows[0].top1
    lines = ["| variant | top-1 % | vs fp32 | steps | seconds | how |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r.name} | {r.top1:.2f} | {r.top1 - fp32:+.2f} | {r.finetune_steps} | {r.seconds:.1f} | "
                     f"{r.detail} |")
    return "\n".join(lines)


def write_reports(rows: list[TransformerRow], info: dict, settings: TransformerSettings, seconds: float) -> dict:
    """report.md, report.json and top1.png (a bar per variant) in settings.out."""
    import matplotlib

    from .runner import machine_info

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(settings.out, exist_ok=True)
    paths = {name: os.path.join(settings.out, name) for name in ("report.md", "report.json", "top1.png")}
    title = (f"Transformer study: DigitsTransformer (dim {settings.dim}, depth {settings.depth}) on the digits, "
             f"top-1 on {info['test_images']} held-out images")
    with open(paths["report.md"], "w") as f:
        f.write(f"# {title}\n\n{format_rows(rows)}\n\nQAT integer model equals its exact mode bit for bit: "
                f"{info.get('qat_converts_exactly')}. Static int8: {info.get('static_layers')} layers, "
                f"{'; '.join(info.get('static_notes', []))}. Total {seconds:.1f} s.\n")
    with open(paths["report.json"], "w") as f:
        json.dump({"settings": asdict(settings), "machine": machine_info(), "rows": [asdict(r) for r in rows],
                   "info": info, "seconds": seconds}, f, indent=2)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.barh([r.name for r in rows][::-1], [r.top1 for r in rows][::-1], color="tab:blue")
    ax.axvline(rows[0].top1, color="k", lw=0.8, ls="--")
    ax.set_xlim(max(0.0, min(r.top1 for r in rows) - 5), 100)
    ax.set_xlabel("top-1 % (held-out digits)")
    ax.set_title("DigitsTransformer: compressed variants", fontsize=10)
    fig.tight_layout()
    fig.savefig(paths["top1.png"], dpi=120)
    plt.close(fig)
    return paths


def add_arguments(parser) -> None:
    d = TransformerSettings()
    parser.add_argument("--steps", type=int, default=d.steps, help="fp32 training steps (cached checkpoint)")
    parser.add_argument("--finetune-steps", type=int, default=d.finetune_steps)
    parser.add_argument("--qat-steps", type=int, default=d.qat_steps)
    parser.add_argument("--out", default=d.out)
    parser.add_argument("--cache-dir", default=None, help="fp32 checkpoint cache (default ~/.cache/compress_kernels)")
    parser.add_argument("--no-progress", action="store_true")


def main(args) -> int:
    settings = TransformerSettings(steps=args.steps, finetune_steps=args.finetune_steps, qat_steps=args.qat_steps,
                                   out=args.out, cache_dir=args.cache_dir, progress=not args.no_progress)
    start = time.perf_counter()
    rows, info = run(settings)
    seconds = time.perf_counter() - start
    paths = write_reports(rows, info, settings, seconds)
    print(f"\nTransformer study: DigitsTransformer on the digits ({info['test_images']} held-out images), "
          f"{seconds:.1f} s\n")
    print(format_rows(rows))
    print(f"\nQAT integer model == exact mode bit for bit: {info['qat_converts_exactly']}")
    print("wrote " + ", ".join(paths.values()))
    return 0
