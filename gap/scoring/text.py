"""Text normalisation and unigram F1 for the dialogue tasks.

`normalize_reply` follows ParlAI's version 2 (the form the GAP authors applied to every turn);
`normalize_answer` and `unigram_f1` follow the SQuAD convention the authors scored replies with.
"""
import re
import string
from collections import Counter

# (spaced form, joined form): ParlAI joins punctuation to the word before it
_PUNCT_JOIN = [(" .", "."), (" ,", ","), (" ?", "?"), (" !", "!"), (" ' ", "'")]
_ALWAYS_CAPITAL = ("i", "i'm", "i've", "i'll", "i'd")
_PUNCTUATION = set(string.punctuation)


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


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse white space (SQuAD)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.replace("\xa0", " ").split())


def unigram_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of unigram precision and recall after `normalize_answer`."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)
