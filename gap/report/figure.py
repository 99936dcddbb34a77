"""The paper's Figure 1, one per category: per model a column of dots (one per run, its selected average),
a dashed line at the model's baseline and a solid line at the next larger model's baseline."""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gap.report.runs import Results, next_larger
from gap.report.tables import arms

LABELS = {"classification": "Classification: average accuracy (8 tasks)", "dialog": "Dialogue: average F1 (4 tasks)"}
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def plot_category(results: Results, category: str, jitter: float = 0.12) -> Figure:
    """The figure of one category. A column's scatter collection has gid `runs:<model>`, baseline lines
    `baseline:<model>` (dashed) and `next_larger:<model>` (solid), so the plotted values can be read back."""
    runs = [r for r in results.runs if r.category == category]
    columns = [a for a in arms(results) if any(r.arm == a for r in runs)]
    corpora = sorted({r.corpus for r in runs})
    models = {r.model for r in results.runs} | {m for m, _, _ in results.baselines}
    colors = dict(zip(corpora, COLORS * 8))
    rng = np.random.default_rng(0)  # the same jitter every time
    fig = Figure(figsize=(max(4.0, 1.6 * len(columns) + 1.6), 4.2), layout="constrained")
    ax = fig.add_subplot()
    for x, arm in enumerate(columns):
        mine = [r for r in runs if r.arm == arm]
        model = mine[0].model
        mine = [mine[i] for i in rng.permutation(len(mine))]  # corpora interleaved: none hides another
        xs = x + rng.uniform(-jitter, jitter, len(mine))
        ax.scatter(xs, [r.average for r in mine], s=12, c=[colors[r.corpus] for r in mine], alpha=0.6,
                   linewidths=0, zorder=3, gid=f"runs:{arm}")
        baseline = results.baseline(model, None, category)
        if baseline:
            ax.plot([x - 0.35, x + 0.35], [baseline.average] * 2, "k--", lw=1.4, zorder=4, gid=f"baseline:{arm}")
        larger = next_larger(model, models)
        above = results.baseline(larger, None, category) if larger else None
        if above:
            ax.plot([x - 0.35, x + 0.35], [above.average] * 2, "-", color="#c0392b", lw=1.6, zorder=4,
                    gid=f"next_larger:{arm}")
    ax.set_xticks(range(len(columns)), [f"{a}\n({sum(r.arm == a for r in runs)} runs)" for a in columns])
    ax.set_xlim(-0.6, len(columns) - 0.4)
    ax.set_ylabel(LABELS.get(category, category))
    ax.set_title(f"GAP runs against the unchanged models: {'dialogue' if category == 'dialog' else category}")
    ax.grid(axis="y", alpha=0.3)
    handles = [Line2D([], [], ls="", marker="o", color=c, alpha=0.6, label=corpus) for corpus, c in colors.items()]
    handles += [Line2D([], [], ls="--", color="k", label="baseline (same model)"),
                Line2D([], [], ls="-", color="#c0392b", label="baseline of the next larger model")]
    ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.85)
    return fig


def write_figures(results: Results, out, formats=("png", "svg"), jitter: float = 0.12) -> dict:
    """`figure_<category>.<format>` for each category with runs; returns the Figure objects by category."""
    figures = {}
    for category in ("dialog", "classification"):
        if any(r.category == category for r in results.runs):
            figures[category] = fig = plot_category(results, category, jitter)
            for fmt in formats:
                fig.savefig(out / f"figure_{category}.{fmt}", dpi=150)
    return figures
