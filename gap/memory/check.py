"""The memory preflight: refuse a configuration whose estimate cannot fit its GPUs, saying what would
(bf16 weights, FSDP, a smaller evaluation batch); on the CPU only warn."""
import logging
import os
from dataclasses import replace

from gap.errors import ConfigError
from gap.memory.arch import model_arch
from gap.memory.estimate import GB, Plan, describe, estimate, total
from gap.memory.hardware import capacity, gpu_memory
from gap.memory.plan import on_cuda, plan_of

log = logging.getLogger("gap")
AUTO_BATCH_TOKENS = [1 << k for k in range(13, 21)]  # what eval.max_batch_tokens=auto picks from: 8192 to 2^20
SPARE = 0.1  # of a GPU's memory that auto-sized batches leave to other processes and fragmentation


def alternatives(cfg, plan: Plan, visible: int) -> list[tuple[str, str, Plan]]:
    """(base change, whole change, Plan) of what the user could change, simplest first: bf16 weights, FSDP
    over the node's visible GPUs, both; each with the evaluation batch as it is, then in powers of two down
    to max_length."""
    bases = [("", {})]
    bf16 = {} if plan.precision in ("bf16-true", "16-true") else dict(dtype="bfloat16", precision="bf16-true")
    if bf16:
        bases.append(("model.dtype=bfloat16 trainer.precision=bf16-true", bf16))
    world = visible * int(cfg.trainer.get("num_nodes", 1))
    if world > 1 and plan.strategy != "fsdp" and on_cuda(cfg.trainer):
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


def auto_batch_tokens(arch, plan: Plan, memory: float) -> int:
    """The most evaluation tokens a batch (of `AUTO_BATCH_TOKENS`) whose estimate fits `memory` bytes with
    `SPARE` left; the fewest where none does (the preflight then says what would fit)."""
    fits = [t for t in AUTO_BATCH_TOKENS if total(estimate(arch, replace(plan, eval_tokens=t))) <= (1 - SPARE) * memory]
    return max(fits, default=AUTO_BATCH_TOKENS[0])


def size_eval_batches(cfg) -> None:
    """Resolve `eval.max_batch_tokens=auto` in `cfg`: on GPUs the largest batch the smallest of them holds
    (`auto_batch_tokens`, from its total memory, so that every process of a run picks the same); elsewhere
    (the CPU, an unknown model) the fewest, 8192, which larger batches do not speed up on a CPU."""
    if cfg.eval.max_batch_tokens != "auto":
        return
    memory, arch = gpu_memory(cfg.trainer), model_arch(cfg.model)
    tokens = AUTO_BATCH_TOKENS[0]
    if memory is not None and arch is not None:
        plan = plan_of(cfg)
        tokens = auto_batch_tokens(arch, plan, memory)
        log.info("eval.max_batch_tokens=auto: %d tokens (~%.1f GB of the %.1f GB GPU)", tokens,
                 total(estimate(arch, replace(plan, eval_tokens=tokens))) / GB, memory / GB)
    cfg.eval.max_batch_tokens = tokens
