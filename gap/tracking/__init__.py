"""What a W&B run gets beyond scalars: metric definitions, deltas and baselines (`metrics`), tables of
per-task results and sample predictions (`tables`), results and checkpoints as artifacts (`artifacts`).
The functions take a `wandb` run; `gap.loggers` calls them, guarded, for each W&B logger of a job."""
