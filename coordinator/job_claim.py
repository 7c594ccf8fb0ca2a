"""One coordinator per job, and one configuration per run directory.

Two coordinators on one job overwrite each other's checkpoints; a job resubmitted with
changed hyper-parameters under its old name would resume with the new ones and mix two
configurations in one events.jsonl. So a coordinator *claims* a job before running it:

- an exclusive ``flock`` on ``{runs_dir}/{job}.lock`` (released by the kernel when the
  process dies, so a crash never leaves a stale lock), holding the holder's description
  so that the second coordinator can name it;
- ``{run_dir}/job.json``: the configuration the run directory belongs to. A different
  configuration under the same name is refused, unless a new run is asked for: then the
  old run directory is moved aside to ``{job}.run-N`` and the job starts afresh.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from coordinator.config import JobConfig, JobConfigError


class JobClaimed(JobConfigError):
    """The job is run by another coordinator, or its run directory has another config."""


@dataclass
class JobClaim:
    job: str
    lock_path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing drops the flock
            self.fd = -1


def holder_description(coordinator_id: str) -> str:
    return f"coordinator {coordinator_id!r} (pid {os.getpid()} on {socket.gethostname()})"


def claim(runs_dir: Path, job: str, holder: str) -> JobClaim:
    """Take the job's lock, or raise JobClaimed naming who holds it."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    path = runs_dir / f"{job}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise JobClaimed(f"job {job!r} is already run by {other} ({path})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.encode() + b"\n", 0)
    return JobClaim(job, path, fd)


def _fingerprint(config: JobConfig) -> dict[str, object]:
    return json.loads(config.model_dump_json())


def check_run_dir(run_dir: Path, config: JobConfig, *, new_run: bool) -> Path | None:
    """Refuse a changed config for an existing run directory, or (``new_run``) move it aside.

    Returns where the old run went when it was moved, else None. Call with the claim held.
    """
    recorded = run_dir / "job.json"
    mine = _fingerprint(config)
    moved: Path | None = None
    if run_dir.exists():
        try:
            theirs = json.loads(recorded.read_text(encoding="utf-8"))
        except FileNotFoundError:
            theirs = None  # a run directory from before job.json existed: resume as before
        except (OSError, ValueError) as exc:
            raise JobClaimed(
                f"{recorded}: unreadable ({exc}); move the run directory away"
            ) from exc
        if new_run:
            n = 1
            while (aside := run_dir.with_name(f"{run_dir.name}.run-{n}")).exists():
                n += 1
            run_dir.rename(aside)
            moved = aside
        elif theirs is not None and theirs != mine:
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise JobClaimed(
                f"job {config.name!r} already has a run in {run_dir} with another configuration "
                f"(changed: {', '.join(changed)}); submit it under a new name, or ask for a "
                "new run (--new-run) to move the old one aside"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not recorded.exists():
        recorded.write_text(json.dumps(mine, indent=1, sort_keys=True), encoding="utf-8")
    return moved
