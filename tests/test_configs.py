"""Every option of every config group composes, and the contract's overrides land where they should."""
import pytest
from omegaconf import OmegaConf

from gap.data.tasks import TASKS
from tests.conftest import CONF, compose_cfg

GROUPS = ["model", "corpus", "tasks", "method", "trainer", "logger", "callbacks", "experiment", "debug"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
REQUIRED_MODELS = {"smollm2-135m", "tiny-random", "opt-125m", "opt-350m", "opt-1.3b", "opt-2.7b", "opt-6.7b",
                   "gpt-neo-125m", "gpt-neo-1.3b", "gpt-neo-2.7b", "pythia-160m", "pythia-410m",
                   "pythia-1.4b", "pythia-2.8b"}


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
    assert cfg["tasks"]["include"] == [t for t, spec in TASKS.items() if spec.kind == "dialogue"]


def test_config_entries_are_checked_before_hydra_composes():
    from gap.choices import check_choices
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
    with pytest.raises(ConfigError, match="eval.heldout=True is not valid; it needs eval.limit"):
        check_config(compose_cfg("train", ["model=tiny-random", "eval.heldout=true", "eval.limit=null"]))


def test_the_baseline_cache_keeps_precisions_apart():
    from gap.baselines import baseline_path

    fp32, bf16 = (compose_cfg("train", [f"trainer.precision={p}"]) for p in ("32-true", "bf16-mixed"))
    assert baseline_path(fp32) != baseline_path(bf16)
