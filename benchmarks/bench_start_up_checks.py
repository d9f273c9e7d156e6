"""Benchmark: what the start-up read of every input row costs, once and on later invocations.

The workflow reads every row of every domain and task file while Snakemake parses it
(:func:`tikmix.validation.check_data_files`). This writes a synthetic corpus of ``--mb`` MB per
format (jsonl, jsonl.gz, parquet, npy; documents of ~2 kB, the size of a web page), then times,
per format, in one process: the content digest alone (sha256,
:class:`tikmix.provenance.FileDigests`, which every invocation needs anyway for the rerun
triggers), the full read alone, the first check (digest + full read, remembered), and a second
check from the caches (what every later dry run pays). MB are of the file on disk
(compressed for jsonl.gz and parquet). Run:

    PYTHONPATH=. .venv/bin/python benchmarks/bench_start_up_checks.py --mb 200
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write_corpus(root: Path, mb: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 6)) for _ in range(5000)]
    n_docs = mb * 1_000_000 // 2000
    texts = [" ".join(rng.choice(words, 285)) for _ in range(min(n_docs, 2000))]
    lines = b"".join(
        json.dumps({"text": texts[i % len(texts)], "id": i}).encode() + b"\n" for i in range(n_docs)
    )
    files = {"jsonl": root / "web.jsonl", "jsonl.gz": root / "web.jsonl.gz"}
    files["jsonl"].write_bytes(lines)
    files["jsonl.gz"].write_bytes(gzip.compress(lines, compresslevel=6))
    import pyarrow as pa
    import pyarrow.parquet as pq

    files["parquet"] = root / "web.parquet"
    pq.write_table(
        pa.table({"text": [texts[i % len(texts)] for i in range(n_docs)]}), files["parquet"]
    )
    files["npy"] = root / "web.npy"
    np.save(files["npy"], rng.integers(0, 32000, mb * 1_000_000 // 2, dtype=np.uint16))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MB of text per format")
    args = parser.parse_args()
    from tikmix.provenance import FileDigests
    from tikmix.validation import CheckedFiles, check_data_files

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_corpus(root, args.mb)
        os.chdir(root)  # the caches live under .snakemake/ of the working directory
        print(
            f"{'format':10} {'MB':>7} {'digest MB/s':>12} {'read MB/s':>10} "
            f"{'first check MB/s':>17} {'cached s':>9}"
        )
        for fmt, path in files.items():
            mb = path.stat().st_size / 1e6
            domains = {"web": {"paths": [str(path)]}}
            vocab = 32000 if fmt == "npy" else None
            start = time.perf_counter()
            FileDigests(cache=None).file(path)
            digest = time.perf_counter() - start
            start = time.perf_counter()
            check_data_files(domains, {}, vocab, CheckedFiles(cache=None))
            read = time.perf_counter() - start
            start = time.perf_counter()
            check_data_files(domains, {}, vocab, CheckedFiles())
            first = time.perf_counter() - start
            start = time.perf_counter()
            check_data_files(domains, {}, vocab, CheckedFiles())
            cached = time.perf_counter() - start
            print(
                f"{fmt:10} {mb:7.0f} {mb / digest:12.0f} {mb / read:10.0f} "
                f"{mb / first:17.0f} {cached:9.3f}"
            )


if __name__ == "__main__":
    main()
