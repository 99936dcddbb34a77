"""Runs that survive what goes wrong. Damaged files: a table of damaged copies for every file kind a run reads
(task and corpus files, the baseline cache, model folders, results files read by the sweep and the report),
each with its expected outcome; text that decodes is accepted whatever it holds. Killed processes: SIGKILL
and SIGTERM at random points of a sweep, then the rerun, whose metrics equal an undisturbed sweep's. One
writer per run folder, a full disk (a small tmpfs), pre-emption and a failing W&B service.

A new file kind a run reads gets its damaged copies here."""
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from gap.baselines import baseline_path, load_baseline, store_baseline
from gap.cli import run_cli
from gap.data.corpus import read_corpus
from gap.data.evaluation import load_eval_examples
from gap.data.tasks import load_examples
from gap.errors import ConfigError, DataError, ModelLoadError
from gap.files import DiskFull, one_writer, replace_folder, write_atomic
from gap.memory.arch import check_gguf
from gap.modules.loading import check_model_config
from gap.report.runs import load_paper_csvs, load_sweep
from gap.report.significance import significance
from gap.results import ResultsWriter
from gap.sweep import finished_results, summarize
from gap.train import train
from tests.helpers import CONF, DATA_DIR, ROOT, compose_cfg, embedded_gguf, finish, gap, start, write_task

RUN = ["model=tiny-random", "eval.limit=2", "tasks.include=[copa]", "logger=none", "trainer.max_epochs=1"]
COPA = [{"premise": f"premise {i}", "choice1": "one", "choice2": "two", "label": i % 2} for i in range(3)]


def run_here(out: Path, *overrides, baselines: Path | None = None) -> int:
    """`gap.train` as the command line runs its job (`run_cli`), in this process; the exit code (0: ok)."""
    cfg = compose_cfg("train", [*RUN, f"paths.baseline_dir={baselines or out.parent / 'baselines'}", *overrides])
    with open_dict(cfg):
        del cfg.hydra  # as Hydra hands the job its config
        cfg.paths.output_dir = str(out)
        cfg.paths.data_dir = str(DATA_DIR)
    try:
        run_cli(train, cfg)
    except SystemExit as exited:
        return exited.code
    return 0


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished tiny run (its folder) and its baseline cache folder."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run_here(out) == 0
    return out, out.parent / "baselines"


def copy_with(path: Path, damage) -> Path:
    """`path`'s bytes through `damage` (bytes -> bytes), written back in place."""
    path.write_bytes(damage(path.read_bytes()))
    return path


def cut(data: bytes) -> bytes:
    return data[:len(data) // 2]


# ---------------------------------------------------------------- task files
# (name, the file's bytes, the expected error, or None: loads, and the first context is the second element's)
TASK_FILES = [
    ("cut short", b"".join(json.dumps(r).encode() + b"\n" for r in COPA)[:-12],
     ":3: the last line is cut short"),
    ("latin-1", '{"premise": "caf\u00e9", "choice1": "a", "choice2": "b", "label": 0}\n'.encode("latin-1"),
     ":1: not UTF-8 text (byte 0xe9 at column 17)"),
    ("UTF-16", "".join(json.dumps(r) + "\n" for r in COPA).encode("utf-16"),
     ":1: not UTF-8 text (it starts with a UTF-16 byte-order mark)"),
    ("empty", b"", ": no usable copa row (the file holds no rows)"),
    ("blank lines only", b"\n \n\n", ": no usable copa row (the file holds no rows)"),
    ("a line that is not JSON", json.dumps(COPA[0]).encode() + b"\n{premise}\n", ":2: malformed JSON line"),
    ("a JSON array", b"[1, 2]\n", ":1: expected a JSON object, got list"),
    ("a field missing", b'{"premise": "p", "choice1": "a", "label": 0}\n', ":1: missing field 'choice2'"),
    ("a field of the wrong type", b'{"premise": "p", "choice1": 5, "choice2": "b", "label": 0}\n',
     ":1: a copa row that cannot be formatted (TypeError"),
]
ACCEPTED_TASK_FILES = [  # decodes: never refused for its content
    ("UTF-8 BOM", b"\xef\xbb\xbf" + json.dumps(COPA[0]).encode() + b"\n", "premise 0"),
    ("CRLF line ends", json.dumps(COPA[0]).encode() + b"\r\n", "premise 0"),
    ("raw NUL and tab in a string", b'{"premise": "a\x00b\tc", "choice1": "x", "choice2": "y", "label": 0}\n',
     "a\x00b\tc"),
    ("escaped NUL, any Unicode, a 300k-character line",
     json.dumps({**COPA[0], "premise": "\x00 \u05e9\u05dc\u05d5\u05dd \U0001f600 " + "x" * 300_000}).encode(),
     "\x00 \u05e9\u05dc\u05d5\u05dd \U0001f600 " + "x" * 300_000),
    ("no newline at the end", json.dumps(COPA[0]).encode(), "premise 0"),
]


@pytest.mark.parametrize("name,content,expected", TASK_FILES, ids=[c[0] for c in TASK_FILES])
def test_a_damaged_task_file_is_refused_naming_file_and_line(tmp_path, name, content, expected):
    path = write_task(tmp_path, "copa", [])
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_examples(tmp_path, "copa", "validation", 2)  # the damage may lie past the examples used
    assert str(err.value).startswith(str(path)) and expected in str(err.value), str(err.value)


@pytest.mark.parametrize("name,content,context", ACCEPTED_TASK_FILES, ids=[c[0] for c in ACCEPTED_TASK_FILES])
def test_task_text_that_decodes_is_read_as_it_is(tmp_path, name, content, context):
    write_task(tmp_path, "copa", []).write_bytes(content)
    assert load_examples(tmp_path, "copa", "validation", 2)[0].context == context


def test_a_task_whose_rows_are_all_dropped_is_refused(tmp_path):
    three = {"question": "q", "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]}, "answerKey": "A"}
    path = write_task(tmp_path, "arc_easy", [three, three])
    with pytest.raises(DataError, match=f"{path}: no usable arc_easy row \\(all 2 rows dropped"):
        load_examples(tmp_path, "arc_easy", "validation", 2)


# ---------------------------------------------------------------- corpus files
LONG = "y" * 200_000
CORPUS_FILES = [
    ("c.jsonl", b'{"text": "a b c"}\n{"text": "d e', ":2: the last line is cut short"),
    ("c.jsonl", '{"text": "caf\u00e9"}\n'.encode("latin-1"), ":1: not UTF-8 text (byte 0xe9"),
    ("c.jsonl", b'{"text": "a b c"}\n{"body": "d"}\n', ":2: no text in field 'text'"),
    ("c.jsonl", b'{"text": 17}\n', ":1: no text in field 'text'"),
    ("c.jsonl", b"", "holds no samples"),
    ("c.jsonl", b'{"text": ""}\n{"text": "  "}\n', "holds no samples (every text is blank)"),
    ("c.csv", "text\ncaf\u00e9 au lait\n".encode("latin-1"), ":2: not UTF-8 text (byte 0xe9 at column 4)"),
    ("c.csv", b'text\n"a quoted text, cut sh', ":2: malformed CSV (unexpected end of data)"),
    ("c.csv", b"body\nsome text\n", ":1: no column 'text' (columns: body)"),
    ("c.csv", b"id,text\n1,some text\n2\n", ":3: no text in field 'text'"),
    ("c.csv", b"text\n", "holds no samples"),
    ("c.txt", "caf\u00e9\n".encode("latin-1"), ":1: not UTF-8 text"),
    ("c.txt", "some text\n".encode("utf-16"), ":1: not UTF-8 text (it starts with a UTF-16 byte-order mark)"),
    ("c.txt", b"\n \n\n", "holds no samples"),
    ("c.parquet", b"PAR1", "has suffix '.parquet'; valid: .jsonl, .csv, .txt"),
]
ACCEPTED_CORPUS_FILES = [
    ("c.jsonl", b"\xef\xbb\xbf" + b'{"text": "a\\u0000b"}\n{"text": "c\x00d"}', ["a\x00b", "c\x00d"]),
    ("c.csv", b"text\nhello\x00world\n" + f'"{LONG}"\n'.encode() + b'"two\r\nlines"\r\n',
     ["hello\x00world", LONG, "two\r\nlines"]),
    ("c.txt", "a\x00b \u00e9\u4e2d\r\n\r\nsecond\n".encode(), ["a\x00b \u00e9\u4e2d", "second"]),
]


@pytest.mark.parametrize("name,content,expected", CORPUS_FILES, ids=[f"{c[0]}:{c[2][:30]}" for c in CORPUS_FILES])
def test_a_damaged_corpus_file_is_refused_naming_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_corpus(path)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


@pytest.mark.parametrize("name,content,texts", ACCEPTED_CORPUS_FILES, ids=[c[0] for c in ACCEPTED_CORPUS_FILES])
def test_corpus_text_that_decodes_is_read_as_it_is(tmp_path, name, content, texts):
    (tmp_path / name).write_bytes(content)
    assert read_corpus(tmp_path / name) == texts


# ---------------------------------------------------------------- the baseline cache
def evaluation_of(examples: dict) -> dict:
    """A whole evaluation of `examples` as `gap.train` stores it (values made up)."""
    predictions = {t: [{"index": e.index, "label": e.label, "pred": 0, "loglikelihoods": [-1.0, -2.0]} for e in exs]
                   for t, exs in examples.items()}
    return {"epoch": None, "step": 0, "train_nll": None, "step_taken": None, "seconds": {"copa": 0.1},
            "metrics": {"copa/acc": 0.5, "avg/classification_acc": 0.5}, "predictions": predictions}


def _edit(field, value):
    def damage(data: bytes) -> bytes:
        stored = json.loads(data)
        stored["evaluation"][field] = value
        return json.dumps(stored).encode()
    return damage


CACHE_DAMAGES = {
    "cut short": cut,
    "empty": lambda data: b"",
    "not UTF-8": lambda data: b"\xff\xfe" + data[2:],
    "a JSON list": lambda data: b"[]",
    "no evaluation": lambda data: json.dumps({"key": json.loads(data)["key"]}).encode(),
    "metrics missing": _edit("metrics", None),
    "another model's predictions": _edit("predictions", {"copa": [{"index": 7}, {"index": 9}]}),
    "stored under another key": lambda data: json.dumps({**json.loads(data), "key": {"limit": 99}}).encode(),
}


@pytest.mark.parametrize("damage", CACHE_DAMAGES.values(), ids=CACHE_DAMAGES)
def test_a_damaged_baseline_cache_entry_is_set_aside_and_recomputed(tmp_path, data_dir, damage, caplog):
    cfg = compose_cfg("train", [*RUN, f"paths.baseline_dir={tmp_path}"])
    examples = load_eval_examples(data_dir, ["copa"], "validation", 2)
    evaluation = evaluation_of(examples)
    path = store_baseline(cfg, examples, evaluation)
    assert load_baseline(cfg, examples) == {**evaluation, "cached": str(path)}
    damaged = copy_with(path, damage).read_bytes()
    with caplog.at_level(logging.WARNING, logger="gap"):
        assert load_baseline(cfg, examples) is None  # recomputed, never a crash
    (aside,) = tmp_path.glob(f"{path.name}.damaged-*")
    assert aside.read_bytes() == damaged and not path.exists()  # moved aside, not deleted
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"baseline cache {path} ") and f"kept as {aside.name}" in line
    store_baseline(cfg, examples, evaluation)  # the recomputed evaluation takes its place
    assert load_baseline(cfg, examples)["metrics"] == evaluation["metrics"]


def test_one_damaged_cache_file_does_not_stop_later_runs(finished, tmp_path):
    """A run whose baseline cache entry is cut short recomputes it and ends with the metrics of the run that
    wrote it; the cut copy is kept aside."""
    out, baselines = finished
    first = json.loads((out / "results.json").read_text())
    cache = next(baselines.glob("*.json"))
    shutil.copytree(baselines, tmp_path / "baselines")
    copy_with(tmp_path / "baselines" / cache.name, cut)
    assert run_here(tmp_path / "run", baselines=tmp_path / "baselines") == 0
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "baseline_cache" not in again  # evaluated, not read from the cut file
    assert again["baseline"] == first["baseline"] and again["history"][0]["metrics"] == first["history"][0]["metrics"]
    assert len(list((tmp_path / "baselines").glob("*.damaged-*"))) == 1


# ---------------------------------------------------------------- model folders
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory, tiny):
    """The tiny model saved as a Hugging Face folder (safetensors, config, tokenizer)."""
    model, tokenizer = tiny
    folder = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _unlink(*names):
    return lambda folder: [(folder / n).unlink() for n in names]


def _cut(name):
    return lambda folder: copy_with(folder / name, cut)


def _shards(folder):
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


MODEL_DAMAGES = [
    ("weights cut short", _cut("model.safetensors"), "model.safetensors: ", "bytes where its header describes"),
    ("weights not safetensors", lambda f: (f / "model.safetensors").write_bytes(os.urandom(4096)),
     "model.safetensors: ", "not a safetensors file"),
    ("weights missing", _unlink("model.safetensors"), "", "no model weights"),
    ("a shard missing", _shards, "model-00002-of-00002.safetensors: ", "missing"),
    ("config.json missing", _unlink("config.json"), "config.json: ", "missing"),
    ("config.json cut short", _cut("config.json"), "config.json: ", "not whole JSON"),
    ("tokenizer files missing", _unlink("tokenizer.json", "tokenizer_config.json"), "", "no tokenizer files"),
    ("tokenizer.json cut short", _cut("tokenizer.json"), "tokenizer.json: ", "not whole JSON"),
    ("tokenizer_config.json cut short", _cut("tokenizer_config.json"), "tokenizer_config.json: ", "not whole JSON"),
]


def local_model(folder: Path, **fields):
    cfg = OmegaConf.load(CONF / "model" / "tiny-random.yaml")
    return OmegaConf.merge(cfg, {"random_init": None, "name": "local", "path": str(folder), **fields})


@pytest.mark.parametrize("name,damage,file,expected", MODEL_DAMAGES, ids=[d[0] for d in MODEL_DAMAGES])
def test_a_damaged_model_folder_is_refused_before_loading(model_folder, tmp_path, name, damage, file, expected):
    folder = shutil.copytree(model_folder, tmp_path / "model")
    damage(folder)
    with pytest.raises(DataError) as err:
        check_model_config(local_model(folder))
    message = str(err.value)
    assert message.startswith(f"{folder}/{file}" if file else f"{folder}:") and expected in message, message
    assert message.endswith("copy or download the model again") and "\n" not in message


def test_a_run_on_a_damaged_model_folder_stops_with_one_line_before_loading(model_folder, tmp_path, capsys):
    folder = shutil.copytree(model_folder, tmp_path / "model")
    copy_with(folder / "model.safetensors", cut)
    out = tmp_path / "run"
    assert run_here(out, "model.random_init=null", f"model.path={folder}") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {folder}/model.safetensors: ") and "bytes where its header describes" in line
    results = json.loads((out / "results.json").read_text())  # the failure recorded, nothing evaluated
    assert results["status"] == "failed" and results["error"] == line[len("error: "):]
    assert results["metrics"] == {} and "history" not in results and not (out / "predictions").exists()


def test_a_whole_model_folder_passes_and_loads_as_saved(model_folder, tiny, tmp_path):
    import torch

    from gap.modules.loading import load_model, load_tokenizer

    torch_folder = shutil.copytree(model_folder, tmp_path / "bin")  # the weights as pytorch_model.bin
    (torch_folder / "model.safetensors").unlink()
    torch.save(tiny[0].state_dict(), torch_folder / "pytorch_model.bin")
    for folder in (model_folder, torch_folder):
        cfg = local_model(folder)
        check_model_config(cfg)
        tokenizer = load_tokenizer(cfg)
        ids = torch.tensor([tokenizer("a saved model")["input_ids"]])
        model = load_model(cfg, tokenizer).eval()
        assert not model.use_kernels  # the model's own layers (transformers >= 5.25 would swap in hub kernels)
        with torch.no_grad():
            assert torch.equal(model(ids).logits, tiny[0](ids).logits)
    copy_with(torch_folder / "pytorch_model.bin", cut)
    with pytest.raises(DataError, match="pytorch_model.bin: not a whole PyTorch file"):
        check_model_config(local_model(torch_folder))


@pytest.mark.parametrize("family", ["rwkv", "recurrent_gemma"])
def test_a_family_the_evaluation_cannot_score_exactly_is_refused_at_loading(tiny, tmp_path, family):
    """RWKV ignores the attention mask (left padding would be read: 1.3 nats off in a padded batch);
    RecurrentGemma keeps its state in the model, where decoding cannot continue it."""
    import transformers as T

    from gap.modules.loading import load_model, load_tokenizer

    tokenizer = tiny[1]
    config = T.AutoConfig.for_model(family, vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64)
    T.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    cfg = local_model(tmp_path)
    with pytest.raises(ModelLoadError, match=f"model '{tmp_path}' \\({family}\\) cannot be evaluated here: "):
        load_model(cfg, load_tokenizer(cfg))


@pytest.mark.parametrize("keep", [3000, -1], ids=["cut in the header", "1 byte short"])
def test_a_gguf_file_that_is_not_whole_is_refused(tmp_path, keep):
    """(Cut at 8 MB: `tests/test_cli.py`.)"""
    source = embedded_gguf()
    with open(source, "rb") as f:
        (tmp_path / "m.gguf").write_bytes(f.read(keep if keep > 0 else source.stat().st_size + keep))
    with pytest.raises(ConfigError) as err:
        check_gguf(tmp_path / "m.gguf")
    message = str(err.value)
    assert message.startswith(f"GGUF file {tmp_path}/m.gguf is unreadable or truncated (") and "\n" not in message


@pytest.mark.parametrize("damage,expected", [(_cut("vocab.json"), "vocab.json: not whole JSON"),
                                             (_unlink("merges.txt"), "merges.txt: missing")],
                         ids=["vocab.json cut short", "merges.txt missing"])
def test_a_damaged_tokenizer_folder_is_refused(tmp_path, damage, expected):
    model = OmegaConf.load(CONF / "model" / "tiny-random-opt.yaml")
    source = Path(compose_cfg("train", ["model=tiny-random-opt"]).model.tokenizer.path)
    folder = shutil.copytree(source, tmp_path / "tokenizer")
    damage(folder)
    model.tokenizer.path = str(folder)
    with pytest.raises(DataError, match=expected):
        check_model_config(model)


# ---------------------------------------------------------------- results files read by the sweep and the report
RESULTS_DAMAGES = {
    "cut short": cut,
    "not UTF-8": lambda data: b"\xff" * 64,
    "a JSON list": lambda data: b"[1]",
    "ok without its config": lambda data: json.dumps({"status": "ok", "best": {"dialog": {"epoch": 0}}}).encode(),
    "its best epoch not in its history": lambda data: json.dumps({**json.loads(data), "history": []}).encode(),
}


def test_damaged_results_files_are_rerun_by_the_sweep_and_listed_by_the_report(finished, tmp_path):
    out, _ = finished
    sweep = tmp_path / "sweep"
    for n, name in enumerate(["whole", *RESULTS_DAMAGES]):
        job = shutil.copytree(out, sweep / f"corpus.index={n}")
        if name != "whole":
            copy_with(job / "results.json", RESULTS_DAMAGES[name])
    jobs = {name: sweep / f"corpus.index={n}" for n, name in enumerate(["whole", *RESULTS_DAMAGES])}
    assert finished_results(jobs["whole"])["status"] == "ok"
    rerun = [name for name, job in jobs.items() if finished_results(job) is None]
    assert rerun == ["cut short", "not UTF-8", "a JSON list", "ok without its config"]  # the last is ok and whole
    summary = summarize(sweep)
    assert summary["status"] == {"ok": 3, "unreadable": 3}
    results = load_sweep(sweep)
    assert len(results.runs) == 1  # the whole job: one category, classification
    damaged = [note for note in results.notes if note.startswith("results files skipped as damaged")]
    assert len(damaged) == 1
    for name in ("cut short", "not UTF-8", "a JSON list", "ok without its config", "its best epoch not in its history"):
        assert str(jobs[name] / "results.json") in damaged[0], name


def test_damaged_predictions_and_paper_csvs_name_file_and_line(finished, tmp_path):
    out, _ = finished
    run = shutil.copytree(out, tmp_path / "run")
    copy_with(run / "predictions" / "copa.jsonl", lambda data: data[:-5])
    with pytest.raises(DataError, match=f"{run}/predictions/copa.jsonl:2: the last line is cut short"):
        significance(run)
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "classification.csv").write_bytes("corpora,index,epoch,average,model,copa\n"
                                                "github,0,1,0.5,opt-350m,0.5\ngit\u00e9,1,1,0.5,opt-350m,0.5\n"
                                                .encode("latin-1"))
    with pytest.raises(DataError, match="classification.csv:3: not UTF-8 text"):
        load_paper_csvs(paper)


# ---------------------------------------------------------------- killed processes
FAST = ["eval.limit=2", "model=tiny-random", "tasks.include=[copa]", "trainer.max_epochs=2"]
KILLS = int(os.environ.get("GAP_FAULT_KILLS", "3"))  # more: GAP_FAULT_KILLS=20 pytest -k killed


def sweep_command(log_dir: Path) -> list[str]:
    return [sys.executable, "-m", "gap.train", "--multirun", f"paths.log_dir={log_dir}",
            f"paths.baseline_dir={log_dir}/baselines", "sweep.name=g", "logger=none", *FAST, "corpus.index=0,1"]


def test_a_sweep_killed_at_random_points_completes_on_rerun_with_the_same_metrics(tmp_path, data_dir):
    """SIGKILL and SIGTERM in turn, each at a random moment of a 2-job sweep (its imports, a job's evaluation or
    step, a results or cache write, between jobs), then the same command again: each rerun picks up from what
    the killed one left; the last completes, its metrics equal an undisturbed sweep's, and a job that had
    finished before a kill is never run (nor written) again."""
    env = {**os.environ, "WANDB_MODE": "offline", "GAP_DATA_DIR": str(data_dir)}
    undisturbed = subprocess.Popen(sweep_command(tmp_path / "undisturbed"), cwd=ROOT, env=env, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seed = random.randrange(10**6)
    rng, killed, done = random.Random(seed), tmp_path / "killed", {}
    jobs = killed / "train" / "multiruns" / "g"
    launched = lambda: (jobs / "multirun.yaml").stat().st_mtime_ns if (jobs / "multirun.yaml").exists() else 0  # noqa: E731
    for k in range(KILLS):
        before = launched()
        proc = subprocess.Popen(sweep_command(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while launched() == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # Hydra writes multirun.yaml once the imports are done
        time.sleep(rng.uniform(0, 4))
        proc.send_signal(signal.SIGKILL if k % 2 == 0 else signal.SIGTERM)
        proc.wait(timeout=120)
        for path, stamp in done.items():
            assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"seed {seed}: {path} written again"
        for job in jobs.glob("corpus.index=*"):
            if finished_results(job):
                path = job / "results.json"
                done.setdefault(path, (path.stat().st_ino, path.stat().st_mtime_ns))
    rerun = finish(subprocess.Popen(sweep_command(killed), cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE), timeout=300)
    assert rerun.returncode == 0, f"seed {seed}: {rerun.stderr[-3000:]}"
    assert rerun.stdout.count("skipped:") == len(done)
    assert undisturbed.wait(timeout=300) == 0, undisturbed.stderr.read()[-3000:]
    for index in (0, 1):
        name = f"corpus.index={index},{','.join(FAST)}"
        want = json.loads((tmp_path / "undisturbed" / "train" / "multiruns" / "g" / name / "results.json").read_text())
        got = json.loads((jobs / name / "results.json").read_text())
        assert got["status"] == "ok", f"seed {seed}"
        for key in ("metrics", "baseline", "best"):
            assert got[key] == want[key], f"seed {seed}: {key}"
        assert [(h["train_nll"], h["metrics"]) for h in got["history"]] == \
            [(h["train_nll"], h["metrics"]) for h in want["history"]], f"seed {seed}"
        assert sorted(p.name for p in (jobs / name).glob(".*") if p.name != ".hydra") == [".lock"]  # no temporaries
    for path, stamp in done.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, f"seed {seed}: {path} written again"


def test_sigterm_keeps_the_evaluations_so_far_and_exits_143(tmp_path, data_dir):
    proc = start("gap.train", "model=tiny-random", "eval.limit=2", "trainer.max_epochs=500", "logger=wandb",
                 "tasks.include=[copa,wizard_of_wikipedia]", tmp_path=tmp_path)
    results, deadline = {}, time.monotonic() + 240
    while len(results.get("history", [])) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            results = json.loads((tmp_path / "results.json").read_text())
        except (OSError, ValueError):
            pass
    proc.send_signal(signal.SIGTERM)
    done = finish(proc, timeout=120)
    assert done.returncode == 143, done.stderr[-3000:]
    assert "preempted (SIGTERM): results so far in" in done.stderr and "Traceback" not in done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "preempted" and results["error"].startswith("SIGTERM")
    assert results["baseline"] is not None and len(results["history"]) >= 2  # nothing finished is lost
    assert len(results["history"]) < 500
    assert (tmp_path / "predictions" / "copa.jsonl").is_file()
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("run-*.wandb"))  # the W&B run was written out


def test_a_signal_after_the_final_results_changes_nothing(tmp_path, monkeypatch, data_dir):
    """SIGTERM in the last instants of a job (its results written ok, W&B summaries next): it still ends with
    143, and its results stay ok (a sweep skips it), not turned into `preempted`."""
    import gap.train

    monkeypatch.setattr(gap.train, "summarize_run", lambda *args: os.kill(os.getpid(), signal.SIGTERM))
    assert run_here(tmp_path / "run") == 143
    assert finished_results(tmp_path / "run")["status"] == "ok"


# ---------------------------------------------------------------- one folder, one writer
HOLD = ("import sys, time; from gap.files import one_writer\n"
        "with one_writer(sys.argv[1], wait=False):\n    print('held', flush=True); time.sleep(600)")


def test_one_run_folder_has_one_writer_and_a_killed_writer_leaves_no_lock(tmp_path, capsys):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError, match=f"{folder} is being written by process {holder.pid} on "):
            with one_writer(folder, wait=False):
                pass
        assert run_here(folder) == 2  # a second run on the folder stops at once, writing nothing
        assert f"is being written by process {holder.pid}" in capsys.readouterr().err
        assert not (folder / "results.json").exists()
        waited = threading.Event()

        def second_writer():  # a sweep's job: waits for the folder
            with one_writer(folder, wait=True):
                waited.set()
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.5)
        assert not waited.is_set()
        holder.kill()  # SIGKILL: the kernel releases the lock
        thread.join(timeout=10)
        assert waited.is_set()
        assert f"waiting: {folder} is being written by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_temporary_files_of_a_killed_writer_are_removed_when_the_folder_is_next_written(tmp_path):
    folder = tmp_path / "run"
    leftovers = [folder / ".results.json.k3j2.tmp", folder / "predictions" / "heldout" / ".copa.jsonl.x1.tmp",
                 folder / ".checkpoint.tmp" / "model.safetensors"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    (folder / "notes.tmp").write_text("a user's file")
    with one_writer(folder, wait=False):
        assert not any(p.exists() for p in leftovers) and not (folder / ".checkpoint.tmp").exists()
    assert (folder / "notes.tmp").read_text() == "a user's file"


# ---------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root: skipped where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the disk, but for `leave` bytes."""
    with open(disk / f"filler{len(list(disk.glob('filler*')))}", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            f.truncate(max(f.tell() - leave, 0))


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_is_a_clear_error_and_the_files_before_stay_whole(small_disk, tiny, caplog, tmp_path):
    run = small_disk / "run"
    writer = ResultsWriter(run, {"model": {"name": "tiny-random"}})
    evaluation = {"epoch": None, "step": 0, "metrics": {"copa/acc": 1.0}, "seconds": {},
                  "predictions": {"copa": [{"index": 0, "label": 1, "pred": 1}]}}
    writer.write("running", [evaluation])
    replace_folder(run / "checkpoint", tiny[0].save_pretrained)
    before = snapshot(run)
    fill(small_disk, leave=200_000)  # room for a checkpoint's config, not for its weights
    with pytest.raises(DiskFull, match=f"to write {run}/checkpoint; nothing was replaced"):
        replace_folder(run / "checkpoint", tiny[0].save_pretrained)  # safetensors relays ENOSPC as its own error
    fill(small_disk)
    big = {**evaluation, "epoch": 0, "predictions": {"copa": [{"index": i, "pred": "x" * 100} for i in range(999)]}}
    with pytest.raises(DiskFull, match=f"no space left on the device \\(or quota\\) to write {run}/predictions/copa"):
        writer.write("ok", [evaluation, big])  # results and predictions
    with pytest.raises(DiskFull, match="to write .*notes.txt"):
        write_atomic(run / "notes.txt", "x" * 10_000)
    assert snapshot(run) == before  # whole, and no temporary file left behind
    cfg = compose_cfg("train", [*RUN, f"paths.baseline_dir={small_disk}/baselines"])
    examples = {"copa": load_examples(DATA_DIR, "copa", "validation", 2)}
    with caplog.at_level(logging.WARNING, logger="gap"):
        assert store_baseline(cfg, examples, {**evaluation, "predictions": {"copa": [{"index": 0}] * 500}}) is None
    assert "not written" in caplog.text and "the run goes on without it" in caplog.text  # a cache
    assert not baseline_path(cfg, examples).exists()


def test_a_run_on_a_full_disk_ends_with_one_error_line(small_disk, data_dir, capsys):
    out = small_disk / "run"
    assert run_here(out, baselines=small_disk.parent / "baselines") == 0
    before = snapshot(out)
    fill(small_disk)
    assert run_here(out, "eval.overwrite=true", baselines=small_disk.parent / "baselines") == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: no space left on the device (or quota) to write {out}/"), last
    assert snapshot(out) == {**before, **{k: v for k, v in snapshot(out).items() if k.parts[0] == ".hydra"}}


# ---------------------------------------------------------------- W&B
def test_a_failing_wandb_service_does_not_end_the_run(tmp_path, data_dir):
    # online W&B pointed at a port where nothing listens: a real service error at wandb.init
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
           "WANDB_INIT_TIMEOUT": "3"}
    proc = gap("gap.eval", "model=tiny-random", "eval.limit=2", "logger=wandb", "tasks.include=[copa]",
               tmp_path=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WandbLogger failed, the run goes on without it" in proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and set(results["metrics"]) == {"copa/acc", "avg/classification_acc"}


def test_a_wandb_error_mid_run_drops_the_logger(tmp_path, caplog, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from gap.loggers import Tolerant

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = Tolerant(WandbLogger(project="gap", save_dir=str(tmp_path), offline=True))
    logger.log_metrics({"a": 1.0}, step=0)
    assert not logger.failed
    logger.inner.experiment.finish()  # the run ends underneath the job, as when W&B's service dies
    logger.log_metrics({"a": 2.0}, step=1)  # W&B raises; the job goes on
    assert logger.failed and "WandbLogger failed, the run goes on without it: UsageError" in caplog.text
    logger.log_metrics({"a": 3.0}, step=2)  # ignored from now on
    assert caplog.text.count("the run goes on without it") == 1
