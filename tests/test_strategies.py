"""The strategy config groups, completed with the loaded model's transformer blocks."""
from lightning.pytorch.strategies import FSDPStrategy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from gap.strategies import make_strategy, transformer_blocks
from tests.helpers import compose_cfg


def test_fsdp_wraps_each_transformer_block(tiny):
    model = tiny[0]
    assert transformer_blocks(model) == {LlamaDecoderLayer}
    cfg = compose_cfg("train", ["trainer=fsdp", "model=tiny-random"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.strategy.sharding_strategy == "FULL_SHARD"
    strategy = make_strategy(cfg.trainer.strategy, model)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert not strategy._activation_checkpointing_kwargs
    checkpointed = compose_cfg("train", ["trainer=fsdp", "trainer.strategy.activation_checkpointing=true"])
    assert make_strategy(checkpointed.trainer.strategy, model)._activation_checkpointing_kwargs


def test_named_strategies_pass_through(tiny):
    assert make_strategy(compose_cfg("train", ["trainer=ddp"]).trainer.strategy, tiny[0]) == "ddp"
    assert make_strategy(compose_cfg("train").trainer.get("strategy"), tiny[0]) == "auto"
    deepspeed = compose_cfg("train", ["trainer=deepspeed", "trainer.strategy.stage=3"]).trainer
    assert deepspeed.strategy.stage == 3 and deepspeed.precision == "bf16-mixed"


def test_sharded_parameters_refuse_what_they_cannot_do_yet():
    import pytest

    from gap.errors import ConfigError
    from gap.train import check_config

    for overrides in (["eval.heldout=true"], ["save_checkpoint=true"], ["experiment=paper"]):
        with pytest.raises(ConfigError, match="not supported yet with sharded parameters"):
            check_config(compose_cfg("train", ["trainer=fsdp", *overrides]))

