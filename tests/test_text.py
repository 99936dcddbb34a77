"""normalize_reply (ParlAI version 2) and the unigram F1 (SQuAD, from torchmetrics), on hand-computed cases."""
import re
import string
from collections import Counter

import pytest

from gap.data.tasks import DIALOGUE, load_examples
from gap.data.text import normalize_reply
from gap.scoring.metrics import unigram_f1

# ---------------------------------------------------------------- normalize_reply

@pytest.mark.parametrize("text, expected", [
    # punctuation joined to the word before, sentence starts capitalised, no period after "?"
    ("hello there . how are you ?", "Hello there. How are you?"),
    # "i" is always capitalised, the apostrophe is rejoined, a period is added
    ("i think i'm fine", "I think I'm fine."),
    # already ends with "!": no period added
    ("wow , that is great !", "Wow, that is great!"),
    ("wow!", "Wow!"),
    # ends with "." already
    ("ok .", "Ok."),
    # the empty string stays empty (no period)
    ("", ""),
    # double and triple spaces collapse
    ("hello  world", "Hello world."),
    ("hello   world", "Hello world."),
    # "what's up ,  dude": comma joined, double space collapsed, apostrophe kept
    ("what's up ,  dude", "What's up, dude."),
    # everything is lower-cased first (proper nouns too), then sentence starts capitalised
    ("HELLO THERE. I LOVE Paris!", "Hello there. I love paris!"),
    # several sentences: each word after . ! ? is capitalised
    ("i am here . you are there ! ok", "I am here. You are there! Ok."),
    # unspaced punctuation is handled the same as spaced punctuation
    ("hello there.how are you?", "Hello there.how are you?"),
    # no space is inserted after an unspaced comma (ParlAI only rejoins " ,")
    ("yes,i'll go", "Yes,i'll go."),
    # i'd / i've after the apostrophe split are rejoined and capitalised
    ("maybe i'd go , i've been", "Maybe I'd go, I've been."),
    # ends with a closing parenthesis or quote: no period
    ("see (below)", "See (below)"),
    ("he said \"hi\"", "He said \"hi\""),
    # quotes: " ' " is rejoined on both sides (ParlAI quirk), and the closing quote means no period
    ("it's the 'best'", "It's the'best'"),
    # surrounding white space is stripped; a leading space makes the first word "" so "hi"
    # is not capitalised (same as ParlAI)
    ("  hi there  ", "hi there."),
    ("hi there ", "Hi there."),
])
def test_normalize_reply(text, expected):
    assert normalize_reply(text) == expected


def test_normalize_reply_version_1_adds_no_period():
    assert normalize_reply("i think i'm fine", version=1) == "I think I'm fine"
    assert normalize_reply("hello there . how are you ?", version=1) == "Hello there. How are you?"


def test_normalize_reply_is_idempotent():
    for text in ["hello there . how are you ?", "i think i'm fine", "what's up ,  dude", "wow!"]:
        once = normalize_reply(text)
        assert normalize_reply(once) == once


# ---------------------------------------------------------------- SQuAD normalisation inside the F1

@pytest.mark.parametrize("text, normalised", [
    ("The cat sat on the mat.", "cat sat on mat"),
    ("A cat on a mat today", "cat on mat today"),
    ("An apple, an orange!", "apple orange"),
    # punctuation is deleted (SQuAD), not replaced by a space
    ("Don't stop", "dont stop"),
    ("the cat's toy", "cats toy"),
    # articles only as whole words
    ("another theory and a banana", "another theory and banana"),
    ("THE END", "end"),
    # white space (including tabs, newlines, non-breaking spaces) collapsed
    ("  hello \t\n world\xa0again  ", "hello world again"),
])
def test_f1_compares_text_after_squad_normalisation(text, normalised):
    assert unigram_f1(text, normalised) == 1.0
    assert unigram_f1(text, normalised + " extra") < 1.0


# ---------------------------------------------------------------- unigram_f1

def test_f1_identical_is_one():
    assert unigram_f1("I am fine.", "I am fine.") == 1.0


def test_f1_ignores_case_punctuation_and_articles():
    assert unigram_f1("The Cat, sat!", "a cat sat") == 1.0


def test_f1_disjoint_is_zero():
    assert unigram_f1("hello world", "goodbye moon") == 0.0


def test_f1_partial_overlap():
    # pred [cat, sat, on, mat], ref [cat, on, mat, today]: 3 common, P = R = 3/4
    assert unigram_f1("the cat sat on the mat", "a cat on a mat today") == pytest.approx(0.75)


def test_f1_unequal_precision_and_recall():
    # pred [cat, sat], ref [cat, sat, on, mat]: 2 common, P = 1, R = 1/2, F1 = 2/3
    assert unigram_f1("cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # and the other way round (F1 is symmetric)
    assert unigram_f1("the cat sat on the mat", "cat sat") == pytest.approx(2 / 3)


def test_f1_counts_repeated_tokens_with_multiplicity():
    # pred [cat, cat, cat], ref [cat]: 1 common, P = 1/3, R = 1, F1 = 0.5
    assert unigram_f1("cat cat cat", "cat") == pytest.approx(0.5)
    # pred [cat, cat, dog], ref [cat, cat, cat, mouse]: 2 common, P = 2/3, R = 1/2, F1 = 4/7
    assert unigram_f1("cat cat dog", "cat cat cat mouse") == pytest.approx(4 / 7)


def test_f1_punctuation_only_prediction_is_zero():
    assert unigram_f1("?!.", "hello there") == 0.0


def test_f1_empty_prediction_is_zero():
    assert unigram_f1("", "hello there") == 0.0
    assert unigram_f1("hello there", "") == 0.0


def test_f1_of_two_empty_texts_is_one():
    # SQuAD 2.0's convention (torchmetrics): nothing to find, nothing found
    assert unigram_f1("the a an", "the a an") == 1.0


def squad_f1_by_hand(prediction: str, reference: str) -> float:
    """The SQuAD unigram F1 written out, to check torchmetrics' against."""
    def tokens(text):
        text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
        return re.sub(r"\b(a|an|the)\b", " ", text).split()
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    return 0.0 if same == 0 else 2 * same / (len(pred) + len(ref))


def test_f1_equals_squad_f1_on_every_dialogue_target_pair(data_dir):
    """Each dialogue target (first 320 of each task) scored as a reply to the next one's target."""
    for task in DIALOGUE:
        targets = [e.target for e in load_examples(data_dir, task, "validation", 320)]
        for reply, target in zip(targets, targets[1:]):
            assert unigram_f1(reply, target) == pytest.approx(squad_f1_by_hand(reply, target), abs=1e-6)
