"""A single-node SLURM cluster for the tests: bring it up, tear it down, link the `slurm` profile.

The cluster itself is made by `.ci/slurm/up.sh` (packages, configuration, daemons) and stopped by
`.ci/slurm/down.sh` (by the PIDs in the daemons' PID files). This module decides whether a test may
skip: only where SLURM cannot be installed (not root, no apt-get, the install failed) and only outside
CI; with `CI=true` every failure to bring the cluster up fails the test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UP_SCRIPT = REPO / ".ci" / "slurm" / "up.sh"
DOWN_SCRIPT = REPO / ".ci" / "slurm" / "down.sh"
PROFILE_DIR = REPO / "profiles" / "slurm"
PROFILE_LINK = Path.home() / ".config" / "snakemake" / "slurm"
#: up.sh's exit status for "SLURM cannot be installed on this machine".
CANNOT_INSTALL = 3


@dataclass
class SlurmCluster:
    """A cluster the tests submit to.

    `pid_files` is empty when the cluster was already running (then the tests leave it running).
    """

    partition: str
    account: str
    state_dir: Path | None = None
    pid_files: list[Path] = field(default_factory=list)

    @property
    def started_here(self) -> bool:
        return bool(self.pid_files)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def sinfo_answers() -> bool:
    """True when a SLURM controller answers and lists at least one usable node."""
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return False
    states = out.stdout.split()
    return out.returncode == 0 and any(
        s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states
    )


def _unavailable(reason: str) -> None:
    """Skip (outside CI) or fail (in CI) the tests that need the cluster."""
    if in_ci():
        pytest.fail(
            f"SLURM is required in CI (CI=true) but could not be brought up: {reason}",
            pytrace=False,
        )
    pytest.skip(f"SLURM unavailable: {reason}")


def bring_up(state_dir: Path) -> SlurmCluster:
    """Return the running cluster, starting one with up.sh when `sinfo` does not answer.

    Partition and account of an already running cluster come from TIKMIX_SLURM_PARTITION and
    TIKMIX_SLURM_ACCOUNT (default "tikmix", the names up.sh creates).
    """
    if sinfo_answers():
        return SlurmCluster(
            partition=os.environ.get("TIKMIX_SLURM_PARTITION", "tikmix"),
            account=os.environ.get("TIKMIX_SLURM_ACCOUNT", "tikmix"),
        )
    if os.geteuid() != 0:
        _unavailable("starting a test cluster needs root (apt-get install, daemons)")
    result = subprocess.run(
        ["bash", str(UP_SCRIPT), str(state_dir)], capture_output=True, text=True, timeout=900
    )
    output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    if result.returncode == CANNOT_INSTALL:
        _unavailable(f"{UP_SCRIPT} could not install SLURM:\n{output}")
    if result.returncode != 0:
        pytest.fail(f"{UP_SCRIPT} failed ({result.returncode}):\n{output}", pytrace=False)
    pid_files = [Path(p) for p in (state_dir / "pidfiles").read_text().split()]
    return SlurmCluster("tikmix", "tikmix", state_dir, pid_files)


def tear_down(cluster: SlurmCluster) -> dict[Path, int]:
    """Stop the daemons this session started with down.sh; return {PID file: PID} of the stopped.

    Raises AssertionError when down.sh fails or a recorded PID is still alive afterwards.
    """
    pids = {f: int(f.read_text()) for f in cluster.pid_files if f.exists()}
    result = subprocess.run(
        ["bash", str(DOWN_SCRIPT), str(cluster.state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{DOWN_SCRIPT} failed:\n{result.stdout}\n{result.stderr}"
    alive = {f: pid for f, pid in pids.items() if pid_alive(pid)}
    assert not alive, f"daemons still running after {DOWN_SCRIPT}: {alive}\n{result.stdout}"
    return pids


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (exited, not yet reaped by its parent)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def link_profile() -> Path:
    """Make the bare `--profile slurm` resolve to this repository's profiles/slurm.

    Snakemake looks for a bare profile name in the working directory and in
    ~/.config/snakemake/; the repository's set-up links ~/.config/snakemake/slurm to profiles/slurm.
    A link to another checkout (e.g. CI's fresh clone beside a developer's) is re-pointed here; a real
    directory there is a user's own profile and is left alone (AssertionError).
    """
    if PROFILE_LINK.is_symlink():
        if PROFILE_LINK.resolve() == PROFILE_DIR.resolve():
            return PROFILE_LINK
        PROFILE_LINK.unlink()
    elif PROFILE_LINK.exists():
        raise AssertionError(
            f"{PROFILE_LINK} is a directory, not the link to {PROFILE_DIR} that the tests need; "
            "move it away to run the SLURM tests"
        )
    PROFILE_LINK.parent.mkdir(parents=True, exist_ok=True)
    PROFILE_LINK.symlink_to(PROFILE_DIR, target_is_directory=True)
    return PROFILE_LINK


def sacct_jobs(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """Accounting records of the given job ids: {job id: {"State": ..., "AllocTRES": ...}}."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,AllocTRES"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    records = {}
    for line in out.splitlines():
        job_id, state, tres = line.split("|")
        records[job_id] = {"State": state, "AllocTRES": tres}
    return records


@pytest.fixture(scope="session", name="slurm_cluster")
def slurm_cluster_fixture():
    """The session's SLURM cluster; stopped at the end by PID when this session started it."""
    state_dir = Path(os.environ.get("TIKMIX_SLURM_DIR", "/tmp/tikmix-slurm"))
    cluster = bring_up(state_dir)
    yield cluster
    if cluster.started_here:
        tear_down(cluster)
