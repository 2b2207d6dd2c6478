"""Which layer to compress how, on the study's model (``python -m compress_kernels sensitivity``).

The trained fp32 model of the study (the same cached checkpoint), the per-layer sensitivity sweep
(every conv / linear layer x every method, on the first ``--eval-limit`` held-out images), then two
mixed assignments measured for real: one at the stored size of the uniform k-means 4-bit model and
one at the latency of the uniform static int8 model, each against every uniform variant (post-
training, no fine-tuning: the assignment is compared with what the same conversions give uniformly).
Writes to ``--out``: sensitivity.{md,json,png} (the table and its heat map), assign_size.{md,json}
+ pareto_size.png, assign_latency.{md,json} + pareto_latency.png, and report.{md,json}.
"""

from __future__ import annotations

import copy
import json
import os
import time

import torch

from . import runner


def add_arguments(parser) -> None:
    d = runner.StudySettings()
    parser.add_argument("--data", choices=["digits", "cifar10"], default=d.data)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--epochs", type=int, default=d.epochs, help="fp32 training epochs (cached checkpoint)")
    parser.add_argument("--eval-limit", type=int, default=256, help="held-out images the sweep evaluates on")
    parser.add_argument("--timing-reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke configuration: width 4, 1 epoch, 64 images")
    parser.add_argument("--out", default=os.path.join(d.out, "sensitivity"))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> dict:
    import compress_kernels as ck
    from compress_kernels.sensitivity import best_times_us, default_methods

    start = time.perf_counter()
    settings = runner.StudySettings(data=args.data, data_dir=args.data_dir, width=args.width, epochs=args.epochs,
                                    cache_dir=args.cache_dir, progress=not args.no_progress, out=args.out)
    eval_limit = args.eval_limit
    if args.quick:
        settings.width, settings.epochs, settings.train_limit, eval_limit = 4, 1, 256, 64
    data = runner.load_data(settings)
    model, cached = runner.train_fp32(settings, data)
    x, y = data.x_test[:eval_limit], data.y_test[:eval_limit]
    calibration = [data.x_train[i * 64:(i + 1) * 64] for i in range(settings.calibration_batches)]
    methods = default_methods()
    torch.manual_seed(settings.seed)
    calibrated = copy.deepcopy(model)
    ck.calibrate(calibrated, calibration)  # once, for the sweep, the uniform int8 model and both assignments
    table = ck.sensitivity(model, (x, y), methods, calibrated=calibrated, timing_reps=args.timing_reps,
                           progress=settings.progress)
    os.makedirs(args.out, exist_ok=True)
    paths = {"sensitivity_md": os.path.join(args.out, "sensitivity.md"),
             "sensitivity_json": os.path.join(args.out, "sensitivity.json"),
             "sensitivity_png": os.path.join(args.out, "sensitivity.png")}
    with open(paths["sensitivity_md"], "w") as f:
        f.write(table.to_markdown())
    table.to_json(paths["sensitivity_json"])
    table.heatmap(paths["sensitivity_png"])

    # The budgets: the uniform k-means 4-bit model's bytes, the uniform static int8 model's latency.
    kmeans4 = ck.convert_(model, methods["kmeans4"], inplace=False).model
    size_budget = runner.stored_bytes(kmeans4)
    static_model = ck.convert_(calibrated, methods["int8_static"]).model
    xb = x[:table.latency_batch]
    times = best_times_us({"f": lambda: model(xb), "s": lambda: static_model(xb)}, args.timing_reps)
    common = dict(table=table, calibrated=calibrated, timing_reps=args.timing_reps, progress=settings.progress)
    results, failures = {}, {}
    for name, budget, kind in (("size", size_budget, "bytes"), ("latency", times["s"], "latency_us")):
        try:
            result = ck.assign(model, (x, y), methods, budget=budget, kind=kind, **common)
        except ValueError as why:  # e.g. timings on a loaded machine that no assignment is predicted to meet
            failures[name] = str(why)
            continue
        results[name] = result
        paths[f"assign_{name}_md"] = os.path.join(args.out, f"assign_{name}.md")
        paths[f"assign_{name}_json"] = os.path.join(args.out, f"assign_{name}.json")
        paths[f"pareto_{name}_png"] = os.path.join(args.out, f"pareto_{name}.png")
        with open(paths[f"assign_{name}_md"], "w") as f:
            f.write(result.to_markdown())
        result.to_json(paths[f"assign_{name}_json"])
        result.plot(paths[f"pareto_{name}_png"])
    summary = _summary(table, results, size_budget, times, settings, cached, time.perf_counter() - start)
    for name, why in failures.items():
        summary["lines"] += [f"## Mixed assignment at the {name} budget", "", f"None: {why}", ""]
        summary["budgets"][name] = {"error": why}
    paths["report_json"] = os.path.join(args.out, "report.json")
    paths["report_md"] = os.path.join(args.out, "report.md")
    with open(paths["report_json"], "w") as f:
        json.dump(summary, f, indent=2)
    with open(paths["report_md"], "w") as f:
        f.write("\n".join(summary["lines"]) + "\n")
    return {"paths": paths, "summary": summary}


def _summary(table, results, size_budget, times, settings, cached, seconds) -> dict:
    m = table.metric_name
    lines = [f"# Which layer to compress how: {settings.model} width {settings.width} on {settings.data}", "",
             f"Sensitivity sweep: {len(table.layers)} layers x {len(table.methods)} methods in {table.seconds:.1f} s; "
             f"float {m} {table.float_metric:.2f} on {table.input_shape} inputs. Total {seconds:.1f} s.", ""]
    out = {"settings": {"width": settings.width, "epochs": settings.epochs, "data": settings.data},
           "fp32_checkpoint_reused": cached, "seconds": seconds, "sweep_seconds": table.seconds,
           "float_metric": table.float_metric, "budgets": {}}
    for name, result in results.items():
        mixed = result.measured
        unit = "bytes" if result.kind == "bytes" else "us"
        attr = "bytes" if result.kind == "bytes" else "latency_us"
        within = [c for c in result.candidates if c.kind == "uniform" and getattr(c, attr) <= result.budget]
        best = max(within, key=lambda c: c.metric, default=None)
        lines += [f"## Mixed assignment at the {name} budget ({result.budget:,.0f} {unit}: "
                  + ("the uniform k-means 4-bit model)" if name == "size" else "the uniform static int8 model)"), "",
                  f"Measured: {m} {mixed.metric:.2f}, {mixed.bytes:,} bytes, {mixed.latency_us:.0f} us "
                  f"(predicted {m} {result.predicted['metric']:.2f}). Best uniform variant within the budget: "
                  + (f"{best.name}, {m} {best.metric:.2f}, {best.bytes:,} bytes, {best.latency_us:.0f} us."
                     if best else "none."), "", result.to_markdown()]
        out["budgets"][name] = {"budget": result.budget, "kind": result.kind, "result": result.to_dict(),
                                "best_uniform_within": best.name if best else None}
    out["lines"] = lines
    out["static_latency_us"], out["float_latency_us"] = times["s"], times["f"]
    out["size_budget"] = size_budget
    return out


def main(args) -> int:
    result = run(args)
    for line in result["summary"]["lines"][:3]:
        print(line)
    print("wrote " + ", ".join(result["paths"].values()))
    return 0
