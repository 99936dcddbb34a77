"""Order of work and of results: examples grouped into batches of similar length, and results computed
group by group put back in input order. Shared by the evaluation data modules and the scoring engine."""
from collections.abc import Iterable


def length_sorted_batches(lengths: list[int], max_items: int, max_tokens: int | None = None,
                          fill: float | None = 0.5, kept: list[int] | None = None,
                          max_positions: int | None = None) -> list[list[int]]:
    """Group item indices into batches of similar length, longest first (a too-large batch fails early).

    A batch closes at `max_items` items, when its padded size (items x its longest length) would pass
    `max_tokens` (so batches of short items hold more of them), at an item shorter than `fill` x its
    longest (so padding stays under 1 - `fill` of any batch; generation passes None, since each extra
    batch costs a full run of decoding steps), or when items x the most positions any of them `kept` for
    the output layer would pass `max_positions` (the logits a pass may hold, over the vocabulary). An item
    over a budget on its own goes alone.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    most_kept = 0  # of the open batch
    for i in order:
        batch = batches[-1] if batches else None
        longest = lengths[batch[0]] if batch else 0
        widest_kept = max(most_kept, kept[i]) if kept else 0
        if (batch and len(batch) < max_items and (fill is None or lengths[i] >= fill * longest)
                and (max_tokens is None or (len(batch) + 1) * longest <= max_tokens)
                and (max_positions is None or (len(batch) + 1) * widest_kept <= max_positions)):
            batch.append(i)
            most_kept = widest_kept
        else:
            batches.append([i])
            most_kept = kept[i] if kept else 0
    return batches


def in_input_order(n: int, parts: Iterable[tuple[Iterable[int], Iterable]]) -> list:
    """Results for inputs 0..n-1 from `(indices, results)` parts, each result landing at its index.
    Every index must be filled exactly once."""
    out: list = [None] * n
    filled = 0
    for indices, results in parts:
        for i, result in zip(indices, results, strict=True):
            out[i] = result
            filled += 1
    if filled != n:
        raise ValueError(f"{filled} results for {n} inputs")
    return out
