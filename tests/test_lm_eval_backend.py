"""`GapLM` (gap.harness.backend) request by request against lm-evaluation-harness's own Hugging Face backend
(`HFLM`) given the same in-memory model, on tiny random models of every family of tests/test_families.py
(their attention windows bite) and the fixture tasks of each request type (tests/lm_eval_fixtures.py), in
a `max_length` of 48 tokens that truncates contexts and splits rolling texts into several windows:
log-likelihoods within 1e-4 with the same `is_greedy`, rolling log-likelihoods within 1e-3, identical
generations; and the harness's whole evaluation through either backend with the same metrics.

`-m slow`: the embedded SmolLM2 and Gemma 3 on the harness's own tasks over our data (`make bench-harness`'s)."""
import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from bench.lm_eval_tasks import harness_requests
from gap.harness.backend import GapLM, SamplingRefused, _runs, greedy_settings
from tests.helpers import load_entry
from tests.lm_eval_fixtures import write_fixture_tasks
from tests.test_families import family  # noqa: F401 - the tiny model of each family (a fixture)

MAX_LENGTH = 48


@pytest.fixture(scope="module")
def fixture_tasks(tmp_path_factory):
    """(the fixture tasks' index, their names)."""
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    names = write_fixture_tasks(root)
    return TaskManager(include_path=str(root), include_defaults=False), names


@pytest.fixture(scope="module")
def requests(fixture_tasks) -> dict[str, list[Instance]]:
    """The fixture tasks' requests by type, as the harness builds them."""
    manager, names = fixture_tasks
    by_type: dict[str, list] = {}
    for task in manager.load(names)["tasks"].values():
        task.build_all_requests(limit=None)
        for instance in task.instances:
            by_type.setdefault(instance.request_type, []).append(instance)
    return by_type


@pytest.fixture(scope="module")
def backends(family):  # noqa: F811
    model, tokenizer = family
    return (HFLM(pretrained=model, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=4),
            GapLM(model, tokenizer, max_length=MAX_LENGTH, batch_size=4, max_batch_tokens=256))


def greedy_continuation(model, context: list[int], n: int) -> list[int]:
    """The model's own greedy next `n` tokens after `context` (unpadded passes)."""
    ids = list(context)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(context):]


def test_loglikelihood_and_is_greedy_equal_hflms(backends, requests, family):  # noqa: F811
    """The fixture tasks' requests (strings, multiple choice and single continuations), then token-level
    requests whose continuation is the model's greedy one (is_greedy), or that with its last token changed."""
    hf, ours = backends
    reqs = requests["loglikelihood"]
    want, got = hf.loglikelihood(reqs), ours.loglikelihood(reqs)
    assert len(reqs) == 32 and max(abs(w[0] - g[0]) for w, g in zip(want, got)) < 1e-4
    assert [g[1] for g in got] == [w[1] for w in want]

    model, tokenizer = family
    contexts = [tokenizer.encode(r.args[0])[-20:] for r in reqs[:6]]
    greedy = [greedy_continuation(model, ctx, 3) for ctx in contexts]
    changed = [cont[:-1] + [(cont[-1] + 1) % len(tokenizer)] for cont in greedy]
    token_reqs = [(None, ctx, cont) for ctx, conts in zip(contexts, zip(greedy, changed)) for cont in conts]
    want, got = hf._loglikelihood_tokens(token_reqs), ours._loglikelihood_tokens(token_reqs)
    assert max(abs(w[0] - g[0]) for w, g in zip(want, got)) < 1e-4
    assert [g[1] for g in got] == [w[1] for w in want] == [True, False] * 6


def test_rolling_loglikelihoods_equal_hflms(backends, requests, family):  # noqa: F811
    hf, ours = backends
    reqs = requests["loglikelihood_rolling"]
    assert max(len(family[1].encode(r.args[0])) for r in reqs) > 2 * MAX_LENGTH  # three windows or more
    want, got = hf.loglikelihood_rolling(reqs), ours.loglikelihood_rolling(reqs)
    assert max(abs(w - g) for w, g in zip(want, got)) < 1e-3


def test_generations_equal_hflms(backends, requests):
    """The fixture task's requests (contexts truncated to make room for the reply), then the same prompts
    with a stop string taken from each reply, so that stops bite."""
    hf, ours = backends
    reqs = requests["generate_until"]
    want = hf.generate_until(reqs)
    assert ours.generate_until(reqs) == want
    free = [Instance("generate_until", {}, (r.args[0], {"until": [], "max_gen_toks": 10}), 0) for r in reqs]
    replies = hf.generate_until(free)
    stops = [next((c for c in reply[1:] if c.isascii() and c.isprintable()), "\n") for reply in replies]
    cut = [Instance("generate_until", {}, (r.args[0], {"until": [stop], "max_gen_toks": 10}), 0)
           for r, stop in zip(reqs, stops)]
    want = hf.generate_until(cut)
    assert ours.generate_until(cut) == want == [reply.split(stop)[0] for reply, stop in zip(replies, stops)]
    assert want != replies


def test_the_harness_scores_either_backend_alike(fixture_tasks, tiny):
    """`simple_evaluate` through `GapLM` and through `HFLM` on one model: the same metrics (within 1e-4 of
    each other: perplexities and bits per byte come from log-likelihoods) and the same replies."""
    manager, names = fixture_tasks
    model, tokenizer = tiny
    out = {name: simple_evaluate(model=lm, tasks=names, task_manager=manager, bootstrap_iters=0)
           for name, lm in (("hf", HFLM(pretrained=model, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=4)),
                            ("gap", GapLM(model, tokenizer, max_length=MAX_LENGTH)))}
    for task in names:
        ours, theirs = out["gap"]["results"][task], out["hf"]["results"][task]
        assert ours.keys() == theirs.keys()
        for key, value in theirs.items():
            # accuracies are k/n, perplexities and bits per byte derived from log-likelihoods
            assert ours[key] == (pytest.approx(value, rel=1e-4) if isinstance(value, float) else value), (task, key)
        gen = [s["resps"] for s in out["gap"]["samples"][task]], [s["resps"] for s in out["hf"]["samples"][task]]
        if task == "fixture_gen":
            assert gen[0] == gen[1]
    assert out["gap"]["results"]["fixture_mc"]["acc,none"] > 0  # not an all-zero coincidence


def test_only_greedy_generation_is_served(tiny):
    assert greedy_settings({"until": "Q:", "max_new_tokens": 5, "temperature": 0.0}) == (["Q:"], 5)
    assert greedy_settings({"until": ["", "\n"]}) == (["\n"], 256)  # an empty stop string is no stop (as HFLM)
    with pytest.raises(SamplingRefused, match="task 'gsm8k': generation asks for sampling"):
        greedy_settings({"do_sample": True, "temperature": 0.7}, "gsm8k")
    with pytest.raises(SamplingRefused, match="num_beams=4 is not served"):
        greedy_settings({"until": ["\n"], "num_beams": 4})
    with pytest.raises(SamplingRefused, match="sampling"):
        GapLM(*tiny).generate_until([Instance("generate_until", {}, ("Q", {"temperature": 0.5}), 0)])


def test_a_shared_context_packs_into_rows_within_max_length():
    """Continuations of one context (after 3 tokens): 5 + 2 tokens fit a row of 9 (3 + 4 + 1), 6 more do not."""
    assert _runs(3, [5, 2, 6, 1], 9) == [[0, 1], [2, 3]]
    assert _runs(1, [9, 9], 9) == [[0], [1]]  # the prefix token before each rolling window's first tokens


# ---------------------------------------------------------------- the embedded models (-m slow)

def exact_loglikelihood(model, context: list[int], continuation: list[int], max_length: int = 512) -> float:
    """The model's own unpadded pass over the window the harness scores, its log-softmax in fp64 (in chunks
    of positions: a 262k vocabulary)."""
    ids = (context + continuation)[-(max_length + 1):][:-1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -len(continuation):]
    targets = torch.tensor(continuation)
    return sum(chunk.double().log_softmax(-1).gather(-1, t[:, None]).sum().item()
               for chunk, t in zip(logits.split(64), targets.split(64)))


def worst(a: list, b: list) -> float:
    """The largest difference of two lists of log-likelihoods (or of (log-likelihood, is_greedy) pairs)."""
    value = lambda x: x[0] if isinstance(x, (tuple, list)) else x  # noqa: E731
    return max(abs(value(x) - value(y)) for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["smollm2-135m", "gemma3-270m"])
def test_the_embedded_models_per_request(entry, data_dir):
    """The 8 classification tasks, lambada_openai, wikitext (pages of two 512-token windows) and
    arc_challenge_chat as the harness defines them, 6 documents each. `HFLM` takes its log-softmax in fp32
    over the whole vocabulary, which reads high (on SmolLM2 by 7.5e-6 nats a token on average, against fp64;
    ours, a log-sum-exp, by 5e-8), more so over a long continuation: ours is held to the model's own pass in
    fp64 (1e-4, rolling texts 1e-3), and may differ from HFLM by no more than HFLM differs from that pass."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    model, tokenizer = load_entry(f"model={entry}")
    requests = harness_requests(data_dir, 6)
    hf = HFLM(pretrained=model, tokenizer=tokenizer, max_length=512, batch_size=8)
    ours = GapLM(model, tokenizer, max_length=512, batch_size=8)

    reqs = requests["loglikelihood"]
    want, got = hf.loglikelihood(reqs), ours.loglikelihood(reqs)
    exact = [exact_loglikelihood(model, *ours._encode_pair(*r.args)) for r in reqs]  # no context is empty
    print(f"\n{entry}: {len(reqs)} loglikelihood requests, max |gap - HFLM| {worst(got, want):.1e}, |gap - fp64| "
          f"{worst(got, exact):.1e}, |HFLM - fp64| {worst(want, exact):.1e}")
    assert max(abs(g[0] - e) for g, e in zip(got, exact)) < 1e-4
    assert all(abs(g[0] - w[0]) <= abs(w[0] - e) + 1e-4 for g, w, e in zip(got, want, exact))
    assert [g[1] for g in got] == [w[1] for w in want]

    reqs = requests["loglikelihood_rolling"]
    want, got = hf.loglikelihood_rolling(reqs), ours.loglikelihood_rolling(reqs)
    windows = [[make_disjoint_window(w) for w in get_rolling_token_windows(
        ours.tok_encode(r.args[0]), ours.prefix_token_id, 512, 1)] for r in reqs]
    assert min(len(w) for w in windows) >= 2
    exact = [sum(exact_loglikelihood(model, ctx, pred) for ctx, pred in text) for text in windows]
    print(f"{entry}: {len(reqs)} rolling texts ({sum(map(len, windows))} windows), max |gap - HFLM| "
          f"{worst(got, want):.1e}, |gap - fp64| {worst(got, exact):.1e}, |HFLM - fp64| {worst(want, exact):.1e}")
    assert max(abs(g - e) for g, e in zip(got, exact)) < 1e-3
    assert all(abs(g - w) <= abs(w - e) + 1e-3 for g, w, e in zip(got, want, exact))

    reqs = requests["generate_until"]
    assert ours.generate_until(reqs) == hf.generate_until(reqs)
