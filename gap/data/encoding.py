"""Tokenising as the GAP authors did: over-long text keeps its end (left truncation), with the
tokenizer's special tokens where asked (a BOS-adding tokenizer keeps its BOS in front)."""


def encode(tokenizer, text: str, max_length: int, special: bool = True) -> list[int]:
    """Token ids of `text`, at most `max_length`, truncated on the left whatever the tokenizer's default."""
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        return tokenizer(text, truncation=True, max_length=max_length, add_special_tokens=special)["input_ids"]
    finally:
        tokenizer.truncation_side = side
