"""CodebookLinear / CodebookConv2d: k-means weight sharing (Deep Compression) on the fused
codebook-lookup kernels.

The stored model is what the kernels read: b-bit indices bit-packed by ``codebook_pack``
(buffer ``packed_idx``), a small fp32 codebook per layer or per group of output channels
(parameter ``codebook`` [G, 2^b]) and the bias. No float weight is kept or materialized.

Fine-tuning (Deep Compression's centroid update): the indices are fixed; ``codebook`` and ``bias``
are ordinary parameters and the ops' autograd gives ``d loss / d codebook[g, c]`` = the sum of
``d loss / d W[n, k]`` over the members of entry c (see ``compress_kernels.ops.codebook_linear``).
Entries flagged in ``zero_mask`` (the dedicated zero centroid of pruned weights) are forced to
exactly 0 in every forward pass, so pruned weights stay pruned whatever the optimizer does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import numerics, ops
from ..cluster import cluster_weight
from ._common import Float32State


class _CodebookBase(Float32State):
    """Floating-point dtype conversions (.half(), .double(), ...) keep the codebook and bias in fp32
    (the kernels read fp32 codebooks); the layers compute in fp32 and return the input's dtype."""

    bits: int
    out_channels_: int
    depth_: int  # K: weights per output channel

    def _init_storage(self, out_channels: int, depth: int, bits: int, codebooks: int, bias: bool) -> None:
        if not 1 <= bits <= 8:
            raise ValueError(f"{type(self).__name__}: bits must be in [1, 8], got {bits}")
        if codebooks < 1 or out_channels % codebooks != 0:
            raise ValueError(f"{type(self).__name__}: codebooks={codebooks} must divide the {out_channels} "
                             "output channels")
        self.bits, self.out_channels_, self.depth_ = bits, out_channels, depth
        # Zeros until _set_clusters or load_state_dict fills it: no pack header, so the ops refuse
        # the layer until then instead of computing with made-up indices.
        self.register_buffer("packed_idx", torch.zeros(ops.packed_shape("codebook_pack", out_channels, depth, bits),
                                                       dtype=torch.int32))
        self.codebook = nn.Parameter(torch.zeros(codebooks, 1 << bits))
        self.register_buffer("zero_mask", torch.zeros(codebooks, 1 << bits, dtype=torch.bool))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def _set_clusters(self, codebook: torch.Tensor, idx: torch.Tensor, zero_centroid: bool,
                      bias: torch.Tensor | None) -> None:
        with torch.no_grad():
            self.packed_idx.copy_(ops.codebook_pack(idx.reshape(self.out_channels_, -1), self.bits))
            self.codebook.copy_(codebook)
            self.zero_mask.zero_()
            self.zero_mask[:, 0] = zero_centroid  # the dedicated zero centroid holds the pruned weights
            if bias is not None:
                self.bias.copy_(bias.detach().float())

    # `bits` fixes how packed_idx is read: a state packed with other bits could have the same shape and
    # would decode to garbage, so it is saved and must match at load_state_dict.
    def get_extra_state(self):
        return {"bits": self.bits}

    def set_extra_state(self, state):
        pass  # checked by _load_from_state_dict (it must match the module's)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        from ._common import ExtraStateChecker, check_state_tensors

        # packed_idx is what the kernels read, header included (csrc/include/ck/packed_header.h). A
        # state dict saved before packs had a header holds [N, W] without the header rows: refused
        # here, at load, naming the fix. A right-shaped packed_idx whose header is wrong (another
        # layer's indices, a corrupted file) is refused by the first forward, where the op reads it.
        key = prefix + "packed_idx"
        if key in state_dict and isinstance(state_dict[key], torch.Tensor):
            got, want = tuple(state_dict[key].shape), tuple(self.packed_idx.shape)
            if got != want:
                legacy = got == (self.out_channels_, ops.codebook_words_per_row(self.depth_, self.bits))
                why = ("it was saved by an older packed layout without a header" if legacy else
                       "it does not belong to this layer")
                raise RuntimeError(
                    f"{type(self).__name__}.load_state_dict: {key} has shape {list(got)}, expected {list(want)} "
                    f"(codebook_pack of {self.out_channels_} x {self.depth_} {self.bits}-bit indices with its header "
                    f"rows): {why}; rebuild the layer with from_float (or repack its indices with "
                    f"compress_kernels.codebook_pack) and save it again")
        if prefix + "_extra_state" in state_dict:
            check = ExtraStateChecker(self, prefix, state_dict[prefix + "_extra_state"], {"bits"})
            check.int("bits", 1, 8)
            check.equal("bits", self.bits, "build it with bits=...")
        check_state_tensors(self, prefix, state_dict, exact={"packed_idx": torch.int32, "zero_mask": torch.bool})
        super()._load_from_state_dict(state_dict, prefix, *args)

    def effective_codebook(self) -> torch.Tensor:
        """The codebook the kernel uses: pinned zero entries forced to exactly 0."""
        # unconditional (a [G, 2^bits] select costs nothing) so torch.compile sees no data-dependent branch
        return torch.where(self.zero_mask, torch.zeros((), device=self.codebook.device), self.codebook)

    def indices(self) -> torch.Tensor:
        """uint8 codebook indices [out_channels, K]."""
        return ops.codebook_unpack(self.packed_idx, self.bits, self.depth_)

    def reconstructed_weight(self) -> torch.Tensor:
        """codebook[g(n), idx[n, k]] as a dense weight, differentiable in the codebook (training)."""
        idx = self.indices().long()
        group = torch.arange(self.out_channels_, device=idx.device) // (self.out_channels_ // self.codebook.shape[0])
        return self.effective_codebook()[group[:, None], idx].view(self.weight_shape)

    def dequantized_weight(self) -> torch.Tensor:
        """The dense weight the packed indices and the codebook stand for (one codebook_decode pass):
        what the dense evaluation path of CodebookConv2d computes with, and what the kernels stand for."""
        return ops.codebook_decode(self.packed_idx, self.effective_codebook().detach(), self.bits,
                                   self.depth_).view(self.weight_shape)

    def stored_bytes(self) -> int:
        """Bytes actually stored: packed indices + codebooks (+ their zero flags) + bias."""
        n = self.packed_idx.numel() * 4 + self.codebook.numel() * 4 + self.zero_mask.numel()
        return n + (self.bias.numel() * 4 if self.bias is not None else 0)

    def fp32_bytes(self) -> int:
        """Bytes of the fp32 layer this replaces (weight + bias)."""
        return 4 * (self.out_channels_ * self.depth_ + (self.out_channels_ if self.bias is not None else 0))


class CodebookLinear(_CodebookBase):
    """nn.Linear with k-means shared weights: W[n, k] = codebook[n // (N // G), idx[n, k]], the lookup
    fused into the matmul kernel. Any leading dimensions; the output has x's dtype (bf16 x on CPU runs
    the bf16 kernel: the codebook rounded to bf16, fp32 sums, AMX tiles from 8-16 rows; other dtypes
    run in fp32)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 4,
                 codebooks: int = 1):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_shape = (out_features, in_features)
        self._init_storage(out_features, in_features, bits, codebooks, bias)

    @classmethod
    def from_float(cls, linear: nn.Linear, bits: int = 4, granularity: str = "layer",
                   group_size: int | None = None, **cluster_args) -> CodebookLinear:
        """Cluster a float nn.Linear's weight (compress_kernels.cluster.cluster_weight):
        granularity "layer" (one codebook) or "group" (one per ``group_size`` output features);
        cluster_args: init, seed, zero_centroid (default: on when >= 1% of weights are exact zeros).
        A NaN or infinite weight or bias is refused (ValueError naming the layer and the first bad
        index): k-means would turn it into a NaN centroid shared by many weights."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"CodebookLinear.from_float: expected nn.Linear, got {type(linear).__name__}")
        _check_float_layer(linear, f"CodebookLinear.from_float({linear!r})")
        codebook, idx, zero_centroid = _cluster(linear.weight.detach(), bits, granularity, group_size, cluster_args)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, bits=bits,
                codebooks=codebook.shape[0])
        q._set_clusters(codebook, idx, zero_centroid, linear.bias)
        return q.to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if not (x2.dtype == torch.bfloat16 and x2.device.type == "cpu"):
            x2 = x2.float()  # bf16 x on CPU runs the bf16 kernel (AMX tiles; see ops.codebook_linear)
        bias = self.bias.float() if self.bias is not None else None
        y = ops.codebook_linear(x2, self.packed_idx, self.effective_codebook().float(), self.bits, bias)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, bits={self.bits}, codebooks={self.codebook.shape[0]}")


def _check_float_layer(layer: nn.Module, where: str) -> None:
    numerics.check_finite(layer.weight, "weight", where)
    if layer.bias is not None:
        numerics.check_finite(layer.bias, "bias", where)


def _cluster(weight: torch.Tensor, bits: int, granularity: str, group_size: int | None, cluster_args: dict):
    """cluster_weight with the zero-centroid decision made explicit (so the module can pin it)."""
    args = dict(cluster_args)
    zero_centroid = args.pop("zero_centroid", None)
    if zero_centroid is None:
        zero_centroid = int(torch.count_nonzero(weight == 0)) >= 0.01 * weight.numel()
    codebook, idx = cluster_weight(weight, bits, granularity=granularity, group_size=group_size,
                                   zero_centroid=bool(zero_centroid), **args)
    return codebook, idx, bool(zero_centroid)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class CodebookConv2d(_CodebookBase):
    """nn.Conv2d with k-means shared weights, on the fused codebook conv kernel (im2col + the
    codebook linear kernel). Supports stride, zero padding, dilation and groups where
    out_channels / groups is a multiple of 16 (or groups == 1); refuses depthwise convolutions,
    string padding other than "valid", and padding modes other than "zeros"."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, bits: int = 4, codebooks: int = 1):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"CodebookConv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        if groups > 1 and (out_channels // groups) % 16:
            raise ValueError(f"CodebookConv2d: with groups > 1, out_channels / groups must be a multiple of 16, "
                             f"got {out_channels // groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation, self.groups = _pair(padding), _pair(dilation), groups
        self.weight_shape = (out_channels, in_channels // groups, *self.kernel_size)
        depth = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        self._init_storage(out_channels, depth, bits, codebooks, bias)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, bits: int = 4, granularity: str = "layer",
                   group_size: int | None = None, **cluster_args) -> CodebookConv2d:
        """Cluster a float nn.Conv2d's weight; arguments and refusals as CodebookLinear.from_float."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"CodebookConv2d.from_float: expected nn.Conv2d, got {type(conv).__name__}")
        _check_float_layer(conv, f"CodebookConv2d.from_float({conv!r})")
        if conv.padding_mode != "zeros":
            raise ValueError(f'CodebookConv2d.from_float: padding_mode must be "zeros", got {conv.padding_mode!r}')
        padding = conv.padding
        if isinstance(padding, str):
            if padding != "valid":
                raise ValueError(f'CodebookConv2d.from_float: string padding {padding!r} is not supported '
                                 '(use explicit integers)')
            padding = 0
        if conv.groups > 1 and (conv.out_channels // conv.groups) % 16:
            raise ValueError("CodebookConv2d.from_float: with groups > 1, out_channels / groups must be a "
                             f"multiple of 16, got {conv.out_channels // conv.groups}")
        codebook, idx, zero_centroid = _cluster(conv.weight.detach(), bits, granularity, group_size, cluster_args)
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding, conv.dilation,
                conv.groups, conv.bias is not None, bits=bits, codebooks=codebook.shape[0])
        q._set_clusters(codebook, idx, zero_centroid, conv.bias)
        return q.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            # Training: the backward needs the dense d loss / d W (a full convolution) whatever the
            # forward does, so the forward uses the dense reconstruction too and the fast dense conv;
            # autograd through codebook[g, idx] gives each entry the sum of its members' gradients.
            return F.conv2d(x.float(), self.reconstructed_weight(), self.bias, self.stride, self.padding,
                            self.dilation, self.groups).to(x.dtype)
        if self.uses_dense_conv(x):
            y = F.conv2d(x if x.dtype == torch.float32 else x.float(), self._dense_weight(), self.bias, self.stride,
                         self.padding, self.dilation, self.groups)
            return y if y.dtype == x.dtype else y.to(x.dtype)
        y = ops.codebook_conv2d(x.float(), self.packed_idx, self.effective_codebook(), self.bits, self.bias,
                                self.kernel_size, self.stride, self.padding, self.dilation, self.groups)
        return y.to(x.dtype)

    # The evaluation forward runs torch's dense conv on the decoded weight instead of the fused codebook kernel
    # (im2col + lookup matmul) for a layer of at most DENSE_CACHE_MAX_WEIGHTS values at any size, and for a
    # larger one from DENSE_CONV_MIN_PIXELS output pixels (batch x OH x OW) on. The small layer keeps its decoded
    # weight between evaluation calls (256 KiB in fp32 at most): at batch 1 its decode and the glue around it cost
    # as much as its conv. A larger layer keeps only its packed indices (bits / 32 of the fp32 bytes) and decodes
    # per call (codebook_decode, about 0.5 ns per weight), which pays only next to a large conv. Measured
    # (Sapphire Rapids, 2 threads, batch 1, 3x3 convs, fused / decode + conv / fp32 us): 8 -> 8 @ 32x32
    # 106 / 48 / 30; 16 -> 16 @ 16x16 83 / 46 / 26; 32 -> 32 @ 8x8 61 / 46 / 23; 64 -> 64 @ 4x4 53 / 65 / 25;
    # 128 -> 128 @ 16x16 537 / 383 / 304; 256 -> 256 @ 8x8 471 / 634 / 389; 512 -> 512 @ 4x4 402 / 1109 / 396.
    # The cache is keyed on the version counters and storage of the codebook, zero mask and packed indices, so
    # any change to them (a fine-tuning step, load_state_dict, .to()) decodes again; it is not module state (not
    # in the state dict) and is not used while compiling.
    DENSE_CONV_MIN_PIXELS = 256
    DENSE_CACHE_MAX_WEIGHTS = 65536

    def _dense_weight(self) -> torch.Tensor:
        """dequantized_weight(), cached for small layers (DENSE_CACHE_MAX_WEIGHTS)."""
        if self.out_channels_ * self.depth_ > self.DENSE_CACHE_MAX_WEIGHTS or torch.compiler.is_compiling():
            return self.dequantized_weight()
        # (read from the module's dicts directly: nn.Module.__getattr__ would cost more than the check itself)
        cb, zm, pk = self._parameters["codebook"], self._buffers["zero_mask"], self._buffers["packed_idx"]
        try:
            key = (cb._version, cb.data_ptr(), zm._version, zm.data_ptr(), pk._version, pk.data_ptr())
        except RuntimeError:  # inference-mode tensors have no version counter: no cache
            return self.dequantized_weight()
        cached = self.__dict__.get("_dense_cache")
        if cached is None or cached[0] != key:
            cached = (key, self.dequantized_weight())
            self.__dict__["_dense_cache"] = cached
        return cached[1]

    def uses_dense_conv(self, x: torch.Tensor) -> bool:
        """Whether forward(x) (evaluation) runs F.conv2d on the decoded weight: on the CPU for a weight of at
        most DENSE_CACHE_MAX_WEIGHTS values (decoded once), else from DENSE_CONV_MIN_PIXELS output pixels on.
        Its result is then exactly F.conv2d(x, dequantized_weight(), bias, ...) (torch's fp32 conv, within
        fp32 rounding of reference.codebook_conv2d like the fused kernel, but not bit-identical to it);
        otherwise the codebook_conv2d op's bits."""
        if x.is_cuda or x.dim() != 4:
            return False
        if self.out_channels_ * self.depth_ <= self.DENSE_CACHE_MAX_WEIGHTS:
            return True
        oh = (x.shape[2] + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        ow = (x.shape[3] + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        return x.shape[0] * oh * ow >= self.DENSE_CONV_MIN_PIXELS

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}, bits={self.bits}, codebooks={self.codebook.shape[0]}")


def codebook_size_report(model: nn.Module) -> dict:
    """Bytes actually stored by the codebook layers of `model` (packed indices + codebooks + zero
    flags + biases) against the fp32 layers they replace: {"layers": [(name, stored, fp32)],
    "stored_bytes", "fp32_bytes", "ratio"}."""
    layers = [(name, m.stored_bytes(), m.fp32_bytes()) for name, m in model.named_modules()
              if isinstance(m, _CodebookBase)]
    stored = sum(s for _, s, _ in layers)
    fp32 = sum(f for _, _, f in layers)
    return {"layers": layers, "stored_bytes": stored, "fp32_bytes": fp32,
            "ratio": fp32 / stored if stored else float("nan")}


def finetune_codebooks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 1,
                       codebook_lr: float = 1e-4, other_lr: float = 1e-3, batch_size: int = 64,
                       seed: int = 0) -> nn.Module:
    """Deep Compression's centroid fine-tuning: indices fixed, cross-entropy on (x, y), the shared
    values (``codebook``), biases and the other trainable parameters (e.g. BatchNorm) updated.

    Adam rather than SGD: a centroid's gradient is the *sum* of its members' gradients, so its scale
    grows with the cluster size (thousands of weights per entry in a conv layer) and differs by
    orders of magnitude between layers; Adam's per-parameter normalization makes one learning rate
    work for every layer. Returns the model in eval mode."""
    codebooks = [p for n, p in model.named_parameters() if n.endswith("codebook") and p.requires_grad]
    others = [p for n, p in model.named_parameters() if not n.endswith("codebook") and p.requires_grad]
    opt = torch.optim.Adam([{"params": codebooks, "lr": codebook_lr}, {"params": others, "lr": other_lr}])
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model
