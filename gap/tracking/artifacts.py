"""Artifacts of a run: `results.json` and `predictions/` as an `eval_results` artifact, and the saved
checkpoints as `model` artifacts (by reference unless asked: a 2.7B model is not uploaded by default),
aliased `last` and `selected-<category>`."""
from pathlib import Path

from gap.data.tasks import CATEGORIES

# folder (gap.train) -> alias
CHECKPOINTS = {"checkpoint": "last", **{f"checkpoint-selected-{c}": f"selected-{c}" for c in CATEGORIES}}


def log_results(run, out_dir: Path, status: str) -> None:
    """`results-<run id>` (type `eval_results`): the run's results and predictions, aliased by status."""
    import wandb

    out_dir = Path(out_dir)
    if not (out_dir / "results.json").is_file():
        return
    artifact = wandb.Artifact(f"results-{run.id}", type="eval_results", metadata={"status": status})
    artifact.add_file(str(out_dir / "results.json"))
    if (out_dir / "predictions").is_dir():
        artifact.add_dir(str(out_dir / "predictions"), name="predictions")
    run.log_artifact(artifact, aliases=[status])


def log_checkpoints(run, out_dir: Path, upload: bool) -> None:
    """A version of `model-<run id>` (type `model`) per saved checkpoint."""
    import wandb

    for folder, alias in CHECKPOINTS.items():
        path = Path(out_dir) / folder
        if not path.is_dir():
            continue
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata={"folder": folder})
        if upload:
            artifact.add_dir(str(path))
        else:
            artifact.add_reference(path.resolve().as_uri())
        run.log_artifact(artifact, aliases=[alias])
