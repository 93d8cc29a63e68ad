"""Resumable result tables shared by tradeoff, the leaderboard and sd-sweep: rows appended to
``folder/results.jsonl``, each computed once even when several processes work on one folder.

A process leases a row before computing it: an exclusive POSIX record lock on one byte of
``folder/results.lock`` chosen by the row's key (the OS frees it when the process dies, so a
killed run leaves no stale lease). Holding the lease it rereads the table, skips the row if
another process has meanwhile appended it, and appends under an exclusive lock on the table.
Rows whose lease another process holds are left for the end and then waited for, so a holder
that dies mid-row is covered. Without ``fcntl`` (Windows) one process per folder is assumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator

__all__ = ["ResultsTable"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


@contextlib.contextmanager
def locked(f):
    """Hold an exclusive lock on an open file (every process of a folder appends to it)."""
    if fcntl is None:
        yield
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class ResultsTable:
    """``folder/results.jsonl`` with its done-set, row leases and durable appends.

    ``key(row)`` names a row; :meth:`claimed` yields the jobs this process should compute
    (``job_key(job)`` is the key the job's row will have) and :meth:`append` writes a row.
    Reading validates every line (:func:`toycode.experiments.tradeoff.read_results`).
    """

    def __init__(self, folder: str | Path, key: Callable[[dict], Hashable]):
        self.folder = Path(folder)
        self.path = self.folder / "results.jsonl"
        self.key = key

    def rows(self) -> list[dict]:
        from .tradeoff import read_results

        return read_results(self.folder)

    def done(self) -> set:
        return {self.key(r) for r in self.rows()}

    def claim(self, config: dict, *, name: str, what: str) -> None:
        """Record the run's fixed configuration in ``folder/name``, or refuse a folder that holds
        another one, naming the options that differ (``what`` says whose folder it is, e.g.
        "sweep"). Everything is checked before anything is written, and checked again under the
        lock, since another process may be claiming the folder at the same moment."""
        from ..utils.io import atomic_write

        path = self.folder / name
        config = json.loads(json.dumps(config))  # as it reads back: tuples are lists
        self._refuse_other(self._held(path, what), config, what)
        self.rows()  # refuses a table that is not ours, naming the line
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "results.lock", "ab") as f, locked(f):
            held = self._held(path, what)
            self._refuse_other(held, config, what)
            if held is None:
                atomic_write(path, lambda g: g.write(json.dumps(config, indent=1).encode()))

    @staticmethod
    def _held(path: Path, what: str) -> dict | None:
        if not path.is_file():
            return None
        try:
            held = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            held = None
        if not isinstance(held, dict):
            raise ValueError(
                f"{path} is not a {what} configuration (not a JSON object); the "
                f"folder is not a {what}'s: use another --out"
            )
        return held

    def _refuse_other(self, held: dict | None, config: dict, what: str) -> None:
        if held is None:
            return
        differ = sorted(k for k in set(held) | set(config) if held.get(k) != config.get(k))
        if differ:
            raise ValueError(
                f"{self.folder} holds a {what} run with other "
                + ", ".join(f"{k}={held.get(k)!r}" for k in differ)
                + "; resume it with the same options or use another --out"
            )

    def append(self, row: dict) -> None:
        """Append one strict-JSON row under the table's lock, first cutting a line torn by a
        killed writer, and make it durable."""
        from .tradeoff import append_row, drop_torn_tail

        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f, locked(f):
            drop_torn_tail(self.path)
            f.seek(0, os.SEEK_END)
            append_row(f, row)

    def claimed(self, jobs: Iterable, job_key: Callable) -> Iterator:
        """The jobs whose rows are not in the table, each yielded while this process holds its
        lease (released when the caller asks for the next one). Jobs leased by another process
        come last, after waiting for that process to finish them or die."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "results.lock", "ab") as lock:
            later = []
            for job in jobs:
                if self._lease(lock, job_key(job), wait=False):
                    yield from self._if_not_done(lock, job, job_key)
                else:
                    later.append(job)
            for job in later:
                self._lease(lock, job_key(job), wait=True)
                yield from self._if_not_done(lock, job, job_key)

    def _if_not_done(self, lock, job, job_key) -> Iterator:
        try:
            if job_key(job) not in self.done():
                yield job
        finally:
            self._release(lock, job_key(job))

    @staticmethod
    def _byte(key: Hashable) -> int:
        return int(hashlib.sha256(repr(key).encode()).hexdigest()[:12], 16)

    def _lease(self, lock, key: Hashable, wait: bool) -> bool:
        if fcntl is None:
            return True
        flags = fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.lockf(lock.fileno(), flags, 1, self._byte(key))
        except (BlockingIOError, PermissionError):
            return False
        return True

    def _release(self, lock, key: Hashable) -> None:
        if fcntl is not None:
            fcntl.lockf(lock.fileno(), fcntl.LOCK_UN, 1, self._byte(key))
