"""Dialogue turns as the GAP authors wrote them: ParlAI's `normalize_reply` (version 2), applied to every
turn of a context and to the target."""

# (spaced form, joined form): ParlAI joins punctuation to the word before it
_PUNCT_JOIN = [(" .", "."), (" ,", ","), (" ?", "?"), (" !", "!"), (" ' ", "'")]
_ALWAYS_CAPITAL = ("i", "i'm", "i've", "i'll", "i'd")


def _capitalize(word: str) -> str:
    return word[:1].upper() + word[1:]


def normalize_reply(text: str, version: int = 2) -> str:
    """Standardise casing and punctuation spacing of a dialogue turn (ParlAI `normalize_reply`)."""
    text = text.lower()
    for spaced, joined in _PUNCT_JOIN:
        text = text.replace(joined, spaced).replace("  ", " ")
    words = text.split(" ")
    for i, word in enumerate(words):
        if i == 0 or word in _ALWAYS_CAPITAL:
            words[i] = _capitalize(word)
        elif word in "?.!" and i < len(words) - 1:
            # note: `in` on a string, so the empty word also capitalises its successor (ParlAI does too)
            words[i + 1] = _capitalize(words[i + 1])
    text = " " + " ".join(words) + " "
    for spaced, joined in _PUNCT_JOIN:
        text = text.replace(spaced, joined)
    text = text.strip().replace("  ", " ")
    if version > 1 and text and text[-1] not in "!.?)\"'":
        text += "."
    return text
