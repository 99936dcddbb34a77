"""The paper's Figure 1, one per category, with a panel per method (`gap` first) sharing the y axis: per
model a column of dots (one per run, its selected average), a dashed line at the model's baseline, a
solid line at the next larger model's baseline and, where the null arm ran, a band over its runs' range."""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from gap.data.tasks import CATEGORIES
from gap.report.runs import NULL_ARM, Results, method_order, model_order, next_larger, null_arm_of

LABELS = {"classification": "Classification: average accuracy (8 tasks)", "dialog": "Dialogue: average F1 (4 tasks)",
          "lm_eval": "lm-evaluation-harness tasks: average score"}
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def plot_category(results: Results, category: str, jitter: float = 0.12) -> Figure:
    """The figure of one category: `fig.axes[i]` is the panel of the i-th method (title: the method). In a
    panel, a column's scatter collection has gid `runs:<model>`, baseline lines `baseline:<model>` (dashed)
    and `next_larger:<model>` (solid), the null arm's band (its runs' lowest to highest selected average)
    `null:<model>`, so the plotted values can be read back."""
    runs = [r for r in results.runs if r.category == category]
    methods = [m for m in method_order(results) if any(r.method == m for r in runs)]
    panels = {m: model_order(r.model for r in runs if r.method == m) for m in methods}
    corpora = sorted({r.corpus for r in runs})
    models = {r.model for r in results.runs} | {m for m, _, _ in results.baselines}
    colors = dict(zip(corpora, COLORS * 8))
    rng = np.random.default_rng(0)  # the same jitter every time
    width = sum(1.6 * len(columns) + 1.0 for columns in panels.values()) + 0.6
    fig = Figure(figsize=(max(4.0, width), 4.2), layout="constrained")
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False,
                        gridspec_kw={"width_ratios": [len(c) for c in panels.values()]})[0]
    for ax, (method, columns) in zip(axes, panels.items()):
        for x, model in enumerate(columns):
            mine = [r for r in runs if (r.method, r.model) == (method, model)]
            mine = [mine[i] for i in rng.permutation(len(mine))]  # corpora interleaved: none hides another
            xs = x + rng.uniform(-jitter, jitter, len(mine))
            ax.scatter(xs, [r.average for r in mine], s=12, c=[colors[r.corpus] for r in mine], alpha=0.6,
                       linewidths=0, zorder=3, gid=f"runs:{model}")
            baseline = results.baseline(model, None, category)
            if baseline:
                ax.plot([x - 0.35, x + 0.35], [baseline.average] * 2, "k--", lw=1.4, zorder=4, gid=f"baseline:{model}")
            null = [r.average for r in runs if (r.method, r.model) == (null_arm_of(method), model)]
            if null:
                ax.fill_between([x - 0.4, x + 0.4], min(null), max(null), color="#7f7f7f", alpha=0.18, lw=0,
                                zorder=1, gid=f"null:{model}")
            larger = next_larger(model, models)
            above = results.baseline(larger, None, category) if larger else None
            if above:
                ax.plot([x - 0.35, x + 0.35], [above.average] * 2, "-", color="#c0392b", lw=1.6, zorder=4,
                        gid=f"next_larger:{model}")
        counts = [sum((r.method, r.model) == (method, m) for r in runs) for m in columns]
        ax.set_xticks(range(len(columns)), [f"{m}\n({n} runs)" for m, n in zip(columns, counts)])
        ax.set_xlim(-0.6, len(columns) - 0.4)
        ax.set_title(method)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(LABELS.get(category, category))
    fig.suptitle(f"{' / '.join(methods)} runs against the unchanged models: "
                 f"{'dialogue' if category == 'dialog' else category}")
    handles = [Line2D([], [], ls="", marker="o", color=c, alpha=0.6, label=corpus) for corpus, c in colors.items()]
    handles += [Line2D([], [], ls="--", color="k", label="baseline (same model)"),
                Line2D([], [], ls="-", color="#c0392b", label="baseline of the next larger model")]
    if any(r.method.startswith(NULL_ARM) for r in runs):
        handles.append(Patch(color="#7f7f7f", alpha=0.18, label=f"range of the null arm ({NULL_ARM})"))
    axes[-1].legend(handles=handles, fontsize=8, loc="best", framealpha=0.85)
    return fig


def write_figures(results: Results, out, formats=("png", "svg"), jitter: float = 0.12) -> dict:
    """`figure_<category>.<format>` for each category with runs; returns the Figure objects by category."""
    figures = {}
    for category in CATEGORIES:
        if any(r.category == category for r in results.runs):
            figures[category] = fig = plot_category(results, category, jitter)
            for fmt in formats:
                fig.savefig(out / f"figure_{category}.{fmt}", dpi=150)
    return figures
