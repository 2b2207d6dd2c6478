"""Which layer to compress how, on the study's model (``python -m compress_kernels sensitivity``).

The trained fp32 model of the study (the same cached checkpoint); the per-layer sensitivity sweep
(every conv / linear layer x every method of ``default_methods``) on a *search split*, the first
``--search-images`` training images; then mixed assignments measured for real on the whole held-out
split, against the uniform variants measured in the same run:

- size: at the exact stored bytes of the uniform k-means 4-bit model (budget ``"kmeans4"``), with
  extra budgets for the Pareto view (the uniform int8 model's bytes, 1.25x and 0.85x the k-means
  4-bit bytes, the k-means 3-bit bytes);
- latency: at the latency of the uniform static int8 model (budget ``"int8_static"``: the median
  over interleaved rounds of each candidate's time / that model's time in the same round, at most
  1), with extra budgets 1.5x and 2x it.

The assignments are post-training, like the uniform models they are compared with. The search uses
only the search split (a continuous proxy: the KL of the model output from the float output); the
held-out split measures the candidates and picks, per budget, the most accurate one that meets it.

Then the Pareto view: accuracy vs latency and vs size of every uniform variant of the study (read
from ``--study-report`` when it was made with the same settings on the same split, else the
post-training ones measured here) and of every candidate measured here, the fronts marked.

Writes to ``--out``: sensitivity.{md,json,png} (the table and its heat map), assign_size.{md,json,png},
assign_latency.{md,json,png}, pareto.{md,json,png} and report.{md,json}.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict

import torch

from . import pareto, runner

SIZE_BUDGETS = ["kmeans4", "int8_static", ("kmeans4", 1.25), ("kmeans4", 0.85), "kmeans3"]
LATENCY_BUDGETS = ["int8_static", ("int8_static", 1.5), ("int8_static", 2.0)]


def add_arguments(parser) -> None:
    d = runner.StudySettings()
    parser.add_argument("--data", choices=["digits", "cifar10"], default=d.data)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--epochs", type=int, default=d.epochs, help="fp32 training epochs (cached checkpoint)")
    parser.add_argument("--search-images", type=int, default=512,
                        help="training images the sensitivity sweep (the search's proxy) runs on")
    parser.add_argument("--eval-limit", type=int, default=None,
                        help="held-out images the candidates are measured on (default: the whole split)")
    parser.add_argument("--sweep-timing-reps", type=int, default=5, help="timed calls per cell of the sweep")
    parser.add_argument("--timing-rounds", type=int, default=15,
                        help="interleaved rounds timing every candidate model (median)")
    parser.add_argument("--study-report", default=os.path.join(d.out, "report.json"),
                        help="the study's report.json for the Pareto view (used when its settings match)")
    parser.add_argument("--quick", action="store_true", help="smoke configuration: width 4, 1 epoch, 64 images")
    parser.add_argument("--out", default=os.path.join(d.out, "sensitivity"))
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--no-progress", action="store_true")


def run(args) -> dict:
    import compress_kernels as ck
    from compress_kernels.sensitivity import default_methods

    start = time.perf_counter()
    settings = runner.StudySettings(data=args.data, data_dir=args.data_dir, width=args.width, epochs=args.epochs,
                                    cache_dir=args.cache_dir, progress=not args.no_progress, out=args.out,
                                    eval_limit=args.eval_limit)
    search_images = args.search_images
    if args.quick:
        settings.width, settings.epochs, settings.train_limit, settings.eval_limit = 4, 1, 256, 64
        search_images = 128
    data = runner.load_data(settings)
    model, cached = runner.train_fp32(settings, data)
    held_out = (data.x_test, data.y_test)
    search = (data.x_train[:search_images], data.y_train[:search_images])
    calibration = [data.x_train[i * 64:(i + 1) * 64] for i in range(settings.calibration_batches)]
    methods = default_methods(settings.seed)
    torch.manual_seed(settings.seed)
    calibrated = copy.deepcopy(model)
    ck.calibrate(calibrated, calibration)  # once, for the sweep, the uniform int8 model and every assignment
    table = ck.sensitivity(model, search, methods, calibrated=calibrated, timing_reps=args.sweep_timing_reps,
                           seed=settings.seed, progress=settings.progress)
    os.makedirs(args.out, exist_ok=True)
    paths = {"sensitivity_md": os.path.join(args.out, "sensitivity.md"),
             "sensitivity_json": os.path.join(args.out, "sensitivity.json"),
             "sensitivity_png": os.path.join(args.out, "sensitivity.png")}
    with open(paths["sensitivity_md"], "w") as f:
        f.write(table.to_markdown())
    table.to_json(paths["sensitivity_json"])
    table.heatmap(paths["sensitivity_png"])

    common = dict(table=table, calibrated=calibrated, timing_reps=args.timing_rounds, seed=settings.seed,
                  progress=settings.progress)
    results = {}
    for name, kind, budgets in (("size", "bytes", SIZE_BUDGETS), ("latency", "latency_us", LATENCY_BUDGETS)):
        result = ck.assign(model, held_out, methods, budget=budgets[0], kind=kind, extra_budgets=budgets[1:],
                           **common)
        results[name] = result
        for ext, write in (("md", None), ("json", result.to_json), ("png", result.plot)):
            path = paths[f"assign_{name}_{ext}"] = os.path.join(args.out, f"assign_{name}.{ext}")
            if write is None:
                with open(path, "w") as f:
                    f.write(result.to_markdown())
            else:
                write(path)

    study, source_note = pareto.study_points(args.study_report, settings, len(data.x_test))
    if study is None:
        why = source_note
        study = pareto.measured_points(model, data, settings)
        source_note = f"Uniform study variants measured here ({why})"
    points = study + pareto.assignment_points(results)
    pareto.mark_fronts(points)
    paths["pareto_md"] = os.path.join(args.out, "pareto.md")
    paths["pareto_json"] = os.path.join(args.out, "pareto.json")
    paths["pareto_png"] = os.path.join(args.out, "pareto.png")
    with open(paths["pareto_md"], "w") as f:
        f.write(pareto.to_markdown(points, source_note))
    with open(paths["pareto_json"], "w") as f:
        json.dump({"source": source_note, "points": [asdict(p) for p in points]}, f, indent=2)
    pareto.plot(points, paths["pareto_png"], f"{settings.model} width {settings.width} on {settings.data}: uniform "
                                             "variants and mixed assignments")

    summary = _summary(table, results, points, source_note, settings, cached, len(data.x_test), search_images,
                       time.perf_counter() - start)
    paths["report_json"] = os.path.join(args.out, "report.json")
    paths["report_md"] = os.path.join(args.out, "report.md")
    with open(paths["report_json"], "w") as f:
        json.dump(summary, f, indent=2)
    with open(paths["report_md"], "w") as f:
        f.write("\n".join(summary["lines"]) + "\n")
    return {"paths": paths, "summary": summary, "results": results, "table": table, "points": points}


def _summary(table, results, points, source_note, settings, cached, n_test, search_images, seconds) -> dict:
    info = runner.machine_info()
    lines = [f"# Which layer to compress how: {settings.model} width {settings.width} on {settings.data}", "",
             f"Machine: {info['processor']}, {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, kernel "
             f"path {info['kernel_isa']}, 1-minute load average {info['load_average_1min']}.", "",
             f"Sensitivity sweep on {search_images} training images: {len(table.layers)} layers x "
             f"{len(table.methods)} methods in {table.seconds:.1f} s ({table.cpu_seconds:.1f} CPU seconds). "
             f"Candidates measured on the {n_test} held-out "
             f"images (top-1), latency at batch {table.latency_batch} in interleaved rounds (median). Total "
             f"{seconds:.1f} s.", ""]
    out = {"settings": asdict(settings), "machine": info, "fp32_checkpoint_reused": cached, "seconds": seconds,
           "sweep_seconds": table.seconds, "sweep_cpu_seconds": table.cpu_seconds, "search_images": search_images,
           "test_images": n_test, "goals": {},
           "budgets": {}}
    for name, result in results.items():
        main = result.budget
        chosen = result.measured
        ref = result.candidate(f"all {main.reference}")
        uniform_within = [c for c in result.candidates if c.kind in ("uniform", "float") and c.name in main.feasible]
        best_uniform = max(uniform_within, key=lambda c: c.metric)
        if result.kind == "bytes":
            goal = (f"size (<= {main.limit:,.0f} B, the uniform {main.reference} model): chosen {chosen.name}, top-1 "
                    f"{chosen.metric:.2f} % ({chosen.bytes:,} B, {chosen.latency_ratio:.3f}x float latency) vs best "
                    f"uniform within the budget {best_uniform.name} {best_uniform.metric:.2f} %; "
                    f"latency vs all {main.reference}: {chosen.latency_us / ref.latency_us:.3f}x")
            met = chosen.metric >= best_uniform.metric and chosen.latency_us <= ref.latency_us
        else:
            goal = (f"latency (<= the uniform {main.reference} model, per-round median ratio): chosen {chosen.name}, "
                    f"top-1 {chosen.metric:.2f} % (ratio {main.values[chosen.name]:.3f}, {chosen.bytes:,} B) vs "
                    f"all {main.reference} {ref.metric:.2f} %")
            met = chosen.metric >= ref.metric
        out["goals"][name] = {"text": goal, "met": met}
        lines += [f"## {name.capitalize()} budgets", "", f"Goal {'met' if met else 'NOT met'}: {goal}.", "",
                  result.to_markdown()]
        out["budgets"][name] = result.to_dict()
    lines += ["## Pareto view", "", pareto.to_markdown(points, source_note)]
    out["lines"] = lines
    return out


def main(args) -> int:
    result = run(args)
    summary = result["summary"]
    for line in summary["lines"][:6]:
        print(line)
    for name, goal in summary["goals"].items():
        print(f"{name}: {'met' if goal['met'] else 'NOT met'}: {goal['text']}")
    print("wrote " + ", ".join(result["paths"].values()))
    return 0
