"""Tokenising as the GAP authors did: over-long text keeps its end (left truncation), with the
tokenizer's special tokens where asked (a BOS-adding tokenizer keeps its BOS in front). The cut is made
here, on the ids, so the tokenizer's own truncation side (shared with every other user) is left alone."""
from collections.abc import Sequence


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text (OPT, Gemma: a BOS before; SmolLM2: none)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full)) if full[i:i + len(plain)] == plain)
    return full[:start], full[start + len(plain):]


def cut_left(body: list[int], max_length: int, before: Sequence[int] = (), after: Sequence[int] = ()) -> list[int]:
    """`before + body + after` in at most `max_length` ids, the body losing its first ids: what the
    tokenizer's left truncation makes of a text whose special tokens are `before` and `after`."""
    keep = max_length - len(before) - len(after)
    return [*before, *body[max(len(body) - keep, 0):], *after]


def encode(tokenizer, text: str, max_length: int, special: bool = True) -> list[int]:
    """Token ids of `text`, at most `max_length`, truncated on the left whatever the tokenizer's default."""
    ids = tokenizer(text, add_special_tokens=special, verbose=False)["input_ids"]  # verbose: no over-length warning
    if len(ids) <= max_length:
        return ids
    before, after = special_affixes(tokenizer) if special else ([], [])
    return cut_left(ids[len(before):len(ids) - len(after)], max_length, before, after)
