"""The Pareto view of the study: accuracy vs latency and accuracy vs size of every uniform variant
and of the mixed assignments, one plot, the front marked.

Points come from two runs that each time their models against the fp32 model in the same run, so
latency is shown as a ratio to fp32 (the study's batch-32 median over its round-robin timing; the
assignments' median per-round ratio over their interleaved rounds): absolute times of two runs on a
shared machine are not comparable, their ratios to a model timed alongside are. Accuracy of both is
top-1 on the same held-out split (the study's report is used only when its settings and split
match; otherwise the uniform variants are measured here).

A point is on a front when no other point is at least as accurate and at most as costly, and
strictly better in one of the two.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

# The settings a study report must share with this run for its points to be comparable.
MATCHING_SETTINGS = ("data", "model", "width", "epochs", "lr", "batch_size", "seed", "train_limit", "eval_limit")
# Uniform variants measured here when no matching study report exists: the post-training variants
# and k-means with its centroid fine-tune (seconds each on the study's model).
MEASURED_VARIANTS = ["fp32", "int8_static", "int8_dynamic", "kmeans4", "kmeans2", "fp8_e4m3"]


@dataclass
class Point:
    name: str
    source: str                  # "study" (a variant of the study's table), "uniform", "float" or "mixed"
    top1: float
    bytes: int
    latency_ratio: float         # latency / fp32 latency, both timed in the same run
    note: str = ""
    front_size: bool = False
    front_latency: bool = False


def study_points(report_path: str, settings, n_test: int) -> tuple[list[Point] | None, str]:
    """The variants of a study report.json as points, or (None, why not) when it is missing or was
    made with other settings or another held-out split."""
    if not os.path.exists(report_path):
        return None, f"no study report at {report_path}"
    with open(report_path) as f:
        report = json.load(f)
    theirs = report.get("settings", {})
    ours = asdict(settings)
    differ = [k for k in MATCHING_SETTINGS if theirs.get(k) != ours.get(k)]
    if differ:
        return None, f"{report_path} was made with other settings ({', '.join(differ)})"
    if report.get("test_images") != n_test:
        return None, f"{report_path} evaluated {report.get('test_images')} held-out images, this run {n_test}"
    rows = [r for r in report.get("variants", []) if r.get("available")]
    fp32 = next((r for r in rows if r["name"] == "fp32"), None)
    if fp32 is None:
        return None, f"{report_path} has no fp32 row (the latency baseline)"
    points = [Point(r["name"], "study", r["top1"], r["stored_bytes"], r["latency_b32_ms"] / fp32["latency_b32_ms"],
                    note=f"{r['finetune_steps']} fine-tune steps") for r in rows]
    return points, f"uniform variants read from {report_path}"


def measured_points(model, data, settings, variants: list[str] | None = None) -> list[Point]:
    """Build, evaluate and time the uniform variants here (runner.run_study, batch-32 ratios)."""
    from . import runner

    rows = runner.run_study(model, data, settings, variants=list(variants or MEASURED_VARIANTS))
    fp32 = next(r for r in rows if r.name == "fp32")
    return [Point(r.name, "study", r.top1, r.stored_bytes, r.latency_b32_ms / fp32.latency_b32_ms,
                  note=f"{r.finetune_steps} fine-tune steps") for r in rows if r.available]


def assignment_points(results: dict) -> list[Point]:
    """Every candidate of every assignment (name -> Assignment), each model once: uniform models and
    the float model appear in every assignment, the first measurement is kept; mixed candidates
    carry the budgets whose choice they were."""
    points: dict[str, Point] = {}
    for label, result in results.items():
        chosen_for = {}
        for b in result.budgets:
            if b.chosen is not None:
                chosen_for.setdefault(b.chosen, []).append(f"{label}: {b.spec}")
        for c in result.candidates:
            key = c.name if c.kind != "mixed" else f"{label}: {c.name}"
            if key in points:
                continue
            note = "chosen at " + ", ".join(chosen_for[c.name]) if c.name in chosen_for and c.kind == "mixed" else ""
            points[key] = Point(key if c.kind == "mixed" else f"{c.name} (post-training)", c.kind, c.metric, c.bytes,
                                c.latency_ratio, note=note)
    return list(points.values())


def mark_fronts(points: list[Point]) -> None:
    for attr, flag in (("bytes", "front_size"), ("latency_ratio", "front_latency")):
        for p in points:
            setattr(p, flag, not any(getattr(o, attr) <= getattr(p, attr) and o.top1 >= p.top1
                                     and (getattr(o, attr) < getattr(p, attr) or o.top1 > p.top1) for o in points))


def to_markdown(points: list[Point], source_note: str) -> str:
    lines = [f"Pareto view: every point's top-1 on the held-out split, stored bytes, latency / fp32 latency (batch "
             f"32, each run against its own fp32). {source_note}. Front: S = size, L = latency.", "",
             "| model | source | top-1 % | bytes | latency / fp32 | front | note |", "|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: p.bytes):
        front = ("S" if p.front_size else "") + ("L" if p.front_latency else "")
        lines.append(f"| {p.name} | {p.source} | {p.top1:.2f} | {p.bytes:,} | {p.latency_ratio:.3f} | {front} | "
                     f"{p.note} |")
    return "\n".join(lines) + "\n"


def plot(points: list[Point], path: str, title: str) -> str:
    """Two panels (top-1 vs latency ratio, top-1 vs bytes); the front of each as a step line, its
    points edged black; labelled: the front, the study's variants and the mixed assignments a budget
    chose (every point is in to_markdown's table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"study": ("tab:blue", "o", "uniform variant (study)"),
             "uniform": ("tab:cyan", "D", "uniform, post-training"),
             "float": ("k", "s", "fp32"), "mixed": ("tab:red", "*", "mixed assignment")}
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, attr, flag, label in ((axes[0], "latency_ratio", "front_latency", "latency / fp32 latency (batch 32)"),
                                  (axes[1], "bytes", "front_size", "stored bytes")):
        seen = set()
        for p in points:
            color, marker, legend = style[p.source]
            ax.scatter(getattr(p, attr), p.top1, c=color, marker=marker, s=90 if p.source == "mixed" else 40,
                       edgecolors="k" if getattr(p, flag) else "none", linewidths=1.2, zorder=3,
                       label=None if legend in seen else legend, alpha=1.0 if getattr(p, flag) or p.note else 0.45)
            seen.add(legend)
            if getattr(p, flag) or p.source == "study" or (p.source == "mixed" and p.note):
                ax.annotate(p.name.replace(" (post-training)", " (PT)"), (getattr(p, attr), p.top1),
                            textcoords="offset points", xytext=(4, 3), fontsize=6)
        front = sorted((p for p in points if getattr(p, flag)), key=lambda p: getattr(p, attr))
        ax.step([getattr(p, attr) for p in front], [p.top1 for p in front], where="post", c="tab:green", lw=1.5,
                label="Pareto front", zorder=2)
        if attr == "bytes":
            ax.set_xscale("log")
        low = min(p.top1 for p in front) if front else 0.0
        ax.set_ylim(max(0.0, min(low, 90.0) - 2.0), 100.5)  # the interesting band; far-off points still listed
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 % (held-out split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_title("accuracy vs latency")
    axes[1].set_title("accuracy vs size")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
