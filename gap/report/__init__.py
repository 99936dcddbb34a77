"""`python -m gap.report PATH...`: sweeps (or W&B runs, or the paper's `full_results` CSVs) -> the paper's
Figure 1 and tables; from sweeps also the shares at fixed epochs, the selection's optimism and each method
against the null arm; `run=<job dir>` adds the paired significance of one run against its baseline;
`document=PATH` writes the tables and figures into a hand-written Markdown document.

`report(cfg)` is the whole report; `gap.report.__main__` only hands it the Hydra config (conf/report.yaml).
"""
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gap.errors import ConfigError, DataError
from gap.report import null_arm, selection
from gap.report.document import check_document, update_document
from gap.report.publish import publish, sweep_target
from gap.report.runs import Results, is_paper_folder, load_path
from gap.report.significance import COLUMNS as SIGNIFICANCE_COLUMNS
from gap.report.significance import significance
from gap.report.tables import SUMMARY_COLUMNS, TASK_COLUMNS, markdown, summary_rows, task_rows, write_csv

# tables written beside summary.csv when a source holds what they need: (file, rows, columns, Markdown)
QUESTIONS = (("selection.csv", selection.selection_rows, selection.COLUMNS, selection.selection_markdown),
             ("null_arm.csv", null_arm.null_rows, null_arm.COLUMNS, null_arm.null_markdown))

__all__ = ["report"]


def _inputs(cfg: DictConfig) -> list[str]:
    if OmegaConf.is_missing(cfg, "inputs") or cfg.inputs is None:
        return []
    inputs = cfg.inputs
    return [str(p) for p in inputs] if OmegaConf.is_list(inputs) else [str(inputs)]


def _out_dir(cfg: DictConfig, inputs: list[str]) -> Path:
    if cfg.out:
        out = Path(cfg.out)
    elif inputs and is_paper_folder(inputs[0]):  # a data folder (maybe read-only): not written into
        out = Path("outputs/report") / Path(inputs[0]).resolve().name
    elif inputs:
        out = Path(inputs[0]) / "report"
    elif cfg.run:
        out = Path(cfg.run) / "report"
    else:
        out = Path("outputs/report") / str(cfg.wandb.runs).replace("/", "_")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot write the report to {out}: {err.strerror or err}; choose a folder with out=") from None
    return out


def report(cfg: DictConfig) -> Path:
    """Write the figures and tables (and `significance.csv` with `run=`) into `out`; returns that folder."""
    inputs = _inputs(cfg)
    if not (inputs or cfg.wandb.runs or cfg.run):
        raise ConfigError("no input: give sweep directories or folders of the paper's CSVs "
                          "(`python -m gap.report PATH...` or inputs=[...]), wandb=ENTITY/PROJECT, or run=<job dir>")
    if cfg.document:
        check_document(cfg.document)
    target = sweep_target(inputs) if cfg.wandb.publish else None
    results = Results()
    for path in inputs:
        results.extend(load_path(path))
    if cfg.wandb.runs:
        from gap.report.wandb_runs import load_wandb

        results.extend(load_wandb(str(cfg.wandb.runs)))
    rows = significance(cfg.run, cfg.significance.resamples, cfg.significance.seed) if cfg.run else None
    out = _out_dir(cfg, inputs)
    written = []
    if results.runs:
        from gap.report.figure import write_figures  # matplotlib only when there is something to draw

        summary = summary_rows(results)
        write_csv(out / "summary.csv", summary, SUMMARY_COLUMNS)
        sections, tables = [], {"summary": (summary, SUMMARY_COLUMNS)}
        for name, make_rows, columns, make_markdown in QUESTIONS:
            rows_of = make_rows(results, cfg.permutation.resamples, cfg.permutation.seed)
            tables[name.removesuffix(".csv")] = (rows_of, columns)
            if rows_of:
                write_csv(out / name, rows_of, columns)
                sections.append(make_markdown(rows_of))
                written.append(name)
        sources = [*inputs, *([f"wandb:{cfg.wandb.runs}"] if cfg.wandb.runs else [])]
        text = markdown(summary, results.notes, sources, sections)
        (out / "summary.md").write_text(text, encoding="utf-8")
        tasks = task_rows(results)
        write_csv(out / "tasks.csv", tasks, TASK_COLUMNS)
        tables["tasks"] = (tasks, TASK_COLUMNS)
        figures = write_figures(results, out, tuple(cfg.figure.formats), cfg.figure.jitter)
        written += ["summary.csv", "summary.md", "tasks.csv",
                    *(f"figure_{c}.{f}" for c in figures for f in cfg.figure.formats)]
        if cfg.document:
            update_document(cfg.document, text, [out / f"figure_{c}.{cfg.figure.formats[0]}" for c in figures])
            written.append(str(cfg.document))
        print(text)
        if target:
            print(f"published to W&B (group {target['group']}, job_type=report): "
                  f"{publish(results, tables, figures, target, out)}")
    if rows is not None:
        write_csv(out / "significance.csv", rows, SIGNIFICANCE_COLUMNS)
        written.append("significance.csv")
        print(f"significance of {cfg.run} against its baseline (last evaluation; McNemar exact for "
              "classification, paired bootstrap for dialogue):")
        for r in rows:
            print(f"  {r['task']:<24} n={r['n']:<4} {r['baseline']:.4f} -> {r['gap']:.4f}  p={r['p_value']:.4g}")
    print(f"report: {out} ({', '.join(written)})")
    sys.stdout.flush()
    return out
