"""The evaluation engine against plain references: batching, padding and order must not change results."""
import json

import pytest
import torch

from gap.data.evaluation import EvalDataModule, tokenize_example
from gap.data.tasks import load_examples
from gap.modules.gap_module import GAPModule
from gap.ordering import length_sorted_batches
from gap.scoring.batching import left_pad
from gap.scoring.evaluator import Scoring
from gap.scoring.generation import generate_from, greedy_generate
from gap.scoring.loglikelihood import (
    FILL,
    choice_logprobs,
    continuation_logprobs,
    fits,
    pack,
    packed_choice_logprobs,
    packed_pass,
)
from gap.scoring.prefill import prefill
from tests.helpers import gap, largest_difference


def reference_logprobs(model, context, continuation):
    """One unpadded sequence, full forward, log-softmax over every position: the obvious way."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = model(input_ids=ids).logits[0].float().log_softmax(-1)
    return [logprobs[len(context) + i - 1, tok].item() for i, tok in enumerate(continuation)]


def test_left_pad_aligns_ends_and_positions():
    ids, mask, pos = left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_length_sorted_batches_cover_every_item_once_longest_first():
    assert length_sorted_batches([3, 9, 1, 9, 5], max_items=2) == [[1, 3], [4, 0], [2]]


def test_token_budget_puts_more_short_items_in_a_batch():
    lengths = [100, 100, 10, 10, 10, 10, 10, 300, 60]
    assert length_sorted_batches(lengths, max_items=8, max_tokens=300) == [[7], [0, 1, 8], [2, 3, 4, 5, 6]]


def test_a_batch_closes_at_an_item_under_half_its_longest():
    assert length_sorted_batches([40, 21, 19, 10], max_items=8) == [[0, 1], [2, 3]]


def test_passes_split_where_rows_x_kept_positions_x_vocabulary_pass_the_logits_budget():
    # longest first: 3, 0, 1, 2; at most 10 kept positions a pass (a budget of 100 over a vocabulary of 10)
    split = length_sorted_batches([9, 8, 7, 10], 8, fill=None, kept=[2, 5, 1, 20], max_positions=10)
    assert split == [[3], [0, 1], [2]]
    assert length_sorted_batches([3, 2, 1], 8, fill=None, kept=[1, 1, 1], max_positions=3) == [[0, 1, 2]]


def test_passes_split_by_the_logits_budget_score_as_one_pass(tiny):
    """A 262k vocabulary splits passes (the budget bounds their logits); scores do not change."""
    model, tok = tiny
    requests = [(list(range(10, 30)), [[50, 51], [52, 53, 54]]), ([7, 8], [[9, 10, 11, 12], [13]]),
                (list(range(30, 45)), [[60], [61, 62]])]
    budget = 6 * len(tok)  # a pass may keep 6 positions: one packed row, or two short continuations
    passes = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: passes.append(kwargs["input_ids"].shape[0]),
                                       with_kwargs=True)
    try:
        whole = packed_choice_logprobs(model, requests, tok.pad_token_id, fill=0)
        split = packed_choice_logprobs(model, requests, tok.pad_token_id, fill=0, logits_budget=budget)
    finally:
        hook.remove()
    assert passes == [3, 1, 1, 1]  # one pass of three rows; under the budget, a row a pass
    assert largest_difference(sum(split, []), sum(whole, [])) < 1e-5
    pairs = [(ctx, c) for ctx, choices in requests for c in choices]
    assert largest_difference(continuation_logprobs(model, pairs, tok.pad_token_id, 512, logits_budget=budget),
                              continuation_logprobs(model, pairs, tok.pad_token_id, 512)) < 1e-5


def test_batched_scoring_equals_one_at_a_time_reference(tiny, data_dir):
    model, tok = tiny
    pairs = []
    for task in ("copa", "hellaswag", "winogrande"):
        for ex in load_examples(data_dir, task, "validation", 3):
            item = tokenize_example(task, ex, tok, 512)
            pairs += [(item.context, c) for c in item.continuations]
    batched = continuation_logprobs(model, pairs, tok.pad_token_id, 512)
    for (ctx, cont), got in zip(pairs, batched):
        want = reference_logprobs(model, ctx, cont)
        assert len(got) == len(cont)
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4


def test_scoring_keeps_the_last_max_length_tokens(tiny):
    model, tok = tiny
    ctx, cont = list(range(10, 60)), [61, 62, 63]
    got = continuation_logprobs(model, [(ctx, cont)], tok.pad_token_id, max_length=20)[0]
    want = reference_logprobs(model, ctx[-17:], cont)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4


def test_batched_generation_equals_one_prompt_at_a_time(tiny, data_dir):
    model, tok = tiny
    prompts = [tokenize_example("wizard_of_wikipedia", ex, tok, 512).context
               for ex in load_examples(data_dir, "wizard_of_wikipedia", "validation", 4)]
    prompts = [p[-40 - 7 * i:] for i, p in enumerate(prompts)]  # different lengths: real left padding
    batched = greedy_generate(model, tok, prompts, 6, ["\nUser "])
    single = [greedy_generate(model, tok, [p], 6, ["\nUser "])[0] for p in prompts]
    assert batched == single
    assert any(batched)


def test_a_prefill_joined_from_several_passes_decodes_as_each_prompt_alone(tiny, data_dir):
    """Prompts prefilled in several passes are joined into one left-padded cache whose reserved room is
    not initialised: NaN written there (and nothing else) leaves the replies as each prompt's alone."""
    model, tok = tiny
    prompts = [tokenize_example("wizard_of_wikipedia", ex, tok, 512).context
               for ex in load_examples(data_dir, "wizard_of_wikipedia", "validation", 4)]
    prompts = [p[-20 - 9 * i:] for i, p in enumerate(prompts)]
    state = prefill(model, prompts, tok.pad_token_id, max_tokens=60, fill=None, room=6)
    width = state.mask.shape[1]
    for layer in state.cache.layers:
        assert layer.room == 6 and layer.keys.isfinite().all()
        layer._keys[:, :, width:], layer._values[:, :, width:] = float("nan"), float("nan")
    replies = generate_from(model, tok, state, 6, ["\nUser "])
    assert replies == [greedy_generate(model, tok, [p], 6, ["\nUser "])[0] for p in prompts]
    assert any(replies)


def test_rows_finishing_early_leave_the_batch_without_changing_the_others(tiny, data_dir):
    """Rows that stop at different steps (masked out, then dropped once half the batch) reply as alone."""
    model, tok = tiny
    prompts = [tokenize_example("wizard_of_wikipedia", ex, tok, 512).context
               for ex in load_examples(data_dir, "wizard_of_wikipedia", "validation", 6)]
    prompts = [p[-30 - 5 * i:] for i, p in enumerate(prompts)]
    full = greedy_generate(model, tok, prompts, 12, stops=[])
    stops = [f[2 + i:4 + i] for i, f in enumerate(full[:4]) if len(f) > 4 + i]
    batched = greedy_generate(model, tok, prompts, 12, stops)
    assert batched == [greedy_generate(model, tok, [p], 12, stops)[0] for p in prompts]
    assert sum(b != f for b, f in zip(batched, full)) >= 3  # most rows did stop early


def test_generation_matches_a_naive_greedy_loop(tiny):
    """KV-cached generation picks the same tokens as re-running the whole sequence each step."""
    model, tok = tiny
    prompt = tok("User 1: Hello there.\nUser 2:").input_ids
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(8):
            seq.append(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax().item())
    want = tok.decode(seq[len(prompt):], skip_special_tokens=True)
    assert greedy_generate(model, tok, [prompt], 8, stops=[]) == [want]


def test_generation_cuts_at_the_stop_string(tiny):
    model, tok = tiny
    prompt = tok("abc").input_ids
    full = greedy_generate(model, tok, [prompt], 12, stops=[])[0]
    stop = full[3:5]
    cut = greedy_generate(model, tok, [prompt], 12, stops=[stop])[0]
    assert cut == full.split(stop)[0]


def _validate(model, tok, examples, batch_size, share_context=True, max_tokens=None):
    import lightning as L

    data = EvalDataModule(examples, tok, 512, batch_size, max_tokens, max_new_tokens=6)
    module = GAPModule(model, tok, list(examples), "none", lr=0.0,
                       scoring=Scoring(max_new_tokens=6, share_context=share_context, max_batch_tokens=max_tokens))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, inference_mode=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule=data, verbose=False)
    return module.evaluations[-1]


def test_predictions_identical_across_batch_sizes_and_context_sharing(tiny, data_dir):
    model, tok = tiny
    examples = {t: load_examples(data_dir, t, "validation", 7)
                for t in ("copa", "arc_easy", "math_qa", "pubmed_qa", "empathetic_dialogues")}
    runs = [_validate(model, tok, examples, bs) for bs in (1, 3, 16)]
    runs += [_validate(model, tok, examples, 16, share_context=False), _validate(model, tok, examples, 16, True, 900)]
    for task in examples:
        preds = [[r["pred"] for r in run["predictions"][task]] for run in runs]
        assert all(p == preds[0] for p in preds), task
        assert [r["index"] for r in runs[0]["predictions"][task]] == [e.index for e in examples[task]]
    for run in runs[1:]:
        for key in runs[0]["metrics"]:
            assert abs(runs[0]["metrics"][key] - run["metrics"][key]) < 1e-5, key


def test_a_dialogue_task_decodes_in_one_batch_while_its_kv_cache_fits(tiny, data_dir):
    """Classification batches hold `batch_size` examples; a dialogue task's rows all decode together
    (one batch per rank) unless their KV cache would pass the preflight's KV_TOKENS x max_batch_tokens."""
    from gap.memory.estimate import KV_TOKENS

    tok = tiny[1]
    examples = {t: load_examples(data_dir, t, "validation", 7) for t in ("copa", "empathetic_dialogues")}

    def batches(max_tokens, ranks=1):
        data = EvalDataModule(examples, tok, 512, 2, max_tokens, max_new_tokens=6, ranks=ranks)
        data.setup()
        return data, data.batches["empathetic_dialogues"]

    data, one = batches(8192)
    assert [len(b) for b in data.batches["copa"]] == [2, 2, 2, 1] and [len(b) for b in one] == [7]
    assert [len(b) for b in batches(8192, ranks=2)[1]] == [4, 3]
    costs = {i: it.cost(6) for i, it in enumerate(data.items["empathetic_dialogues"])}
    max_tokens = -(-2 * max(costs.values()) // int(KV_TOKENS))  # rows x the longest: two rows fit, three do not
    split = batches(max_tokens)[1]
    assert len(split[0]) == 2 and sorted(i for b in split for i in b) == list(range(7))
    assert all(len(b) * max(costs[i] for i in b) <= KV_TOKENS * max_tokens for b in split)
    # no token limit: the KV cache of full batches of full-length items, as the preflight counts it
    unlimited = EvalDataModule(examples, tok, 64, 1, None, max_new_tokens=6)
    unlimited.setup()
    costs = [it.cost(6) for it in unlimited.items["empathetic_dialogues"]]
    split = unlimited.batches["empathetic_dialogues"]
    assert len(split) > 1 and sorted(i for b in split for i in b) == list(range(7))
    assert all(len(b) * max(costs[i] for i in b) <= KV_TOKENS * (64 + 6) for b in split)


def test_metrics_are_the_mean_of_the_predictions(tiny, data_dir):
    model, tok = tiny
    examples = {t: load_examples(data_dir, t, "validation", 5) for t in ("piqa", "blended_skill_talk")}
    run = _validate(model, tok, examples, 2)
    piqa = run["predictions"]["piqa"]
    assert run["metrics"]["piqa/acc"] == sum(r["pred"] == r["label"] for r in piqa) / len(piqa)
    for r in piqa:
        assert r["pred"] == max(range(2), key=r["loglikelihoods"].__getitem__)
    bst = run["predictions"]["blended_skill_talk"]
    assert abs(run["metrics"]["blended_skill_talk/f1"] - sum(r["f1"] for r in bst) / len(bst)) < 1e-6
    assert run["metrics"]["avg/classification_acc"] == run["metrics"]["piqa/acc"]


def test_shared_context_scores_equal_scoring_each_choice_from_scratch(tiny, data_dir):
    model, tok = tiny
    requests = []
    for task in ("hellaswag", "math_qa", "pubmed_qa", "arc_challenge"):
        for ex in load_examples(data_dir, task, "validation", 3):
            item = tokenize_example(task, ex, tok, 512)
            requests.append((item.context, item.continuations))
    shared = choice_logprobs(model, requests, tok.pad_token_id, 512, share_context=True)
    for (ctx, choices), got in zip(requests, shared):
        for cont, scores in zip(choices, got):
            want = reference_logprobs(model, ctx[-(512 - len(cont)):], cont)
            assert max(abs(a - b) for a, b in zip(scores, want)) < 1e-4


@pytest.mark.parametrize("positions", [1, 3, 7])
def test_log_softmax_taken_a_chunk_of_positions_at_a_time_scores_as_the_whole(tiny, data_dir, monkeypatch, positions):
    """Scores and is_greedy with the log-softmax over chunks of 1, 3 or 7 positions (the tiny model's
    passes otherwise fit one chunk) equal the reference's and each other's."""
    model, tok = tiny
    requests = [(it.context, it.continuations) for it in (tokenize_example("piqa", ex, tok, 512)
                                                          for ex in load_examples(data_dir, "piqa", "validation", 4))]
    requests.append((requests[0][0], [[int(t)] for t in model(torch.tensor([requests[0][0]])).logits[0, -1].topk(2)
                                       .indices]))  # the model's greedy token and the next best
    whole = choice_logprobs(model, requests, tok.pad_token_id, 512, greedy=True)
    monkeypatch.setattr("gap.scoring.prefill.LOG_SOFTMAX_CHUNK", positions * model.config.vocab_size)
    chunked = choice_logprobs(model, requests, tok.pad_token_id, 512, greedy=True)
    assert [[greedy for _, greedy in r] for r in chunked] == [[greedy for _, greedy in r] for r in whole]
    assert [greedy for _, greedy in chunked[-1]] == [True, False]
    assert largest_difference([s for r in chunked for s, _ in r], [s for r in whole for s, _ in r]) < 1e-5
    for (ctx, choices), got in zip(requests, chunked):
        for cont, (scores, _) in zip(choices, got):
            assert largest_difference([scores], [reference_logprobs(model, ctx, cont)]) < 1e-4


def test_an_overlong_question_falls_back_to_per_choice_truncation(tiny):
    model, tok = tiny
    ctx, choices = list(range(10, 40)), [[50, 51], [52, 53, 54, 55, 56]]
    got = choice_logprobs(model, [(ctx, choices), ([7, 8], [[9]])], tok.pad_token_id, max_length=32)
    for cont, scores in zip(choices, got[0]):
        want = reference_logprobs(model, ctx[-(32 - len(cont)):], cont)
        assert max(abs(a - b) for a, b in zip(scores, want)) < 1e-4
    assert abs(got[1][0][0] - reference_logprobs(model, [7, 8], [9])[0]) < 1e-4


@pytest.mark.parametrize("task", ["wizard_of_internet", "empathetic_dialogues"])
def test_dialogue_loss_from_the_prefill_equals_a_separate_pass(tiny, data_dir, task):
    """wizard_of_internet's first 5 prompts + targets all overflow 512 tokens (scored apart, truncated);
    4 of empathetic_dialogues' fit (their targets teacher-forced in the prompt's prefill), 1 does not."""
    model, tok = tiny
    examples = {task: load_examples(data_dir, task, "validation", 5)}
    run = _validate(model, tok, examples, 5)
    items = [tokenize_example(task, ex, tok, 512) for ex in examples[task]]
    assert sum(fits(it.context, it.continuations, 512) for it in items) == (0 if task == "wizard_of_internet" else 4)
    flat = continuation_logprobs(model, [(it.context, it.continuations[0]) for it in items], tok.pad_token_id, 512)
    want = sum(-sum(lls) for lls in flat) / sum(len(lls) for lls in flat)
    assert abs(run["metrics"][f"{task}/loss"] - want) < 1e-4
    alone = greedy_generate(model, tok, [items[0].context], 6, ["\nUser "])[0]
    assert run["predictions"][task][0]["pred"] == alone


@pytest.mark.parametrize("max_tokens, fill, shapes", [(None, None, [(2, 34)]), (16, None, [(1, 34), (1, 15)]),
                                                      (None, 0.75, [(1, 34), (1, 15)])])
def test_targets_teacher_forced_in_the_prefill_score_as_alone_and_leave_the_context_cache(tiny, max_tokens, fill,
                                                                                          shapes):
    """Prompts and targets packed into rows in one pass, or in passes of at most 16 row positions (a
    wider row alone), or closed at a row under 3/4 of their widest, joined into one left-padded cache."""
    model, tok = tiny
    contexts = [list(range(10, 40)), [7, 8, 9], list(range(50, 62))]
    targets = [[70, 71, 72, 73, 74], [], [75]]   # uneven, one empty
    passes = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: passes.append(kwargs["input_ids"].shape),
                                       with_kwargs=True)
    try:
        state = prefill(model, contexts, tok.pad_token_id, targets=targets, max_tokens=max_tokens, fill=fill)
    finally:
        hook.remove()
    # packed: the target's last token is not fed; rows of 34, then 12 + 3 tokens
    assert passes == shapes
    assert [len(s) for s in state.target_logprobs] == [5, 0, 1]
    for ctx, target, got in zip(contexts, targets, state.target_logprobs):
        if target:
            assert max(abs(a - b) for a, b in zip(got, reference_logprobs(model, ctx, target))) < 1e-4
    alone = prefill(model, contexts, tok.pad_token_id)
    assert state.cache.get_seq_length() == alone.cache.get_seq_length() == 30
    assert torch.allclose(state.last_logits, alone.last_logits, atol=1e-4)
    replies = generate_from(model, tok, state, 6, ["\nUser "])
    assert replies == generate_from(model, tok, alone, 6, ["\nUser "])
    assert replies == [greedy_generate(model, tok, [ctx], 6, ["\nUser "])[0] for ctx in contexts]


def _packed_equals_from_scratch(model, requests, pad_id, fill=FILL):
    """Packed scores of every choice against `continuation_logprobs` of each choice on its own."""
    packed = packed_choice_logprobs(model, requests, pad_id, fill)
    alone = continuation_logprobs(model, [(ctx, c) for ctx, choices in requests for c in choices], pad_id, 512)
    got = [s for scores in packed for s in scores]
    assert [len(s) for s in got] == [len(c) for _, choices in requests for c in choices]
    assert max(abs(a - b) for g, w in zip(got, alone) for a, b in zip(g, w)) < 1e-4


def test_packed_scores_equal_scoring_each_choice_from_scratch_on_uneven_requests(tiny):
    model, tok = tiny
    requests = [(list(range(10, 40)), [[50], [51], [52, 53, 54]]),       # 1-token choices, longest row
                ([7], [[9, 10], [11]]),                                    # 1-token context: mostly pad
                ([5, 6, 7], [[8]]),                                        # one 1-token choice: no segment
                (list(range(60, 70)), [[i, i + 1] for i in range(80, 100, 2)])]  # many choices
    _packed_equals_from_scratch(model, requests, tok.pad_token_id)
    _packed_equals_from_scratch(model, requests, tok.pad_token_id, fill=0)  # one pass: rows of mostly padding


def test_packed_scores_agree_under_eager_and_sdpa_attention(tiny):
    model, tok = tiny
    requests = [(list(range(10, 25)), [[30, 31, 32], [33], [34, 35]]), ([3, 4], [[5, 6, 7, 8], [9]])]
    before = model.config._attn_implementation
    try:
        for implementation in ("eager", "sdpa"):
            model.set_attn_implementation(implementation)
            _packed_equals_from_scratch(model, requests, tok.pad_token_id)
    finally:
        model.set_attn_implementation(before)


def test_pack_mask_keeps_choices_apart_and_marks_real_tokens_on_its_diagonal():
    packed, where = pack([([1, 2], [[3, 4], [5, 6, 7]]), ([1], [[2]])], pad_id=0)
    ids, mask, positions = packed.ids, packed.mask, packed.positions
    assert ids.tolist() == [[1, 2, 3, 5, 6], [0, 0, 0, 0, 1]]
    assert positions[0].tolist() == [0, 1, 2, 2, 3]
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0],
                                         [1, 1, 0, 1, 0], [1, 1, 0, 1, 1]]
    assert mask[1, 0].diagonal().tolist() == [False] * 4 + [True]
    assert mask[1, 0].any(-1).all()  # no all-masked row
    assert where == [(0, [1, 2]), (0, [1, 3, 4]), (1, [4])]


def test_benchmark_peak_in_bf16_is_pytorchs_own_product_on_any_cpu():
    """oneDNN's rate is measured for fp32 alone (the engine's oneDNN products): its bf16 weights cannot be
    packed on a CPU without AVX-512 or AVX-NE-CONVERT, where `make bench` with bf16 weights stopped."""
    from bench.evaluation import matmul_rates
    from gap.scoring.linear import onednn_available

    rates = matmul_rates("cpu", torch.bfloat16, seconds=0.2, window=0.1)
    assert list(rates) == ["default"] and rates["default"] > 0
    if onednn_available():
        assert list(matmul_rates("cpu", torch.float32, seconds=0.2, window=0.1)) == ["default", "oneDNN"]


def test_repeated_benchmark_runs_keep_each_tasks_fastest_and_sum_groups_over_them():
    """`make bench +repeat=N`: per task the fastest of an engine's runs (each task may come from another
    run), the sums over classification, dialogue and all of those, and runs that disagree refused."""
    from bench.evaluation import COUNTS, fastest, with_groups

    def row(seconds):
        return {"seconds": seconds, "cpu_seconds": 2 * seconds, "examples": 1, "predictions": ["a"],
                "scores": [[0.5]], **{k: 1.0 for k in COUNTS if k != "seconds"}}

    runs = [{"tasks": {"piqa": row(3.0), "hellaswag": row(5.0), "empathetic_dialogues": row(9.0)}, "phases": "first",
             "kv_bytes": 1},
            {"tasks": {"piqa": row(4.0), "hellaswag": row(2.0), "empathetic_dialogues": row(7.0)}, "phases": "second",
             "kv_bytes": 2}]
    best = fastest(runs)
    assert {t: r["seconds"] for t, r in best["tasks"].items()} == {"piqa": 3.0, "hellaswag": 2.0,
                                                                   "empathetic_dialogues": 7.0}
    assert best["phases"] == "second" and best["kv_bytes"] == 2  # the fastest run in all: 13 s against 17 s
    rows = with_groups(best["tasks"])
    assert rows["**classification**"]["seconds"] == 5.0 and rows["**dialogue**"]["seconds"] == 7.0
    assert rows["**all**"]["seconds"] == 12.0 and rows["**all**"]["cpu_seconds"] == 24.0
    assert rows["**all**"]["examples"] == 3 and "**all**" not in best["tasks"]
    runs[1]["tasks"]["piqa"]["predictions"] = ["b"]
    with pytest.raises(RuntimeError, match="piqa"):
        fastest(runs)


def test_benchmark_against_another_engine_takes_turns_with_it(tmp_path):
    """`make bench +against=COMMIT +repeat=2`: that engine (here the last commit's, in a process of its own)
    and this one run the tasks by turns, never at once, so that a machine that slows down during the bench
    slows both alike; both engines' predictions compared."""
    out = tmp_path / "bench.json"
    result = gap("bench.evaluation", "logger=none", "model=tiny-random", "eval.limit=2",
                 "tasks.include=[copa,empathetic_dialogues]", "+against=HEAD", "+repeat=2", "+yardstick=false",
                 "+rate_seconds=0.2", f"+bench_out={out}", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    spans = sorted([(*span, "against") for span in json.loads(out.with_suffix(".against.json").read_text())["runs"]]
                   + [(*span, "this") for span in json.loads(out.read_text())["runs"]])
    assert [engine for *_, engine in spans] == ["against", "this", "against", "this"]
    assert all(end <= next_start for (_, end, _), (next_start, _, _) in zip(spans, spans[1:]))
    assert "identical predictions and replies: 4/4" in result.stdout


@pytest.mark.parametrize("override", ["+against=no-such-commit", "+repeat=0", "+rate_seconds=-1"])
def test_benchmark_refuses_a_bad_value_in_one_line_before_loading_a_model(tmp_path, override):
    out = tmp_path / "bench.json"
    result = gap("bench.evaluation", "logger=none", "model=tiny-random", override, f"+bench_out={out}",
                 tmp_path=tmp_path)
    assert result.returncode != 0
    assert f"error: {override} is not valid" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr and not out.exists() and not out.with_suffix(".against.json").exists()


def test_benchmark_of_classification_tasks_alone_reports_no_decoding(tmp_path):
    """`make bench` over classification tasks only: no decoding step to report (it divided by zero)."""
    result = gap("bench.evaluation", "logger=none", "model=tiny-random", "eval.limit=2", "tasks.include=[copa]",
                 "+yardstick=false", "+rate_seconds=0.2", f"+bench_out={tmp_path / 'bench.json'}", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| copa |" in result.stdout and "decoding:" not in result.stdout
    assert json.loads((tmp_path / "bench.json").read_text())["phases"]["generation"]["passes"] == 0


def test_flop_counter_reads_real_tokens_and_attended_pairs_and_splits_scoring_from_generation(fresh_tiny_model):
    from bench.evaluation import FlopCounter

    model = fresh_tiny_model.eval()  # the counter's hook stays on this model, not on `tiny`
    counter = FlopCounter(model, "cpu")
    packed_pass(model, [(list(range(10, 15)), [[20, 21, 22], [23]]), ([7], [[8, 9]])], pad_id=0)
    totals = counter.totals()
    assert totals["tokens"] == (5 + 2) + (1 + 1) and totals["positions"] == 2 * 7
    pairs = (15 + 2 * 5 + 3) + (1 + 1 + 1)  # context causal; each segment token: the context + itself causally
    per_token = 2 * sum(p.numel() for p in model.parameters())  # tied embeddings: the output layer, counted once
    assert model.config.tie_word_embeddings
    attention = 4 * counter.layers * counter.width
    assert abs(totals["flops"] - per_token * totals["tokens"] - attention * pairs) < 1
    scoring, generation = counter.phases["scoring"], counter.phases["generation"]
    assert scoring["tokens"] == totals["tokens"] and scoring["flops"] == totals["flops"] and scoring["seconds"] > 0

    state = prefill(model, [[3, 4, 5]], pad_id=0)  # scoring: a pass from an empty cache
    with torch.no_grad():  # one decode step: one new token over a mask of 4
        model(input_ids=torch.tensor([[6]]), attention_mask=torch.ones(1, 4, dtype=torch.long),
              position_ids=torch.tensor([[3]]), cache=state.cache, use_cache=True)
    assert scoring["tokens"] == counter.totals()["tokens"] - 1 == 9 + 3
    assert generation["tokens"] == 1 and generation["positions"] == 1 and generation["seconds"] > 0
    assert abs(generation["flops"] - per_token - attention * 4) < 1


def test_flop_counter_counts_static_decoding_as_growing_decoding(fresh_tiny_model, tiny):
    """Static decoding steps (fixed-width masks, finished rows kept, masked) count the same tokens and
    FLOPs of generation as growing ones, whose finished rows leave the mask or the batch."""
    from bench.evaluation import FlopCounter

    model, tok = fresh_tiny_model.eval(), tiny[1]
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    counts, replies = [], []
    for static in (False, True):
        counter = FlopCounter(model, "cpu")
        replies.append(generate_from(model, tok, prefill(model, prompts, tok.pad_token_id), 12, ["-", "1"], static))
        counter.remove()
        counts.append(counter.phases["generation"])
    assert replies[0] == replies[1] and len({len(r) for r in replies[0]}) > 1  # rows finish at different steps
    growing, static = counts
    assert static["tokens"] == growing["tokens"] > 0 and abs(static["flops"] - growing["flops"]) < 1
    assert static["passes"] == growing["passes"] and static["positions"] > growing["positions"]


def test_flop_counter_counts_each_layer_types_own_mask(tiny):
    """Gemma 3's packed pass hands a mask per layer type: a sliding layer attends fewer pairs."""
    import transformers as T

    from bench.evaluation import FlopCounter

    tokenizer = tiny[1]
    config = T.Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                                layer_types=["sliding_attention", "full_attention"], bos_token_id=None,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = T.Gemma3ForCausalLM(config).eval()
    counter = FlopCounter(model, "cpu")
    packed_pass(model, [([1, 2, 3, 4, 5, 6], [[7, 8, 9]])], pad_id=0)  # positions 0-5, then the choice's 6, 7
    # full: the context causally (21), the choice's tokens see the context and themselves (7 + 8);
    # sliding (4 positions): the context 1+2+3+4+4+4, the choice's tokens positions 3-6 and 4-7
    full, sliding = 21 + 7 + 8, 18 + 4 + 4
    totals = counter.totals()
    assert totals["tokens"] == 8
    attention = 4 * counter.width * (full + sliding)  # both layers
    assert abs(totals["flops"] - counter.per_token * 8 - attention) < 1


def test_requests_scored_one_by_one_keep_to_the_token_budget(tiny, data_dir):
    """Questions too long to share their context are scored choice by choice in passes of at most
    `max_tokens` padded tokens (a pair longer than the budget alone), with the scores of one pass."""
    from gap.scoring.loglikelihood import choice_logprobs

    model, tok = tiny
    examples = load_examples(data_dir, "pubmed_qa", "validation", 6)
    requests = [(tokenize_example("pubmed_qa", e, tok, 512).context, tokenize_example("pubmed_qa", e, tok, 512)
                 .continuations) for e in examples]
    passes = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: passes.append(kwargs["input_ids"].shape),
                                       with_kwargs=True)
    try:
        budgeted = choice_logprobs(model, requests, tok.pad_token_id, 512, share_context=False, max_tokens=1024)
    finally:
        hook.remove()
    widest = max(len(ctx) + max(len(c) for c in choices) for ctx, choices in requests)
    assert len(passes) > 1 and all(rows * width <= max(1024, widest) for rows, width in passes)
    whole = choice_logprobs(model, requests, tok.pad_token_id, 512, share_context=False)
    for a, b in zip(budgeted, whole):
        assert [sum(s) for s in a] == pytest.approx([sum(s) for s in b], abs=1e-4)
