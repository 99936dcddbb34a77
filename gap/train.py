"""One GAP run: evaluate the unchanged model, take ascent steps on one corpus sample, evaluate after each.

`python -m gap.train [overrides]`; `train(cfg)` is the whole run, `main` only hands it the Hydra config.
"""
import logging
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from gap.baselines import load_baseline, store_baseline
from gap.choices import hydra_entry
from gap.data.corpus import CorpusDataModule, read_corpus, select_samples
from gap.data.evaluation import PROMPT_STYLES, EvalDataModule, load_eval_examples
from gap.data.tasks import TASKS, check_task_names
from gap.errors import ConfigError, DataError, GapError, fail
from gap.loggers import finish_loggers, make_loggers, summarize_run
from gap.memory import check_memory, strategy_of
from gap.modules.callbacks import KeepSelectedWeights
from gap.modules.gap_module import SIGNS, GAPModule
from gap.modules.loading import check_model_config, kept_tokenizer, load_pretrained, load_tokenizer
from gap.preemption import EXIT_CODE, is_preemption, raise_on_sigterm
from gap.results import ResultsWriter, metric_table, resources
from gap.strategies import make_strategy
from gap.sweep import finished_results, in_multirun

log = logging.getLogger("gap")
SPLITS = ("validation", "test")
METHODS = (*SIGNS, "none")
CATEGORY = {"classification": "classification", "dialogue": "dialog"}  # task kind -> selection category


def check_config(cfg: DictConfig) -> None:
    """Refuse invalid values before any data or model is read."""
    def refuse(key, value, valid):
        raise ConfigError(f"{key}={value!r} is not valid; {valid}")

    if cfg.method.name not in METHODS:
        refuse("method", cfg.method.name, f"valid: {', '.join(METHODS)}")
    if cfg.eval.prompt_style not in PROMPT_STYLES:
        refuse("eval.prompt_style", cfg.eval.prompt_style, f"valid: {', '.join(PROMPT_STYLES)}")
    if cfg.eval.split not in SPLITS:
        refuse("eval.split", cfg.eval.split, f"valid: {', '.join(SPLITS)}")
    if cfg.eval.limit is not None and cfg.eval.limit <= 0:
        refuse("eval.limit", cfg.eval.limit, "it must be a positive number of examples (or null for all)")
    if cfg.eval.batch_size < 1:
        refuse("eval.batch_size", cfg.eval.batch_size, "it must be at least 1")
    if cfg.eval.max_batch_tokens is not None and cfg.eval.max_batch_tokens < 1:
        refuse("eval.max_batch_tokens", cfg.eval.max_batch_tokens, "it must be positive (or null: no limit)")
    if cfg.eval.heldout and cfg.method.name != "none" and cfg.eval.limit is None:
        refuse("eval.heldout", True, "it needs eval.limit: without a test split, a task's held-out examples are "
               "the validation rows after the first eval.limit")
    if cfg.method.name != "none" and not cfg.optim.lr > 0:
        refuse("optim.lr", cfg.optim.lr, "the learning rate must be positive")
    if not cfg.tasks.include:
        refuse("tasks.include", list(cfg.tasks.include), "name at least one task")
    check_task_names(cfg.tasks.include)
    check_model_config(cfg.model)
    sharded = strategy_of(cfg.trainer.get("strategy"))[0]
    if sharded.startswith("fsdp") or sharded == "deepspeed_stage_3":
        for key in ("save_checkpoint", "eval.heldout"):
            if OmegaConf.select(cfg, key):
                refuse(key, True, f"not supported yet with sharded parameters ({sharded}): set {key}=false")
    if not Path(cfg.paths.data_dir).is_dir():
        raise DataError(f"data folder not found: {cfg.paths.data_dir} "
                        f"(set GAP_DATA_DIR or paths.data_dir to the folder holding tasks/ and corpora/)")
    check_memory(cfg)


def read_inputs(cfg: DictConfig) -> tuple[dict, dict | None, list[str] | None]:
    """The evaluation examples of every task (and, with `eval.heldout`, the held-out ones) and the corpus
    samples: read (and checked) before loading a model."""
    args = (cfg.paths.data_dir, cfg.tasks.include, cfg.eval.split, cfg.eval.limit, cfg.eval.prompt_style)
    examples = load_eval_examples(*args)
    heldout = load_eval_examples(*args, heldout=True) if cfg.eval.heldout and cfg.method.name != "none" else None
    texts = None
    if cfg.method.name != "none":
        texts = select_samples(read_corpus(cfg.corpus.path, cfg.corpus.text_field),
                               cfg.corpus.index, cfg.corpus.num_samples, cfg.corpus.name)
    return examples, heldout, texts


def make_evaldata(cfg: DictConfig, examples: dict, tokenizer) -> EvalDataModule:
    return EvalDataModule(examples, tokenizer, cfg.model.max_length, cfg.eval.batch_size,
                          cfg.eval.max_batch_tokens, cfg.eval.max_new_tokens, cfg.eval.prompt_style)


def make_module(cfg: DictConfig, model, tokenizer, tasks: list[str] | None = None) -> GAPModule:
    return GAPModule(model, tokenizer, tasks or cfg.tasks.include, cfg.method.name, cfg.optim.lr, cfg.optim.betas,
                     cfg.model.max_length, cfg.eval.max_new_tokens, share_context=cfg.eval.share_context,
                     prompt_style=cfg.eval.prompt_style)


def make_trainer(cfg: DictConfig, model, **kwargs) -> L.Trainer:
    return instantiate(cfg.trainer, strategy=make_strategy(cfg.trainer.get("strategy"), model), **kwargs)


class _WriteAfterEvaluation(L.Callback):
    def __init__(self, writer: ResultsWriter):
        self.writer = writer

    def on_validation_end(self, trainer, pl_module):
        self.writer.write("running", pl_module.evaluations)


def run_baseline(cfg: DictConfig, trainer, module: GAPModule, evaldata: EvalDataModule, loggers) -> None:
    """Evaluate the unchanged model, or reuse its cached evaluation (`gap.baselines`)."""
    baseline = load_baseline(cfg)
    if baseline is None:
        trainer.validate(module, dataloaders=evaldata.val_dataloader(), verbose=False)
        if rank_zero_only.rank == 0:
            store_baseline(cfg, module.evaluations[-1])
        return
    log.info("baseline evaluation reused from %s", baseline["cached"])
    module.evaluations.append(baseline)
    for logger in loggers:
        logger.log_metrics({f"val/{k}": v for k, v in baseline["metrics"].items()}, step=0)


def evaluate_once(cfg: DictConfig, model, tokenizer, data: EvalDataModule, tasks: list[str]) -> dict:
    """One evaluation of `tasks` outside the run's history and loggers (the held-out evaluations)."""
    module = make_module(cfg, model, tokenizer, tasks)
    trainer = make_trainer(cfg, model, logger=False, callbacks=[], enable_progress_bar=False)
    trainer.validate(module, dataloaders=data.val_dataloader(tasks), verbose=False)
    return module.evaluations[-1]


def save_checkpoint(model, tokenizer, path: Path) -> None:
    """A standard Hugging Face checkpoint (also for a model loaded from GGUF: see `gap.modules.loading`)."""
    if rank_zero_only.rank != 0:
        return
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def run_heldout(cfg: DictConfig, model, tokenizer, data: EvalDataModule, keeper: KeepSelectedWeights,
                baseline: dict) -> dict:
    """The selected weights of each category on its tasks' held-out examples, beside the baseline's."""
    selected = {"metrics": {}, "predictions": {}, "epochs": {}}
    by_epoch: dict[int, list[str]] = {}
    for category, (epoch, _) in keeper.weights.items():
        by_epoch.setdefault(epoch, []).append(category)
        selected["epochs"][category] = epoch
    for epoch, categories in by_epoch.items():
        model.load_state_dict(keeper.weights[categories[0]][1])
        if cfg.save_checkpoint:
            for category in categories:
                save_checkpoint(model, tokenizer, Path(cfg.paths.output_dir) / f"checkpoint-selected-{category}")
        tasks = [t for t in data.tasks if CATEGORY[TASKS[t].kind] in categories]
        evaluation = evaluate_once(cfg, model, tokenizer, data, tasks)
        selected["metrics"] |= evaluation["metrics"]
        selected["predictions"] |= evaluation["predictions"]
    return {"baseline": baseline, "selected": selected}


def train(cfg: DictConfig) -> dict:
    """Run one job and return its `results.json` document (also written to `paths.output_dir`)."""
    started = time.perf_counter()
    out_dir = Path(cfg.paths.output_dir)
    if in_multirun() and cfg.get("sweep", {}).get("skip_done") and (done := finished_results(out_dir)):
        print(f"skipped: {out_dir} finished ok before (sweep.skip_done=false runs it again)")
        return done
    check_config(cfg)
    examples, heldout, texts = read_inputs(cfg)
    if in_multirun():
        with open_dict(cfg):
            cfg.group = cfg.sweep.name
    config = OmegaConf.to_container(cfg, resolve=True)
    writer = ResultsWriter(out_dir, config)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # the corpus samples are checked with the tokenizer before the model loads
    tokenizer = kept_tokenizer(cfg.model) or load_tokenizer(cfg.model)
    corpus = CorpusDataModule(texts, tokenizer, cfg.model.max_length, cfg.corpus.index) if texts else None
    tokenizer, model = load_pretrained(cfg.model, keep=in_multirun(), tokenizer=tokenizer)
    evaldata = make_evaldata(cfg, examples, tokenizer)
    module = make_module(cfg, model, tokenizer)
    heldout_data = make_evaldata(cfg, heldout, tokenizer) if heldout else None
    loggers = make_loggers(cfg.get("logger"), config)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    keeper = KeepSelectedWeights()
    trainer = make_trainer(cfg, model, logger=loggers or False,
                          callbacks=[*callbacks, _WriteAfterEvaluation(writer), *([keeper] if heldout_data else [])])
    heldout_results, preempted = None, False
    try:
        run_baseline(cfg, trainer, module, evaldata, loggers)
        if heldout_data:
            heldout_baseline = evaluate_once(cfg, model, tokenizer, heldout_data, heldout_data.tasks)
        if corpus is not None:
            module.train()  # as loaded, the model is in eval mode; dropout is off either way
            trainer.fit(module, train_dataloaders=corpus.train_dataloader(),
                        val_dataloaders=evaldata.val_dataloader())
        if cfg.save_checkpoint:
            save_checkpoint(model, tokenizer, out_dir / "checkpoint")
        if heldout_data and keeper.weights:
            heldout_results = run_heldout(cfg, model, tokenizer, heldout_data, keeper, heldout_baseline)
            for name, part in heldout_results.items():
                for logger in loggers:
                    logger.log_metrics({f"heldout/{name}/{k}": v for k, v in part["metrics"].items()})
        results = writer.write("diverged" if module.diverged else "ok", module.evaluations,
                               error="non-finite training loss" if module.diverged else None,
                               heldout=heldout_results, used=resources(started))
        summarize_run(loggers, results)
    except BaseException as err:
        preempted = is_preemption(err)
        if preempted:
            writer.write("preempted", module.evaluations, error="SIGTERM: stopped before the end")
        else:
            writer.write("failed", module.evaluations, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        finish_loggers(loggers, preempted)
    if rank_zero_only.rank == 0:
        print(metric_table(results))
        used = results["resources"]
        print(f"{used['seconds']} s, peak memory: {used['peak_rss_gb']} GB resident"
              + (f", {used['peak_gpu_memory_gb']} GB on {used['device']}" if "device" in used else ""))
        print(f"results: {out_dir / 'results.json'}")
    return results


def run_cli(job, cfg: DictConfig) -> None:
    """Run a job; a `GapError` becomes one `error:` line and exit code 2 (bad input) or 1, with a failed
    `results.json` left in the run directory. In a sweep, a failed job (any error) is recorded and the
    grid goes on. SIGTERM ends the job, and a sweep, with exit code 143 (`gap.preemption`)."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    try:
        with raise_on_sigterm():
            job(cfg)
    except GapError as err:
        try:
            ResultsWriter(Path(cfg.paths.output_dir), OmegaConf.to_container(cfg, resolve=False)).write(
                "failed", [], error=str(err))
        finally:
            if not in_multirun():
                fail(err)
            print(f"error: {err}", file=sys.stderr)
    except BaseException as err:  # train() has already written its results.json
        if is_preemption(err):
            print(f"preempted: results so far in {cfg.paths.output_dir}; run it again to redo the job",
                  file=sys.stderr)
            sys.exit(EXIT_CODE)
        if not in_multirun() or not isinstance(err, Exception):
            raise
        log.exception("job failed: %s", cfg.paths.output_dir)
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_main(cfg: DictConfig) -> None:
    run_cli(train, cfg)


main = hydra_entry(hydra_main)


if __name__ == "__main__":
    main()
