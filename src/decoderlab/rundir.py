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
ENDED = ("completed", "failed", "interrupted")


_STAMP: list[str] = []


def run_stamp() -> str:
    """This process's run name: local time with milliseconds and a short random id (``13-05-09-042-3fa9c1``), the
    same every time it is asked: two runs started in the same millisecond still get different directories."""
    if not _STAMP:
        import datetime
        import secrets

        now = datetime.datetime.now()
        _STAMP.append(f"{now:%H-%M-%S}-{now.microsecond // 1000:03d}-{secrets.token_hex(3)}")
    return _STAMP[0]


def register_resolvers() -> None:
    """``${run_stamp:}`` for ``hydra.run.dir`` / ``hydra.sweep.dir`` in ``conf/train.yaml``."""
    if not OmegaConf.has_resolver("run_stamp"):
        OmegaConf.register_new_resolver("run_stamp", run_stamp)


def lock(run_dir: str | Path) -> Any:
    """Take the run directory's lock for this process's lifetime, or raise ``RuntimeError`` naming the directory
    when another live run holds it (an OS lock: a killed run releases it)."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    held = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        held.acquire()
    except Timeout:
        raise RuntimeError(f"run directory {run_dir} is in use by another live run; "
                           f"choose another hydra.run.dir") from None
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


def ended(run_dir: str | Path) -> str | None:
    """The status of a run that ended in ``run_dir`` (completed, failed or interrupted), else None."""
    status = (read_status(run_dir) or {}).get("status")
    return status if status in ENDED else None


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` only when the block ends without error: written to a temporary file in
    the same directory, flushed, fsynced, then renamed, so a kill at any moment leaves the old file or the new one.
    A failed write removes its temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
            raise DiskFullError(f"no space left on device writing {path}; the previous file is intact "
                                "(free some space and resume)") from None
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
