"""How much memory a run may use on the machine it starts on."""
from pathlib import Path

import torch

from gap.memory.plan import device_indices, gpu_run, on_cuda


def capacity(trainer_cfg) -> tuple[float, str, int] | None:
    """(bytes one process may use, which memory, GPUs visible on a node), or None where we cannot tell.

    CUDA: the least free memory among the GPUs the run uses (`mem_get_info` opens a CUDA context on each).
    CPU: the available RAM, shared by the node's processes (trainer.devices of them).
    """
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if on_cuda(trainer_cfg):
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


def gpu_memory(trainer_cfg) -> float | None:
    """Bytes of the smallest GPU the run uses (its total, the same for every process of the run), or None
    where it runs on none."""
    if not gpu_run(trainer_cfg):
        return None
    used = device_indices(trainer_cfg.get("devices", 1), torch.cuda.device_count())
    return min(torch.cuda.get_device_properties(i).total_memory for i in used)
