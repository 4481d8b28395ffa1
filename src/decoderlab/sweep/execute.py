"""Run prepared jobs as child processes: output to ``job.log`` (and the console), timeouts, interrupts."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from decoderlab.sweep.results import JobResult, collect

log = logging.getLogger("decoderlab.sweep")


class Pool:
    """Runs commands in child processes, ``n_jobs`` at a time; ``stop()`` ends the running ones."""

    def __init__(self, n_jobs: int, timeout_s: float | None, kill_grace_s: float, stream: bool):
        self.n_jobs, self.timeout_s, self.grace, self.stream = max(1, n_jobs), timeout_s, kill_grace_s, stream
        self.procs: set[subprocess.Popen] = set()
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def run_all(self, jobs: list[tuple[JobResult, list[str], dict[str, str]]]) -> list[JobResult]:
        """Run every (result, command, env); on KeyboardInterrupt end the children, mark the rest, re-raise."""
        with ThreadPoolExecutor(max_workers=self.n_jobs, thread_name_prefix="sweep-job") as ex:
            futures = [ex.submit(self.run_one, *job) for job in jobs]
            try:
                for f in futures:
                    f.result()
            except KeyboardInterrupt:
                self.stop()
                for f in futures:
                    f.cancel()
                ex.shutdown(wait=True, cancel_futures=True)
                for res, _, _ in jobs:
                    if res.status == "not run" and not res.reason:
                        res.reason = "interrupted before it started"
                raise
        return [res for res, _, _ in jobs]

    def run_one(self, res: JobResult, cmd: list[str], env: dict[str, str]) -> JobResult:
        if self.stopped.is_set():
            res.reason = "interrupted before it started"
            return res
        job_dir = Path(res.dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        prefix = f"[job {res.num}] " if self.n_jobs > 1 else ""
        log.info("job %d: %s", res.num, " ".join(res.varying) or "(no varying keys)")
        t0 = time.monotonic()
        tail: deque[str] = deque(maxlen=40)
        with open(job_dir / "job.log", "a", encoding="utf-8") as logf:  # a resumed job appends
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", bufsize=1)
            with self.lock:
                self.procs.add(proc)
            pump = threading.Thread(target=_pump, args=(proc.stdout, logf, tail, prefix, self.stream), daemon=True)
            pump.start()
            rc, timed_out = self._wait(proc)
            pump.join(timeout=10)
            with self.lock:
                self.procs.discard(proc)
        collect(res, rc, time.monotonic() - t0, list(tail))
        if timed_out:
            res.status, res.reason = "failed", f"timed out after {self.timeout_s:g} s; {res.reason}"
        elif self.stopped.is_set() and res.status != "completed":
            res.reason = f"interrupted; {res.reason}"
        log.info("job %d: %s%s", res.num, res.status, f" ({res.reason})" if res.reason else "")
        return res

    def _wait(self, proc: subprocess.Popen) -> tuple[int, bool]:
        try:
            return proc.wait(timeout=self.timeout_s), False
        except subprocess.TimeoutExpired:
            _terminate(proc, self.grace)
            return proc.returncode, True

    def stop(self) -> None:
        """End the running children (SIGTERM, then SIGKILL after the grace period); start no new ones."""
        self.stopped.set()
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            _terminate(p, self.grace)


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pump(src: IO[str], logf: IO[str], tail: deque[str], prefix: str, stream: bool) -> None:
    """Copy a child's output to its job.log, keep its tail, and echo it to the console."""
    for line in src:
        logf.write(line)
        logf.flush()
        tail.append(line.rstrip("\n"))
        if stream:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()


def sigterm_as_interrupt() -> Callable[[], None]:
    """While a sweep runs in the main thread, SIGTERM to the parent ends its children too; returns undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)
