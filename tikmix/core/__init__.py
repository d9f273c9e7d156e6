"""Ideas every stage shares, each in one place (``docs/architecture.md``, "Shared types").

* :mod:`tikmix.core.atomic` — the only way results are written: a temporary sibling renamed
  into place, for files and for directories (Zarr stores, checkpoints);
* :mod:`tikmix.core.compute` — the ``{tokens, flops}`` record every job writes;
* :mod:`tikmix.core.mixture` — the mixture document: validate, build, read, write, export;
* :mod:`tikmix.core.conventions` — the sign convention and the eq. 6 normalisation;
* :mod:`tikmix.core.digest` — the sha256 of a file (or of a checkpoint's files);
* :mod:`tikmix.core.gradient_pass` — the settings every gradient pass over a checkpoint reads;
* :mod:`tikmix.core.paper` — the paper's reference numbers the checks and the report cite;
* :mod:`tikmix.core.tracked_modules` — the default tracked layers and the families they cannot track;
* :mod:`tikmix.core.errors` — :class:`~tikmix.core.errors.ConfigError`, a study's bad config key.

Nothing here imports torch or another ``tikmix`` package, so every layer (data → models →
influence → mixing → analysis → report) may import it.
"""
