"""Rows that hold several sequences side by side, kept apart by a 4D mask: a question's context with each
of its choices (scoring), several dialogue prompts with their targets (the prefill). Each segment takes
the positions it would have alone and sees only itself (causally) and the segment it continues, so each
token is computed as in its own unpadded sequence, with no padding between sequences."""
from dataclasses import dataclass

import torch

from gap.scoring.attention import model_masks


@dataclass(frozen=True)
class Segment:
    tokens: list[int]
    start: int = 0             # the position of its first token
    parent: int | None = None  # the earlier segment of its row that it continues (it sees all of it)


@dataclass
class PackedRows:
    ids: torch.Tensor        # [rows, width], left-padded
    mask: torch.Tensor       # bool [rows, 1, width, width], True = attend
    positions: torch.Tensor  # [rows, width]
    columns: list[list[int]]  # per row, the first column of each of its segments


def packed_rows(rows: list[list[Segment]], pad_id: int) -> PackedRows:
    """Left-padded rows of segments, end to end in the order given, and the mask that keeps them apart.

    A pad position attends only to its row's first token, never to itself: no row of the mask is all
    masked (which gives NaN), and the mask's diagonal marks the real tokens (the benchmark counts them so).
    """
    lengths = [sum(len(s.tokens) for s in row) for row in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
    parent = torch.full((len(rows), width), -2, dtype=torch.long)   # the parent of each column's segment
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    columns = []
    for r, (row, length) in enumerate(zip(rows, lengths)):
        col, starts = width - length, []
        for s, seg in enumerate(row):
            end = col + len(seg.tokens)
            starts.append(col)
            if seg.tokens:
                ids[r, col:end] = torch.tensor(seg.tokens)
                segment[r, col:end] = s
                parent[r, col:end] = -2 if seg.parent is None else seg.parent
                positions[r, col:end] = torch.arange(seg.start, seg.start + len(seg.tokens))
            col = end
        columns.append(starts)
    query, key = segment[:, :, None], segment[:, None, :]
    mask = torch.ones(width, width, dtype=torch.bool).tril() & ((query == key) | (parent[:, :, None] == key))
    first = torch.arange(width) == torch.tensor([width - n for n in lengths])[:, None]  # [rows, width]
    pads = query < 0
    mask = mask & ~pads | pads & first[:, None, :]
    return PackedRows(ids, mask[:, None], positions, columns)


def first_fit(lengths: list[int], width: int) -> list[list[int]]:
    """Indices of sequences grouped into rows of at most `width` tokens, longest first, each into the
    first row with room (first-fit decreasing): few rows, little padding. A longer sequence gets a row."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        row = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if row is None:
            rows.append([i])
            room.append(width - lengths[i])
        else:
            rows[row].append(i)
            room[row] -= lengths[i]
    return rows


def packed_forward(model, packed: PackedRows, keep: int, **kwargs):
    """The model over packed rows, its masks rebuilt for every layer type (`model_masks`); only the last
    `keep` columns reach the output layer."""
    device = model.device
    distance = packed.positions[:, None, :, None] - packed.positions[:, None, None, :]
    return model(input_ids=packed.ids.to(device), attention_mask=model_masks(model, packed.mask, distance),
                 position_ids=packed.positions.to(device), logits_to_keep=keep, **kwargs)
