"""The memory preflight: parameter counts without weights, the estimate's arithmetic, the refusal, the table."""

from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf
from transformers import OPTConfig, OPTForCausalLM

from gap.errors import ConfigError, exit_code
from gap.memory import __main__ as table_command
from gap.memory.arch import Arch, gguf_arch, model_arch
from gap.memory.check import check_memory
from gap.memory.estimate import GB, Plan, estimate, total
from gap.memory.hardware import capacity
from gap.memory.plan import device_indices, plan_of, strategy_of
from tests.helpers import CONF, compose_cfg, embedded_gguf

ARCH = Arch(params=10**9, layers=10, hidden=1000, vocab=1000, kv_dim=1000)


def test_tiny_random_counted_on_meta_equals_the_real_model(tiny):
    model, _ = tiny
    arch = model_arch(OmegaConf.load(CONF / "model" / "tiny-random.yaml"))
    assert arch.params == sum(p.numel() for p in model.parameters())
    assert (arch.layers, arch.hidden, arch.vocab) == (2, 64, model.config.vocab_size)


def test_local_config_json_is_counted_on_meta(tmp_path):
    config = OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, vocab_size=100,
                       word_embed_proj_dim=16, max_position_embeddings=64)
    config.save_pretrained(tmp_path)
    cfg = OmegaConf.create({"name": "local", "path": str(tmp_path), "dtype": "float32"})
    assert model_arch(cfg).params == sum(p.numel() for p in OPTForCausalLM(config).parameters())


def test_a_model_without_attention_is_counted_with_no_keys(tmp_path):
    """Mamba: no attention heads in its config, nothing in its cache grows with the tokens."""
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(hidden_size=32, num_hidden_layers=2, state_size=4, vocab_size=100)
    config.save_pretrained(tmp_path)
    arch = model_arch(OmegaConf.create({"name": "local", "path": str(tmp_path), "dtype": "float32"}))
    assert arch.params == sum(p.numel() for p in MambaForCausalLM(config).parameters()) and arch.kv_dim == 0


def test_gguf_header_counts_smollm2():
    path = embedded_gguf()
    if not path.is_file():
        pytest.skip("the embedded model is not here (`make model`)")
    arch = gguf_arch(path)
    assert arch == Arch(params=134_515_008, layers=30, hidden=576, vocab=49152, kv_dim=192)  # 3 KV heads x 64


@pytest.mark.parametrize("name", [p.stem for p in (CONF / "model").glob("*.yaml")])
def test_model_summaries_are_plausible(name):
    """A typo in a summary shows: a GPT-style model has 12 L h^2 + V h parameters (2 V h when the output
    layer is not tied to the embeddings, as in Pythia), within 10%."""
    arch = OmegaConf.load(CONF / "model" / f"{name}.yaml").get("arch")
    if arch is None:
        pytest.skip("built in-process or read from its GGUF file")
    L, h, V = arch.layers, arch.hidden_size, arch.vocab_size
    assert min(abs(arch.num_parameters / (12 * L * h**2 + k * V * h) - 1) for k in (1, 2)) < 0.1


def test_unknown_architecture_lets_the_run_go(caplog):
    cfg = compose_cfg("train", ["model=opt-350m", "model.path=nobody/not-a-model", "~model.arch"])
    with caplog.at_level("INFO", logger="gap"):
        assert check_memory(cfg) is None
    assert "memory preflight skipped: unknown parameter count" in caplog.text


def test_fp32_adam_is_16_bytes_per_parameter():
    parts = estimate(ARCH, Plan())
    assert parts["weights"] + parts["grads"] + parts["optimizer"] == 16 * ARCH.params
    bf16 = estimate(ARCH, Plan(dtype="bfloat16", precision="bf16-true"))
    assert bf16["weights"] + bf16["grads"] + bf16["optimizer"] == 8 * ARCH.params
    assert estimate(ARCH, Plan(train=False))["grads"] == estimate(ARCH, Plan(train=False))["optimizer"] == 0


def test_sharding_divides_by_world_size():
    P, layer = ARCH.params, ARCH.params / ARCH.layers
    fsdp = estimate(ARCH, Plan(strategy="fsdp", world=8))
    assert fsdp["weights"] == 4 * P / 8 + 2 * layer * 4  # + the two gathered layers
    assert (fsdp["grads"], fsdp["optimizer"]) == (4 * P / 8, 8 * P / 8)
    zero2 = estimate(ARCH, Plan(strategy="deepspeed_stage_2", world=8))
    assert (zero2["weights"], zero2["grads"], zero2["optimizer"]) == (4 * P, 4 * P / 8, 8 * P / 8)
    zero3_bf16 = estimate(ARCH, Plan(strategy="deepspeed_stage_3", world=8, precision="bf16-mixed"))
    assert zero3_bf16["optimizer"] == 12 * P / 8 and zero3_bf16["autocast"] == 0  # fp32 master + moments
    ddp = estimate(ARCH, Plan(world=8))
    assert ddp["weights"] + ddp["grads"] + ddp["optimizer"] == 16 * P  # replicated


def test_total_counts_the_larger_of_training_and_evaluation():
    parts = estimate(ARCH, Plan(max_length=512, eval_tokens=8192))
    static = parts["weights"] + parts["grads"] + parts["optimizer"] + parts["runtime"]
    assert total(parts) == static + max(parts["train"], parts["eval"])


def test_activations_and_evaluation_by_hand():
    small = Arch(params=1000, layers=2, hidden=8, vocab=10, kv_dim=8)
    parts = estimate(small, Plan(max_length=4, eval_tokens=16))
    assert parts["train"] == 2 * 4 * 16 * 8 * 4 + 4 * 10 * 12  # 16 fp32 values per token and hidden unit
    # K and V of 6 E tokens, logits, one layer's activations
    assert parts["eval"] == 2 * 2 * 6 * 16 * 8 * 4 + 0.5 * 16 * 10 * (4 + 8) + 16 * 16 * 8 * 4
    # checkpointing keeps only layer inputs: the Adam step's temporary (P x 4 bytes) is then the larger
    assert estimate(small, Plan(max_length=4, eval_tokens=16, checkpointing=True))["train"] == 4 * 1000


@pytest.mark.parametrize("strategy, expected", [
    ("ddp", ("unsharded", False)), ("auto", ("unsharded", False)), ("fsdp", ("fsdp", False)),
    ("deepspeed_stage_3_offload", ("deepspeed_stage_3", False)), ("deepspeed", ("deepspeed_stage_2", False)),
    ({"_target_": "lightning.pytorch.strategies.FSDPStrategy", "sharding_strategy": "SHARD_GRAD_OP"},
     ("fsdp_grad_op", False)),
    ({"_target_": "lightning.pytorch.strategies.FSDPStrategy", "activation_checkpointing_policy": ["x"]},
     ("fsdp", True)),
    ({"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy", "stage": 3}, ("deepspeed_stage_3", False)),
])
def test_strategy_of(strategy, expected):
    assert strategy_of(OmegaConf.create({"s": strategy}).s) == expected


@pytest.mark.parametrize("devices, indices", [(1, [0]), (2, [0, 1]), (-1, [0, 1, 2, 3]), ("auto", [0, 1, 2, 3]),
                                              ("2", [0, 1]), ("1,3", [1, 3]), ([2], [2])])
def test_device_indices(devices, indices):
    assert device_indices(devices, visible=4) == indices


def test_plan_reads_the_config():
    plan = plan_of(compose_cfg("eval", ["model=opt-1.3b", "trainer.devices=2", "+trainer.num_nodes=2",
                                                "trainer.precision=bf16", "eval.max_batch_tokens=1000"]))
    assert plan == Plan(precision="bf16-mixed", world=4, train=False, eval_tokens=1000)
    huge = plan_of(compose_cfg("train", ["model=opt-1.3b", "eval.max_batch_tokens=null"]))
    assert huge.eval_tokens == 64 * (512 + 32)  # full batches of full-length items


def test_opt_6_7b_fp32_is_refused_on_one_80gb_gpu(monkeypatch):
    monkeypatch.setattr("gap.memory.check.capacity", lambda trainer: (80 * GB, "cuda:0", 8))
    cfg = compose_cfg("train", ["model=opt-6.7b", "trainer.accelerator=gpu"])
    with pytest.raises(ConfigError) as err:
        check_memory(cfg)
    message = str(err.value)
    assert exit_code(err.value) == 2 and "\n" not in message
    assert "opt-6.7b (6.66B parameters" in message and "optimizer 53.3" in message  # 8 bytes x 6.66B
    assert "would fit: model.dtype=bfloat16 trainer.precision=bf16-true eval.max_batch_tokens=4096 (~" in message
    assert "; trainer=fsdp trainer.devices=8 (~" in message
    # as advised, it fits
    monkeypatch.setattr("gap.memory.check.capacity", lambda trainer: (80 * GB, "cuda:0", 1))
    parts = check_memory(compose_cfg("train", ["model=opt-6.7b", "model.dtype=bfloat16",
                                                      "trainer.precision=bf16-true", "eval.max_batch_tokens=4096"]))
    assert total(parts) < 80 * GB


def test_a_smaller_eval_batch_is_offered(monkeypatch):
    cfg = compose_cfg("eval", ["model=opt-1.3b", "model.dtype=bfloat16", "trainer.precision=bf16-true"])
    need = total(estimate(model_arch(cfg.model), plan_of(cfg)))
    monkeypatch.setattr("gap.memory.check.capacity", lambda trainer: (need - 1 * GB, "cuda:0", 1))
    with pytest.raises(ConfigError, match=r"would fit: eval\.max_batch_tokens=4096 \(~"):
        check_memory(cfg)


def test_tiny_random_fits_here():
    cfg = compose_cfg("train", ["model=tiny-random", "trainer.accelerator=cpu"])
    parts = check_memory(cfg)
    assert parts is not None and total(parts) <= capacity(cfg.trainer)[0]


def test_other_ranks_do_not_check(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr("gap.memory.check.capacity", lambda trainer: (1, "cuda:1", 8))
    assert check_memory(compose_cfg("train", ["model=opt-6.7b"])) is None


def test_cli_prints_the_table(capsys):
    table_command.main(["opt-350m", "opt-6.7b", "--gpus", "1", "8", "--gb", "80"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| model | params | setup | 1 x 80 GB | 8 x 80 GB |" and len(lines) == 2 + 2 * 3
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in lines[2:]}
    assert rows[("opt-350m", "0.33B", "fp32")].count("fits") == 2
    assert rows[("opt-6.7b", "6.66B", "fp32")].count("**no**") == 2  # DDP replicates: 8 GPUs do not help
    fsdp = rows[("opt-6.7b", "6.66B", "fsdp (full shard, bf16-mixed)")]
    assert fsdp.split("|")[4].strip().endswith("**no**") and fsdp.split("|")[5].strip().endswith("fits")


def test_cuda_capacity_reads_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ((70, 60)[i] * GB, 80 * GB))
    trainer = OmegaConf.create({"accelerator": "gpu", "devices": 2})
    assert capacity(trainer) == (60 * GB, "cuda:0,1", 2)  # the fuller GPU bounds every rank


def test_auto_eval_batches_take_the_most_a_gpu_holds(monkeypatch):
    """`eval.max_batch_tokens=auto`: the largest power of two whose estimate leaves a tenth of the GPU
    spare (larger on a larger GPU, smaller for a larger model); 8192 on the CPU."""
    from gap.memory.check import AUTO_BATCH_TOKENS, SPARE, auto_batch_tokens, size_eval_batches

    cfg = compose_cfg("eval", ["model=opt-1.3b", "model.dtype=bfloat16", "trainer.precision=bf16-true",
                               "eval.max_batch_tokens=auto"])
    arch, plan = model_arch(cfg.model), plan_of(cfg)
    need = {t: total(estimate(arch, replace(plan, eval_tokens=t))) for t in AUTO_BATCH_TOKENS}
    for gb in (24, 80, 141):
        tokens = auto_batch_tokens(arch, plan, gb * GB)
        assert need[tokens] <= (1 - SPARE) * gb * GB and (tokens == AUTO_BATCH_TOKENS[-1] or
                                                           need[2 * tokens] > (1 - SPARE) * gb * GB)
    assert [auto_batch_tokens(arch, plan, gb * GB) for gb in (24, 80, 141)] == [8192, 32768, 65536]
    bigger = model_arch(compose_cfg("eval", ["model=opt-6.7b"]).model)
    assert auto_batch_tokens(bigger, plan, 80 * GB) < auto_batch_tokens(arch, plan, 80 * GB)
    monkeypatch.setattr("gap.memory.check.gpu_memory", lambda trainer: 80 * GB)
    size_eval_batches(cfg)
    assert cfg.eval.max_batch_tokens == auto_batch_tokens(arch, plan, 80 * GB)
    on_cpu = compose_cfg("eval", ["trainer.accelerator=cpu", "eval.max_batch_tokens=auto"])
    monkeypatch.undo()
    size_eval_batches(on_cpu)
    assert on_cpu.eval.max_batch_tokens == 8192
