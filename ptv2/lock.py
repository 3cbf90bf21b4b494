"""One process owns a run folder: `<run dir>/lock.json` names its pid, host, start and a heartbeat.

Taken before a run trains and released on every way out of it (done, failed, the checkpoint exit after
SIGTERM, Ctrl-C). Another process asking for the folder is told who holds it (`RunLocked`, exit 2), or waits
for it with `results.wait=true`. A lock is stale, and taken over, when its process is gone: on the same host
when its pid no longer runs (or runs another program: the start time differs); on another host, where the
pid cannot be checked (a Slurm requeue on a new node), when its heartbeat, refreshed every minute by a
daemon thread, is older than 10 minutes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

from ptv2.atomic import write_atomic
from ptv2.errors import UserError

LOCK_FILE = "lock.json"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
WAIT_POLL_S = 10.0


class RunLocked(UserError):
    """The run folder is held by a live process."""

    def __init__(self, directory: Path, holder: dict) -> None:
        super().__init__(f"run {directory} is being trained by {describe(holder)}: let it finish, or pass results.wait=true")
        self.directory, self.holder = directory, holder


def describe(holder: dict) -> str:
    """`pid 123 on host gpu7 since 2026-11-27T10:00:00+00:00`."""
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}"


def _proc_stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (Linux; [] elsewhere or when the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), which tells a pid reused by another process."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else None


def _new_owner() -> dict:
    now = time.time()
    return {
        "pid": os.getpid(), "host": socket.gethostname(), "pid_start": _process_start(os.getpid()),
        "started": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "heartbeat": now, "token": uuid.uuid4().hex,
    }


def _read(path: Path) -> dict | None:
    """The lock's content; None when there is no lock, {} when it is unreadable (then it counts as stale)."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def is_alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        try:
            return time.time() - float(holder.get("heartbeat", 0)) < STALE_AFTER_S
        except (TypeError, ValueError):
            return False
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    except PermissionError:  # another user's live process
        pass
    fields = _proc_stat(int(holder["pid"]))
    if fields and fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    started = holder.get("pid_start")
    return started is None or not fields or _process_start(int(holder["pid"])) == started


def holder_of(directory: Path) -> dict | None:
    """Who trains this run folder now (None when nobody does, or only a stale lock is left)."""
    holder = _read(directory / LOCK_FILE)
    return holder if holder and is_alive(holder) else None


def _create(path: Path, owner: dict) -> bool:
    """Create the lock, complete, unless one exists (a hard link is atomic, on NFS too)."""
    draft = path.with_name(f".{path.name}.{owner['token']}")
    draft.write_text(json.dumps(owner))
    try:
        os.link(draft, path)
        return True
    except FileExistsError:
        return False
    finally:
        draft.unlink(missing_ok=True)


def _break(path: Path, stale: dict) -> None:
    """Move a stale lock aside; if another process replaced it meanwhile, give that one back."""
    aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if (_read(aside) or {}).get("token") != stale.get("token"):
        with suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def acquire(directory: Path, wait: bool = False) -> dict:
    """Take the run folder's lock; RunLocked while a live process holds it (or wait for it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path, owner, told = directory / LOCK_FILE, _new_owner(), False
    while not _create(path, owner):
        holder = _read(path)
        if holder is None:  # released meanwhile
            continue
        if not is_alive(holder):
            _break(path, holder)
            continue
        if not wait:
            raise RunLocked(directory, holder)
        if not told:
            print(f"waiting (results.wait=true): {RunLocked(directory, holder)}", flush=True)
            told = True
        time.sleep(WAIT_POLL_S)
    return owner


def _heartbeat(path: Path, owner: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        if (_read(path) or {}).get("token") != owner["token"]:
            return  # judged stale and taken over: nothing of ours to refresh
        owner["heartbeat"] = time.time()
        with suppress(OSError):
            write_atomic(path, json.dumps(owner))


def release(directory: Path, owner: dict) -> None:
    path = directory / LOCK_FILE
    if (_read(path) or {}).get("token") == owner["token"]:
        path.unlink(missing_ok=True)


@contextmanager
def hold(directory: Path, wait: bool = False, enabled: bool = True) -> Iterator[None]:
    """Own ``directory`` while the block runs (``enabled=False``: torchrun's other ranks, rank 0 owns it)."""
    if not enabled:
        yield
        return
    owner = acquire(directory, wait)
    stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat, args=(directory / LOCK_FILE, owner, stop), daemon=True, name="ptv2-lock-heartbeat"
    )
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        release(directory, owner)
