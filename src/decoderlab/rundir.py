"""The run directory: its layout, atomic file writes, ``status.json`` and the one rule for "this run is finished".

A run directory holds (written by :func:`decoderlab.runner.run`)::

    config.yaml        the resolved config (logger secrets left unresolved)
    status.json        {"status": "running" | "completed" | "failed" | "interrupted", "fingerprint": ..., "time": ...,
                        "error"?, "step"? (interrupted: the step its last checkpoint holds)}
    .lock              held (filelock) by the live run: a second run in the same directory is refused
    summary.json       the figures of the finished run
    checkpoints/       step*.ckpt and last.ckpt (see decoderlab.checkpoint)
    tokenizer files, sample.txt, metrics of the loggers

Only a ``completed`` status with the fingerprint of the same config counts as finished (:func:`is_finished`):
every launcher (the decoderlab launcher, Hydra's in-process ones) skips a job by this one rule.
This module is the bottom of the house: it imports nothing of decoderlab.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
SKIP_REASON = "finished earlier with the same config"
LOCK_FILE = ".lock"


_STAMP: list[str] = []


def run_stamp() -> str:
    """This process's run name: local time with milliseconds and a short random id (``13-05-09-042-3fa9c1``), the
    same every time it is asked: two runs started in the same millisecond still get different directories."""
    if not _STAMP:
        _STAMP.append(new_stamp())
    return _STAMP[0]


def register_resolvers() -> None:
    """``${run_stamp:}`` for ``hydra.run.dir`` / ``hydra.sweep.dir`` in ``conf/train.yaml``."""
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp)


_HELD: dict[Path, Any] = {}  # run directory -> its lock, one object per directory in this process


def lock(run_dir: str | Path) -> Any:
    """Take the run directory's lock, or raise ``RuntimeError`` naming the directory when another live run holds
    it (an OS lock: a killed run releases it). Re-entrant within this process: a second ``lock`` of a directory
    this process holds (Hydra's callback, then the task) counts up, each ``release()`` counts down."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    held = _HELD.setdefault(run_dir, FileLock(run_dir / LOCK_FILE, timeout=0))
    try:
        held.acquire()
    except Timeout:
        raise RuntimeError(f"run directory {run_dir} is in use by another live run") from None
    return held


def locked(run_dir: str | Path) -> bool:
    """Whether a live process holds ``run_dir``'s lock (see :func:`lock`), probed without taking it for longer
    than the probe and without creating the lock file; a killed run's lock is free (the OS released it)."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return False
    try:
        import fcntl
    except ImportError:  # no flock (Windows): filelock's own probe
        from filelock import FileLock, Timeout

        probe = FileLock(path, timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return True
        except OSError:
            return False
        probe.release()
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # conflicts with the live run's exclusive flock
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing releases the probe's shared lock
    return False


def new_stamp() -> str:
    """A fresh run name (``13-05-09-042-3fa9c1``) for each call: runs started by one process (the Python API)."""
    import datetime
    import secrets

    now = datetime.datetime.now()
    return f"{now:%H-%M-%S}-{now.microsecond // 1000:03d}-{secrets.token_hex(3)}"


KILLED = "killed"  # how a "running" status whose directory nobody holds is named: its process died


class Claim:
    """This process's hold on a run directory (:func:`decoderlab.claim.claim`): its lock (None on a DDP rank
    other than 0) and the status the directory held when claimed (``prior``). :meth:`record` writes status.json;
    a run that fails before it started (``record("running")``) in a directory holding an earlier run leaves that
    run's record as it was: a refused resume keeps ``interrupted`` with its step."""

    def __init__(self, run_dir: Path, held: Any, prior: dict[str, Any] | None) -> None:
        self.run_dir, self.held, self.prior, self.started = Path(run_dir), held, prior, False

    def record(self, status: str, **extra: Any) -> None:
        if status == "running":
            self.started = True
        elif not self.started and self.prior is not None:
            return
        write_status(self.run_dir, status, **extra)

    def release(self) -> None:
        if self.held is not None:
            self.held.release()
            self.held = None


def verdict(run_dir: str | Path, fp: str, mode: str, skip_finished: bool = True) -> str:
    """What a run may do in ``run_dir``, its lock held: the one rule of every entry point (single run, resume,
    sweep job under any launcher, the Python API). ``mode``: "run", "resume" or "job". Returns "fresh" (nothing
    there), "resume", "skip" (a job completed with the same config) or "rerun" (a job's failed or killed attempt:
    set it aside, then run); raises ``RuntimeError`` naming the directory when refused."""
    status = read_status(run_dir)
    if mode == "resume":
        return "resume"
    if status is None:
        return "fresh"
    state = status.get("status")
    state = KILLED if state == "running" else state  # the caller holds the lock: its process is gone
    if mode == "run":
        raise RuntimeError(f"run directory {run_dir} already holds a {state} run; continue it with "
                           f"decoderlab-train --resume {run_dir}")
    same = status.get("fingerprint") == fp
    if state in ("failed", KILLED):
        return "rerun"  # an attempt that ended badly is set aside (never deleted), whatever its config
    if not same:
        raise RuntimeError(f"job directory {run_dir} holds a {state} run of another config; it is left as it is "
                           f"(choose another hydra.sweep.dir, or move that directory away)")
    if state == "interrupted":
        return "resume"
    return "skip" if skip_finished else "rerun"


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` only when the block ends without error: written to a temporary file in
    the same directory, flushed, fsynced, then renamed, so a kill at any moment leaves the old file or the new one.
    A failed write removes its temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if disk_full(e):
            kept = "the previous file is intact" if existed else "it was not written (there was no earlier one)"
            raise DiskFullError(f"no space left on device writing {path}; {kept}; free some space") from None
        raise


class DiskFullError(OSError):
    """A write failed because the file system is full (its temporary file removed, the old file kept)."""


def disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it wraps: torch.save reports a failed write as a RuntimeError) is ENOSPC."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno == errno.ENOSPC) \
                or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable (e.g. half-written by a kill)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path``, or None when it is missing or unreadable."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON, written atomically (values JSON cannot hold are written as strings)."""
    return atomic_write(path, json.dumps(obj, indent=2, default=str))


def write_status(run_dir: str | Path, status: str, **extra: Any) -> None:
    """``status.json``: "running" / "completed" / "failed"; only a completed run looks like a success."""
    record = json.dumps({"status": status, "time": time.time(), **extra}, indent=2, default=str)
    path = Path(run_dir) / STATUS_FILE
    try:
        atomic_write(path, record)
    except DiskFullError:  # no room for a second copy: overwrite in place (truncating frees the old blocks)
        with open(path, "w", encoding="utf-8") as f:
            f.write(record)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``status.json``, or None (no status: not started, or a run directory from before status.json)."""
    return read_json(Path(run_dir) / STATUS_FILE)


def is_finished(run_dir: str | Path, fingerprint: str) -> bool:
    """The skip rule: ``run_dir`` holds a completed run of the config whose fingerprint is ``fingerprint``."""
    status = read_status(run_dir)
    return bool(status) and status.get("status") == "completed" and status.get("fingerprint") == fingerprint


def task_config(config: DictConfig) -> DictConfig:
    """A run's task config: its composed config without the ``hydra`` node (as Hydra's ``run_job`` does)."""
    import copy

    from omegaconf import open_dict, read_write

    cfg = copy.deepcopy(config)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def fingerprint(cfg: DictConfig) -> str:
    """sha256 of a task config (no ``hydra`` node), resolved, as sorted YAML: what :func:`is_finished` compares."""
    try:
        text = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    except Exception:  # noqa: BLE001 - a broken interpolation is reported by validation, not here
        text = OmegaConf.to_yaml(cfg, resolve=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def last_checkpoint(run_dir: str | Path) -> Path:
    """Where a finished run keeps its final checkpoint."""
    return checkpoint_dir(run_dir) / LAST_CHECKPOINT
