"""ONNX export of converted models, written with the `onnx` package.

    report = ck.export.to_onnx(int_model, (x,), "model.onnx", form="exact")   # or form="fast"
    print(report)                                                           # what became which ONNX ops

Integer-only int8 models (``convert_(model, Int8StaticConfig())`` or a converted QAT graph) export in two forms:

* ``form="exact"``: the int32 accumulation is ``ConvInteger`` / ``MatMulInteger`` and everything after it is
  written in ONNX integer arithmetic on int64 (``Mul`` / ``Add`` / ``Div`` / ``Less`` / ``Where`` / ``Clip``), so an
  ONNX runtime computes our integers bit for bit: the bias add (wrapped to int32 where it could overflow), the
  fixed-point requantization with gemmlowp double rounding or TFLite single rounding, the zero point and the
  clamp; the residual add is TFLite's ADD in the same arithmetic; the model input is quantized with an explicit
  ``Div`` / ``Round`` (half to even) / clamp, the output dequantized with ``Sub`` / ``Mul`` in fp32. Every
  integer ``Div`` has a non-negative dividend (an offset that is a multiple of the divisor is added first and
  taken off after) or is ``(v - Mod(v, d)) / d`` (``Mod`` with fmod=0 takes the divisor's sign), so a floor
  division never depends on the runtime's rounding of negative quotients. Convolution padding is an explicit
  ``Pad`` with the input zero point (the ONNX spec does not say what ``ConvInteger`` pads with).
* ``form="fast"``: ``QLinearConv``; ``MatMulInteger`` + int32 bias + one float multiply + ``QuantizeLinear`` for
  linear layers; ``DequantizeLinear`` / ``Add`` / ``QuantizeLinear`` for the residual add (ONNX Runtime fuses
  it into its QLinearAdd); ``QuantizeLinear`` / ``DequantizeLinear`` at the edges. These requantize in float
  (``round_half_even(acc * s_x s_w / s_y)``), not with our fixed-point multiplier, so an output can be one
  step away from ours, and a step early in the network can move later ones.

Pooling is the same in both forms: ``MaxPool`` on the integers, and the average pool as an integer window sum
(``ReduceSum`` for the global one; a ones-kernel depthwise ``Conv`` in fp32 for windows, exact below 2^24)
divided rounding half up, exactly as ``QuantAvgPool2d``.

Float layers export as float ONNX (``Conv``, ``Gemm`` / ``MatMul``, ``BatchNormalization``, ``Relu`` ...), so
a model converted with ``CodebookConfig`` or ``Sparse24Config()`` exports too: a k-means codebook layer as its
decoded fp32 weight (the file holds the dense weight; the report warns) and a 2:4 layer as its dense weight
(ONNX has no 2:4); outputs then equal ours within fp32 rounding, not bit for bit. ``QuantConv2d`` /
``QuantLinear`` in 2:4 mode export their dense int8 weight (the same integers). Dynamic int8 layers
(``Int8DynamicConfig``, ``Sparse24Config(int8=True)``) and anything else without a mapping are refused with
an :class:`OnnxExportError` naming the node and the module.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

FORMS = ("exact", "fast")
MIN_OPSET = 13  # ReduceSum with axes as an input; integer Clip
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class OnnxExportError(ValueError):
    """The model holds something to_onnx cannot write as ONNX (the message names the node and module)."""


@dataclass
class OnnxExportReport:
    """What to_onnx wrote: `mapped` lists (node, what it was, the ONNX ops it became) in graph order;
    `warnings` what the file does not preserve (codebook layers stored decoded, 2:4 layers dense)."""

    path: str
    form: str
    opset: int
    mapped: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"ONNX ({self.form} form, opset {self.opset}) written to {self.path}: {len(self.mapped)} node(s)"]
        lines += [f"  {name}: {what} -> {ops}" for name, what, ops in self.mapped]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


_NP = {torch.uint8: np.uint8, torch.int8: np.int8, torch.int32: np.int32, torch.int64: np.int64,
       torch.float32: np.float32}


def _onnx_type(dtype: torch.dtype) -> int:
    from onnx import TensorProto

    types = {torch.uint8: TensorProto.UINT8, torch.int8: TensorProto.INT8, torch.int32: TensorProto.INT32,
             torch.int64: TensorProto.INT64, torch.float32: TensorProto.FLOAT}
    return types[dtype]


class _Builder:
    """ONNX nodes and initializers, with unique names and shared constants."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self._names: set[str] = set()
        self._constants: dict = {}

    def name(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in hint) or "v"
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def const(self, value, dtype, hint: str = "c") -> str:
        """An initializer holding `value` as numpy dtype `dtype` (scalars and small tensors are shared)."""
        from onnx import numpy_helper

        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 64 else None
        if key is not None and key in self._constants:
            return self._constants[key]
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._constants[key] = name
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        from onnx import helper

        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(f"{hint}_{op_type}"), **attrs))
        return out

    # ------------------------------------------------------------ exact integer arithmetic on int64

    def floor_div(self, v: str, divisor: np.ndarray, hint: str) -> str:
        """floor(v / d) for int64 v and positive int64 constants d (broadcast): (v - Mod(v, d)) / d, where
        Mod (fmod=0) has the divisor's sign, so the division is exact whatever Div's rounding."""
        d = self.const(divisor, np.int64, "divisor")
        return self.op("Div", [self.op("Sub", [v, self.op("Mod", [v, d], hint, fmod=0)], hint), d], hint)

    def clip(self, v: str, lo, hi, dtype, hint: str) -> str:
        return self.op("Clip", [v, self.const(lo, dtype, "lo"), self.const(hi, dtype, "hi")], hint)

    def wrap_int32(self, v: str, hint: str) -> str:
        """The int32 value with v's low 32 bits (the accumulator's wrap-around), on int64."""
        shifted = self.op("Add", [v, self.const(2**31, np.int64, "two31")], hint)
        wrapped = self.op("Mod", [shifted, self.const(2**32, np.int64, "two32")], hint, fmod=0)
        return self.op("Sub", [wrapped, self.const(2**31, np.int64, "two31")], hint)

    def requantize(self, acc: str, m0: np.ndarray, shift: np.ndarray, zero_point: int, qmin: int, qmax: int,
                   out_dtype: torch.dtype, rounding: str, hint: str) -> str:
        """reference.requantize on an int64 accumulator holding int32 values; m0 / shift already shaped to
        broadcast against it (one per tensor or per channel)."""
        m0, shift = m0.astype(np.int64), shift.astype(np.int64)
        if rounding == "double":
            left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
            x = acc
            if (left > 0).any():  # saturating left shift
                x = self.op("Mul", [x, self.const(np.left_shift(1, left), np.int64, "pow2")], hint)
                x = self.clip(x, INT32_MIN, INT32_MAX, np.int64, hint)
            # SaturatingRoundingDoublingHighMul(x, m0): (x m0 + nudge) / 2^31 truncated, nudge 2^30 or 1 - 2^30 by
            # the sign of x m0, equals floor((x m0 + 2^30) / 2^31) (ties toward +inf); it cannot saturate
            # (m0 >= 0). |x m0| < 2^62, so adding 2^62 makes the dividend non-negative and keeps it below 2^63:
            # high = SRDHM + 2^31, in [0, 2^32).
            high = self.op("Div", [self.op("Add", [self.op("Mul", [x, self.const(m0, np.int64, "m0")], hint),
                                                   self.const(2**30 + 2**62, np.int64, "srdhm_nudge")], hint),
                                   self.const(2**31, np.int64, "two31")], hint)
            if (right > 0).any():
                # RoundingDivideByPOT(h, e), ties away from zero: floor((h + 2^(e-1) - [h < 0]) / 2^e) for e >= 1,
                # h for e = 0. With high = h + 2^31 and 2^31 more in the nudge the dividend h + nudge + 2^32 is
                # non-negative; the quotient carries + 2^(32 - e), taken off with the zero point.
                half = np.where(right > 0, np.left_shift(1, np.maximum(right - 1, 0)), 0)
                negative = self.op("Less", [high, self.const(2**31, np.int64, "two31")], hint)
                nudge = self.op("Where", [negative, self.const(half - (right > 0) + 2**31, np.int64, "nudge_neg"),
                                          self.const(half + 2**31, np.int64, "nudge_pos")], hint)
                value = self.op("Div", [self.op("Add", [high, nudge], hint),
                                        self.const(np.left_shift(1, right), np.int64, "pow2")], hint)
                offset = np.left_shift(1, 32 - right)
            else:
                value, offset = high, np.int64(2**31)
            value = self.op("Add", [value, self.const(zero_point - offset, np.int64, "zp_offset")], hint)
        elif rounding == "single":
            # (x m0 + 2^(30 - shift)) >> (31 - shift), saturated to int32; |x m0| < 2^62, so int64 holds it
            total = 31 - shift
            value = self.op("Add", [self.op("Mul", [acc, self.const(m0, np.int64, "m0")], hint),
                                    self.const(np.left_shift(1, total - 1), np.int64, "round")], hint)
            value = self.clip(self.floor_div(value, np.left_shift(1, total), hint), INT32_MIN, INT32_MAX, np.int64,
                              hint)
            value = self.op("Add", [value, self.const(zero_point, np.int64, "zp")], hint)
        else:
            raise OnnxExportError(f"{hint}: rounding {rounding!r} has no ONNX mapping")
        value = self.clip(value, qmin, qmax, np.int64, hint)
        return value if out_dtype == torch.int64 else self.op("Cast", [value], hint, to=_onnx_type(out_dtype))

    def clip_integer(self, v: str, qmin: int, qmax: int, dtype: torch.dtype, hint: str) -> str:
        """Clip an int8 / uint8 tensor to [qmin, qmax] (the fused ReLU / ReLU6), nothing when that is the
        whole range."""
        lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
        return v if (qmin, qmax) == (lo, hi) else self.clip(v, qmin, qmax, _NP[dtype], hint)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _per_channel(t: torch.Tensor, channels: int, axis_shape) -> np.ndarray:
    """A per-tensor (one element) or per-channel qparam as a numpy array broadcasting along `axis_shape`."""
    a = t.detach().cpu().numpy().reshape(-1)
    return a.reshape(axis_shape) if a.size == channels and channels > 1 else a.reshape(())


class _Recorder(fx.Interpreter):
    """Runs the graph on the example inputs and keeps every node's value (shapes and dtypes for the export)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n):
        out = super().run_node(n)
        self.values[n] = out
        return out


class _LeafTracer(fx.Tracer):
    """Keeps the package's modules (and torch.nn's) as single nodes."""

    def is_leaf_module(self, m, qualname):
        return type(m).__module__.startswith("compress_kernels.") or super().is_leaf_module(m, qualname)


def _graph_module(model: nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    try:
        graph = _LeafTracer().trace(model)
    except Exception as err:
        raise OnnxExportError(f"to_onnx: torch.fx cannot trace {type(model).__name__} ({type(err).__name__}: {err}); "
                              "to_onnx exports a traceable model (the Int8StaticConfig / QAT conversions return "
                              "one)") from err
    return fx.GraphModule(model, graph, type(model).__name__)


def _check_arguments(model, example_inputs, path, opset, form):
    import onnx

    if not isinstance(model, nn.Module):
        raise TypeError(f"to_onnx: model must be a torch.nn.Module, got {type(model).__name__}")
    if form not in FORMS:
        raise ValueError(f'to_onnx: form must be "exact" or "fast", got {form!r}')
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"to_onnx: opset must be an int in [{MIN_OPSET}, {newest}] (this onnx package's newest), "
                         f"got {opset!r}")
    if not isinstance(path, (str, bytes)) and not hasattr(path, "__fspath__"):
        raise TypeError(f"to_onnx: path must be a file path, got {type(path).__name__}")
    if not isinstance(example_inputs, tuple) or not example_inputs or not all(
            isinstance(x, torch.Tensor) for x in example_inputs):
        raise TypeError("to_onnx: example_inputs must be a non-empty tuple of tensors (the model's positional "
                        f"inputs), got {type(example_inputs).__name__}")
    for i, x in enumerate(example_inputs):
        if x.dtype not in (torch.float32, torch.uint8, torch.int8) or x.dim() < 1:
            raise ValueError(f"to_onnx: example_inputs[{i}] must be a float32, uint8 or int8 tensor with a batch "
                             f"dimension, got {x.dtype} of shape {tuple(x.shape)}")


def to_onnx(model: nn.Module, example_inputs: tuple, path, opset: int = 17, form: str = "exact") -> OnnxExportReport:
    """Write `model` as an ONNX file at `path` and return the report (see the module docstring for the
    forms and what each preserves). example_inputs: a tuple of the model's positional input tensors (their
    shapes fix every dimension but the first, which is the symbolic batch "N"). The model is checked with
    onnx.checker before it is written. Refused with OnnxExportError (naming the node and module): dynamic
    int8 layers, float ops without a mapping, reshapes of the batch dimension."""
    import onnx
    from onnx import helper

    from .nn.codebook import CodebookConv2d, CodebookLinear
    from .nn.conv import QuantConv2d
    from .nn.integer import DeQuantize, QuantAdd, QuantAvgPool2d, Quantize, QuantMaxPool2d, QuantReLU
    from .nn.linear import QuantLinear
    from .nn.sparse import SparseConv2d, SparseLinear
    from .sparse24_layout import weight_from_rows

    _check_arguments(model, example_inputs, path, opset, form)
    gm = _graph_module(model)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise OnnxExportError(f"to_onnx: the model takes {len(placeholders)} input(s) "
                              f"({', '.join(n.name for n in placeholders)}), example_inputs holds "
                              f"{len(example_inputs)}")
    was_training = gm.training
    gm.eval()
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(*example_inputs)
    finally:
        gm.train(was_training)
    values = recorder.values
    modules = dict(gm.named_modules())
    b = _Builder()
    report = OnnxExportReport(path=str(path), form=form, opset=opset)
    env: dict[fx.Node, str] = {}
    graph_inputs, graph_outputs = [], []

    def value_info(name: str, t: torch.Tensor):
        if t.dtype not in _NP:
            raise OnnxExportError(f"to_onnx: graph input / output {name!r} has dtype {t.dtype}, which has no mapping")
        return helper.make_tensor_value_info(name, _onnx_type(t.dtype), ["N", *t.shape[1:]])

    def refuse(node: fx.Node, why: str):
        mod = modules.get(node.target) if node.op == "call_module" else None
        what = f"module {node.target!r} ({type(mod).__name__})" if mod is not None else (
            f"{node.op} {getattr(node.target, '__name__', node.target)!s}")
        raise OnnxExportError(f"to_onnx: node {node.name!r}, {what}: {why}")

    def arg(node: fx.Node, i: int = 0) -> str:
        a = node.args[i]
        if not isinstance(a, fx.Node) or a not in env:
            refuse(node, f"argument {i} is {a!r}, not a tensor computed by the graph")
        return env[a]

    def int_weight_numpy(layer) -> np.ndarray:
        return layer.weight_q.detach().cpu().numpy().astype(np.int8)  # dense, also in 2:4 mode

    def sparse_note(node, layer):
        if getattr(layer, "sparse24", False):
            report.warnings.append(f"{node.target}: 2:4 sparse int8 layer exported with its dense int8 weight "
                                   "(ONNX has no 2:4 format; same integers, dense size and speed)")

    def integer_conv(node, layer: QuantConv2d, x: str, hint: str) -> str:
        w = int_weight_numpy(layer)
        n_out = w.shape[0]
        pads = [*layer.padding, *layer.padding]
        common = dict(strides=list(layer.stride), dilations=list(layer.dilation), group=layer.groups)
        in_np = _NP[layer.input_dtype]
        if form == "exact":
            if any(pads):
                x = b.op("Pad", [x, b.const([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64, "pads"),
                                 b.const(layer.input_zero_point, in_np, "x_zp")], hint, mode="constant")
            acc = b.op("ConvInteger", [x, b.const(w, np.int8, f"{hint}_w"),
                                       b.const(layer.input_zero_point, in_np, "x_zp")], hint, **common)
            bias = None if layer.bias_q is None else layer.bias_q.detach().cpu().numpy().astype(np.int64)
            k = w[0].size
            return exact_epilogue(node, layer, acc, bias, k, (1, n_out, 1, 1), hint)
        w_scale = layer.weight_scale.detach().cpu().numpy().astype(np.float32).reshape(-1)
        inputs = [x, b.const(float(layer.input_scale), np.float32, "x_scale"),
                  b.const(layer.input_zero_point, in_np, "x_zp"), b.const(w, np.int8, f"{hint}_w"),
                  b.const(w_scale if w_scale.size > 1 else w_scale.reshape(()), np.float32, f"{hint}_w_scale"),
                  b.const(np.zeros(w_scale.shape if w_scale.size > 1 else (), np.int8), np.int8, "w_zp"),
                  b.const(float(layer.output_scale), np.float32, "y_scale"),
                  b.const(layer.output_zero_point, _NP[layer.output_dtype], "y_zp")]
        if layer.bias_q is not None:
            inputs.append(b.const(layer.bias_q.detach().cpu().numpy().astype(np.int32), np.int32, f"{hint}_bias"))
        y = b.op("QLinearConv", inputs, hint, pads=pads, **common)
        return b.clip_integer(y, layer.qmin, layer.qmax, layer.output_dtype, hint)

    def exact_epilogue(node, layer, acc32: str, bias, k: int, channel_shape, hint: str) -> str:
        acc = b.op("Cast", [acc32], hint, to=_onnx_type(torch.int64))
        if bias is not None:
            acc = b.op("Add", [acc, b.const(bias.reshape(channel_shape), np.int64, f"{hint}_bias")], hint)
            # the kernels wrap acc + bias to int32 like hardware: wrap where it could leave int32
            lo, hi = (-128, 127) if layer.input_dtype == torch.int8 else (0, 255)
            span = max(abs(lo - layer.input_zero_point), abs(hi - layer.input_zero_point))
            w_max = int(np.abs(int_weight_numpy(layer)).max()) if layer.weight_q.numel() else 0
            if k * span * w_max + int(np.abs(bias).max(initial=0)) > INT32_MAX:
                acc = b.wrap_int32(acc, hint)
        channels = int(np.prod(channel_shape))
        m0 = _per_channel(layer.m0, channels, channel_shape)
        shift = _per_channel(layer.shift, channels, channel_shape)
        return b.requantize(acc, m0, shift, layer.output_zero_point, layer.qmin, layer.qmax, layer.output_dtype,
                            layer.rounding, hint)

    def integer_linear(node, layer: QuantLinear, x: str, hint: str) -> str:
        if layer.mode != "static":
            refuse(node, "a dynamic int8 layer (Int8DynamicConfig) quantizes its input per row at run time; "
                         "to_onnx maps integer-only models (Int8StaticConfig / QAT): convert with one of them")
        w_t = int_weight_numpy(layer).T.copy()  # [K, N]
        n_out = w_t.shape[1]
        in_np = _NP[layer.input_dtype]
        acc = b.op("MatMulInteger", [x, b.const(w_t, np.int8, f"{hint}_w"),
                                     b.const(layer.input_zero_point, in_np, "x_zp")], hint)
        bias = None if layer.bias_q is None else layer.bias_q.detach().cpu().numpy()
        if form == "exact":
            return exact_epilogue(node, layer, acc, None if bias is None else bias.astype(np.int64), w_t.shape[0],
                                  (n_out,), hint)
        if layer.output_dtype not in (torch.uint8, torch.int8):
            refuse(node, f"the fast form writes uint8 / int8 outputs, this layer's is {layer.output_dtype}; use "
                         'form="exact"')
        if bias is not None:
            acc = b.op("Add", [acc, b.const(bias.astype(np.int32), np.int32, f"{hint}_bias")], hint)
        # the real multiplier our fixed-point (m0, shift) stands for, applied in float
        real = layer.m0.double() * torch.pow(2.0, layer.shift.double() - 31)
        real = real.numpy().astype(np.float32).reshape(-1) if real.numel() > 1 else np.float32(real.item())
        scaled = b.op("Mul", [b.op("Cast", [acc], hint, to=_onnx_type(torch.float32)),
                              b.const(real, np.float32, f"{hint}_multiplier")], hint)
        y = b.op("QuantizeLinear", [scaled, b.const(1.0, np.float32, "one"),
                                    b.const(layer.output_zero_point, _NP[layer.output_dtype], "y_zp")], hint)
        return b.clip_integer(y, layer.qmin, layer.qmax, layer.output_dtype, hint)

    def integer_add(node, add: QuantAdd, a: str, c: str, hint: str) -> str:
        za, zb, zy = add.zero_points
        dtype_a, dtype_b = values[node.args[0]].dtype, values[node.args[1]].dtype
        if form == "exact":
            def rescaled(x, z, m0, shift):
                v = b.op("Cast", [x], hint, to=_onnx_type(torch.int64))
                v = b.op("Mul", [b.op("Sub", [v, b.const(z, np.int64, "zp")], hint),
                                 b.const(1 << add.LEFT_SHIFT, np.int64, "left")], hint)
                return b.requantize(v, m0.numpy().reshape(()), shift.numpy().reshape(()), 0, INT32_MIN, INT32_MAX,
                                    torch.int64, "double", hint)

            total = b.op("Add", [rescaled(a, za, add.m0_a, add.shift_a), rescaled(c, zb, add.m0_b, add.shift_b)],
                         hint)
            # the kernel's int32 sum wraps; |(x - z) << 20| < 2^29 scaled by each multiplier (+1 for the rounding)
            bound = sum(383 * 2**add.LEFT_SHIFT * int(m0) * 2.0 ** (int(shift) - 31) + 1
                        for m0, shift in ((add.m0_a, add.shift_a), (add.m0_b, add.shift_b)))
            if bound > INT32_MAX:
                total = b.wrap_int32(total, hint)
            return b.requantize(total, add.m0_out.numpy().reshape(()), add.shift_out.numpy().reshape(()), zy,
                                add.qmin, add.qmax, add.output_dtype, "double", hint)
        s_a, s_b, s_y = (float(s) for s in add.scales)
        fa = b.op("DequantizeLinear", [a, b.const(s_a, np.float32, "scale"), b.const(za, _NP[dtype_a], "zp")], hint)
        fb = b.op("DequantizeLinear", [c, b.const(s_b, np.float32, "scale"), b.const(zb, _NP[dtype_b], "zp")], hint)
        y = b.op("QuantizeLinear", [b.op("Add", [fa, fb], hint), b.const(s_y, np.float32, "scale"),
                                    b.const(zy, _NP[add.output_dtype], "zp")], hint)
        return b.clip_integer(y, add.qmin, add.qmax, add.output_dtype, hint)

    def integer_avg_pool(node, pool: QuantAvgPool2d, x: str, hint: str) -> str:
        dtype = values[node.args[0]].dtype
        if pool.kernel_size is None:
            total = b.op("ReduceSum", [b.op("Cast", [x], hint, to=_onnx_type(torch.int64)),
                                       b.const([2, 3], np.int64, "axes_hw")], hint, keepdims=1)
            shape = values[node.args[0]].shape
            count = shape[2] * shape[3]
        else:
            (kh, kw), (sh, sw) = _pair(pool.kernel_size), _pair(pool.stride)
            channels = values[node.args[0]].shape[1]
            # window sums of integers below 2^24 are exact in fp32
            ones = b.const(np.ones((channels, 1, kh, kw), np.float32), np.float32, f"{hint}_ones")
            sums = b.op("Conv", [b.op("Cast", [x], hint, to=_onnx_type(torch.float32)), ones], hint,
                        kernel_shape=[kh, kw], strides=[sh, sw], group=channels)
            total = b.op("Cast", [sums], hint, to=_onnx_type(torch.int64))
            count = kh * kw
        twice = b.op("Add", [b.op("Mul", [total, b.const(2, np.int64, "two")], hint),
                             b.const(count, np.int64, "count")], hint)
        return b.op("Cast", [b.floor_div(twice, np.int64(2 * count), hint)], hint, to=_onnx_type(dtype))

    def max_pool(node, pool: nn.MaxPool2d, x: str, hint: str) -> str:
        if pool.return_indices:
            refuse(node, "return_indices=True has no mapping")
        (kh, kw), (sh, sw) = _pair(pool.kernel_size), _pair(pool.stride if pool.stride is not None else
                                                              pool.kernel_size)
        ph, pw = _pair(pool.padding)
        return b.op("MaxPool", [x], hint, kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, ph, pw],
                    dilations=list(_pair(pool.dilation)), ceil_mode=int(pool.ceil_mode))

    def float_conv(node, w: torch.Tensor, bias, conv, hint: str, x: str) -> str:
        inputs = [x, b.const(w.detach().float().cpu().numpy(), np.float32, f"{hint}_w")]
        if bias is not None:
            inputs.append(b.const(bias.detach().float().cpu().numpy(), np.float32, f"{hint}_b"))
        if isinstance(conv.padding, str) or getattr(conv, "padding_mode", "zeros") != "zeros":
            refuse(node, "only numeric zero padding has a mapping")
        ph, pw = _pair(conv.padding)
        return b.op("Conv", inputs, hint, strides=list(_pair(conv.stride)), pads=[ph, pw, ph, pw],
                    dilations=list(_pair(conv.dilation)), group=int(getattr(conv, "groups", 1)),
                    kernel_shape=list(w.shape[2:]))

    def float_linear(node, w: torch.Tensor, bias, hint: str, x: str) -> str:
        w_t = b.const(w.detach().float().cpu().numpy().T.copy(), np.float32, f"{hint}_w")
        y = b.op("MatMul", [x, w_t], hint)
        if bias is not None:
            y = b.op("Add", [y, b.const(bias.detach().float().cpu().numpy(), np.float32, f"{hint}_b")], hint)
        return y

    def reshape(node, x: str, hint: str) -> str:
        src, out = values[node.args[0]], values[node]
        if out.dim() == 0 or src.dim() == 0 or out.shape[0] != src.shape[0]:
            refuse(node, f"reshapes {tuple(src.shape)} to {tuple(out.shape)}: only reshapes that keep the batch "
                         "dimension first have a mapping")
        return b.op("Reshape", [x, b.const([0, *out.shape[1:]], np.int64, "shape")], hint)

    for node in gm.graph.nodes:
        hint = node.name
        before = len(b.nodes)
        what = None
        mod = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "placeholder":
            index = len(graph_inputs)
            name = b.name(node.name)
            graph_inputs.append(value_info(name, example_inputs[index]))
            env[node] = name
            continue
        if node.op == "output":
            outs = node.args[0] if isinstance(node.args[0], (tuple, list)) else (node.args[0],)
            for i, o in enumerate(outs):
                if not isinstance(o, fx.Node) or not isinstance(values.get(o), torch.Tensor):
                    refuse(node, f"output {i} is {o!r}: only tensors (or a tuple of them) have a mapping")
                name = b.name("output" if len(outs) == 1 else f"output_{i}")
                b.nodes.append(helper.make_node("Identity", [env[o]], [name], name=b.name(f"{name}_Identity")))
                graph_outputs.append(value_info(name, values[o]))
            continue
        if node.op == "get_attr":
            refuse(node, "reads a parameter or buffer directly in the graph; only module calls and tensor "
                         "functions have a mapping")
        if isinstance(mod, Quantize):
            what = "Quantize"
            x = arg(node)
            zp_np = _NP[mod.dtype]
            if form == "exact":
                lo, hi = (0, 255) if mod.dtype == torch.uint8 else (-128, 127)
                r = b.op("Round", [b.op("Div", [x, b.const(float(mod.scale), np.float32, "scale")], hint)], hint)
                r = b.op("Add", [r, b.const(float(mod.zero_point), np.float32, "zp_f")], hint)
                r = b.op("Clip", [r, b.const(float(lo), np.float32, "lo_f"), b.const(float(hi), np.float32, "hi_f")],
                         hint)
                env[node] = b.op("Cast", [r], hint, to=_onnx_type(mod.dtype))
            else:
                env[node] = b.op("QuantizeLinear", [x, b.const(float(mod.scale), np.float32, "scale"),
                                                    b.const(mod.zero_point, zp_np, "zp")], hint)
        elif isinstance(mod, DeQuantize):
            what = "DeQuantize"
            x = arg(node)
            if form == "exact":
                f = b.op("Cast", [x], hint, to=_onnx_type(torch.float32))
                f = b.op("Sub", [f, b.const(float(mod.zero_point), np.float32, "zp_f")], hint)
                env[node] = b.op("Mul", [f, b.const(float(mod.scale), np.float32, "scale")], hint)
            else:
                env[node] = b.op("DequantizeLinear", [x, b.const(float(mod.scale), np.float32, "scale"),
                                                      b.const(mod.zero_point, _NP[values[node.args[0]].dtype],
                                                              "zp")], hint)
        elif isinstance(mod, QuantConv2d):
            what = "QuantConv2d" + (" (2:4)" if mod.sparse24 else "")
            env[node] = integer_conv(node, mod, arg(node), hint)
            sparse_note(node, mod)
        elif isinstance(mod, QuantLinear):
            what = "QuantLinear" + (" (2:4)" if mod.sparse24 else "")
            env[node] = integer_linear(node, mod, arg(node), hint)
            sparse_note(node, mod)
        elif isinstance(mod, QuantAdd):
            what = "QuantAdd"
            env[node] = integer_add(node, mod, arg(node, 0), arg(node, 1), hint)
        elif isinstance(mod, QuantReLU):
            what = "QuantReLU"
            dtype = values[node].dtype
            hi = 255 if dtype == torch.uint8 else 127
            env[node] = b.clip_integer(arg(node), mod.zero_point, hi, dtype, hint)
        elif isinstance(mod, QuantAvgPool2d):
            what = "QuantAvgPool2d"
            env[node] = integer_avg_pool(node, mod, arg(node), hint)
        elif isinstance(mod, nn.MaxPool2d):  # QuantMaxPool2d and the float one: the same ONNX MaxPool
            what = type(mod).__name__
            if not isinstance(mod, QuantMaxPool2d) and values[node.args[0]].dtype != torch.float32:
                refuse(node, "a float MaxPool2d on an integer tensor")
            env[node] = max_pool(node, mod, arg(node), hint)
        elif isinstance(mod, (CodebookConv2d, CodebookLinear)):
            what = type(mod).__name__
            w = mod.dequantized_weight()
            report.warnings.append(f"{node.target}: k-means codebook layer ({mod.bits} bits) exported with its decoded "
                                   "fp32 weight (ONNX has no codebook lookup: the file stores the dense weight; "
                                   "outputs equal ours within fp32 rounding)")
            env[node] = (float_conv(node, w, mod.bias, mod, hint, arg(node)) if isinstance(mod, CodebookConv2d)
                         else float_linear(node, w, mod.bias, hint, arg(node)))
        elif isinstance(mod, (SparseConv2d, SparseLinear)):
            what = type(mod).__name__
            if mod.int8:
                refuse(node, "a 2:4 int8 layer (Sparse24Config(int8=True)) quantizes its input at run time; "
                             "to_onnx maps integer-only models: use Int8StaticConfig(sparse24=True), or the fp32 "
                             "2:4 layers (exported dense)")
            w = mod.dense_weight()
            report.warnings.append(f"{node.target}: 2:4 sparse layer exported with its dense fp32 weight (ONNX has "
                                   "no 2:4 format; outputs equal ours within fp32 rounding)")
            if isinstance(mod, SparseConv2d):
                shape = (mod.out_channels, mod.in_channels, *mod.kernel_size)
                env[node] = float_conv(node, weight_from_rows(w, shape), mod.bias, mod, hint, arg(node))
            else:
                env[node] = float_linear(node, w, mod.bias, hint, arg(node))
        elif type(mod) is nn.Conv2d:
            what = "Conv2d"
            env[node] = float_conv(node, mod.weight, mod.bias, mod, hint, arg(node))
        elif type(mod) is nn.Linear:
            what = "Linear"
            env[node] = float_linear(node, mod.weight, mod.bias, hint, arg(node))
        elif type(mod) is nn.BatchNorm2d:
            what = "BatchNorm2d"
            env[node] = b.op("BatchNormalization", [arg(node)] + [
                b.const(t.detach().float().cpu().numpy(), np.float32, f"{hint}_{k}") for k, t in (
                    ("scale", mod.weight if mod.weight is not None else torch.ones(mod.num_features)),
                    ("bias", mod.bias if mod.bias is not None else torch.zeros(mod.num_features)),
                    ("mean", mod.running_mean), ("var", mod.running_var))], hint, epsilon=float(mod.eps))
        elif (type(mod) in (nn.ReLU, nn.ReLU6) or (node.op == "call_function" and node.target in (F.relu, torch.relu))
              or (node.op == "call_method" and node.target == "relu")):
            if values[node.args[0]].dtype != torch.float32:
                refuse(node, "a float ReLU on an integer tensor")
            what = "ReLU6" if type(mod) is nn.ReLU6 else "ReLU"
            env[node] = (b.op("Clip", [arg(node), b.const(0.0, np.float32, "zero_f"), b.const(6.0, np.float32, "six")],
                              hint) if type(mod) is nn.ReLU6 else b.op("Relu", [arg(node)], hint))
        elif (node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add)
              and len(node.args) == 2 and not node.kwargs and all(isinstance(a, fx.Node) for a in node.args)):
            if any(values[a].dtype != torch.float32 for a in node.args):
                refuse(node, "a float add on integer tensors")
            what = "add"
            env[node] = b.op("Add", [arg(node, 0), arg(node, 1)], hint)
        elif type(mod) is nn.AdaptiveAvgPool2d and mod.output_size in (1, (1, 1)):
            what = "AdaptiveAvgPool2d(1)"
            env[node] = b.op("GlobalAveragePool", [arg(node)], hint)
        elif type(mod) in (nn.Dropout, nn.Identity) or (node.op == "call_method" and node.target == "contiguous"):
            what = "identity"
            env[node] = arg(node)
        elif (type(mod) is nn.Flatten or (node.op == "call_function" and node.target is torch.flatten)
              or (node.op == "call_method" and node.target in ("flatten", "view", "reshape"))):
            what = "reshape"
            env[node] = reshape(node, arg(node), hint)
        else:
            refuse(node, "has no ONNX mapping (integer layers: QuantConv2d, QuantLinear (static), QuantAdd, "
                         "QuantReLU, pools, Quantize / DeQuantize; float: Conv2d, Linear, BatchNorm2d, ReLU, add, "
                         "pools, flatten, codebook and fp32 2:4 layers)")
        ops_used = list(dict.fromkeys(n.op_type for n in b.nodes[before:]))
        report.mapped.append((str(node.target) if node.op == "call_module" else node.name, what,
                              ", ".join(ops_used) or "(no op: the same tensor)"))

    graph = helper.make_graph(b.nodes, type(model).__name__, graph_inputs, graph_outputs, initializer=b.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                   producer_name="compress_kernels")
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.save(onnx_model, path)
    return report
