"""`prompt_style=harness` (gap.data.harness): lm-evaluation-harness 0.4 task definitions on our data.

Fast tests on hand-written rows; `-m harness` runs lm-evaluation-harness itself (`pip install
'lm-eval>=0.4,<0.5'`) on the embedded model and compares every prediction with ours.
"""
import json
import re

import numpy as np
import pytest
import torch

from bench.lm_eval_tasks import HARNESS_YAMLS, harness_gold, write_harness_tasks
from gap.data.evaluation import EvalDataModule, EvalItem, load_eval_examples, tokenize_example
from gap.data.harness import (
    HARNESS_TASKS,
    HarnessExample,
    encode_pair,
    hellaswag_preprocess,
    load_harness_examples,
    make_example,
)
from gap.data.tasks import CLASSIFICATION, Example, load_examples
from gap.errors import DataError
from gap.modules.gap_module import GAPModule
from gap.scoring import evaluator
from gap.scoring.evaluator import Scoring, classify
from gap.scoring.metrics import task_metrics
from tests.helpers import arc_row, compose_cfg, gap, write_task

torch.set_num_threads(1)


def requests(task, row):
    return make_example(task, row).requests


# ---------------------------------------------------------------- task formatting

def test_every_classification_task_has_a_harness_definition():
    assert list(HARNESS_TASKS) == CLASSIFICATION
    assert {t: s.harness_name for t, s in HARNESS_TASKS.items() if t != s.harness_name} == {
        "math_qa": "mathqa", "pubmed_qa": "pubmedqa"}
    assert all(s.target_delimiter == " " for s in HARNESS_TASKS.values())


def test_piqa():
    ex = make_example("piqa", {"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat it.", "label": 1})
    assert ex.requests == [("Question: Open a jar\nAnswer:", " Twist the lid."),
                           ("Question: Open a jar\nAnswer:", " Eat it.")]
    assert ex.choices == ["Twist the lid.", "Eat it."] and ex.label == 1


def test_hellaswag_preprocess():
    """The harness's own steps, quirks included: one pass of double-space removal, strip before the
    brackets go."""
    assert hellaswag_preprocess("  How to cook [title] Boil water. [step] Add  salt. ") == \
        "How to cook. Boil water. Add salt."
    assert hellaswag_preprocess("Water.  [step]  Add salt.") == "Water.  Add salt."
    assert hellaswag_preprocess("Visit [www.example.org] today") == "Visit today"
    assert hellaswag_preprocess(" [step] sings.") == " sings."


def test_hellaswag():
    row = {"ind": 4, "activity_label": "Cooking", "ctx": "A man is cooking [title] He stirs.  He",
           "endings": ["flies away.", " [step] sings.", "stirs  the pot.", "sleeps."], "label": "2"}
    ex = make_example("hellaswag", row)
    assert ex.requests[0] == ("Cooking: A man is cooking. He stirs. He", " flies away.")
    assert ex.choices == ["flies away.", " sings.", "stirs the pot.", "sleeps."]
    assert [c for _, c in ex.requests] == [" flies away.", "  sings.", " stirs the pot.", " sleeps."]
    assert ex.label == 2


def test_arc_keeps_every_question():
    rows = [arc_row("Which is a gas?", ["air", "rock", "wood"], "A"),
            arc_row("Pick two", ["a", "b", "c", "d", "e"], "4", labels=["1", "2", "3", "4", "5"])]
    exs = [make_example("arc_easy", r) for r in rows]
    assert exs[0].requests == [("Question: Which is a gas?\nAnswer:", " " + t) for t in ("air", "rock", "wood")]
    assert [len(e.choices) for e in exs] == [3, 5] and [e.label for e in exs] == [0, 3]
    assert make_example("arc_challenge", rows[1]).requests == exs[1].requests


def test_copa_connectors_and_lowercased_choices():
    row = {"premise": "The man turned on the faucet.", "choice1": "The toilet filled.", "choice2": "Water flowed.",
           "question": "effect", "label": 1, "idx": 0}
    ex = make_example("copa", row)
    # the harness's choices carry their own space and the target delimiter adds another
    assert ex.requests == [("The man turned on the faucet therefore", "  the toilet filled."),
                           ("The man turned on the faucet therefore", "  water flowed.")]
    assert ex.choices == [" the toilet filled.", " water flowed."] and ex.label == 1
    cause = make_example("copa", {**row, "premise": "My body cast a shadow. ", "question": "cause", "label": 0})
    assert cause.requests[0][0] == "My body cast a shadow because" and cause.label == 0


def test_winogrande_partial_contexts():
    row = {"sentence": "Sarah was better than Maria so _ got the easy cases.", "option1": "Sarah",
           "option2": "Maria", "answer": "2"}
    ex = make_example("winogrande", row)
    assert ex.requests == [("Sarah was better than Maria so Sarah", " got the easy cases."),
                           ("Sarah was better than Maria so Maria", " got the easy cases.")]
    assert ex.choices == ["Sarah was better than Maria so Sarah", "Sarah was better than Maria so Maria"]
    assert ex.label == 1


def test_math_qa():
    row = {"Problem": "2 + 3 ?", "options": "a ) 4 , b ) 5 , c ) 6.5 , d ) 7 , e ) none", "correct": "b"}
    ex = make_example("math_qa", row)
    assert ex.requests == [("Question: 2 + 3 ?\nAnswer:", " " + c) for c in ("4", "5", "6.5", "7", "none")]
    assert ex.label == 1


def test_pubmed_qa_choice_order_is_the_harness_one():
    row = {"pubid": "1", "question": "Does it work?", "abstract": "We tried it.", "final_decision": "maybe"}
    ex = make_example("pubmed_qa", row)
    assert ex.requests == [("Abstract: We tried it.\nQuestion: Does it work?\nAnswer:", " " + c)
                           for c in ("yes", "no", "maybe")]
    assert ex.label == 2


def test_load_harness_examples_limits_and_checks(tmp_path):
    rows = [arc_row(f"q{i}", ["a", "b", "c", "d", "e"][:3 + i % 3], "A") for i in range(5)]
    write_task(tmp_path, "arc_easy", rows)
    assert [e.index for e in load_harness_examples(tmp_path, "arc_easy", "validation", 3)] == [0, 1, 2]
    assert [e.index for e in load_harness_examples(tmp_path, "arc_easy", "validation", None, start=3)] == [3, 4]
    # the gap format drops the 3- and 5-choice questions
    assert [e.index for e in load_examples(tmp_path, "arc_easy", "validation", None)] == [1, 4]
    write_task(tmp_path, "copa", [{"premise": "p.", "choice1": "a", "choice2": "b", "label": 0}])
    with pytest.raises(DataError, match="missing field 'question'"):
        load_harness_examples(tmp_path, "copa", "validation", None)
    write_task(tmp_path, "pubmed_qa", [{"question": "q", "abstract": "a", "final_decision": "perhaps"}])
    with pytest.raises(DataError, match="pubmed_qa row that cannot be formatted"):
        load_harness_examples(tmp_path, "pubmed_qa", "validation", None)
    with pytest.raises(DataError, match="no lm-evaluation-harness definition"):
        load_harness_examples(tmp_path, "wizard_of_wikipedia", "validation", None)


# ---------------------------------------------------------------- the harness's encoding

class WordTokenizer:
    """Words with their leading white space as tokens (`" b"` is one token); ids by first appearance."""
    eos_token_id, pad_token_id = 0, 0

    def __init__(self, bos_token_id=None):
        self.bos_token_id, self.vocab = bos_token_id, {}

    def __call__(self, text, add_special_tokens=True, **_):
        assert add_special_tokens is False  # the harness adds none
        return {"input_ids": [self.vocab.setdefault(p, len(self.vocab) + 1) for p in re.findall(r"\s*\S+|\s+", text)]}

    def pieces(self, ids):
        inverse = {i: p for p, i in self.vocab.items()}
        return [inverse[i] for i in ids]


def test_encode_pair_moves_trailing_space_to_the_continuation():
    tok = WordTokenizer()
    ctx, cont = encode_pair(tok, "Answer: ", "yes")
    assert tok.pieces(ctx) == ["Answer:"] and tok.pieces(cont) == [" yes"]
    ctx, cont = encode_pair(tok, "The faucet therefore", "  the toilet")  # copa's double space
    assert tok.pieces(ctx) == ["The", " faucet", " therefore"] and tok.pieces(cont) == ["  the", " toilet"]


def test_encode_pair_splits_the_joint_encoding():
    """The continuation is what follows the context's tokens in the encoding of the whole string."""
    class Merging(WordTokenizer):  # "ab" + "c" encodes jointly as "a", "bc"
        def __call__(self, text, add_special_tokens=True, **_):
            words = ["a", "bc"] if text == "abc" else [text]
            return {"input_ids": [self.vocab.setdefault(w, len(self.vocab) + 1) for w in words]}

    tok = Merging()
    ctx, cont = encode_pair(tok, "ab", "c")
    assert tok.pieces(ctx) == ["ab"] and tok.pieces(cont) == ["bc"]


def test_encode_pair_empty_context_uses_the_prefix_token():
    tok = WordTokenizer()
    assert encode_pair(tok, "", " yes") == ([0], tok(" yes", add_special_tokens=False)["input_ids"])
    first = tok(" yes", add_special_tokens=False)["input_ids"][0]
    tok.bos_token_id = first
    ctx, cont = encode_pair(tok, "", " yes no")
    assert ctx == [first] and tok.pieces(cont) == [" no"]


def test_tokenize_shares_one_context_and_splits_winogrande():
    tok = WordTokenizer()
    piqa = make_example("piqa", {"goal": "g", "sol1": "x y", "sol2": "z", "label": 0})
    item = tokenize_example("piqa", piqa, tok, 512, "harness")
    assert item.contexts is None and tok.pieces(item.context) == ["Question:", " g", "\nAnswer:"]
    assert [tok.pieces(c) for c in item.continuations] == [[" x", " y"], [" z"]]
    wino = make_example("winogrande", {"sentence": "A or _ won .", "option1": "B", "option2": "C", "answer": "1"})
    item = tokenize_example("winogrande", wino, tok, 512, "harness")
    assert [tok.pieces(c) for c in item.contexts] == [["A", " or", " B"], ["A", " or", " C"]]
    assert [tok.pieces(c) for c in item.continuations] == [[" won", " ."]] * 2
    assert tok.pieces(tokenize_example("winogrande", wino, tok, 2, "harness").contexts[0]) == [" or", " B"]
    with pytest.raises(TypeError):
        tokenize_example("piqa", Example(0, "g", [" x"], 0), tok, 512, "harness")


# ---------------------------------------------------------------- acc_norm

def test_acc_norm_by_hand(monkeypatch):
    """acc: argmax of the summed log-likelihoods; acc_norm: divided by the characters of each choice."""
    seen = {}

    def fake_choice_logprobs(model, reqs, pad_id, max_length, share_context=True, max_tokens=None):
        seen.update(requests=reqs, max_length=max_length)
        table = {(1, 2): [-1.0, -2.0], (1, 3): [-4.2], (7, 5): [-2.0], (8, 5): [-3.3]}
        return [[table[(ctx[0], cont[0])] for cont in conts] for ctx, conts in reqs]

    monkeypatch.setattr(evaluator, "choice_logprobs", fake_choice_logprobs)
    scoring = Scoring(max_length=512, harness=True)
    piqa = HarnessExample(3, [("Q", " ab"), ("Q", " abcdef")], ["ab", "abcdef"], label=1)
    wino = HarnessExample(4, [("It x", " r"), ("It yyyyyy", " r")], ["It x", "It yyyyyy"], label=1)
    records = classify(None, WordTokenizer(), [EvalItem("piqa", piqa, [1], [[2], [3]])], scoring)
    records += classify(None, WordTokenizer(), [EvalItem("winogrande", wino, [7], [[5], [5]], contexts=[[7], [8]])],
                        scoring)
    # piqa: lls -3.0, -4.2 -> acc picks 0; per character -1.5, -0.7 -> acc_norm picks 1
    # winogrande: lls -2.0, -3.3 -> 0; per character of the contexts -0.5, -0.367 -> 1
    assert [(r["index"], r["pred"], r["pred_norm"]) for r in records] == [(3, 0, 1), (4, 0, 1)]
    assert records[0]["loglikelihoods"] == [-3.0, -4.2] and records[1]["loglikelihoods"] == [-2.0, -3.3]
    assert seen["max_length"] == 513  # the harness scores (context + continuation)[-(max_length + 1):]
    assert seen["requests"] == [([7], [[5]]), ([8], [[5]])]  # winogrande: one request per context
    assert task_metrics("piqa", records[:1], harness=True) == {"piqa/acc": 0.0, "piqa/acc_norm": 1.0}
    assert task_metrics("winogrande", records[1:], harness=True)["winogrande/acc_norm"] == 1.0


def test_task_metrics_by_hand():
    classified = [{"index": 0, "label": 1, "pred": 1, "pred_norm": 0},
                  {"index": 1, "label": 0, "pred": 1, "pred_norm": 0}]
    assert task_metrics("copa", classified) == {"copa/acc": 0.5}  # acc_norm is a harness metric only
    assert task_metrics("copa", classified, harness=True) == {"copa/acc": 0.5, "copa/acc_norm": 0.5}
    replies = [{"index": 0, "f1": 0.5, "nll": 6.0, "tokens": 2}, {"index": 1, "f1": 0.0, "nll": 2.0, "tokens": 6}]
    # F1: mean over examples; loss: total NLL over total target tokens (8 / 8), not the mean of 3.0 and 0.33
    assert task_metrics("wizard_of_wikipedia", replies) == {"wizard_of_wikipedia/f1": 0.25,
                                                            "wizard_of_wikipedia/loss": 1.0}


# ---------------------------------------------------------------- through the engine (tiny model)

def test_harness_style_rereads_classification_and_keeps_dialogue(tmp_path, tiny):
    _, tok = tiny
    write_task(tmp_path, "arc_easy", [arc_row("q0", ["a", "b", "c"], "B"), arc_row("q1", list("abcd"), "D")])
    write_task(tmp_path, "wizard_of_wikipedia", [{"turns": ["hi"]}, {"turns": ["hi", "hello"]}])
    tasks = ["arc_easy", "wizard_of_wikipedia"]
    assert [e.index for e in load_eval_examples(tmp_path, tasks, "validation", None)["arc_easy"]] == [1]
    examples = load_eval_examples(tmp_path, tasks, "validation", None, "harness")
    data = EvalDataModule(examples, tok, 512, 4, prompt_style="harness")
    data.setup()
    arc = [it.example for it in data.items["arc_easy"]]
    assert [e.index for e in arc] == [0, 1] and all(isinstance(e, HarnessExample) for e in arc)
    assert [it.example for it in data.items["wizard_of_wikipedia"]] == load_examples(
        tmp_path, "wizard_of_wikipedia", "validation", None)
    with pytest.raises(ValueError, match="prompt_style"):
        EvalDataModule(examples, tok, 512, 4, prompt_style="fancy").setup()


def _validate(model, tok, data_dir, tasks, max_length, batch_size, share_context=True, limit=4):
    import lightning as L

    data = EvalDataModule(load_eval_examples(data_dir, tasks, "validation", limit, "harness"), tok, max_length,
                          batch_size, prompt_style="harness")
    module = GAPModule(model, tok, tasks, "none", lr=0.0,
                       scoring=Scoring(max_length=max_length, share_context=share_context, harness=True))
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, inference_mode=False,
              enable_model_summary=False).validate(module, datamodule=data, verbose=False)
    return data, module.evaluations[-1]


def harness_loglikelihood(model, context_enc, continuation_enc, max_length):
    """The harness's `_loglikelihood_tokens` for one request, written out."""
    inp = torch.tensor([(context_enc + continuation_enc)[-(max_length + 1):][:-1]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(inp).logits[0].float(), -1)[-len(continuation_enc):]
    return logprobs.gather(-1, torch.tensor(continuation_enc)[:, None]).sum().item()


@pytest.mark.parametrize("max_length", [48, 512])
def test_scores_equal_the_harness_computation(tiny, data_dir, max_length):
    """Every choice's log-likelihood is the harness's, in windows that truncate (48 bytes) and that do not;
    the same predictions at every batch size, with and without context sharing."""
    model, tok = tiny
    tasks = ["copa", "winogrande", "arc_challenge", "pubmed_qa"]
    data, run = _validate(model, tok, data_dir, tasks, max_length, 16)
    for task in tasks:
        for item, record in zip(sorted(data.items[task], key=lambda it: it.example.index), run["predictions"][task]):
            want = [harness_loglikelihood(model, *encode_pair(tok, c, k), max_length) for c, k in item.example.requests]
            assert record["loglikelihoods"] == pytest.approx(want, abs=1e-4), task
    for batch_size, share in ((1, True), (3, False)):
        _, other = _validate(model, tok, data_dir, tasks, max_length, batch_size, share)
        for task in tasks:
            assert [(r["pred"], r["pred_norm"]) for r in other["predictions"][task]] == \
                [(r["pred"], r["pred_norm"]) for r in run["predictions"][task]]


def test_cli_eval_with_harness_prompts(tmp_path, data_dir):
    proc = gap("gap.eval", "model=tiny-random", "eval.limit=3", "eval.prompt_style=harness", "logger=none",
               "tasks.include=[arc_easy,winogrande,wizard_of_wikipedia]", tmp_path=tmp_path,
               env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["metrics"]) == {"arc_easy/acc", "arc_easy/acc_norm", "winogrande/acc", "winogrande/acc_norm",
                                       "wizard_of_wikipedia/f1", "wizard_of_wikipedia/loss",
                                       "avg/classification_acc", "avg/dialog_f1"}
    rows = [json.loads(line) for line in (tmp_path / "predictions" / "winogrande.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all({"index", "label", "pred", "pred_norm", "loglikelihoods"} <= set(r) for r in rows)


# ---------------------------------------------------------------- lm-evaluation-harness itself

LIMIT = 8


@pytest.mark.harness
@pytest.mark.parametrize("max_length", [512, 100])
def test_predictions_match_lm_evaluation_harness(tmp_path, data_dir, max_length):
    """Per example: the same requests (strings), log-likelihoods and acc / acc_norm predictions as
    lm-evaluation-harness 0.4's HF backend on the embedded model, in its window (512) and truncating (100)."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager, get_task_dict

    from gap.modules.loading import load_model, load_tokenizer

    cfg = compose_cfg("train").model
    tok = load_tokenizer(cfg)
    model = load_model(cfg, tok).eval()
    tasks = list(HARNESS_YAMLS)
    data, ours = _validate(model, tok, data_dir, tasks, max_length, 16, limit=LIMIT)

    root = tmp_path / "tasks"
    root.mkdir()
    write_harness_tasks(root, data_dir, LIMIT)
    manager = TaskManager(include_path=str(root))
    names = [f"gap_{t}" for t in tasks]
    lm = HFLM(pretrained=model, tokenizer=tok, max_length=max_length, batch_size=8, add_bos_token=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=LIMIT, log_samples=True,
                                  bootstrap_iters=0, num_fewshot=0)
    task_objects = get_task_dict(names, manager)

    table, mismatches = [], []
    for task in tasks:
        samples = sorted(out["samples"][f"gap_{task}"], key=lambda s: s["doc_id"])
        mine = {r["index"]: r for r in ours["predictions"][task]}
        items = {it.example.index: it.example for it in data.items[task]}
        agree_acc = agree_norm = 0
        worst = 0.0
        for s in samples:
            lls = np.array([float(r[0]) for r in s["filtered_resps"]])
            choices = task_objects[f"gap_{task}"].doc_to_choice(s["doc"])
            pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / np.array([float(len(c)) for c in choices])))
            r = mine[s["doc_id"]]
            assert [tuple(a) for a in s["arguments"]] == items[s["doc_id"]].requests, (task, s["doc_id"])
            assert r["label"] == harness_gold(task_objects[f"gap_{task}"], s["doc"], choices), (task, s["doc_id"])
            worst = max(worst, float(np.max(np.abs(lls - np.array(r["loglikelihoods"])))))
            agree_acc += pred == r["pred"]
            agree_norm += pred_norm == r["pred_norm"]
            if (pred, pred_norm) != (r["pred"], r["pred_norm"]):
                mismatches.append((task, s["doc_id"], lls.tolist(), r["loglikelihoods"]))
        table.append(f"{task}: {len(samples)} examples, acc {agree_acc}/{len(samples)}, "
                     f"acc_norm {agree_norm}/{len(samples)}, max |Δll| {worst:.2e}")
    print(f"\nmax_length={max_length}\n" + "\n".join(table))
    assert all(len(out["samples"][n]) == LIMIT for n in names)
    assert not mismatches, mismatches
