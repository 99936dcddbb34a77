"""Read an offline W&B run back from its own files: the `run-*.wandb` transaction log (a LevelDB-style log
of wandb's protobuf records) and the run's `files/` folder."""
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path


def records(path: Path):
    """Every record of a `run-*.wandb` file, in order: 7-byte headers (crc, length, type) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunk = Path(path).read_bytes(), 32768, 7, b""  # the first 7 bytes: the file's header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What one offline run holds, as the W&B server would receive it on `wandb sync`."""
    folder: Path
    run: object = None                               # the `run` record: id, group, job_type, tags
    config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)     # one dict per logged row
    summary: dict = field(default_factory=dict)     # the explicit summary updates, last value wins
    metrics: dict = field(default_factory=dict)     # name -> the `metric` record (define_metric)
    artifacts: list = field(default_factory=list)   # `artifact` records
    exit_code: int | None = None
    preempting: bool = False

    def table(self, key: str) -> dict:
        """A logged `wandb.Table` ({"columns": ..., "data": ...}) from the run's files."""
        return json.loads((self.folder / "files" / self.history_value(f"{key}/path")).read_text())

    def history_value(self, key: str):
        return next(row[key] for row in reversed(self.history) if key in row)

    def history_keys(self) -> set:
        return {k for row in self.history for k in row}


def read_run(folder: Path) -> OfflineRun:
    """An `offline-run-*` folder, read back."""
    folder = Path(folder)
    out = OfflineRun(folder)
    for record in records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
            out.config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "metric":
            out.metrics[record.metric.name or record.metric.glob_name] = record.metric
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
        elif kind == "preempting":
            out.preempting = True
    return out


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """Every offline W&B run under a job's directory, oldest first."""
    return [read_run(f) for f in sorted((Path(run_dir) / "wandb").glob("offline-run-*"))]
