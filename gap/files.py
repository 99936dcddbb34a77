"""Files a run writes and reads back: atomic, durable writes (a reader never sees half a file, a power cut
leaves the old file or the new one), results documents, damaged files set aside, and the lock that gives a
run folder one writer. No dependencies beyond the standard library, so data fetching and reports stay light."""
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path

from gap.errors import ConfigError, GapError

TEMP_SUFFIX = ".tmp"  # what `write_atomic` and `replace_folder` write before the rename, as `.<name>.*.tmp`
LOCK_FILE = ".lock"
FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(GapError, OSError):
    """No space (or quota) left while writing a file; what was there before is left whole."""


def _full(err: BaseException) -> bool:
    """No space or quota left: an OSError's errno, or the same error as a library written in Rust relays it
    (safetensors: "I/O error: No space left on device (os error 28)")."""
    if isinstance(err, OSError):
        return err.errno in FULL
    return any(f"(os error {code})" in str(err) for code in FULL)


def _disk_full(path: Path) -> DiskFull:
    return DiskFull(f"no space left on the device (or quota) to write {path}; nothing was replaced (files "
                    f"written before are whole): free space, then run the same command again")


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut after it keeps the new name), where the file system
    can sync a folder (some network file systems cannot: the rename is then as durable as they make it)."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file, flushed to the disk, and rename: a reader never sees half a file, and a
    crash at any point leaves the old file or the new one. A full disk raises `DiskFull` and leaves no
    temporary file."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from a group's other users
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if _full(err):
            raise _disk_full(path) from None
        raise


def replace_folder(path: Path, write: Callable[[Path], None]) -> None:
    """`write(folder)` into a temporary folder beside `path`, then put it in place of `path`: a crash or a
    full disk (`DiskFull`) never leaves a half-written folder under the name."""
    path = Path(path)
    tmp, old = (path.with_name(f".{path.name}{part}{TEMP_SUFFIX}") for part in ("", ".old"))
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if _full(err):
            raise _disk_full(path) from None
        raise
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _sync_folder(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_results(path: Path) -> dict | None:
    """A `results.json` document, or None when it cannot be read (cut short, not UTF-8, not a JSON object)."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def set_aside(path: Path, read: os.stat_result | None = None) -> Path | None:
    """Rename a damaged file to `<name>.damaged-<time>` beside it (kept for a look, out of the way) and return
    the new path; None when it is gone or, given the `os.stat` of the copy that was read, when another
    process has replaced it since."""
    path = Path(path)
    try:
        now = path.stat()
        if read is not None and (now.st_ino, now.st_dev) != (read.st_ino, read.st_dev):
            return None
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    return aside


def _remove_temporaries(folder: Path) -> None:
    """What a killed writer of this folder left: its `write_atomic` files and `replace_folder` folders."""
    for leftover in [*folder.glob(f".*{TEMP_SUFFIX}"), *(folder / "predictions").rglob(f".*{TEMP_SUFFIX}")]:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextmanager
def one_writer(folder: Path, wait: bool):
    """Hold `folder/.lock` (an exclusive `flock`) while the block writes the folder. A second process on the
    same folder waits for it (`wait`: a sweep's job, which then finds the job done) or stops with a
    `ConfigError` naming the holder. The kernel drops the lock when its process ends, however it ends (SIGKILL,
    a power cut), so no lock outlives its writer; the file itself stays (removing it would race). On entry,
    temporary files a killed writer left are removed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            if not wait:
                raise ConfigError(f"{folder} is being written by {holder}: one run folder has one writer; wait for "
                                  f"it to end, or give this run another folder (hydra.run.dir=...)") from None
            print(f"waiting: {folder} is being written by {holder}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        with suppress(OSError):  # who holds it, for the message of the next one (a full disk: none)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        _remove_temporaries(folder)
        yield
    finally:
        os.close(fd)  # releases the lock
