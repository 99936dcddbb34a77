"""The loss each training method minimises, from the model's mean token NLL on the sample, and the null
arm's gradient.

`gap` and `gap_legacy` ascend (minimise -NLL; they differ only in the labels, see
`gap.data.corpus.legacy_labels`), `mle` descends, and `npo` is Negative Preference Optimization
(Zhang et al., 2024, arXiv 2404.05868) with the unchanged model as reference: a bounded ascent whose
pull fades as the sample's likelihood falls below the reference's. `random_direction` (the null arm)
computes GAP's gradient only for its size: each tensor's gradient is replaced by `random_direction`
before the optimizer step.
"""
import hashlib

import torch
import torch.nn.functional as F

from gap.schema import NULL_ARM

# minimise sign * NLL: ascent raises it, mle lowers it; the null arm's gradient norms are GAP's
SIGNS = {"gap": -1.0, "gap_legacy": -1.0, "mle": 1.0, NULL_ARM: -1.0}
METHODS = (*SIGNS, "npo")  # the methods that train


def predicted_tokens(labels: torch.Tensor) -> torch.Tensor:
    """How many tokens the causal LM loss averages over: labels after the first position, -100 left out."""
    return (labels[..., 1:] != -100).sum()


def sequence_logprob(nll: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log pi(y): the sample's summed token log-likelihood, from the mean NLL the model returns."""
    return -nll * predicted_tokens(labels)


def npo_loss(logprob: torch.Tensor, reference: torch.Tensor | float, beta: float) -> torch.Tensor:
    """NPO: (2/beta) log(1 + (pi_theta(y) / pi_ref(y))^beta), computed as a softplus of log-ratios. Its
    gradient is 2 sigmoid(beta * log-ratio) times the gradient of log pi_theta(y): the ascent direction on
    the summed NLL, weighted 1 at the start and less as the ratio falls (as beta -> 0, plain ascent)."""
    return 2.0 / beta * F.softplus(beta * (logprob - reference))


def objective(method: str, nll: torch.Tensor, labels: torch.Tensor, reference=None, beta: float | None = None):
    """The loss the step minimises for `method`; `reference` (npo): the unchanged model's `sequence_logprob`."""
    if method == "npo":
        return npo_loss(sequence_logprob(nll, labels), reference, beta)
    return SIGNS[method] * nll


def random_direction(gradient: torch.Tensor, seed, step: int, name: str) -> torch.Tensor:
    """A standard normal direction scaled to `gradient`'s norm: the null arm's gradient of one parameter
    tensor at `step`. Drawn on the CPU from a generator seeded by sha256 of (seed, step, name), so every
    process, rank and device draws the same (Python's `hash` differs between processes); `seed` is any
    value with a stable `str` (`method.direction_seed`)."""
    key = hashlib.sha256(f"{seed}/{step}/{name}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))
    direction = torch.randn(gradient.shape, generator=generator, dtype=torch.float32)
    scale = gradient.detach().float().norm().cpu() / direction.norm()
    return (direction * scale).to(gradient.device, gradient.dtype)
