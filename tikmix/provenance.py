"""Every rule's ``upstream`` param: the content digest of the job's user inputs.

Snakemake reruns a job when its params changed, when an input is newer than its outputs, when
its code changed, and when a job it reads from runs ("input updated by another job"); the last
carries a change down the whole chain, even after a rerun was killed and took the record of the
change with its deleted outputs (docs/cluster.md). What none of these sees is a user input whose
bytes change while its modification time does not move forward: a checkpoint's weights
overwritten in place inside its directory (Snakemake compares a directory by its own mtime), or a
file copied in with its old mtime. So every rule carries
``upstream=user_inputs_digest("<rule>")`` (common.smk): a digest of the bytes of those of the
job's inputs that no rule writes (domain and task files, a tokenizer, a prior file, checkpoint
directories). A rule's settings reach it through its own params; the workflow's outputs (under
``results/``) through "input updated by another job".

The job's ``code`` input (its script and the ``tikmix`` modules it imports) is left out: Snakemake's
code trigger sees an edit of the script, and its mtime trigger an edit of a module.

The param takes only ``wildcards`` and finds the job's inputs through its rule: Snakemake leaves a
params function that takes ``input`` out of the params trigger (a "derived" param), so
``lambda wildcards, input: ...`` would never rerun anything.

Hashing a large file on every Snakemake invocation would make a no-op rerun slow, so a file's
digest is cached under ``.snakemake/`` keyed by its size, modification time and inode: it is
recomputed once after any write, which changes at least one of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tikmix.core.atomic import write_text_atomic
from tikmix.core.digest import file_sha256
from tikmix.workflow import PROVENANCE_PARAM

DIGEST_CACHE = ".snakemake/tikmix/file_digests.json"
#: The named input of every rule that holds its code (common.smk's ``code()``).
CODE_INPUT = "code"


def settings_digest(*parts: Any) -> str:
    """A short, stable digest of JSON-able settings (dict key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FileDigests:
    """Content digests of files, cached by (size, mtime_ns, inode) in a JSON file."""

    def __init__(self, cache: str | Path | None = DIGEST_CACHE):
        self.cache = Path(cache) if cache is not None else None
        self._entries: dict[str, list] = {}
        self._dirty = False
        if self.cache is not None and self.cache.is_file():
            try:
                self._entries = json.loads(self.cache.read_text())
            except (OSError, ValueError):
                self._entries = {}

    def file(self, path: str | Path) -> str:
        """sha256 of the file's bytes (recomputed only when its size, mtime or inode changed)."""
        path = Path(path)
        stat = path.stat()
        key = os.path.abspath(path)
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self._entries.get(key)
        if entry is not None and entry[:3] == stamp:
            return entry[3]
        digest = file_sha256(path)
        self._entries[key] = [*stamp, digest]
        self._dirty = True
        return digest

    def directory(self, path: str | Path) -> dict[str, str]:
        """Every regular file under a directory (a checkpoint) by relative name -> content digest.

        Hidden files (Snakemake's ``.snakemake_timestamp``) are left out: they carry no content.
        """
        root = Path(path)
        found = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    file = Path(dirpath) / name
                    found[str(file.relative_to(root))] = self.file(file)
        return found

    def content(self, path: str | Path) -> str | dict[str, str]:
        """The digest of a file, or of every file under a directory."""
        return self.directory(path) if os.path.isdir(path) else self.file(path)

    def save(self) -> None:
        """Write the cache atomically (concurrent writers lose entries, never corrupt it)."""
        if self.cache is None or not self._dirty:
            return
        try:
            write_text_atomic(self.cache, json.dumps(self._entries))
            self._dirty = False
        except OSError:
            pass  # a cache only: a read-only working directory recomputes next time


class UserInputsDigest:
    """Builds the ``upstream`` param of each rule of a Snakemake ``workflow``.

    ``digest = UserInputsDigest(workflow)``; in a rule, ``params: upstream=digest("rule_name")``.
    The param's value is :func:`settings_digest` of ``{path: content digest}`` over the job's
    inputs that no rule of the workflow produces, its ``code`` input left out.
    """

    def __init__(self, workflow: Any, digests: FileDigests | None = None):
        self.workflow = workflow
        self.digests = FileDigests() if digests is None else digests
        self._produced: dict[str, bool] = {}

    def __call__(self, rule_name: str) -> Callable[[Any], str]:
        def upstream(wildcards: Any) -> str:
            return self.digest(rule_name, dict(wildcards.items()))

        upstream.rule_name = rule_name
        return upstream

    def user_inputs(self, rule_name: str, wildcards: dict[str, str]) -> list[str]:
        """The job's inputs that no rule writes, without its code."""
        inputs = self.workflow.get_rule(rule_name).expand_input(wildcards)[0]
        code = set(inputs.get(CODE_INPUT, []))
        return sorted({str(path) for path in inputs if path not in code and not self._written(path)})

    def digest(self, rule_name: str, wildcards: dict[str, str]) -> str:
        found = {path: self.digests.content(path) for path in self.user_inputs(rule_name, wildcards)}
        self.digests.save()
        return settings_digest(found)

    def _written(self, path: str) -> bool:
        if path not in self._produced:
            self._produced[path] = any(rule.is_producer(path) for rule in self.workflow.rules)
        return self._produced[path]

    def rules_without_it(self) -> list[str]:
        """Rules that run jobs but whose ``upstream`` param is not built for them here."""
        return [
            rule.name
            for rule in self.workflow.rules
            if rule.output
            and getattr(getattr(rule.params, PROVENANCE_PARAM, None), "rule_name", None)
            != rule.name
        ]
