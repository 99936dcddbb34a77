"""`python -m gap.data fetch`: the authors' released files become our JSONL layout; no network, no hang."""
import subprocess
import sys

from tests.helpers import DATA_DIR, ROOT, gap


def test_authors_files_convert_to_the_shared_layout_byte_for_byte(tmp_path, data_dir):
    out = tmp_path / "data"
    proc = gap("gap.data", "fetch", "fetch.hub_tasks=false", f"sources.gap_files=file://{data_dir}/raw/gap",
               f"paths.data_dir={out}", tmp_path=tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sorted(p.relative_to(out) for p in out.rglob("*.jsonl"))
    assert len(written) == 12  # 3 corpora, pubmed_qa, 4 dialogue tasks x 2 splits
    for path in written:
        assert (out / path).read_bytes() == (DATA_DIR / path).read_bytes(), path


def test_without_network_fetch_stops_at_once_with_a_clear_message(tmp_path):
    proc = gap("gap.data", "fetch", "model=opt-350m", f"paths.data_dir={tmp_path}/data", tmp_path=tmp_path / "run",
               env={"HF_ENDPOINT": "https://hub.invalid"}, timeout=120)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach") and "hub.invalid" in last
    assert not (tmp_path / "data").exists()


def test_fetch_is_the_only_verb():
    proc = subprocess.run([sys.executable, "-m", "gap.data", "download"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "usage: python -m gap.data fetch" in proc.stderr
