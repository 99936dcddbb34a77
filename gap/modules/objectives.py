"""The loss each training method minimises, from the model's mean token NLL on the sample.

`gap` and `gap_legacy` ascend (minimise -NLL; they differ only in the labels, see
`gap.data.corpus.legacy_labels`), `mle` descends, and `npo` is Negative Preference Optimization
(Zhang et al., 2024, arXiv 2404.05868) with the unchanged model as reference: a bounded ascent whose
pull fades as the sample's likelihood falls below the reference's.
"""
import torch
import torch.nn.functional as F

SIGNS = {"gap": -1.0, "gap_legacy": -1.0, "mle": 1.0}  # minimise sign * NLL: ascent raises it, mle lowers it
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
