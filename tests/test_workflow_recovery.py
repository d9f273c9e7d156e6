"""Failure recovery through the `snakemake` CLI: a gradient job killed mid-write, and a store
that lacks its completion mark.

Influence stores are written to a temporary sibling directory and renamed into place only once
their ``complete`` attribute is set (`tikmix.influence.store.write_store`). A job killed while
writing therefore leaves no store at its output path, only an unfinished temporary one, and a
store without the mark is refused by every reader with ``IncompleteStoreError``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import Workflow, describe, job_counts

from tikmix.influence.store import IncompleteStoreError, open_store

pytestmark = pytest.mark.workflow

#: Installed as ``sitecustomize`` in the killed run. Snakemake runs a rule's script in a fresh
#: Python process, so this is the way to reach the job's writer without touching the code under
#: test: the first process that opens a chunk file inside a store's temporary directory writes
#: its pid and the file to the marker and sleeps, so the test kills it at a known point mid-write
#: (a bare timer would almost always hit the gradient computation, which takes far longer than
#: writing the tiny model's store).
FREEZE_WRITER = """
import os
import sys
import time

_MARKER = os.environ.get("TIKMIX_TEST_FREEZE_MARKER")


def _freeze_store_writer(event, args):
    if event != "open" or not isinstance(args[0], (str, os.PathLike)):
        return
    path = os.fspath(args[0])
    chunk = f"{os.sep}c{os.sep}"
    if isinstance(path, str) and ".zarr.tmp-" in path and chunk in path:
        if not os.path.exists(_MARKER):
            with open(_MARKER + ".part", "w") as marker:
                marker.write(f"{os.getpid()}\\n{path}\\n")
            os.replace(_MARKER + ".part", _MARKER)
            time.sleep(600)


if _MARKER:
    sys.addaudithook(_freeze_store_writer)
"""


def _first(path: Path) -> str:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))[0]


def _assert_same_store(path: Path, reference: Path) -> None:
    store, expected = open_store(path), open_store(reference)
    assert store.names == expected.names
    for key in ("n_tokens", "n_sequences", "sequence_range", "checkpoint", "domain"):
        assert store.attrs.get(key) == expected.attrs.get(key), key
    for name in expected.names:
        np.testing.assert_array_equal(store[name], expected[name], err_msg=name)


def _wait_for_frozen_writer(marker: Path, process: subprocess.Popen, log: Path) -> tuple[int, Path]:
    deadline = time.monotonic() + 600
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(
                f"snakemake ended ({process.returncode}) before writing a store:\n"
                f"{log.read_text()[-6000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no store writer reached a chunk within 600 s:\n{log.read_text()[-6000:]}")
        time.sleep(0.1)
    pid, chunk = marker.read_text().split("\n")[:2]
    return int(pid), Path(chunk)


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def gradient_part(completed_workflow) -> tuple[str, str, str]:
    """(checkpoint, domain, output path of its shard 0) of the completed run."""
    influence = completed_workflow.workdir / "results/influence"
    ckpt = _first(influence)
    domain = _first(influence / ckpt / "grads")
    return ckpt, domain, f"results/influence/{ckpt}/grads/{domain}/part-0.zarr"


def test_gradient_job_killed_mid_write_reruns_to_the_clean_result(
    completed_workflow, gradient_part, tmp_path
):
    """SIGKILL a `domain_gradients` job while it writes its store, then rerun the workflow.

    The run is set back to before the part and what consumes it were computed (their outputs
    deleted), as in a first run killed midway. The killed job leaves an unfinished temporary
    store and nothing at its output path, so no consumer runs on it; after `--unlock` the next
    run recomputes the part, and its store, the domain's reduction and the influence matrix
    equal the clean run's.
    """
    ckpt, domain, part = gradient_part
    flow = completed_workflow.copy(tmp_path / "work")
    target = f"results/influence/{ckpt}/influence.csv"
    for job in flow.plan(target, "--forcerun", part):
        for output in job.outputs:
            _remove(flow.workdir / output)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FREEZE_WRITER)
    marker = tmp_path / "frozen-writer"
    env = flow.environment(TIKMIX_TEST_FREEZE_MARKER=str(marker))
    env["PYTHONPATH"] = f"{hook}{os.pathsep}{env['PYTHONPATH']}"
    log = tmp_path / "killed-run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            flow.command(target),
            env=env,
            cwd=flow.workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    writer = None
    try:
        writer, chunk = _wait_for_frozen_writer(marker, process, log)
    finally:
        if writer is not None:
            _kill(writer)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    final = flow.workdir / part
    partial = sorted(final.parent.glob(f".{final.name}.tmp-*"))
    print(f"killed pid {writer} writing {chunk}; left behind: {[p.name for p in partial]}")
    assert len(partial) == 1 and partial[0] in (flow.workdir / chunk).parents, (partial, chunk)
    with pytest.raises(IncompleteStoreError, match="is incomplete"):
        open_store(partial[0])
    with pytest.raises(IncompleteStoreError):
        open_store(final)

    reduced = f"results/influence/{ckpt}/grads/{domain}.zarr"
    assert not (flow.workdir / reduced).exists() and not (flow.workdir / target).exists()

    flow.snakemake("--unlock")
    planned = flow.plan(target)
    print(f"after the kill, {target} needs:\n{describe(planned)}")
    assert [str(job) for job in planned if job.rule == "domain_gradients"] == [
        f"domain_gradients[ckpt={ckpt},domain={domain},shard=0]"
    ]
    assert job_counts(planned).get("influence_matrix") == 1
    flow.snakemake(target)
    assert not list(final.parent.glob(f".{final.name}.tmp-*")), "the killed writer's leftover"

    clean = completed_workflow.workdir
    _assert_same_store(final, clean / part)
    _assert_same_store(flow.workdir / reduced, clean / reduced)
    pd.testing.assert_frame_equal(
        pd.read_csv(flow.workdir / target, index_col=0), pd.read_csv(clean / target, index_col=0)
    )


def test_store_without_completion_mark_is_refused_downstream(
    completed_workflow, gradient_part, tmp_path
):
    """A part-store whose arrays are all there but whose ``complete`` attribute is not (its
    writer died before the mark) fails the reduction that reads it, naming the store, and the
    reduction leaves no output behind."""
    ckpt, domain, part = gradient_part
    flow: Workflow = completed_workflow.copy(tmp_path / "work")
    metadata = flow.workdir / part / "zarr.json"
    document = json.loads(metadata.read_text())
    del document["attributes"]["complete"]
    metadata.write_text(json.dumps(document))

    reduced = f"results/influence/{ckpt}/grads/{domain}.zarr"
    result = flow.snakemake(reduced, "--forcerun", reduced, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "IncompleteStoreError" in output and f"{part} is incomplete" in output, output[-4000:]
    assert not (flow.workdir / reduced).exists()
