"""Fault injection through the `snakemake` CLI: never a stale result.

* A setting changes and every rerun job it started is killed (SIGKILL, as a cluster does at a
  time limit): Snakemake has deleted those jobs' outputs, and with them the record of the change,
  so the next run finds them missing and redoes them and, as "input updated by another job", the
  chain below them; its results equal an uninterrupted run's, bit for bit.
* A user input edited in place, the prior weights file or a checkpoint's ``model.safetensors``,
  changes the ``upstream`` param (tikmix/provenance.py) of exactly the jobs that read it: they
  and what follows rerun (the dry-run plan equals ``--forcerun`` of those jobs).
* A write that runs out of disk space leaves no store, partial or temporary, that a reader or a
  rerun would trust.

Processes are stopped through a ``sitecustomize`` hook (as in test_workflow_recovery.py), which
is the way to reach a job's Python process without touching the code under test.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import zarr.storage._local
from workflow_helpers import Workflow, assert_plan_is_forcerun_of, describe, job_counts

from tikmix.influence.store import IncompleteStoreError, open_store, write_store

pytestmark = pytest.mark.workflow

#: Freezes every job of the rule named by TIKMIX_TEST_FREEZE_RULE at its start (after Snakemake
#: deleted its old outputs), writing its pid under TIKMIX_TEST_FREEZE_DIR.
FREEZE_RULE = """
import os
import sys
import time

_RULE = os.environ.get("TIKMIX_TEST_FREEZE_RULE")
if _RULE and sys.argv and sys.argv[0].endswith(f".{_RULE}.py"):
    with open(os.path.join(os.environ["TIKMIX_TEST_FREEZE_DIR"], str(os.getpid())), "w"):
        pass
    time.sleep(600)
"""

#: Fails every write of a chunk into a temporary store with ENOSPC, as a full disk does.
DISK_FULL = """
import errno
import os
import sys


def _disk_full(event, args):
    if event == "open" and isinstance(args[0], str) and ".zarr.tmp-" in args[0]:
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
        if f"{os.sep}c{os.sep}" in args[0] and ("w" in mode or "a" in mode):
            raise OSError(errno.ENOSPC, "No space left on device", args[0])


if os.environ.get("TIKMIX_TEST_DISK_FULL"):
    sys.addaudithook(_disk_full)
"""


def _hooked_environment(flow: Workflow, tmp_path: Path, hook: str, **extra: str) -> dict:
    folder = tmp_path / "hook"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(hook)
    env = flow.environment(**extra)
    env["PYTHONPATH"] = f"{folder}{os.pathsep}{env['PYTHONPATH']}"
    return env


def _last_checkpoint(flow: Workflow) -> str:
    return sorted(p.name for p in (flow.workdir / "results/influence").iterdir())[-1]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _assert_same_store(path: Path, reference: Path) -> None:
    store, expected = open_store(path), open_store(reference)
    assert store.names == expected.names
    for key in ("n_tokens", "n_sequences", "sequence_range"):
        assert store.attrs.get(key) == expected.attrs.get(key), key
    for name in expected.names:
        np.testing.assert_array_equal(store[name], expected[name], err_msg=name)


def test_killed_rerun_after_a_setting_change_leaves_nothing_stale(completed_workflow, tmp_path):
    """Change influence.domain_tokens, start the rerun with a core per gradient job, SIGKILL
    every started gradient job and Snakemake: the next dry-run still plans the chain, and the
    recovered results equal those of an uninterrupted run with the new setting."""
    flow = completed_workflow.copy(tmp_path / "killed")
    ckpt = _last_checkpoint(flow)
    targets = [f"results/influence/{ckpt}/influence.csv"]
    config = flow.config()
    old_tokens = config["influence"]["domain_tokens"]
    config["influence"]["domain_tokens"] = old_tokens // 2
    flow.write_config(config)
    started = [job for job in flow.plan(*targets) if job.rule == "domain_gradients"]
    assert started and all(job.reason.startswith("Params have changed") for job in started)

    frozen = tmp_path / "frozen"
    frozen.mkdir()
    env = _hooked_environment(
        flow,
        tmp_path,
        FREEZE_RULE,
        TIKMIX_TEST_FREEZE_RULE="domain_gradients",
        TIKMIX_TEST_FREEZE_DIR=str(frozen),
    )
    log = tmp_path / "killed-run.log"
    command = flow.command(*targets)
    command[command.index("--cores") + 1] = str(len(started))
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=flow.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while len(list(frozen.iterdir())) < len(started):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the gradient jobs did not all start:\n{log.read_text()[-6000:]}")
            time.sleep(0.1)
    finally:
        for pid in frozen.iterdir():
            _kill(int(pid.name))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    print(
        f"killed {len(started)} domain_gradients jobs: {sorted(p.name for p in frozen.iterdir())}"
    )
    parts = [flow.workdir / job.outputs[0] for job in started]
    assert not any(part.exists() for part in parts), "Snakemake deletes a started job's outputs"

    flow.snakemake("--unlock")
    replanned = flow.plan(*targets)
    print(f"after the kill:\n{describe(replanned)}")
    counts = job_counts(replanned)
    assert counts.get("domain_gradients") == len(started), counts
    assert counts.get("reduce_domain_gradients") == len(started), counts
    assert counts.get("influence_matrix") == 1, counts
    flow.snakemake(*targets)

    clean = completed_workflow.copy(tmp_path / "clean")
    clean.write_config(config)
    clean.snakemake(*targets)
    for target in targets:
        assert (flow.workdir / target).read_bytes() == (clean.workdir / target).read_bytes(), target
    for job in started:
        reduced = f"results/influence/{ckpt}/grads/{job.wildcards['domain']}.zarr"
        _assert_same_store(flow.workdir / reduced, clean.workdir / reduced)
        stale = open_store(completed_workflow.workdir / reduced).attrs["n_tokens"]
        assert open_store(flow.workdir / reduced).attrs["n_tokens"] != stale


@pytest.fixture(scope="module")
def frozen_inputs(completed_workflow, tmp_path_factory) -> Workflow:
    """The completed run given its tokenizer, checkpoints and a prior weights file as user inputs.

    The switch is recorded with `--touch` (no job runs); copy before changing.
    """
    flow = completed_workflow.copy(tmp_path_factory.mktemp("frozen_inputs") / "work")
    config = flow.config()
    frozen = flow.workdir / "frozen"
    frozen.mkdir()
    (frozen / "tokenizer.json").write_bytes(
        (flow.workdir / "results/tokenizer/tokenizer.json").read_bytes()
    )
    prior = json.loads((flow.workdir / "results/mixtures/prior.json").read_text())["weights"]
    (frozen / "prior.json").write_text(json.dumps(prior))
    config["tokenizer"]["path"] = "frozen/tokenizer.json"
    config["stage1"] = {**config["stage1"], "prior": "frozen/prior.json"}
    names = sorted(p.name for p in (flow.workdir / "results/checkpoints").iterdir())
    config["checkpoints"] = {name: f"results/checkpoints/{name}" for name in names}
    flow.write_config(config)
    flow.snakemake("--touch")
    assert flow.plan() == [], "recording the user inputs left jobs to do"
    return flow


def test_prior_file_edit_reruns_exactly_its_dependants(frozen_inputs, tmp_path):
    flow = frozen_inputs.copy(tmp_path / "work")
    forced = flow.plan("--forcerun", "prior_mixture")
    path = flow.workdir / "frozen/prior.json"
    weights = json.loads(path.read_text())
    first = sorted(weights)[0]
    weights = {d: (2.0 if d == first else 1.0) * w for d, w in weights.items()}
    path.write_text(json.dumps({d: w / sum(weights.values()) for d, w in weights.items()}))
    planned = flow.plan()
    print(f"after editing the prior file:\n{describe(planned)}")
    roots = [job for job in planned if job.rule == "prior_mixture"]
    assert len(roots) == 1
    assert job_counts(planned).get("ekfac_covariances"), "the EK-FAC fit samples the prior"
    assert_plan_is_forcerun_of(planned, forced, roots)


def test_checkpoint_weights_overwritten_in_place_rerun_exactly_their_dependants(
    frozen_inputs, tmp_path
):
    """Same file size, same safetensors header, same directory mtime: only the bytes differ."""
    flow = frozen_inputs.copy(tmp_path / "work")
    ckpt = sorted(flow.config()["checkpoints"])[0]
    directory = flow.workdir / flow.config()["checkpoints"][ckpt]
    reading = [
        job
        for job in flow.plan("--forceall")
        if str(directory) in map(str, (flow.workdir / path for path in job.inputs))
    ]
    assert reading, "no job reads the checkpoint"
    forced = flow.plan("--forcerun", *(output for job in reading for output in job.outputs))

    weights = directory / "model.safetensors"
    stat, size = directory.stat(), weights.stat().st_size
    tensors = safetensors.torch.load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    safetensors.torch.save_file(tensors, weights, metadata={"format": "pt"})
    os.utime(directory, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == size
    planned = flow.plan()
    print(
        f"jobs reading {ckpt}:\n{describe(reading)}after overwriting its weights:\n"
        f"{describe(planned)}"
    )
    roots = [job for job in planned if job.key in {j.key for j in reading}]
    assert len(roots) == len(reading)
    assert not [job for job in planned if job.wildcards.get("ckpt") not in (None, ckpt)]
    assert_plan_is_forcerun_of(planned, forced, roots)


def test_disk_full_store_write_leaves_the_old_store_and_no_partial(tmp_path, monkeypatch):
    """Library level: ENOSPC on the third chunk write keeps the complete store as it was."""
    path = tmp_path / "grads.zarr"
    old = {"a": np.arange(6.0), "b": np.ones((2, 3))}
    write_store(path, old.items(), {"kind": "test"})
    real_put = zarr.storage._local._put

    def disk_full_after(writes: int):
        calls = []

        def put(*args, **kwargs):
            calls.append(args[0])
            if len(calls) > writes:
                raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))
            return real_put(*args, **kwargs)

        monkeypatch.setattr(zarr.storage._local, "_put", put)

    disk_full_after(2)
    with pytest.raises(OSError, match="No space left"):
        write_store(path, {"a": np.zeros(6), "b": np.zeros((2, 3))}.items(), {"kind": "test"})
    disk_full_after(2)
    # A sibling chunk write still in flight when the failure is cleaned up (Zarr writes chunks
    # from a thread pool) recreates the temporary store after its first removal.
    late_writes = []

    def put_late(*args, **kwargs):
        if not late_writes:
            target = Path(args[0])
            timer = threading.Timer(0.05, lambda: real_put(target.with_name("late"), *args[1:]))
            late_writes.append(timer)
            timer.start()
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    with pytest.raises(OSError, match="No space left"):
        write_store(tmp_path / "new.zarr", {"a": np.zeros(6)}.items(), {"kind": "test"})
    monkeypatch.setattr(zarr.storage._local, "_put", put_late)
    with pytest.raises(OSError, match="No space left"):
        write_store(tmp_path / "late.zarr", {"a": np.zeros(6)}.items(), {"kind": "test"})
    late_writes[0].join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grads.zarr"]
    store = open_store(path)
    for name, array in old.items():
        np.testing.assert_array_equal(store[name], array)


def test_disk_full_gradient_job_leaves_no_trusted_store(completed_workflow, tmp_path):
    """Workflow level: a reduction whose chunk writes fail with ENOSPC fails, leaves neither its
    output nor a temporary store, and the rerun once space returns equals the clean result."""
    flow = completed_workflow.copy(tmp_path / "work")
    ckpt = _last_checkpoint(flow)
    domain = sorted(
        p.name
        for p in (flow.workdir / f"results/influence/{ckpt}/grads").iterdir()
        if p.is_dir() and not p.name.endswith(".zarr")
    )[0]
    reduced = f"results/influence/{ckpt}/grads/{domain}.zarr"
    env = _hooked_environment(flow, tmp_path, DISK_FULL, TIKMIX_TEST_DISK_FULL="1")
    result = subprocess.run(
        flow.command(reduced, "--forcerun", reduced),
        env=env,
        cwd=flow.workdir,
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "No space left on device" in output, output[-4000:]
    final = flow.workdir / reduced
    assert not final.exists()
    assert not list(final.parent.glob(f".{final.name}.tmp-*")), "a partial store was left"
    with pytest.raises(IncompleteStoreError):
        open_store(final)
    flow.snakemake(reduced)
    _assert_same_store(final, completed_workflow.workdir / reduced)
