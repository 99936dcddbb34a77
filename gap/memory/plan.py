"""Reading a composed config into what sets its memory (`Plan`): dtype, precision, strategy, devices."""
from dataclasses import replace

import torch

from gap.memory.estimate import Plan


def strategy_of(strategy) -> tuple[str, bool]:
    """(a key of SHARDED, activation checkpointing) of `trainer.strategy`: a Lightning name ("ddp",
    "fsdp", "deepspeed_stage_3", ...) or a dict with `_target_` FSDPStrategy / DeepSpeedStrategy."""
    if strategy is None or isinstance(strategy, str):
        name = str(strategy or "auto")
        if name.startswith("fsdp"):
            return "fsdp", False
        if name.startswith("deepspeed"):
            stage = name.split("stage_")[1][0] if "stage_" in name else "2"  # Lightning's default stage
            return f"deepspeed_stage_{stage}", False
        return "unsharded", False
    target = str(strategy.get("_target_", ""))
    if target.endswith("FSDPStrategy"):
        sharding = str(strategy.get("sharding_strategy") or "FULL_SHARD").upper()
        key = {"SHARD_GRAD_OP": "fsdp_grad_op", "NO_SHARD": "unsharded"}.get(sharding, "fsdp")  # HYBRID as FULL
        checkpointing = bool(strategy.get("activation_checkpointing_policy")
                             or strategy.get("activation_checkpointing"))
        return key, checkpointing
    if target.endswith("DeepSpeedStrategy"):
        return f"deepspeed_stage_{strategy.get('stage', 2)}", False
    return "unsharded", False


def parameters_sharded(strategy_key: str) -> bool:
    """Whether a strategy (a key of `SHARDED`) splits the parameters over ranks (FSDP, ZeRO-3): then every
    forward pass is collective, and whole weights exist only when gathered."""
    return strategy_key.startswith("fsdp") or strategy_key == "deepspeed_stage_3"


def _precision(precision) -> str:
    """Lightning's short forms in full: 32 -> 32-true, bf16 / 16 -> *-mixed."""
    p = str(precision)
    return {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}.get(p, p)


def on_cuda(trainer_cfg) -> bool:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def gpu_run(trainer_cfg) -> bool:
    """Whether the run computes on CUDA GPUs: it asks for them (or auto) and they are there."""
    return on_cuda(trainer_cfg) and torch.cuda.is_available()


def device_indices(devices, visible: int) -> list[int]:
    """The device indices `trainer.devices` asks for: a count, -1 or "auto" (all visible), a list of
    indices, or a string of either ("2", "0,1")."""
    if isinstance(devices, str):
        devices = devices.strip()
        if devices in ("auto", "-1"):
            return list(range(visible))
        if "," in devices:
            return [int(d) for d in devices.split(",") if d.strip()]
        devices = int(devices)
    if isinstance(devices, int):
        return list(range(visible if devices == -1 else devices))
    return [int(d) for d in devices]


def plan_of(cfg, **changes) -> Plan:
    """The Plan of a composed config (model, trainer, eval, method), with `changes` applied."""
    strategy, checkpointing = strategy_of(cfg.trainer.get("strategy"))
    visible = torch.cuda.device_count() if on_cuda(cfg.trainer) else 1
    world = len(device_indices(cfg.trainer.get("devices", 1), visible)) * int(cfg.trainer.get("num_nodes", 1))
    per_item = cfg.model.max_length + cfg.eval.max_new_tokens
    eval_tokens = cfg.eval.batch_size * per_item  # no token limit: full batches of full-length items (and a
    #                                              dialogue batch of KV_TOKENS x as many, `gap.data.evaluation`)
    if isinstance(cfg.eval.get("max_batch_tokens"), int):  # not "auto" (`size_eval_batches`)
        # a dialogue batch's KV cache scales with max_batch_tokens whatever eval.batch_size; a long item runs alone
        eval_tokens = max(cfg.eval.max_batch_tokens, per_item)
    plan = Plan(dtype=cfg.model.dtype, precision=_precision(cfg.trainer.get("precision", "32-true")),
                strategy=strategy, world=max(world, 1), checkpointing=checkpointing,
                train=cfg.method.name != "none", max_length=cfg.model.max_length, eval_tokens=eval_tokens)
    return replace(plan, **changes)
