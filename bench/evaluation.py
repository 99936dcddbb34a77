"""`make bench`: the 12-task evaluation of a model, per task: wall time, throughput, padding, FLOP/s, MFU;
per phase also the weight-read bound; and the dialogue tasks through transformers' own `generate`.

    python -m bench.evaluation [eval overrides]       # default: embedded model, 32 examples per task
    python -m bench.evaluation +against=COMMIT +repeat=3   # both engines by turns: each task's best of 3

Writes `bench/results.json` and a markdown table. Model FLOPs are counted from what the engine really
sends through the model (a forward hook), as model FLOP utilisation is usually defined (and as the issue
that set the targets did): a full forward pass per real token, 2 x (non-embedding parameters + the output
layer's vocabulary x width), whether or not the engine computes that token's logits, plus 4 x layers x
width per (query, key) pair of attention (causal, or read from the 4D mask of packed rows). Padding counts
nothing. Model FLOP utilisation = model FLOP/s / this machine's measured matmul rate.

Decoding is bound by memory rather than arithmetic: every forward pass reads all the weights. The
weight-read bound of a phase is its forward passes x the weights' bytes / this machine's measured memory
read rate; its share of the phase's model time (memory bandwidth utilisation, MBU) says how close the
phase comes to that bound. The yardstick that holds on any machine: the same dialogue prompts through
`model.generate` (greedy, left-padded batches of 32, `stop_strings`), timed in the same run, its replies
compared with the engine's.
"""
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gap.data.tasks import TASKS
from gap.modules.loading import load_pretrained
from gap.results import resources
from gap.scoring.batching import left_pad
from gap.scoring.evaluator import evaluate
from gap.scoring.generation import REPLAY_HOOKS, cut_at_stops
from gap.scoring.metrics import evaluation_metrics
from gap.train import check_config, make_evaldata, read_inputs, scoring_of

try:  # one evaluation's engine state, as GAPModule holds it over its batches
    from gap.scoring.linear import onednn_linears
except ImportError:  # an engine from before it (`+against`)
    def onednn_linears(model):
        return contextlib.nullcontext()

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("scoring", "generation")
COUNTS = ("seconds", "tokens", "positions", "flops", "passes")
YARDSTICK_BATCH = 32
TURNS = "GAP_BENCH_TURNS"  # set for an engine run by `+against`: its turn pipes (`engine_at`)


def matmul_rates(device: str = "cpu", dtype=torch.float32, seconds: float = 4.0,
                 window: float = 1.0) -> dict[str, float]:
    """Matmul FLOP/s of the device in the dtype the model computes in (on the CPU at the current thread
    count), per library that computes it: PyTorch's default (MKL on the CPU, cuBLAS on a GPU) and, on the
    CPU in fp32, oneDNN (which `gap.scoring.linear` uses for fp32 where MKL runs slower kernels; its bf16
    needs AVX-512 or AVX-NE-CONVERT, and the engine leaves bf16 to PyTorch's default). Each the best of short
    windows, so that a busy neighbour during the measurement lowers a rate less (and so cannot inflate
    utilisation); the machine's peak is the best of them."""
    size = 1024 if device == "cpu" else 8192
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    products = {"default": lambda: a @ b}
    if device == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available() and \
            hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        packed = torch.ops.mkldnn._reorder_linear_weight(b, size)
        products["oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    rates = {}
    for name, product in products.items():
        product()
        best, end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            sync()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < window:
                product()
                n += 1
                if n % 10 == 0:
                    sync()
            sync()
            best = max(best, 2 * size ** 3 * n / (time.perf_counter() - start))
        rates[name] = best
    return rates


def others_cpu_seconds() -> float:
    """CPU seconds the machine has spent so far outside this process and its children (Linux; 0 elsewhere):
    a benchmark that other work shared the machine with measured that work too."""
    try:
        busy = sum(int(v) for i, v in enumerate(Path("/proc/stat").read_text().split()[1:9]) if i not in (3, 4))
    except OSError:
        return 0.0
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK") - (own.user + own.system + own.children_user + own.children_system)


class Others:
    """CPU seconds other processes used while this one measured (`during`: its runs of the tasks and the
    yardstick, not the other engine's turns, when this one waits), as a share of the machine's CPUs."""

    def __init__(self):
        self.cpu = self.wall = 0.0

    @contextlib.contextmanager
    def during(self):
        cpu, wall = others_cpu_seconds(), time.perf_counter()
        yield
        self.cpu += others_cpu_seconds() - cpu
        self.wall += time.perf_counter() - wall

    def share(self) -> float:
        return self.cpu / max(self.wall * os.cpu_count(), 1e-9)


def read_rate(device: str = "cpu", megabytes: int = 512, seconds: float = 3.0) -> float:
    """Memory read rate of the device in bytes/s: the best of repeated sums over a tensor about the size
    of a small model's weights (far larger than any cache), so that a busy neighbour lowers it less."""
    data = torch.ones(megabytes * 2**20 // 4, device=device)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sync()
        start = time.perf_counter()
        data.sum()
        sync()
        best = max(best, data.numel() * 4 / (time.perf_counter() - start))
    return best


def compute_setting(trainer_cfg, model) -> tuple[str, torch.dtype]:
    """(device, dtype of the matrix products) that `trainer_cfg` evaluates `model` with: its weights'
    dtype (`model.dtype=bfloat16`), else bf16 under bf16 precision, else fp32."""
    gpu = trainer_cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    dtype = next(model.parameters()).dtype
    if dtype == torch.float32 and "bf16" in str(trainer_cfg.precision):
        dtype = torch.bfloat16
    return ("cuda" if gpu else "cpu"), dtype


class FlopCounter:
    """Counts real tokens, padded positions, FLOPs and time of every forward pass of a causal LM, per
    phase: scoring (every pass that starts from an empty cache: classification rows, dialogue prompts
    with their teacher-forced targets) and generation (decode steps, whose mask is wider than their one
    new token). Forward time is measured between device synchronisations, so it is the model's own time;
    the rest of the wall time is spent outside it."""

    def __init__(self, model, device: str):
        cfg = model.config.get_text_config(decoder=True)
        self.layers, self.width = cfg.num_hidden_layers, cfg.hidden_size
        self.layer_types = getattr(cfg, "layer_types", None)  # the key of each layer's mask, where they differ
        vocab = model.get_output_embeddings().weight.shape[0]
        embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
        embeddings |= {id(p) for p in model.get_output_embeddings().parameters()}
        body = sum(p.numel() for p in model.parameters() if id(p) not in embeddings)
        self.per_token = 2 * (body + vocab * self.width)
        self.weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or self.width // cfg.num_attention_heads
        # a cached position's keys and values over every layer
        self.kv_bytes_per_position = 2 * self.layers * heads * head_dim * next(model.parameters()).element_size()
        self.device = device
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.reset()
        self.hooks = [model.register_forward_pre_hook(self._start),
                      model.register_forward_hook(self._hook, with_kwargs=True)]
        self.replays = (lambda: self._start(model, ()), lambda inputs: self._hook(model, (), inputs, None))
        REPLAY_HOOKS.append(self.replays)  # decoding steps replayed as a CUDA graph

    def reset(self):
        """Count from nothing (a repeated run of the tasks)."""
        self.phases = {phase: dict.fromkeys(COUNTS, 0.0) for phase in PHASES}
        self.kv_bytes = 0.0  # read by the decoding steps: every cached column of every row, padding included

    def remove(self):
        """Stop counting (the yardstick's passes are not the engine's)."""
        for hook in self.hooks:
            hook.remove()
        REPLAY_HOOKS.remove(self.replays)

    def totals(self) -> dict:
        """Tokens, positions, FLOPs and passes over both phases so far."""
        return {k: sum(phase[k] for phase in self.phases.values()) for k in ("tokens", "positions", "flops", "passes")}

    def _capturing(self) -> bool:
        """Whether a CUDA graph is being captured: its pass computes nothing (and may not synchronise)."""
        return self.device == "cuda" and torch.cuda.is_current_stream_capturing()

    def _start(self, module, args):
        if self._capturing():
            return
        self.sync()
        self.started = time.perf_counter()

    @staticmethod
    def _packed(mask: torch.Tensor, width: int) -> tuple[torch.Tensor, float]:
        """Real queries per row and attended (query, key) pairs of an additive mask [rows, 1, queries, keys]
        (0 = attend): of a packed pass, where a pad never sees itself (the diagonal marks real tokens), or
        of a static decoding step, whose one query sits at the last column any row attends (a finished
        row's own column is masked, the columns not written yet too)."""
        attends = mask[:, 0] == 0
        if width == 1 and attends.shape[-1] > 1:
            last = (attends[:, 0] * torch.arange(1, attends.shape[-1] + 1, device=mask.device)).amax(-1)
            real = (last == last.max())[:, None]
        else:
            real = attends.diagonal(attends.shape[-1] - width, dim1=-2, dim2=-1)
        return real.sum(-1).double(), (attends & real[..., None]).sum().item()

    def _hook(self, module, args, kwargs, output):
        if self._capturing():
            return
        self.sync()
        seconds = time.perf_counter() - self.started
        ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
        rows, width = ids.shape
        mask = torch.ones_like(ids) if mask is None else mask
        if isinstance(mask, dict):  # packed rows, a mask per layer type: pairs averaged over the layers
            counts = {kind: self._packed(m, width) for kind, m in mask.items()}
            queries = next(iter(counts.values()))[0]
            pairs = sum(counts[kind][1] for kind in self.layer_types) / self.layers
            mask = next(iter(mask.values()))
        elif mask.dim() == 4:
            queries, pairs = self._packed(mask, width)
        else:
            queries = mask[:, -width:].sum(-1).double()
            keys_before = mask[:, :-width].sum(-1).double()
            pairs = (queries * keys_before + queries * (queries + 1) / 2).sum().item()
        tokens = int(queries.sum().item())
        flops = self.per_token * tokens + 4 * self.layers * self.width * pairs
        decoding = mask.shape[-1] > width  # a cache before the tokens
        phase = self.phases["generation" if decoding else "scoring"]
        if decoding:
            self.kv_bytes += rows * (mask.shape[-1] - width) * self.kv_bytes_per_position
        for key, value in zip(COUNTS, (seconds, tokens, rows * width, flops, 1)):
            phase[key] += value


def bench_task(model, tokenizer, task, batches: list[list], cfg, counter) -> dict:
    """One task's evaluation from its tokenised batches (tokenising is not timed)."""
    before = counter.totals()
    start, cpu = time.perf_counter(), time.process_time()
    device = next(model.parameters()).device.type
    with torch.autocast(device, torch.bfloat16, enabled=str(cfg.trainer.precision) == "bf16-mixed"):
        predictions = evaluate(model, tokenizer, {task: batches}, scoring_of(cfg))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    counts = {k: v - before[k] for k, v in counter.totals().items()}
    records = predictions[task]
    return {"seconds": seconds, "cpu_seconds": cpu, "examples": sum(len(b) for b in batches), **counts,
            "metrics": evaluation_metrics(predictions), "predictions": [r["pred"] for r in records],
            "scores": [r["loglikelihoods"] if TASKS[task].scored else r["nll"] for r in records]}


@torch.no_grad()
def generate_yardstick(model, tokenizer, items: list, cfg, stops=("\nUser ",)) -> dict:
    """A task's dialogue prompts (its items, in example order) through transformers' own `generate`:
    greedy, `max_new_tokens`, in left-padded batches of 32, stopped by `stop_strings` and cut as the
    engine cuts."""
    prompts = [item.context for item in items]
    replies = []
    start, cpu = time.perf_counter(), time.process_time()
    for first in range(0, len(prompts), YARDSTICK_BATCH):
        batch = prompts[first:first + YARDSTICK_BATCH]
        ids, mask, _ = left_pad(batch, tokenizer.pad_token_id, model.device)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                             max_new_tokens=cfg.eval.max_new_tokens, stop_strings=list(stops), tokenizer=tokenizer,
                             pad_token_id=tokenizer.pad_token_id)
        replies += [cut_at_stops(tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True), list(stops))
                    for row in out]
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "replies": replies}


def rates(r: dict, seconds: float, peak: float) -> str:
    """The cells both tables share: real tokens/s, padding share, model GFLOP/s and MFU over `seconds`."""
    seconds = max(seconds, 1e-9)
    return (f"{r['tokens'] / seconds:.0f} | {1 - r['tokens'] / max(r['positions'], 1):.1%} | "
            f"{r['flops'] / seconds / 1e9:.1f} | {r['flops'] / seconds / peak:.0%}")


def table(rows: dict, peak: float) -> str:
    lines = ["| task | wall s | CPU s | examples/s | real tokens/s | padding | GFLOP/s | MFU |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['examples'] / r['seconds']:.2f} | "
                     f"{rates(r, r['seconds'], peak)} |")
    return "\n".join(lines)


def phase_table(phases: dict, wall: float, peak: float, weight_read_s: float) -> str:
    """Scoring and generation, each over its own time inside the model, and the time outside it; the
    weight-read bound of each (its passes x `weight_read_s`, the time to read the weights once) and MBU."""
    lines = ["| phase | model s | share of wall | real tokens/s | padding | GFLOP/s | MFU | passes | "
             "weight-read bound s | MBU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in phases.items():
        bound = r["passes"] * weight_read_s
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['seconds'] / wall:.0%} | {rates(r, r['seconds'], peak)} | "
                     f"{r['passes']:.0f} | {bound:.1f} | {bound / max(r['seconds'], 1e-9):.0%} |")
    outside = wall - sum(r["seconds"] for r in phases.values())
    lines.append(f"| outside the model | {outside:.1f} | {outside / wall:.0%} | | | | | | | |")
    return "\n".join(lines)


def yardstick_table(rows: dict, yardstick: dict) -> str:
    """The dialogue tasks: the engine (scoring the target and generating) against `generate` alone."""
    lines = ["| task | engine wall s | `generate` wall s | speed-up | engine CPU s | `generate` CPU s | speed-up | "
             "identical replies |", "|---|---|---|---|---|---|---|---|"]

    def cells(engine: dict, other: dict) -> str:
        return " | ".join(f"{engine[k]:.1f} | {other[k]:.1f} | {other[k] / max(engine[k], 1e-9):.2f}x"
                          for k in ("seconds", "cpu_seconds"))

    for task, y in yardstick.items():
        same = sum(a == b for a, b in zip(rows[task]["predictions"], y["replies"]))
        lines.append(f"| {task} | {cells(rows[task], y)} | {same}/{len(y['replies'])} |")
    total = {k: sum(y[k] for y in yardstick.values()) for k in ("seconds", "cpu_seconds")}
    lines.append(f"| **dialogue** | {cells({k: sum(rows[t][k] for t in yardstick) for k in total}, total)} | |")
    return "\n".join(lines)


def decoding_line(decoding: dict, tasks: dict, tokenizer, peak: float, weight_bytes: float, kv_bytes: float,
                  bandwidth: float) -> str:
    """Decoding's reply tokens/s (over the dialogue tasks' rows in `tasks`) and its time a step against the
    step's compute and memory bounds."""
    seconds, steps = max(decoding["seconds"], 1e-9), decoding["passes"]
    replies = sum(len(tokenizer(reply, add_special_tokens=False).input_ids)
                  for task, row in tasks.items() if not TASKS[task].scored for reply in row["predictions"])
    compute_bound = decoding["flops"] / peak
    memory_bound = (steps * weight_bytes + kv_bytes) / bandwidth
    return (f"decoding: {replies / seconds:.0f} reply tokens/s over {steps:.0f} steps, {seconds / steps * 1e3:.0f} ms "
            f"a step ({decoding['tokens'] / steps:.1f} rows): {seconds / compute_bound:.2f}x its compute bound "
            f"({compute_bound / steps * 1e3:.0f} ms: its FLOPs at the matmul peak), {seconds / memory_bound:.2f}x its "
            f"memory bound ({memory_bound / steps * 1e3:.0f} ms: the weights and the KV cache read once)")


@contextlib.contextmanager
def engine_at(commit: str, out: Path):
    """This benchmark, with the overrides it was given, run on the engine of `commit` in a process of its
    own: checked out into a temporary git worktree whose `gap` package comes first on the path (this file
    measures it, so both engines are counted alike); without the yardstick, and in the process settings
    that engine had (this `gap` sets THP_MEM_ALLOC_ENABLE for itself). Yields `turn(last)`: that engine
    runs the tasks once while this process waits, and after its `last` run, it returns its report. The
    engines take turns, so that a machine that slows down during the bench slows both alike."""
    overrides = [o for o in HydraConfig.get().overrides.task
                 if o.lstrip("+").split("=")[0] not in ("against", "bench_out", "yardstick", "hydra.run.dir")]
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "engine"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--quiet", "--detach", str(tree), commit], check=True)
        go_read, go = os.pipe()
        done, done_write = os.pipe()
        child = subprocess.Popen([sys.executable, __file__, *overrides, f"++bench_out={out}", "++yardstick=false",
                                  f"hydra.run.dir={tmp}/run"], cwd=ROOT, pass_fds=(go_read, done_write),
                                 env={**environ, "PYTHONPATH": str(tree), TURNS: f"{go_read},{done_write}"})
        os.close(go_read)
        os.close(done_write)

        def turn(last: bool) -> dict | None:
            with contextlib.suppress(BrokenPipeError):  # it ended: its exit status says why
                os.write(go, b"g")
                if not last and os.read(done, 1):
                    return None
            if child.wait() or not last:
                raise RuntimeError(f"the engine of {commit} stopped with exit {child.returncode} (its output says why)")
            return json.loads(out.read_text())

        try:
            yield turn
        finally:
            child.kill()
            child.wait()
            os.close(go)
            os.close(done)
            subprocess.run([*git, "remove", "--force", str(tree)], check=True)


def turns_taken() -> tuple[int, int] | None:
    """In an engine run by `engine_at`: the pipes it takes its turns through (the go it waits for before
    each run of the tasks, the done it writes after each but the last); else None."""
    fds = os.environ.pop(TURNS, None)
    return tuple(map(int, fds.split(","))) if fds else None


def fastest(runs: list[dict]) -> dict:
    """Repeated runs of the tasks by one engine as one: the fastest run in all (its phases and counts),
    with each task's row from the run where that task was fastest (a busy neighbour slows a run, nothing
    speeds one up). The engine is deterministic, so runs that disagree on a prediction or a score stop the
    bench."""
    for run in runs[1:]:
        for task, row in run["tasks"].items():
            if (row["predictions"], row["scores"]) != (runs[0]["tasks"][task]["predictions"],
                                                       runs[0]["tasks"][task]["scores"]):
                raise RuntimeError(f"{task}: repeated runs of one engine gave different predictions or scores")
    tasks = {task: min((run["tasks"][task] for run in runs), key=lambda row: row["seconds"])
             for task in runs[0]["tasks"]}
    return min(runs, key=lambda run: sum(row["seconds"] for row in run["tasks"].values())) | {"tasks": tasks}


def with_groups(rows: dict) -> dict:
    """Per-task rows and their sums over the classification tasks, the dialogue tasks and all of them."""
    groups = {"classification": [t for t in rows if TASKS[t].scored],
              "dialogue": [t for t in rows if not TASKS[t].scored], "all": list(rows)}
    return rows | {f"**{name}**": {k: sum(rows[t][k] for t in tasks) for k in ("examples", "cpu_seconds", *COUNTS)}
                   for name, tasks in groups.items() if tasks}


def largest_difference(a: list, b: list) -> float:
    """The largest absolute difference between two equally nested lists of numbers."""
    if isinstance(a, list):
        return max((largest_difference(x, y) for x, y in zip(a, b)), default=0.0)
    return abs(a - b)


def against_table(old: dict, new: dict, commit: str) -> str:
    """Wall and model seconds of the engine of `commit` and of this one, measured in the same run, and
    how far their predictions, scores and metrics differ."""
    lines = [f"| | {commit} s | this engine s | speed-up |", "|---|---|---|---|"]
    for name, r in new["tasks"].items():
        before = old["tasks"][name]["seconds"]
        lines.append(f"| {name} | {before:.1f} | {r['seconds']:.1f} | {before / r['seconds']:.2f}x |")
    for name, r in new["phases"].items():
        before = old["phases"][name]["seconds"]
        if not (before or r["seconds"]):  # no dialogue task: no decoding
            continue
        lines.append(f"| {name} (model time) | {before:.1f} | {r['seconds']:.1f} | "
                     f"{before / max(r['seconds'], 1e-9):.2f}x |")
    tasks = [t for t in new["tasks"] if not t.startswith("**")]
    same = sum(a == b for t in tasks for a, b in zip(old["tasks"][t]["predictions"], new["tasks"][t]["predictions"]))
    total = sum(len(new["tasks"][t]["predictions"]) for t in tasks)
    scores = max(largest_difference(old["tasks"][t]["scores"], new["tasks"][t]["scores"]) for t in tasks)
    metrics = max(abs(old["tasks"][t]["metrics"][k] - v) for t in tasks for k, v in new["tasks"][t]["metrics"].items())
    lines.append(f"\nidentical predictions and replies: {same}/{total}; largest difference of a score "
                 f"{scores:.1e} nats, of a metric {metrics:.1e}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    check_config(cfg)
    examples, _, _ = read_inputs(cfg)
    out = Path(cfg.get("bench_out") or ROOT / "bench" / "results.json")  # `+bench_out=`: scripts/gpu_check.sh
    against = cfg.get("against")  # `+against=COMMIT`: that engine too, in the same run, taking turns with this one
    repeat = cfg.get("repeat", 1)  # `+repeat=N`: the tasks N times (each engine), each task's fastest run kept
    if type(repeat) is not int or repeat < 1:
        raise SystemExit(f"error: +repeat={repeat} is not valid: the number of runs of each engine, 1 or more")
    if against and subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{against}^{{commit}}"],
                                  capture_output=True).returncode:
        raise SystemExit(f"error: +against={against} is not valid: a commit of this repository ({ROOT})")
    rate_seconds = cfg.get("rate_seconds", 4.0)  # `+rate_seconds=`: how long each of the machine's rates is measured
    if type(rate_seconds) not in (int, float) or rate_seconds <= 0:
        raise SystemExit(f"error: +rate_seconds={rate_seconds} is not valid: seconds, more than 0 (default 4)")
    rates_now = functools.partial(matmul_rates, seconds=rate_seconds, window=min(1.0, rate_seconds / 4))
    others = Others()
    my_turns = turns_taken()
    with engine_at(str(against), out.with_suffix(".against.json")) if against else contextlib.nullcontext() as other:
        L.seed_everything(cfg.seed, verbose=False)
        started = time.perf_counter()
        tokenizer, model = load_pretrained(cfg.model)
        model.eval()
        device, dtype = compute_setting(cfg.trainer, model)
        model.to(device)
        counter = FlopCounter(model, device)
        data = make_evaldata(cfg, examples, tokenizer)
        batches = data.item_batches()
        runs, measured = [], []
        for n in range(repeat):
            last = n == repeat - 1
            old = other(last) if other else None  # the engine of `against` runs first, this one waits
            if my_turns:  # this is that engine: it waits for its turn
                os.read(my_turns[0], 1)
            began = time.time()
            with others.during():
                measured.append(rates_now(device, dtype))  # before and after each run of the tasks
                counter.reset()
                with onednn_linears(model):
                    rows = {task: bench_task(model, tokenizer, task, batches[task], cfg, counter)
                            for task in data.tasks}
                measured.append(rates_now(device, dtype))
            runs.append({"tasks": rows, "phases": counter.phases, "kv_bytes": counter.kv_bytes,
                         "span": [began, time.time()]})
            if my_turns and not last:
                os.write(my_turns[1], b"d")
    rates = {k: max(m[k] for m in measured) for k in measured[0]}
    peak = max(rates.values())
    bandwidth = read_rate(device, seconds=min(3.0, rate_seconds))
    counter.remove()
    best = fastest(runs)
    rows, phases = with_groups(best["tasks"]), best["phases"]
    with others.during():
        yardstick = {task: generate_yardstick(model, tokenizer, data.items[task], cfg)
                     for task in data.tasks if not TASKS[task].scored and cfg.get("yardstick", True)}
    others = others.share()
    used = resources(started)  # the GPU's name and peak memory when one was used
    name = used.get("device", f"cpu ({torch.get_num_threads()} threads)")
    report = {"model": cfg.model.name, "limit": cfg.eval.limit, "device": name,
              "precision": str(cfg.trainer.precision), "matmul_flops_per_s": peak, "matmul_rates": rates,
              "read_bytes_per_s": bandwidth, "weight_bytes": counter.weight_bytes, "resources": used, "tasks": rows,
              "phases": phases, "kv_cache_bytes_read": best["kv_bytes"], "yardstick": yardstick,
              "others_cpu_share": others, "runs": [run["span"] for run in runs]}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"model {cfg.model.name}, {cfg.eval.limit} examples per task, {name}, precision "
          f"{cfg.trainer.precision}, {str(dtype).removeprefix('torch.')} matmul {peak / 1e12:.2f} TFLOP/s ("
          + ", ".join(f"{k} {v / 1e12:.2f}" for k, v in rates.items()) + ")"
          + (f", peak GPU memory {used['peak_gpu_memory_gb']} GB" if "device" in used else "")
          + f", memory reads {bandwidth / 1e9:.1f} GB/s")
    print(table(rows, peak))
    print()
    weight_read_s = counter.weight_bytes / bandwidth
    print(f"weights {counter.weight_bytes / 1e9:.2f} GB: {weight_read_s * 1e3:.1f} ms to read once")
    print(phase_table(phases, rows["**all**"]["seconds"], peak, weight_read_s))
    decoding = phases["generation"]
    if decoding["passes"]:  # dialogue tasks were decoded
        print(decoding_line(decoding, best["tasks"], tokenizer, peak, counter.weight_bytes, best["kv_bytes"],
                            bandwidth))
    if yardstick:
        print()
        print(yardstick_table(rows, yardstick))
    if old:
        print()
        print(against_table(old, report, str(against)))
    print(f"other processes used {others:.0%} of this machine's CPUs while it measured"
          + (": its times are theirs too, run it again on a quiet machine" if others > 0.05 else ""))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
