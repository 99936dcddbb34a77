"""The estimate itself: bytes per device by part, from a model's architecture and a run's `Plan`
(the package docstring says how it was checked)."""
from dataclasses import dataclass

import torch

from gap.memory.arch import Arch
from gap.schema import DTYPE_NAMES

GB = 1e9
RUNTIME = 1 * GB  # CUDA context, cuBLAS workspace and allocator slack: a fixed allowance
# Evaluation peaks in batches of E = 8192 tokens, measured on an H100 with random OPT-1.3b/2.7b weights and
# the paper's tasks: the KV cache held up to 5.6 E tokens (math_qa, 64 items a batch: the contexts, and for
# each of 5 choices a copy of its context's rows, two buckets' copies alive at once), and at most 0.46 E
# positions went through the output layer (hellaswag). Scoring now keeps no such copies; a dialogue batch
# holds at most KV_TOKENS x E tokens of KV cache (`gap.data.evaluation`), so that its rows decode at once.
KV_TOKENS, SCORED = 6.0, 0.5
DTYPE_BYTES = {name: getattr(torch, name).itemsize for name in DTYPE_NAMES}
SHARDED = {  # the parts that each of `world` processes holds 1/world of
    "unsharded": set(),
    "fsdp": {"weights", "grads", "optimizer"},            # FULL_SHARD (ZeRO-3)
    "fsdp_grad_op": {"grads", "optimizer"},               # SHARD_GRAD_OP (ZeRO-2)
    "deepspeed_stage_1": {"optimizer"},
    "deepspeed_stage_2": {"grads", "optimizer"},
    "deepspeed_stage_3": {"weights", "grads", "optimizer"},
}


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
               + 16*E*h*a (one layer's activations in a pass: without gradients one layer's are alive)
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
    parts["eval"] = 2 * L * KV_TOKENS * E * arch.kv_dim * a + SCORED * E * V * (a + 8) + 16 * E * h * a
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
