"""Task formatting (gap.data.tasks) on hand-written fixture rows with the hub field names."""

import pytest

from gap.data.tasks import (
    CLASSIFICATION,
    DIALOGUE,
    TASKS,
    Example,
    check_task_names,
    dialogue_prompt,
    load_examples,
    task_file,
)
from gap.errors import DataError
from tests.helpers import arc_row, write_task


def load(data_dir, task, rows, limit=None, **kw):
    write_task(data_dir, task, rows)
    return load_examples(data_dir, task, "validation", limit, **kw)


# ---------------------------------------------------------------- registry

def test_twelve_tasks_in_two_kinds():
    assert CLASSIFICATION == ["piqa", "hellaswag", "arc_easy", "arc_challenge", "copa", "winogrande",
                              "math_qa", "pubmed_qa"]
    assert DIALOGUE == ["wizard_of_wikipedia", "empathetic_dialogues", "blended_skill_talk", "wizard_of_internet"]
    assert len(TASKS) == 12


def test_task_file_layout(tmp_path):
    assert task_file(tmp_path, "piqa", "validation") == tmp_path / "tasks" / "piqa" / "validation.jsonl"


# ---------------------------------------------------------------- classification tasks

def test_piqa(tmp_path):
    rows = [{"goal": "How do I open a jar?", "sol1": "Twist the lid.", "sol2": "Eat the lid.", "label": 0},
            {"goal": "Dry wet shoes", "sol1": "Put them in water.", "sol2": "Stuff them with paper.", "label": 1}]
    assert load(tmp_path, "piqa", rows) == [
        Example(0, "How do I open a jar?", [" Twist the lid.", " Eat the lid."], 0),
        Example(1, "Dry wet shoes", [" Put them in water.", " Stuff them with paper."], 1),
    ]


def test_hellaswag(tmp_path):
    rows = [{"ind": 4, "activity_label": "Cooking", "ctx_a": "A man is", "ctx_b": "cooking",
             "ctx": "A man is cooking. He", "endings": ["flies away.", "sings.", "stirs the pot.", "sleeps."],
             "label": "2", "split": "val", "split_type": "indomain"}]
    [ex] = load(tmp_path, "hellaswag", rows)
    assert ex == Example(0, "A man is cooking. He", [" flies away.", " sings.", " stirs the pot.", " sleeps."], 2)
    assert isinstance(ex.label, int)


@pytest.mark.parametrize("task", ["arc_easy", "arc_challenge"])
def test_arc_keeps_only_four_choice_questions(tmp_path, task):
    rows = [
        arc_row("q0 three", ["x", "y", "z"], "A"),
        arc_row("q1 four", ["red", "green", "blue", "black"], "C"),
        arc_row("q2 five", ["a", "b", "c", "d", "e"], "E"),
        arc_row("q3 four digits", ["one", "two", "three", "four"], "4", labels=["1", "2", "3", "4"]),
        arc_row("q4 four", ["w", "x", "y", "z"], "A"),
    ]
    examples = load(tmp_path, task, rows)
    assert examples == [
        Example(1, "q1 four", [" red", " green", " blue", " black"], 2),
        Example(3, "q3 four digits", [" one", " two", " three", " four"], 3),
        Example(4, "q4 four", [" w", " x", " y", " z"], 0),
    ]


def test_arc_digit_answer_key_maps_to_its_label_position(tmp_path):
    rows = [arc_row(f"q{k}", ["p", "q", "r", "s"], k, labels=["1", "2", "3", "4"]) for k in "1234"]
    assert [ex.label for ex in load(tmp_path, "arc_challenge", rows)] == [0, 1, 2, 3]


def test_copa(tmp_path):
    rows = [{"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
             "choice2": "He got a hole in his sock.", "question": "cause", "label": 0, "idx": 0},
            {"premise": "I tipped the bottle.", "choice1": "The liquid froze.",
             "choice2": "The liquid spilled.", "question": "effect", "label": 1, "idx": 1}]
    assert load(tmp_path, "copa", rows) == [
        # no "because"/"so" connector: the context is the premise as is
        Example(0, "The man broke his toe.", [" He dropped a hammer on his foot.", " He got a hole in his sock."], 0),
        Example(1, "I tipped the bottle.", [" The liquid froze.", " The liquid spilled."], 1),
    ]


def test_winogrande(tmp_path):
    rows = [{"sentence": "The trophy didn't fit in the suitcase because _ was too big.",
             "option1": "the trophy", "option2": "the suitcase", "answer": "1"},
            {"sentence": "Sarah gave Maria a gift because _ was generous.",
             "option1": "Sarah", "option2": "Maria", "answer": "2"}]
    assert load(tmp_path, "winogrande", rows) == [
        Example(0, "The trophy didn't fit in the suitcase because",
                [" the trophy was too big.", " the suitcase was too big."], 0),
        Example(1, "Sarah gave Maria a gift because", [" Sarah was generous.", " Maria was generous."], 1),
    ]


def test_math_qa(tmp_path):
    rows = [{"Problem": "what is 5 ! ?", "Rationale": "", "options": "a ) 24 , b ) 120 , c ) 625 , d ) 720 , e ) 1024",
             "correct": "c", "annotated_formula": "", "linear_formula": "", "category": "general"}]
    assert load(tmp_path, "math_qa", rows) == [Example(0, "what is 5 ! ?", ["24", "120", "625", "720", "1024"], 2)]


def test_math_qa_option_with_comma_inside(tmp_path):
    rows = [{"Problem": "p", "options": "a ) 1,200 , b ) 3 , c ) 4 , d ) 5 , e ) 6", "correct": "a"},
            {"Problem": "q", "options": "a ) rs . 400 , b ) rs . 1,300 , c ) 2 / 3 , d ) none , e ) 7,000",
             "correct": "e"}]
    assert load(tmp_path, "math_qa", rows) == [
        Example(0, "p", ["1,200", "3", "4", "5", "6"], 0),
        Example(1, "q", ["rs . 400", "rs . 1,300", "2 / 3", "none", "7,000"], 4),
    ]


def test_pubmed_qa(tmp_path):
    rows = [{"question": "Does X cause Y?", "abstract": "We studied X. Y rose.", "final_decision": decision}
            for decision in ("yes", "maybe", "no")]
    examples = load(tmp_path, "pubmed_qa", rows)
    assert [ex.context for ex in examples] == ["Context: We studied X. Y rose.\nQuestion: Does X cause Y?\nAnswer:"] * 3
    assert [ex.choices for ex in examples] == [[" yes", " maybe", " no"]] * 3
    assert [ex.label for ex in examples] == [0, 1, 2]
    assert [ex.index for ex in examples] == [0, 1, 2]


# ---------------------------------------------------------------- dialogue tasks

def test_dialogue_prompt():
    assert dialogue_prompt(["hi there"]) == "User 1: Hi there.\nUser 2:"
    assert dialogue_prompt(["hi there", "hello . how are you ?"]) == \
        "User 1: Hi there.\nUser 2: Hello. How are you?\nUser 1:"
    assert dialogue_prompt(["hi", "hello", "i'm ok"]) == "User 1: Hi.\nUser 2: Hello.\nUser 1: I'm ok.\nUser 2:"
    assert dialogue_prompt([]) == "User 1:"


@pytest.mark.parametrize("task", ["wizard_of_wikipedia", "empathetic_dialogues", "blended_skill_talk",
                                  "wizard_of_internet"])
def test_dialogue_tasks(tmp_path, task):
    rows = [{"id": "d0", "turns": ["only one turn"]},
            {"id": "d1", "turns": ["hi there", "hello . how are you ?", "i am fine"]},
            {"id": "d2", "turns": ["hi", "hello", "i'm ok", "good , me too !"]}]
    examples = load(tmp_path, task, rows)
    assert examples == [
        Example(1, "User 1: Hi there.\nUser 2: Hello. How are you?\nUser 1:", target="I am fine."),
        Example(2, "User 1: Hi.\nUser 2: Hello.\nUser 1: I'm ok.\nUser 2:", target="Good, me too!"),
    ]
    assert examples[0].choices is None and examples[0].label is None


# ---------------------------------------------------------------- limit / start

def test_limit_takes_first_n_after_filters_in_file_order(tmp_path):
    rows = [arc_row("q0", ["a", "b", "c"], "A"),            # dropped
            arc_row("q1", ["a", "b", "c", "d"], "A"),
            arc_row("q2", ["a", "b", "c", "d", "e"], "A"),  # dropped
            arc_row("q3", ["a", "b", "c", "d"], "B"),
            arc_row("q4", ["a", "b", "c", "d"], "C")]
    write_task(tmp_path, "arc_easy", rows)
    first_two = load_examples(tmp_path, "arc_easy", "validation", 2)
    assert [(e.index, e.context) for e in first_two] == [(1, "q1"), (3, "q3")]
    assert [e.index for e in load_examples(tmp_path, "arc_easy", "validation", None)] == [1, 3, 4]
    assert [e.index for e in load_examples(tmp_path, "arc_easy", "validation", 10)] == [1, 3, 4]
    assert load_examples(tmp_path, "arc_easy", "validation", 0) == []
    assert [e.index for e in load_examples(tmp_path, "arc_easy", "validation", 1, start=1)] == [3]
    assert [e.index for e in load_examples(tmp_path, "arc_easy", "validation", None, start=2)] == [4]


def test_dialogue_limit_counts_kept_rows(tmp_path):
    rows = [{"id": str(i), "turns": ["a"] if i % 2 else ["a", "b"]} for i in range(6)]
    assert [e.index for e in load(tmp_path, "wizard_of_internet", rows, limit=2)] == [0, 2]


def test_splits_are_separate_files(tmp_path):
    write_task(tmp_path, "copa", [{"premise": "v", "choice1": "a", "choice2": "b", "label": 0}])
    write_task(tmp_path, "copa", [{"premise": "t", "choice1": "a", "choice2": "b", "label": 1}], split="test")
    assert load_examples(tmp_path, "copa", "test", None)[0].context == "t"
    assert load_examples(tmp_path, "copa", "validation", None)[0].context == "v"


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("bad", [['{"goal": "g", "sol1": '], ["", "not json"]], ids=["truncated", "after-blank"])
def test_malformed_json_line_names_file_and_line(tmp_path, bad):
    """The line number is the file's, blank lines included."""
    good = {"goal": "g", "sol1": "a", "sol2": "b", "label": 0}
    path = write_task(tmp_path, "piqa", [good, *([good] if len(bad) == 1 else []), *bad])
    with pytest.raises(DataError, match="malformed JSON") as err:
        load_examples(tmp_path, "piqa", "validation", None)
    assert f"{path}:3:" in str(err.value)


def test_non_object_line(tmp_path):
    path = write_task(tmp_path, "piqa", ["[1, 2]"])
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, "piqa", "validation", None)
    assert f"{path}:1:" in str(err.value)
    assert "list" in str(err.value)


def test_missing_field_names_field_file_and_line(tmp_path):
    good = {"premise": "p", "choice1": "a", "choice2": "b", "label": 0}
    path = write_task(tmp_path, "copa", [good, {"premise": "p", "choice1": "a", "label": 1}])
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, "copa", "validation", None)
    message = str(err.value)
    assert "'choice2'" in message
    assert f"{path}:2:" in message


def test_null_field_counts_as_missing(tmp_path):
    write_task(tmp_path, "wizard_of_wikipedia", [{"id": "x", "turns": None}])
    with pytest.raises(DataError, match="missing field 'turns'"):
        load_examples(tmp_path, "wizard_of_wikipedia", "validation", None)


def test_missing_field_line_number_counts_blank_lines(tmp_path):
    # The malformed-JSON error counts file lines (blank lines included); the missing-field error should
    # name the same `file:line`, i.e. line 3 here, not the row count (2).
    good = {"premise": "p", "choice1": "a", "choice2": "b", "label": 0}
    path = write_task(tmp_path, "copa", [good, "", {"premise": "p", "choice1": "a", "label": 1}])
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, "copa", "validation", None)
    assert f"{path}:3:" in str(err.value)


def test_unknown_task_names_it_and_lists_valid_tasks(tmp_path):
    with pytest.raises(DataError) as err:
        check_task_names(["piqa", "boolq", "copa"])
    message = str(err.value)
    assert "'boolq'" in message
    for name in TASKS:
        assert name in message
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, "squad", "validation", None)
    assert "'squad'" in str(err.value)
    assert "piqa" in str(err.value) and "wizard_of_internet" in str(err.value)


def test_known_task_names_pass():
    check_task_names(list(TASKS))
    check_task_names([])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, "hellaswag", "validation", None)
    assert str(tmp_path / "tasks" / "hellaswag" / "validation.jsonl") in str(err.value)


@pytest.mark.parametrize("task, row", [
    ("piqa", {"goal": "g", "sol1": "a", "sol2": "b", "label": -1}),  # a hidden test label
    ("copa", {"premise": "p", "choice1": "a", "choice2": "b", "label": 2}),
    ("hellaswag", {"ctx": "c", "endings": ["a", "b"], "label": 3}),
    ("math_qa", {"Problem": "p", "options": "a ) 1 , b ) 2 , c ) 3", "correct": "e"}),
])
def test_a_label_outside_the_choices_is_refused_with_file_and_line(tmp_path, task, row):
    path = write_task(tmp_path, task, [row])
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, task, "validation", None)
    assert f"{path}:1:" in str(err.value) and "is not one of its" in str(err.value)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_heldout_rows_never_overlap_the_selection_slice(tmp_path, split):
    from gap.data.evaluation import load_eval_examples

    rows = lambda tag: [{"premise": f"{tag}{i}", "choice1": "a", "choice2": "b", "label": 0}  # noqa: E731
                        for i in range(6)]
    write_task(tmp_path, "copa", rows("v"))
    write_task(tmp_path, "copa", rows("t"), split="test")
    write_task(tmp_path, "piqa", [{"goal": f"g{i}", "sol1": "a", "sol2": "b", "label": 1} for i in range(6)],
               split=split)
    for task in ("copa", "piqa"):
        selection = load_eval_examples(tmp_path, [task], split, 2)[task]
        heldout = load_eval_examples(tmp_path, [task], split, 2, heldout=True)[task]
        assert len(heldout) == 2 and not {e.context for e in selection} & {e.context for e in heldout}
    # selecting on validation, a task's test split is held out; selecting on test, the test rows after it
    copa = [e.context for e in load_eval_examples(tmp_path, ["copa"], split, 2, heldout=True)["copa"]]
    assert copa == (["t0", "t1"] if split == "validation" else ["t2", "t3"])
