"""fp32 linear layers through oneDNN during evaluation, on CPUs where PyTorch's default BLAS runs slower.

PyTorch computes an fp32 `nn.Linear` on the CPU with MKL, and MKL takes its AVX2 kernels on CPUs that are
not Intel's: on an AMD EPYC with AVX-512 that is half the machine's matmul rate. oneDNN, also built into
PyTorch, picks its kernels by instruction set. Which library is faster differs even between AVX2 CPUs of one
vendor (oneDNN on a Zen 2 EPYC, MKL on a Zen 3 one), and between the scoring passes' products of hundreds of
rows and the decoding steps' of a few (a Zen 3 computes the first faster in MKL, the second in oneDNN), so
it is measured once per CPU kind for each phase (`onednn_pays`), and each block of work names its phase
(`onednn_linears(model, phase)`). The phase alone chooses, never a product's row count, so that an example's
scores do not depend on its batch. Within `onednn_linears`, each fp32 `nn.Linear` on the CPU computes with
oneDNN from a copy of its weight packed in oneDNN's blocked layout at its first use in the block, so that a
decoding step's products of a few rows run near the rate of large ones. A gated MLP (Llama's, Mistral's,
Qwen's, Gemma's and others': `down(act(gate(x)) * up(x))`) also computes its activation and product inside
oneDNN's products (post-ops) instead of two more passes over its widest activations. The sums are the same
products in another order: scores agree with MKL's to float rounding. Autograd, autocast and other dtypes
keep `F.linear`.
"""
import contextlib
import functools
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from gap.files import write_atomic

PACK_ROWS = 32  # the row count oneDNN is told to pack for (a decoding step's); any count computes
# MLP classes whose forward is down(act(gate(x)) * up(x)) (tests/test_families.py: every family's takes this path)
GATED_MLPS = {"LlamaMLP", "MistralMLP", "MinistralMLP", "Qwen2MLP", "Qwen3MLP", "Qwen3MoeMLP", "GemmaMLP",
              "Gemma2MLP", "Gemma3MLP", "Olmo2MLP", "Olmo3MLP", "SmolLM3MLP", "GraniteMLP", "Cohere2MLP", "StableLmMLP"}
CPU_VERDICTS = "cpu_products.json"  # in the cache folder: per CPU kind and phase, whether oneDNN's products are faster
PHASE_ROWS = {"scoring": 512, "decoding": 32}  # the rows of the product timed for each phase: a pass's, a step's
POST_OPS = {"SiLUActivation": ("swish", ""), "SiLU": ("swish", ""), "GELUTanh": ("gelu", "tanh")}  # oneDNN's


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's linear operator."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _cpu_name() -> str | None:
    """This CPU's vendor and model as /proc/cpuinfo names them (None off Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    return " ".join(fields.get(k, "?") for k in ("vendor_id", "cpu family", "model", "model name"))


def _onednn_faster(rows: int, seconds: float = 0.6, window: float = 0.05) -> bool:
    """Whether oneDNN computes a product of `rows` rows by a 1024 x 1024 fp32 weight faster than PyTorch's
    default: each library the best of short windows, the two taking turns, so that a busy neighbour slows
    both alike. In fp32 whatever autocast the caller runs under, and from a generator of its own: the
    run's random numbers stay as they were."""
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.rand(rows, 1024, generator=generator), torch.rand(1024, 1024, generator=generator)
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACK_ROWS)
    products = {"default": lambda: nn.functional.linear(x, weight),
                "oneDNN": lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")}
    best = dict.fromkeys(products, float("inf"))
    end = time.perf_counter() + seconds
    with torch.autocast("cpu", enabled=False), torch.no_grad():
        while time.perf_counter() < end:
            for name, product in products.items():
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < window:
                    product()
                    n += 1
                best[name] = min(best[name], (time.perf_counter() - start) / n)
    return best["oneDNN"] < best["default"]


@functools.cache
def onednn_pays() -> dict[str, bool]:
    """Per phase (`PHASE_ROWS`), whether this CPU computes its fp32 products faster in oneDNN than in
    PyTorch's default, measured once per CPU kind, thread count and PyTorch version and kept in
    `$GAP_CACHE_DIR/cpu_products.json`, so that every run on a machine computes with the same libraries
    (their scores differ by float rounding). A damaged record is measured again; a file that cannot be
    written leaves the verdicts to this process."""
    cpu = _cpu_name()
    if cpu is None or not onednn_available():  # not Linux, or no oneDNN: PyTorch's default
        return dict.fromkeys(PHASE_ROWS, False)
    path = Path(os.environ.get("GAP_CACHE_DIR") or Path.home() / ".cache" / "gap") / CPU_VERDICTS
    key = f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    try:
        verdicts = json.loads(path.read_text())
        kept = verdicts.get(key)
        if isinstance(kept, dict) and kept.keys() == PHASE_ROWS.keys() and all(type(v) is bool for v in kept.values()):
            return kept
    except (OSError, ValueError, AttributeError):
        verdicts = {}
    verdicts[key] = {phase: _onednn_faster(rows) for phase, rows in PHASE_ROWS.items()}
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(verdicts, indent=1) + "\n")
    return verdicts[key]


class _Packs(dict):
    """Each layer's weight in oneDNN's layout, packed at its first use within one `onednn_linears` block,
    and whether the products of the phase running now compute with oneDNN."""

    def __init__(self, verdicts: dict[str, bool], phase: str):
        super().__init__()
        self.verdicts, self.onednn = verdicts, verdicts[phase]

    def of(self, linear: nn.Linear) -> torch.Tensor:
        if linear not in self:
            self[linear] = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACK_ROWS)
        return self[linear]


def _default(linear: nn.Linear, x: torch.Tensor) -> bool:
    """Whether this product keeps PyTorch's default: not fp32, under autocast, or recorded for autograd."""
    return x.dtype != torch.float32 or torch.is_autocast_enabled("cpu") or (torch.is_grad_enabled() and (
        x.requires_grad or linear.weight.requires_grad))


def _forward(packs: _Packs, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if not packs.onednn or _default(linear, x):
        return nn.functional.linear(x, linear.weight, linear.bias)
    return torch.ops.mkldnn._linear_pointwise(x, packs.of(linear), linear.bias, "none", [], "")


def _gated_forward(packs: _Packs, mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`down(act(gate(x)) * up(x))` with the activation and the product as post-ops of oneDNN's products."""
    gate, up = mlp.gate_proj, mlp.up_proj
    if not packs.onednn or _default(gate, x) or _default(up, x):
        return type(mlp).forward(mlp, x)
    attr, algorithm = POST_OPS[type(mlp.act_fn).__name__]
    activated = torch.ops.mkldnn._linear_pointwise(x, packs.of(gate), gate.bias, attr, [], algorithm)
    return mlp.down_proj(torch.ops.mkldnn._linear_pointwise.binary(x, activated, packs.of(up), up.bias, "mul"))


def _served(module: nn.Module) -> bool:
    """An fp32 `nn.Linear` whose weight is an ordinary CPU tensor (not sharded, not quantised)."""
    return (type(module) is nn.Linear and type(module.weight.data) is torch.Tensor
            and module.weight.device.type == "cpu" and module.weight.dtype == torch.float32)


def _gated(module: nn.Module) -> bool:
    """A gated MLP whose products are all served and whose activation oneDNN computes."""
    return (type(module).__name__ in GATED_MLPS and type(module.act_fn).__name__ in POST_OPS
            and all(_served(getattr(module, name)) for name in ("gate_proj", "up_proj", "down_proj")))


@contextmanager
def onednn_linears(model, phase: str = "scoring"):
    """Within the block, `model`'s fp32 CPU linear layers compute with oneDNN where that pays for the
    products of `phase` (`onednn_pays`: "scoring" passes, "decoding" steps), from weights packed once in the
    outermost block: the weights must not change inside it (an evaluation). A nested block shares its packs
    and computes in its own phase's library until it ends; leaving the outermost frees the packs and
    restores the model. A model with no such layer (on a GPU, in bf16) never measures the CPU."""
    packs = getattr(model, "_onednn_packs", None)
    if packs is not None:
        before, packs.onednn = packs.onednn, packs.verdicts[phase]
        try:
            yield
        finally:
            packs.onednn = before
        return
    if not any(map(_served, model.modules())) or not any(onednn_pays().values()):
        yield
        return
    packs = _Packs(onednn_pays(), phase)
    patched = [(m, _forward) for m in model.modules() if _served(m)] + \
        [(m, _gated_forward) for m in model.modules() if _gated(m)]
    for module, forward in patched:
        module.forward = functools.partial(forward, packs, module)
    model._onednn_packs = packs
    try:
        yield
    finally:
        model._onednn_packs = None
        for module, _ in patched:
            del module.forward


def with_onednn_linears(phase: str):
    """A decorator: `function(model, ...)` run within `onednn_linears(model, phase)`."""
    def decorate(function):
        @functools.wraps(function)
        def wrapped(model, *args, **kwargs):
            with onednn_linears(model, phase):
                return function(model, *args, **kwargs)
        return wrapped
    return decorate
