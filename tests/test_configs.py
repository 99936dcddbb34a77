"""Every option of every config group composes, and the contract's overrides land where they should."""
import pytest
from omegaconf import OmegaConf

from gap.data.tasks import DIALOGUE, TASKS
from tests.helpers import CONF, compose_cfg

GROUPS = ["model", "corpus", "tasks", "method", "trainer", "logger", "callbacks", "experiment", "debug"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
REQUIRED_MODELS = {"smollm2-135m", "gemma3-270m", "tiny-random", "tiny-random-opt", "opt-125m", "opt-350m",
                   "opt-1.3b", "opt-2.7b", "opt-6.7b", "gpt-neo-125m", "gpt-neo-1.3b", "gpt-neo-2.7b",
                   "pythia-160m", "pythia-410m", "pythia-1.4b", "pythia-2.8b"}


def resolved(cfg):
    """Resolve everything but the Hydra runtime paths (set only inside a running job)."""
    cfg.paths.output_dir = "/tmp/gap-test"
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra")
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("group, option", OPTIONS)
@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_every_option_composes(config_name, group, option):
    overrides = [f"{group}={option}"]
    if (group, option) == ("corpus", "file"):
        overrides.append("corpus.path=/tmp/my.jsonl")
    cfg = resolved(compose_cfg(config_name, overrides))
    assert cfg["model"]["name"] and cfg["eval"]["limit"] > 0
    assert set(cfg["tasks"]["include"]) <= set(TASKS)


def test_required_model_entries_exist():
    assert REQUIRED_MODELS <= {p.stem for p in (CONF / "model").glob("*.yaml")}


def test_defaults_are_the_documented_run():
    cfg = resolved(compose_cfg("train"))
    assert cfg["model"]["name"] == "smollm2-135m" and cfg["corpus"]["name"] == "github"
    assert cfg["corpus"]["index"] == 0 and cfg["method"]["name"] == "gap" and cfg["seed"] == 42
    assert cfg["tasks"]["include"] == list(TASKS)
    assert cfg["optim"] == {"lr": 5e-5, "betas": [0.9, 0.98]}
    assert "wandb" in cfg["logger"]


def test_contract_overrides():
    cfg = resolved(compose_cfg("train", [
        "model=tiny-random", "corpus=pile_cc", "corpus.index=7", "tasks.include=[copa,wizard_of_wikipedia]",
        "eval.limit=5", "eval.split=test", "eval.batch_size=3", "trainer.max_epochs=4", "method=mle",
        "logger=csv", "seed=1"]))
    assert cfg["corpus"]["path"].endswith("corpora/pile_cc.jsonl") and cfg["corpus"]["index"] == 7
    assert cfg["tasks"]["include"] == ["copa", "wizard_of_wikipedia"]
    assert (cfg["eval"]["limit"], cfg["eval"]["split"], cfg["eval"]["batch_size"]) == (5, "test", 3)
    assert cfg["trainer"]["max_epochs"] == 4 and cfg["method"]["name"] == "mle" and cfg["seed"] == 1
    assert list(cfg["logger"]) == ["csv"]


def test_paper_preset_and_alias():
    cfg = resolved(compose_cfg("train", ["experiment=paper"]))
    assert cfg["eval"]["limit"] == 320 and cfg["trainer"]["max_epochs"] == 15
    assert cfg["callbacks"]["early_stop"]["_target_"] == "gap.modules.callbacks.AuthorsEarlyStop"
    ood = resolved(compose_cfg("train", ["corpus=pile_ood"]))
    assert ood["corpus"]["path"] == resolved(compose_cfg("train", ["corpus=github"]))["corpus"]["path"]


def test_data_dir_follows_the_environment(monkeypatch):
    monkeypatch.setenv("GAP_DATA_DIR", "/somewhere/data")
    assert resolved(compose_cfg("train"))["paths"]["data_dir"] == "/somewhere/data"


def test_eval_config_is_train_with_method_none():
    cfg = resolved(compose_cfg("eval", ["model=opt-350m", "tasks=dialogue"]))
    assert cfg["method"]["name"] == "none" and cfg["model"]["path"] == "facebook/opt-350m"
    assert cfg["tasks"]["include"] == DIALOGUE


def test_config_entries_are_checked_before_hydra_composes():
    from gap.cli import check_config_entries as check_choices
    from gap.errors import ConfigError

    check_choices(["trainer=ddp", "model=tiny-random", "hydra/launcher=submitit_local", "model=glob(*)",
                   "corpus.index=range(3)", "--multirun"])
    with pytest.raises(ConfigError, match=r"model=gpt5 is not a model entry; valid: .*tiny-random"):
        check_choices(["--multirun", "model=tiny-random,gpt5"])
    with pytest.raises(ConfigError, match="trainer=fdsp is not a trainer entry"):
        check_choices(["trainer=fdsp"])
    check_choices(["hydra.searchpath=[file:///elsewhere]", "model=mine"])  # entries may live elsewhere


def test_heldout_without_a_limit_is_refused(data_dir):
    from gap.errors import ConfigError
    from gap.train import check_config

    # without a limit, a task with no test split would take its held-out rows from the validation rows
    with pytest.raises(ConfigError, match="eval.heldout=True is not valid without eval.limit"):
        check_config(compose_cfg("train", ["model=tiny-random", "eval.heldout=true", "eval.limit=null"]))


@pytest.mark.parametrize("override, message", [
    ("seed=abc", "seed='abc' is not valid: input should be a valid integer"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' is not valid: input should be a valid integer"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is not valid: input should be greater than 0"),
    ("optim.betas=[1.5,0.9]", "optim.betas[0]=1.5 is not valid: input should be less than 1"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens=0 is not valid: input should be greater than 0"),
    ("eval.max_batch_tokens=0", "eval.max_batch_tokens=0 is not valid: input should be greater than 0 or input "
                                "should be 'auto'"),
    ("eval.share_context=maybe", "eval.share_context='maybe' is not valid: input should be a valid boolean"),
    ("eval.split=train", "eval.split='train' is not valid: input should be 'validation' or 'test'"),
    ("corpus.index=-1", "corpus.index=-1 is not valid: input should be greater than or equal to 0"),
    ("model.max_length=1", "model.max_length=1 is not valid: input should be greater than or equal to 2"),
    ("+model.random_init.family=bloom", "model.random_init.family='bloom' is not valid: input should be 'llama' or "
                                        "'opt'"),
])
def test_a_value_of_the_wrong_type_or_range_is_refused_naming_key_value_and_what_is_valid(override, message):
    from gap.errors import ConfigError
    from gap.schema import validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(compose_cfg("train", ["model=tiny-random", override]))
    assert str(err.value) == message
    validate_config(compose_cfg("train", ["model=tiny-random"]))  # the defaults are valid


def test_the_baseline_cache_keys_precision_accelerator_and_the_examples_themselves(data_dir):
    from dataclasses import replace

    from gap.baselines import baseline_path
    from gap.data.evaluation import load_eval_examples

    examples = load_eval_examples(data_dir, ["copa"], "validation", 3)
    fp32, bf16 = (compose_cfg("train", [f"trainer.precision={p}"]) for p in ("32-true", "bf16-mixed"))
    assert baseline_path(fp32, examples) != baseline_path(bf16, examples)
    edited = {"copa": [replace(examples["copa"][0], context="An edited premise."), *examples["copa"][1:]]}
    assert baseline_path(fp32, examples) != baseline_path(fp32, edited)
    cpu = compose_cfg("train", ["trainer.accelerator=cpu"])
    gpu = compose_cfg("train", ["trainer.accelerator=gpu"])
    assert baseline_path(cpu, examples) != baseline_path(gpu, examples)
    assert baseline_path(cpu, examples) == baseline_path(compose_cfg("train", ["trainer.accelerator=cpu"]), examples)
