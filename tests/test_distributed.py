"""Data-parallel runs: 2 processes on the CPU (gloo) give what 1 process gives."""
import json

from tests.helpers import finish, start

RUN = ["model=tiny-random", "logger=none", "eval.limit=5", "eval.batch_size=2", "trainer.max_epochs=2",
       "tasks.include=[copa,piqa,wizard_of_wikipedia]"]


def test_two_process_ddp_equals_one_process(tmp_path, data_dir):
    # 5 examples in batches of 2: 3 batches per task, so the ranks get unequal shares (2 and 1)
    single = start("gap.train", *RUN, tmp_path=tmp_path / "one")
    ddp = start("gap.train", *RUN, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                tmp_path=tmp_path / "two")
    for proc in (finish(single), finish(ddp)):
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "two" / "train_ddp_process_1.log").exists()  # a second rank ran
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert two["status"] == "ok" and two["config"]["trainer"]["strategy"] == "ddp"
    assert two["baseline"] == one["baseline"]
    assert [h["metrics"] for h in two["history"]] == [h["metrics"] for h in one["history"]]
    assert [h["train_nll"] for h in two["history"]] == [h["train_nll"] for h in one["history"]]
    for task in ("copa", "piqa", "wizard_of_wikipedia"):
        for sub in ("", "baseline/"):
            rows = (tmp_path / "two" / "predictions" / f"{sub}{task}.jsonl").read_text()
            assert rows == (tmp_path / "one" / "predictions" / f"{sub}{task}.jsonl").read_text()
            assert [json.loads(r)["index"] for r in rows.splitlines()] == [0, 1, 2, 3, 4]  # none twice, none lost
