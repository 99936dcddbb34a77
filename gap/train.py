"""One GAP run: evaluate the unchanged model, take ascent steps on one corpus sample, evaluate after each.

`python -m gap.train [overrides]`; `train(cfg)` is the whole run, `main` only hands it the Hydra config.
"""
import logging
import time
from contextlib import nullcontext, suppress
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from gap.baselines import load_baseline, store_baseline
from gap.cli import command
from gap.data.corpus import CorpusDataModule, read_corpus, select_samples
from gap.data.evaluation import EvalDataModule, load_eval_examples
from gap.data.random_tokens import random_token_samples
from gap.data.tasks import category_name, check_task_names
from gap.errors import ConfigError, DataError, GapError
from gap.files import one_writer, replace_folder
from gap.loggers import EvaluationStep, finish_loggers, make_loggers, summarize_run, track_baseline
from gap.memory.check import check_memory, size_eval_batches
from gap.memory.plan import gpu_run, parameters_sharded, plan_of, strategy_of
from gap.modules.callbacks import KeepSelectedWeights
from gap.modules.gap_module import GAPModule
from gap.modules.loading import check_model_config, kept_tokenizer, load_pretrained, load_tokenizer
from gap.modules.lora import lora_adapter
from gap.modules.progress import ConsoleProgress
from gap.preemption import stop_reason
from gap.results import ResultsWriter, metric_table, resources
from gap.schema import NULL_ARM, validate_config
from gap.scoring.evaluator import Scoring
from gap.strategies import make_strategy
from gap.sweep import finished_results, in_multirun

log = logging.getLogger("gap")


def check_config(cfg: DictConfig) -> None:
    """Refuse invalid values before any data or model is read."""
    validate_config(cfg)
    if cfg.eval.heldout and cfg.method.name != "none" and cfg.eval.limit is None:
        raise ConfigError("eval.heldout=True is not valid without eval.limit: the held-out examples are the "
                          "ones after the first eval.limit")
    if OmegaConf.select(cfg, "method.lora.enabled") and cfg.eval.heldout:
        raise ConfigError("eval.heldout=True is not supported yet with method.lora: set eval.heldout=false")
    if str(cfg.trainer.precision) in ("16", "16-mixed", "16-true") and not gpu_run(cfg.trainer):
        raise ConfigError(f"trainer.precision={cfg.trainer.precision!r} is not valid: fp16 needs a GPU, and this "
                          f"run has none (Lightning would switch to bf16 on its own); on the CPU use 32-true or "
                          f"bf16-mixed")
    check_task_names(cfg.tasks.include)
    if not cfg.tasks.include and not cfg.lm_eval.tasks:
        raise ConfigError("tasks.include=[] and lm_eval.tasks=[]: no task to evaluate")
    if cfg.lm_eval.tasks:
        from gap.harness.tasks import check_names

        check_names(list(cfg.lm_eval.tasks), cfg.lm_eval.include_path)
    check_model_config(cfg.model)
    strategy = strategy_of(cfg.trainer.get("strategy"))[0]
    if cfg.method.name == NULL_ARM and strategy != "unsharded":  # each rank would hold a shard's gradient
        raise ConfigError(f"method={NULL_ARM} is not supported yet with sharded gradients ({strategy}): "
                          "use one device or trainer=ddp")
    if parameters_sharded(strategy):
        for key in ("save_checkpoint", "eval.heldout"):
            if OmegaConf.select(cfg, key):
                raise ConfigError(f"{key}=True is not supported yet with sharded parameters ({strategy}): "
                                  f"set {key}=false")
    if strategy != "unsharded" and not gpu_run(cfg.trainer):  # Lightning refuses it only once the model is loaded
        raise ConfigError(f"trainer.strategy ({strategy}) is not valid: FSDP and DeepSpeed need CUDA GPUs, and this "
                          f"run has none (trainer.accelerator={cfg.trainer.accelerator}); on the CPU use "
                          f"trainer=default, or trainer=ddp trainer.accelerator=cpu trainer.devices=2")
    if not Path(cfg.paths.data_dir).is_dir():
        raise DataError(f"data folder not found: {cfg.paths.data_dir}; write it with `python -m gap.data fetch` "
                        f"(needs network), or set GAP_DATA_DIR or paths.data_dir to a folder holding tasks/ "
                        f"and corpora/")
    size_eval_batches(cfg)
    check_memory(cfg)


def harness_suite(cfg: DictConfig):
    """The run's lm-evaluation-harness tasks (`lm_eval.tasks`), loaded (`gap.harness.tasks.HarnessSuite`), or
    None without any."""
    if not cfg.lm_eval.tasks:
        return None
    from gap.harness.tasks import HarnessSuite

    lm_options = dict(max_length=cfg.model.max_length, batch_size=cfg.eval.batch_size,
                      max_batch_tokens=cfg.eval.max_batch_tokens, share_context=cfg.eval.share_context)
    return HarnessSuite(list(cfg.lm_eval.tasks), cfg.lm_eval.include_path, cfg.lm_eval.num_fewshot,
                        cfg.lm_eval.bootstrap_iters, lm_options)


def read_inputs(cfg: DictConfig, harness=None) -> tuple[dict, dict | None, list[str] | None]:
    """The evaluation examples of every task (and, with `eval.heldout`, the held-out ones), with the documents
    of the `harness` units (`harness_suite`), and the corpus samples: read (and checked) before loading a
    model."""
    args = (cfg.paths.data_dir, cfg.tasks.include, cfg.eval.split, cfg.eval.limit, cfg.eval.prompt_style)
    examples = load_eval_examples(*args)
    heldout = load_eval_examples(*args, heldout=True) if cfg.eval.heldout and cfg.method.name != "none" else None
    if harness is not None:
        examples |= harness.examples(cfg.eval.limit)
        if heldout is not None:
            heldout |= harness.examples(cfg.eval.limit, heldout=True)
    texts = None
    if cfg.method.name != "none" and cfg.corpus.name == "random_tokens":
        texts = random_token_samples(cfg.corpus.index, cfg.corpus.num_samples, cfg.corpus.length)
    elif cfg.method.name != "none":
        texts = select_samples(read_corpus(cfg.corpus.path, cfg.corpus.text_field),
                               cfg.corpus.index, cfg.corpus.num_samples, cfg.corpus.name)
    return examples, heldout, texts


def scoring_of(cfg: DictConfig) -> Scoring:
    return Scoring(max_length=cfg.model.max_length, max_new_tokens=cfg.eval.max_new_tokens,
                   share_context=cfg.eval.share_context, harness=cfg.eval.prompt_style == "harness",
                   max_batch_tokens=cfg.eval.max_batch_tokens)


def evaluation_ranks(cfg: DictConfig) -> int:
    """Processes that split the evaluation batches: 1 where parameters are sharded (every forward pass is
    collective, so every rank scores every batch)."""
    plan = plan_of(cfg)
    return 1 if parameters_sharded(plan.strategy) else plan.world


def make_evaldata(cfg: DictConfig, examples: dict, tokenizer) -> EvalDataModule:
    return EvalDataModule(examples, tokenizer, cfg.model.max_length, cfg.eval.batch_size, cfg.eval.max_batch_tokens,
                          cfg.eval.max_new_tokens, cfg.eval.prompt_style, evaluation_ranks(cfg))


def make_module(cfg: DictConfig, model, tokenizer, tasks: list[str], harness=None) -> GAPModule:
    sharded = parameters_sharded(plan_of(cfg).strategy)
    return GAPModule(model, tokenizer, tasks, cfg.method.name, cfg.optim.lr, cfg.optim.betas, scoring_of(cfg),
                     split_batches=not sharded, beta=cfg.method.get("beta"),
                     direction_seed=cfg.method.get("direction_seed"), harness=harness)


def make_trainer(cfg: DictConfig, model, **kwargs) -> L.Trainer:
    return instantiate(cfg.trainer, strategy=make_strategy(cfg.trainer.get("strategy"), model),
                       enable_progress_bar=False, **kwargs)


class _WriteAfterEvaluation(L.Callback):
    def __init__(self, writer: ResultsWriter):
        self.writer = writer

    def on_validation_end(self, trainer, pl_module):
        self.writer.write("running", pl_module.evaluations)


def run_baseline(cfg: DictConfig, examples: dict, trainer, module: GAPModule, evaldata: EvalDataModule, loggers,
                 progress: ConsoleProgress) -> None:
    """Evaluate the unchanged model, or reuse its cached evaluation (`gap.baselines`)."""
    baseline = load_baseline(cfg, examples)
    if baseline is None:
        trainer.validate(module, datamodule=evaldata, verbose=False)
        if rank_zero_only.rank == 0:
            store_baseline(cfg, examples, module.evaluations[-1])
        return
    log.info("baseline evaluation reused from %s", baseline["cached"])
    module.evaluations.append(baseline)
    progress.show_evaluation(baseline)
    for logger in loggers:
        logger.log_metrics({f"val/{k}": v for k, v in baseline["metrics"].items()}, step=0)


def evaluate_once(cfg: DictConfig, model, tokenizer, data: EvalDataModule, label: str = "eval", harness=None,
                  head: str | None = None, baseline: dict | None = None) -> dict:
    """One evaluation of `data`'s tasks outside the run's history and loggers (held-out evaluations); its
    console line is named `head` (default: baseline) with its changes against `baseline`'s metrics."""
    module = make_module(cfg, model, tokenizer, data.tasks, harness)
    trainer = make_trainer(cfg, model, logger=False, callbacks=[ConsoleProgress(label, head=head, baseline=baseline)])
    trainer.validate(module, datamodule=data, verbose=False)
    return module.evaluations[-1]


def save_checkpoint(model, tokenizer, path: Path) -> None:
    """A standard Hugging Face checkpoint (also for a model loaded from GGUF: see `gap.modules.loading`),
    put in place whole (`replace_folder`: a kill or a full disk leaves the one before)."""
    if rank_zero_only.rank != 0:
        return

    def write(folder):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    replace_folder(path, write)


def heldout_data(cfg: DictConfig, examples: dict, tokenizer) -> dict[str, EvalDataModule]:
    """The held-out examples as one data module per category (each category's selected weights differ)."""
    by_category: dict[str, dict] = {}
    for task, exs in examples.items():
        by_category.setdefault(category_name(task), {})[task] = exs
    return {category: make_evaldata(cfg, exs, tokenizer) for category, exs in by_category.items()}


def merged(evaluations: list[dict]) -> dict:
    """One evaluation's metrics and predictions from the evaluations of disjoint task sets."""
    return {key: {k: v for e in evaluations for k, v in e[key].items()} for key in ("metrics", "predictions")}


def run_heldout(cfg: DictConfig, model, tokenizer, data: dict[str, EvalDataModule], keeper: KeepSelectedWeights,
                baseline: dict, harness=None) -> dict:
    """The selected weights of each category on its tasks' held-out examples, beside the baseline's (a
    category reported at another's selection, lm_eval by default, under that one's weights)."""
    evaluations = []
    for category, (_, step, weights) in keeper.weights.items():
        model.load_state_dict(weights)
        if cfg.save_checkpoint and category not in keeper.followers:
            save_checkpoint(model, tokenizer, Path(cfg.paths.output_dir) / f"checkpoint-selected-{category}")
        evaluations.append(evaluate_once(cfg, model, tokenizer, data[category], f"held-out {category}", harness,
                                         head=f"selected (step {step})", baseline=baseline["metrics"]))
    selected = {**merged(evaluations), "epochs": {c: epoch for c, (epoch, _, _) in keeper.weights.items()}}
    return {"baseline": baseline, "selected": selected}


def resolved(cfg: DictConfig) -> dict:
    """The config with interpolations resolved, or as written where one cannot resolve."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - a bad interpolation is reported by the checks that follow
        return OmegaConf.to_container(cfg, resolve=False)


def train(cfg: DictConfig) -> dict:
    """Run one job and return its `results.json` document (also written to `paths.output_dir`). Whatever
    ends the job, `results.json` says how (failed, preempted, diverged) with the evaluations so far.
    One process writes a run folder at a time (`one_writer`): a sweep's job waits for another writer of its
    folder (and then finds it done), a single run stops with an error."""
    out_dir = Path(cfg.paths.output_dir)
    with one_writer(out_dir, wait=in_multirun()) if rank_zero_only.rank == 0 else nullcontext():
        return run_job(cfg, out_dir)


def run_job(cfg: DictConfig, out_dir: Path) -> dict:
    """`train`'s job, its folder held: skipped when done (a sweep), else run and recorded however it ends."""
    started = time.perf_counter()
    if in_multirun() and cfg.get("sweep", {}).get("skip_done") and (done := finished_results(out_dir)):
        print(f"skipped: {out_dir} finished ok before (sweep.skip_done=false runs it again)")
        return done
    if in_multirun():
        with open_dict(cfg):
            cfg.group = cfg.sweep.name
    config = resolved(cfg)
    writer = ResultsWriter(out_dir, config)
    module, loggers, status = None, [], "failed"
    try:
        check_config(cfg)
        harness = harness_suite(cfg)
        examples, heldout, texts = read_inputs(cfg, harness)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        # the corpus samples are checked with the tokenizer before the model loads
        tokenizer = kept_tokenizer(cfg.model) or load_tokenizer(cfg.model)
        corpus = CorpusDataModule(texts, tokenizer, cfg.model.max_length, cfg.corpus.index,
                                  legacy=cfg.method.name == "gap_legacy") if texts else None
        if corpus is not None:
            corpus.setup("fit")
        tokenizer, model = load_pretrained(cfg.model, keep=in_multirun(), tokenizer=tokenizer)
        evaldata = make_evaldata(cfg, examples, tokenizer)
        module = make_module(cfg, model, tokenizer, evaldata.tasks, harness)
        held = heldout_data(cfg, heldout, tokenizer) if heldout else None
        loggers = make_loggers(cfg.get("logger"), config)
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
        keeper, progress = KeepSelectedWeights(cfg.lm_eval.select), ConsoleProgress()
        trainer = make_trainer(cfg, model, logger=loggers or False,
                               callbacks=[*callbacks, progress, EvaluationStep(), _WriteAfterEvaluation(writer),
                                          *([keeper] if held else [])])
        heldout_results = None
        run_baseline(cfg, examples, trainer, module, evaldata, loggers, progress)
        track_baseline(loggers, module.evaluations[0]["metrics"])
        if held:
            heldout_baseline = merged([evaluate_once(cfg, model, tokenizer, data, f"held-out {category}", harness)
                                       for category, data in held.items()])
        if corpus is not None:
            module.train()  # as loaded, the model is in eval mode; dropout is off either way
            with lora_adapter(model, cfg.method.get("lora")):
                trainer.fit(module, train_dataloaders=corpus.train_dataloader(),
                            val_dataloaders=evaldata.val_dataloader())
        if cfg.save_checkpoint:
            save_checkpoint(model, tokenizer, out_dir / "checkpoint")
        if held and keeper.weights:
            heldout_results = run_heldout(cfg, model, tokenizer, held, keeper, heldout_baseline, harness)
            for name, part in heldout_results.items():
                for logger in loggers:
                    logger.log_metrics({f"heldout/{name}/{k}": v for k, v in part["metrics"].items()})
        results = writer.write("diverged" if module.diverged else "ok", module.evaluations,
                               error="non-finite training loss" if module.diverged else None,
                               heldout=heldout_results, used=resources(started))
        status = results["status"]
        summarize_run(loggers, results, module.evaluations, examples, cfg.tracking, out_dir)
    except BaseException as err:
        if status == "failed":  # the final results are not on disk yet (else a late signal changes nothing)
            evaluations = module.evaluations if module is not None else []
            if reason := stop_reason(err):
                status, error = "preempted", reason
            else:
                error = str(err) if isinstance(err, GapError) else f"{type(err).__name__}: {err}"
            with suppress(OSError):  # a full disk: the error that ended the job is the one to report
                writer.write(status, evaluations, error=error)
        raise
    finally:
        finish_loggers(loggers, status, out_dir)
    if rank_zero_only.rank == 0:
        print(metric_table(results))
        used = results["resources"]
        print(f"{used['seconds']} s, peak memory: {used['peak_rss_gb']} GB resident"
              + (f", {used['peak_gpu_memory_gb']} GB on {used['device']}" if "device" in used else ""))
        print(f"results: {out_dir / 'results.json'}")
    return results


main = command("train", train)


if __name__ == "__main__":
    main()
