"""Transformers: a Hugging Face BertModel built from a config (random weights, nothing downloaded) in
fp32, static int8 (calibrate + Int8StaticConfig: module-level QuantLinearFloatIO, since torch.fx cannot
trace BertModel), dynamic int8 (Int8DynamicConfig) and 2:4 (Sparse24Config, fp32 and int8 weights),
timed in one run; then single Linear layers of BERT shapes, static (float in / out) against dynamic.

    python benchmarks/bench_transformer.py [--quick] [--no-write] [--threads N]

Writes results/transformer_amx.md at 2 threads (the default) on the AMX path, and
results/transformer_<N>thread_amx.md at another thread count.

Latency does not depend on the weights or the tokens, so random ones serve.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import time

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compress_kernels as ck  # noqa: E402

from common import (  # noqa: E402
    best_seconds,
    cpu_seconds,
    machine_line,
    markdown_table,
    model_parser,
    results_name,
    write_result,
)

# (label, hidden, intermediate, heads, layers, batch, tokens)
MODELS = [("tiny BERT", 128, 512, 4, 2, 8, 32), ("tiny BERT", 128, 512, 4, 2, 8, 128),
          ("BERT-base width, 2 layers", 768, 3072, 12, 2, 4, 64)]
# (K, N, rows): the attention projections and the feed-forward layers of BERT-base
LAYERS = [(768, 768, 256), (768, 3072, 256), (3072, 768, 256), (768, 768, 1024), (768, 3072, 1024)]


def token_batch(batch: int, tokens: int, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, vocab, (batch, tokens), generator=g),
            "attention_mask": torch.ones(batch, tokens, dtype=torch.long)}


def variants(model: torch.nn.Module, calibration: list[dict]) -> dict[str, torch.nn.Module]:
    static = copy.deepcopy(model)
    ck.calibrate(static, calibration)
    return {
        "fp32": model,
        "static int8": ck.convert_(static, ck.Int8StaticConfig(observer="minmax")).model,
        "dynamic int8": ck.convert_(model, ck.Int8DynamicConfig(), inplace=False).model,
        "2:4 fp32": ck.convert_(model, ck.Sparse24Config(prune=True), inplace=False).model,
        "2:4 int8": ck.convert_(model, ck.Sparse24Config(prune=True, int8=True), inplace=False).model,
    }


def main() -> None:
    args = model_parser(__doc__, threads=2).parse_args()
    torch.set_num_threads(args.threads)
    min_run_time = 0.2 if args.quick else 0.5
    # one thread: CPU time per call (robust on a loaded machine); more: wall time (what a user waits)
    timer = functools.partial(cpu_seconds, min_calls=20, clock=time.process_time) if args.threads == 1 else best_seconds
    names = ["fp32", "static int8", "dynamic int8", "2:4 fp32", "2:4 int8"]
    model_rows = []
    for label, hidden, inter, heads, layers, batch, tokens in (MODELS[:1] if args.quick else MODELS):
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=2048, hidden_size=hidden, num_hidden_layers=layers,
                                         num_attention_heads=heads, intermediate_size=inter,
                                         max_position_embeddings=max(128, tokens))
        model = transformers.BertModel(config).eval()
        x = token_batch(batch, tokens, 2048)
        models = variants(model, [x])
        t: dict[str, float] = {}
        with torch.no_grad():
            for _ in range(2):  # two interleaved rounds; the fastest of each counts
                for name in names:
                    m = models[name]
                    t[name] = min(t.get(name, float("inf")), timer(lambda m=m: m(**x), min_run_time))
        model_rows.append([f"{label} (hidden {hidden}, ffn {inter}, {layers} layers)", f"{batch} x {tokens}",
                           t["fp32"] * 1e3] + [t["fp32"] / t[n] for n in names[1:]])
    layer_rows = []
    for k, n, rows in (LAYERS[:1] if args.quick else LAYERS):
        torch.manual_seed(0)
        linear = torch.nn.Linear(k, n)
        x = torch.randn(rows, k)
        static = ck.QuantLinearFloatIO.from_float(linear, (8.0 / 255, 128), (16.0 / 255, 128))
        dynamic = ck.QuantLinear.from_float(linear, dynamic=True)
        x_q = static.quantize(x)
        t = {}
        with torch.no_grad():
            for _ in range(2):
                for name, fn in (("fp32", lambda: linear(x)), ("static", lambda: static(x)),
                                 ("kernel", lambda: static.linear(x_q)), ("dynamic", lambda: dynamic(x))):
                    t[name] = min(t.get(name, float("inf")), timer(fn, min_run_time))
        layer_rows.append([rows, k, n, t["fp32"] * 1e6, t["static"] * 1e6, t["kernel"] * 1e6, t["dynamic"] * 1e6,
                           t["fp32"] / t["static"], t["fp32"] / t["dynamic"], t["dynamic"] / t["static"],
                           t["dynamic"] / t["kernel"]])
    command = "python benchmarks/bench_transformer.py" + (f" --threads {args.threads}" if args.threads else "") + (
        " --quick" if args.quick else "")
    text = (f"### Transformers: Hugging Face BertModel (built from a config)\n\n{machine_line()}. Command: "
            f"`{command}`.\nTimes: " + ("the fastest call in process CPU time (one thread: its compute time, "
                                        "without waiting for a core on the shared machine)" if args.threads == 1 else
                                        "the fastest of repeated timed blocks, wall time") +
            ". Ratios are fp32 time / variant time (> 1: faster than fp32), same run, whole "
            "`model(input_ids=..., attention_mask=...)` call (embeddings, attention softmax, LayerNorm and GELU stay "
            "fp32 in every variant). static int8: `calibrate` (module hooks: torch.fx cannot trace BertModel) + "
            "`Int8StaticConfig(observer=\"minmax\")`, every Linear a QuantLinearFloatIO (quantize, int8 kernel with "
            "fixed-point requantization, dequantize); dynamic int8: `Int8DynamicConfig`; 2:4: "
            "`Sparse24Config(prune=True)` with fp32 or int8 (dynamic) weights.\n\n"
            + markdown_table(["model", "batch x tokens", "fp32 ms", "static int8", "dynamic int8", "2:4 fp32",
                              "2:4 int8"], model_rows)
            + "\n\nSingle Linear layers, float in and out: static = QuantLinearFloatIO (per-tensor input quantization "
            "with calibrated qparams, uint8 output requantized in the kernel, dequantized), dynamic = QuantLinear "
            "mode=\"dynamic\" (per-row input scales computed at run time, float epilogue); static kernel = the "
            "static QuantLinear alone, uint8 in and out (what a chain kept in integers pays per layer).\n\n"
            + markdown_table(["rows", "K", "N", "fp32 us", "static us", "static kernel us", "dynamic us",
                              "static vs fp32", "dynamic vs fp32", "static vs dynamic", "static kernel vs dynamic"],
                             layer_rows))
    print(text)
    if not args.no_write:
        family = "transformer" if args.threads == 2 else f"transformer_{args.threads}thread"
        print("wrote", write_result(results_name(family, ck.ops.cpu_isa()), text))


if __name__ == "__main__":
    main()
