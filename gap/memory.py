"""Memory preflight: estimate one run's memory per device before any model is loaded, and refuse a
configuration that cannot fit, saying what would (bf16 weights, FSDP, a smaller evaluation batch).

An estimate, not a measurement: the parts follow the textbook accounting (weights, gradients, Adam states,
activations, KV cache, logits), with the evaluation's working set measured once (KV_TOKENS, SCORED). On an
H100, random OPT-1.3b (fp32, bf16) and OPT-2.7b (fp32) weights peaked 8-23% below the estimate in allocated
memory, while the allocator's reserve came within 5% of it. `python -m gap.memory` prints the OPT table.
"""
import argparse
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from gap.errors import ConfigError

log = logging.getLogger("gap")

GB = 1e9
RUNTIME = 1 * GB  # CUDA context, cuBLAS workspace and allocator slack: a fixed allowance
# Evaluation peaks in batches of E = 8192 tokens, measured on an H100 with random OPT-1.3b/2.7b weights and
# the paper's tasks: the KV cache held up to 5.6 E tokens (math_qa, 64 items a batch: the contexts, and for
# each of 5 choices a copy of its context's rows, two buckets' copies alive at once), and at most 0.46 E
# positions went through the output layer (hellaswag).
KV_TOKENS, SCORED = 6.0, 0.5
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SHARDED = {  # the parts that each of `world` processes holds 1/world of
    "unsharded": set(),
    "fsdp": {"weights", "grads", "optimizer"},            # FULL_SHARD (ZeRO-3)
    "fsdp_grad_op": {"grads", "optimizer"},               # SHARD_GRAD_OP (ZeRO-2)
    "deepspeed_stage_1": {"optimizer"},
    "deepspeed_stage_2": {"grads", "optimizer"},
    "deepspeed_stage_3": {"weights", "grads", "optimizer"},
}


@dataclass(frozen=True)
class Arch:
    """What the estimate needs of a model: its parameter count and the shapes that size activations."""
    params: int
    layers: int
    hidden: int
    vocab: int
    kv_dim: int  # width of one layer's keys (= hidden, or less with grouped-query attention)


@dataclass(frozen=True)
class Plan:
    """What sets a run's memory, read from its config by `plan_of`."""
    dtype: str = "float32"       # model.dtype
    precision: str = "32-true"   # trainer.precision
    strategy: str = "unsharded"  # a key of SHARDED: ddp, single device, ... are "unsharded"
    world: int = 1               # processes: trainer.devices x trainer.num_nodes
    checkpointing: bool = False  # activation checkpointing (FSDP)
    train: bool = True           # method != none: Adam on one sample
    max_length: int = 512        # tokens of the training sample
    eval_tokens: int = 8192      # most tokens in one evaluation batch


# ---- the architecture, without loading weights -------------------------------------------------------

def _meta_arch(config) -> Arch:
    """Count the parameters exactly by building the model on the meta device (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return Arch(sum(p.numel() for p in model.parameters()), text.num_hidden_layers, text.hidden_size,
                text.vocab_size, kv_heads * head_dim)


def gguf_arch(path) -> Arch:
    """Sum the tensor shapes in a GGUF header (llama.cpp names: token_embd, blk.N.attn_k, ...)."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(path).tensors}
    hidden, vocab = (int(n) for n in tensors["token_embd.weight"].shape)  # ggml order: [hidden, vocab]
    layers = len({name.split(".")[1] for name in tensors if name.startswith("blk.")})
    kv_dim = int(tensors["blk.0.attn_k.weight"].shape[1])
    return Arch(sum(int(t.n_elements) for t in tensors.values()), layers, hidden, vocab, kv_dim)


def model_arch(model_cfg) -> Arch | None:
    """The architecture of a model entry, from the first source that has it: the `random_init` fields, the
    GGUF header, config.json in a local directory or the HF cache, or the entry's `arch` summary (models
    not downloaded yet). None when none of them does."""
    try:
        if model_cfg.get("random_init") is not None:
            from gap.modules.loading import load_tokenizer, random_init_config
            return _meta_arch(random_init_config(model_cfg, load_tokenizer(model_cfg)))
        if model_cfg.get("gguf_file"):
            from gap.modules.loading import check_gguf
            return check_gguf(Path(model_cfg.path) / model_cfg.gguf_file)
    except Exception as err:  # a broken file is the loader's to report
        log.info("memory preflight: cannot read the architecture of %s: %s", model_cfg.name, err)
        return None
    if model_cfg.get("path"):
        from transformers import AutoConfig
        try:
            return _meta_arch(AutoConfig.from_pretrained(model_cfg.path, revision=model_cfg.get("revision"),
                                                         local_files_only=True))
        except Exception:  # not downloaded (or not a transformers model): use the summary below
            pass
    if model_cfg.get("arch") is not None:
        a = model_cfg.arch
        return Arch(a.num_parameters, a.layers, a.hidden_size, a.vocab_size, a.get("kv_dim") or a.hidden_size)
    return None


# ---- the estimate --------------------------------------------------------------------------------

def estimate(arch: Arch, plan: Plan) -> dict[str, float]:
    """Bytes per device by part. P params, L layers, h hidden, V vocab, N = world, b = bytes per weight,
    a = bytes per activation (2 under 16-bit precision), T = max_length, E = eval tokens per batch.

    weights    P*b, /N when sharded; FSDP/ZeRO-3 also hold 2 gathered layers (running + prefetched), 2*P/L*a
    grads      P*b, /N when sharded (training only)
    optimizer  Adam's 2 moments in the weights' dtype: 2*P*b, /N when sharded; DeepSpeed under 16-bit
               precision: 2-byte weights and grads, fp32 master weights + moments = 12*P (the ZeRO paper)
    autocast   *-mixed precision: a 16-bit copy of the weights, 2*P (/N when sharded; none under DeepSpeed)
    train      the larger of one sample's activations, L*T*16h*a (Korthikanti et al. without dropout, SDPA
               attention; checkpointing keeps L*T*h*a + one layer's 16*T*h*a) + T*V*12 (fp32 logits,
               log-softmax and its gradient), and the Adam step's weights-sized temporary (torch's foreach
               Adam; measured), sharded as the optimizer
    eval       2*L*(KV_TOKENS*E)*kv*a (the KV cache, with the choices' copies of their context rows)
               + SCORED*E*V*(a+8) (the logits of the scored positions, and two fp32 copies)
    runtime    1 GB (CUDA context, allocator slack)
    The total counts the larger of train and eval: a training step and an evaluation never overlap.
    """
    sixteen = plan.precision.startswith(("bf16", "16"))  # bf16-mixed, bf16-true, 16-mixed, 16-true
    mixed = sixteen and plan.precision.endswith("mixed")
    deepspeed_16 = sixteen and plan.strategy.startswith("deepspeed")
    b = 2 if (sixteen and not mixed) or deepspeed_16 else DTYPE_BYTES[plan.dtype]
    a = 2 if sixteen else b
    shard = SHARDED[plan.strategy]

    def part(name, nbytes):
        return nbytes / plan.world if name in shard else nbytes

    P, L, h, V, T, E = arch.params, arch.layers, arch.hidden, arch.vocab, plan.max_length, plan.eval_tokens
    parts = {"weights": part("weights", P * b) + (2 * P / L * a if "weights" in shard else 0)}
    parts["grads"] = part("grads", P * b) if plan.train else 0
    parts["optimizer"] = part("optimizer", (12 if deepspeed_16 else 2 * b) * P) if plan.train else 0
    parts["autocast"] = part("weights", 2 * P) if mixed and not deepspeed_16 else 0
    layer = 16 * T * h * a
    activations = (L * T * h * a + layer) if plan.checkpointing else L * layer
    parts["train"] = max(activations + T * V * 12, part("optimizer", P * b)) if plan.train else 0
    parts["eval"] = 2 * L * KV_TOKENS * E * arch.kv_dim * a + SCORED * E * V * (a + 8)
    parts["runtime"] = RUNTIME
    return parts


def total(parts: dict[str, float]) -> float:
    """Peak bytes: everything but the smaller of train and eval (they never run at once)."""
    return sum(parts.values()) - min(parts["train"], parts["eval"])


def describe(parts: dict[str, float]) -> str:
    """'107.9 GB (weights 26.6 + grads 26.6 + ...)', for messages."""
    shown = " + ".join(f"{k} {v / GB:.1f}" for k, v in parts.items()
                       if v and not (k in ("train", "eval") and v == min(parts["train"], parts["eval"])))
    return f"{total(parts) / GB:.1f} GB ({shown})"


# ---- reading the config --------------------------------------------------------------------------

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


def _precision(precision) -> str:
    """Lightning's short forms in full: 32 -> 32-true, bf16 / 16 -> *-mixed."""
    p = str(precision)
    return {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}.get(p, p)


def _on_cuda(trainer_cfg) -> bool:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


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
    visible = torch.cuda.device_count() if _on_cuda(cfg.trainer) else 1
    world = len(device_indices(cfg.trainer.get("devices", 1), visible)) * int(cfg.trainer.get("num_nodes", 1))
    per_item = cfg.model.max_length + cfg.eval.max_new_tokens
    eval_tokens = cfg.eval.batch_size * per_item  # no token limit: full batches of full-length items
    if cfg.eval.get("max_batch_tokens"):
        eval_tokens = max(min(cfg.eval.max_batch_tokens, eval_tokens), per_item)  # a long item runs alone
    plan = Plan(dtype=cfg.model.dtype, precision=_precision(cfg.trainer.get("precision", "32-true")),
                strategy=strategy, world=max(world, 1), checkpointing=checkpointing,
                train=cfg.method.name != "none", max_length=cfg.model.max_length, eval_tokens=eval_tokens)
    return replace(plan, **changes)


def capacity(trainer_cfg) -> tuple[float, str, int] | None:
    """(bytes one process may use, which memory, GPUs visible on a node), or None where we cannot tell.

    CUDA: the least free memory among the GPUs the run uses (`mem_get_info` opens a CUDA context on each).
    CPU: the available RAM, shared by the node's processes (trainer.devices of them).
    """
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if _on_cuda(trainer_cfg):
        if not torch.cuda.is_available():
            return None  # Lightning says so itself
        visible = torch.cuda.device_count()
        used = device_indices(trainer_cfg.get("devices", 1), visible)
        free = min(torch.cuda.mem_get_info(i)[0] for i in used)
        return free, "cuda:" + ",".join(map(str, used)), visible
    if accelerator not in ("cpu", "auto"):
        return None  # mps, tpu, ...: not estimated
    try:
        import psutil
        available = psutil.virtual_memory().available
    except ImportError:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(meminfo["MemAvailable"].split()[0]) * 1024
    processes = len(device_indices(trainer_cfg.get("devices", 1), 1))
    return available / processes, "RAM" + (f" per process ({processes})" if processes > 1 else ""), 1


# ---- the check -----------------------------------------------------------------------------------

def alternatives(cfg, plan: Plan, visible: int) -> list[tuple[str, str, Plan]]:
    """(base change, whole change, Plan) of what the user could change, simplest first: bf16 weights, FSDP
    over the node's visible GPUs, both; each with the evaluation batch as it is, then in powers of two down
    to max_length."""
    bases = [("", {})]
    bf16 = {} if plan.precision in ("bf16-true", "16-true") else dict(dtype="bfloat16", precision="bf16-true")
    if bf16:
        bases.append(("model.dtype=bfloat16 trainer.precision=bf16-true", bf16))
    world = visible * int(cfg.trainer.get("num_nodes", 1))
    if world > 1 and plan.strategy != "fsdp" and _on_cuda(cfg.trainer):
        fsdp = dict(strategy="fsdp", world=world)
        bases.append((f"trainer=fsdp trainer.devices={visible}", fsdp))
        if bf16:
            bases.append((f"{bases[1][0]} trainer=fsdp trainer.devices={visible}", {**bf16, **fsdp}))
    below = [1 << k for k in range((plan.eval_tokens - 1).bit_length() - 1, -1, -1) if 1 << k >= plan.max_length]
    found = []
    for base, change in bases:
        for tokens in [plan.eval_tokens] + below:
            smaller = f"eval.max_batch_tokens={tokens}" if tokens < plan.eval_tokens else ""
            if base or smaller:
                found.append((base, " ".join(filter(None, (base, smaller))),
                              replace(plan, eval_tokens=tokens, **change)))
    return found


def check_memory(cfg) -> dict[str, float] | None:
    """Raise ConfigError (exit code 2) when the run's estimate exceeds the memory of its GPUs, naming
    what would fit (on the CPU, warn). Returns the estimate by part (None when it cannot tell: then it
    logs and lets go)."""
    if int(os.environ.get("LOCAL_RANK", "0")) > 0:
        return None  # rank 0 has checked the same devices
    arch = model_arch(cfg.model)
    room = capacity(cfg.trainer)
    if arch is None or room is None:
        log.info("memory preflight skipped: %s", "unknown parameter count" if arch is None else "unknown device")
        return None
    free, where, visible = room
    plan = plan_of(cfg)
    parts = estimate(arch, plan)
    if total(parts) <= free:
        return parts
    if where.startswith("RAM"):  # the estimate is for GPUs; the CPU has swap and lazily touched memory
        log.warning("memory preflight: the run may need ~%s, more than the %.1f GB of available %s",
                    describe(parts), free / GB, where)
        return parts
    fits = {}  # base change -> (change, GB): the largest evaluation batch that fits; none where less does
    for base, change, alt in alternatives(cfg, plan, visible):
        if base in fits or any(set(b.split()) < set(base.split()) and "eval." not in c for b, (c, _) in fits.items()):
            continue
        need = total(estimate(arch, alt))
        if need <= free:
            fits[base] = (change, need / GB)
    advice = ("would fit: " + "; ".join(f"{c} (~{gb:.1f} GB)" for c, gb in fits.values())) if fits else \
        "none of bf16 weights, FSDP on the visible GPUs or a smaller eval.max_batch_tokens fits"
    raise ConfigError(f"model {cfg.model.name} ({arch.params / 1e9:.2f}B parameters, {plan.precision}, "
                      f"{plan.strategy} on {plan.world} device(s)) needs ~{describe(parts)} per device but "
                      f"{where} has {free / GB:.1f} GB free; {advice}")


# ---- the table -----------------------------------------------------------------------------------

SETUPS = {  # the three setups
    "fp32": dict(dtype="float32", precision="32-true", strategy="unsharded"),
    "bf16": dict(dtype="bfloat16", precision="bf16-true", strategy="unsharded"),
    "fsdp": dict(dtype="float32", precision="bf16-mixed", strategy="fsdp"),
}


def table(models: list[str], gpus: list[int], gb: float) -> str:
    """A markdown table of the estimated peak per GPU (GAP training + evaluation, the default eval
    settings) for each model and setup on `gpus` GPUs of `gb` GB."""
    from hydra import compose, initialize_config_dir

    from gap.choices import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfgs = {m: compose(config_name="train", overrides=[f"model={m}"]) for m in models}
    head = ["model", "params", "setup"] + [f"{n} x {gb:g} GB" for n in gpus]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cfg in cfgs.items():
        arch = model_arch(cfg.model)
        if arch is None:
            lines.append(f"| {name} | ? | | " + " | ".join("" for _ in gpus) + " |")
            continue
        for setup, changes in SETUPS.items():
            cells = []
            for n in gpus:
                need = total(estimate(arch, plan_of(cfg, world=n, **changes))) / GB
                cells.append(f"{need:.1f} GB {'fits' if need <= gb else '**no**'}")
            label = "fsdp (full shard, bf16-mixed)" if setup == "fsdp" else setup
            lines.append(f"| {name} | {arch.params / 1e9:.2f}B | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gap.memory", description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["opt-350m", "opt-1.3b", "opt-2.7b", "opt-6.7b"],
                        help="names of conf/model entries")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="GPU counts (columns)")
    parser.add_argument("--gb", type=float, default=80, help="memory of one GPU")
    args = parser.parse_args(argv)
    print(table(args.models, args.gpus, args.gb))


if __name__ == "__main__":
    main()
