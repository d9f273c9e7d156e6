"""The ``tikmix`` command line (``python -m tikmix SUBCOMMAND ...``).

Each subcommand is registered by one ``_add_*`` function listed in :data:`SUBCOMMANDS`; it
adds its parser and sets ``handler`` to a function ``(args) -> int``. Library errors about bad
input (:class:`ValueError`, including infeasible mixture problems, and
:class:`FileNotFoundError`) are printed as one
``tikmix SUBCOMMAND: error: ...`` line with exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence

from tikmix import __version__
from tikmix.config import MIN_SURROGATE_ROWS
from tikmix.core.digest import file_sha256
from tikmix.core.settings import (
    AvailabilitySettings,
    Normalisation,
    Settings,
    TikmixDSettings,
    TikmixMBox,
    TikmixMGate,
    TikmixMSearch,
)

#: Older spellings of options built from settings fields, still accepted.
_ALIASES = {"top_k": ("--topk",)}


def _add_settings_arguments(parser: argparse.ArgumentParser, group: type[Settings]) -> None:
    """One option per field of a settings group (``--field-name``), its default and help
    from the field: the dataclass is the one home of both."""
    for item in dataclasses.fields(group):
        default = item.default
        parser.add_argument(
            f"--{item.name.replace('_', '-')}",
            *_ALIASES.get(item.name, ()),
            dest=item.name,
            type=type(default),
            choices=item.metadata.get("choices"),
            default=default,
            help=f"{item.metadata['help']} (default %(default)s)",
        )


def _settings(group: type[Settings], args: argparse.Namespace, **given):  # noqa: ANN202
    """The settings group from its parsed options (``given`` overrides fields)."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(group) if f.name not in given
    }
    return group(**values, **given)


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    from tikmix.core.mixture import FORMATS

    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="file to write the mixture to")
    out.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="json: canonical document with provenance and solver report (default); "
        "yaml: plain domain: weight mapping; csv: domain,weight rows; "
        "megatron: one Megatron-LM --data-path line (needs --prefixes)",
    )
    out.add_argument(
        "--digits",
        type=int,
        default=8,
        help="round weights to this many decimals, the largest taking the remainder so they "
        "sum to 1 (default 8); the solver report describes the unrounded optimum",
    )
    out.add_argument(
        "--prefixes",
        help="JSON/YAML mapping domain -> list of Megatron shard prefixes (weight split "
        "equally) or domain -> {prefix: tokens} (split by tokens); for --format megatron",
    )
    out.add_argument(
        "--stage-tokens",
        type=int,
        help="tokens of the next training stage, recorded in the output (and used by --available)",
    )


def _write_output(
    args: argparse.Namespace, weights, method: str, provenance, solver, availability=None
) -> None:
    from tikmix.core.mixture import load_mapping, write_mixture
    from tikmix.mixing.documents import cli_document

    document = cli_document(
        weights,
        method=method,
        stage_tokens=args.stage_tokens,
        provenance=provenance,
        solver=solver,
        digits=args.digits,
        availability=availability,
    )
    prefixes = load_mapping(args.prefixes) if args.prefixes else None
    write_mixture(args.out, document, args.format, prefixes=prefixes, digits=args.digits)


def _add_mix_d(subparsers) -> None:
    parser = subparsers.add_parser(
        "mix-d",
        help="TiKMiX-D: the mixture maximising the influence benefit (paper eq. 7)",
        description="Solve TiKMiX-D: minimise alpha*std(P) - beta*sum(P) - gamma*H(w) over "
        "mixtures w with B.w >= B.w_prior for every task, where P_i = (B w)_i / s_i, s_i the "
        "row's normaliser (the paper's max_j B_ij by default, see --normaliser) and B is the "
        "benefit matrix (benefit = -influence; larger is better). Solved as a convex conic "
        "program (Clarabel interior point): the global optimum for any alpha, beta, gamma >= 0.",
    )
    parser.add_argument(
        "--influence",
        required=True,
        help="benefit matrix CSV: first column task names, one column per domain",
    )
    parser.add_argument(
        "--prior",
        required=True,
        help="the current mixture for the Pareto constraint: 'uniform', 'natural[:TEMPERATURE]' "
        "(w ~ n^(1/T) over the --tokens counts), or a mixture file (domain -> weight, or a "
        "mixture document such as a previous output); the grammar of the config's stage1.prior",
    )
    _add_tokens_argument(parser)
    _add_settings_arguments(parser, TikmixDSettings)
    _add_settings_arguments(parser, Normalisation)
    caps = parser.add_mutually_exclusive_group()
    caps.add_argument("--caps", help="JSON/YAML mapping domain -> upper bound on its weight")
    caps.add_argument(
        "--available",
        help="JSON/YAML mapping domain -> unique tokens; caps each weight at "
        "max(0, max_epochs * available - exposure) / stage_tokens (needs --stage-tokens)",
    )
    parser.add_argument(
        "--exposure",
        help="JSON/YAML mapping domain -> tokens of it already trained on (stage 1), counted "
        "by the caps with --available (default: unknown, the stage only)",
    )
    parser.add_argument(
        "--max-epochs",
        type=float,
        default=AvailabilitySettings.max_epochs,
        help="cumulative passes over a domain allowed, with --available "
        f"(default {AvailabilitySettings.max_epochs:g}, the workflow's mixing.max_epochs)",
    )
    _add_output_arguments(parser)
    parser.set_defaults(handler=_run_mix_d)


def _add_tokens_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tokens",
        help="JSON/YAML mapping domain -> tokens available to train on (for a natural prior)",
    )


def _prior(args: argparse.Namespace, domains):
    """The --prior mixture over ``domains`` (one grammar with the config's stage1.prior)."""
    from tikmix.core.mixture import load_mapping
    from tikmix.mixing.priors import build_prior

    tokens = load_mapping(args.tokens) if args.tokens else None
    return build_prior(args.prior, list(domains), tokens)


def _run_mix_d(args: argparse.Namespace) -> int:
    import pandas as pd

    from tikmix.core.mixture import MixtureInputError, load_mapping
    from tikmix.mixing.availability import UNKNOWN, Availability
    from tikmix.mixing.tikmix_d import solve_tikmix_d
    from tikmix.mixing.weights import read_influence_matrix

    B = read_influence_matrix(args.influence)
    prior = _prior(args, B.columns)
    caps, availability = None, None
    if args.caps:
        caps = pd.Series(load_mapping(args.caps), dtype=float)
    elif args.available:
        if args.stage_tokens is None:
            raise MixtureInputError("--available needs --stage-tokens")
        available = pd.Series(load_mapping(args.available), dtype=float).reindex(B.columns)
        exposure = (
            pd.Series(load_mapping(args.exposure), dtype=float).reindex(B.columns)
            if args.exposure
            else None
        )
        source = str(args.exposure) if args.exposure else UNKNOWN
        availability = Availability(available, exposure, source, args.stage_tokens, args.max_epochs)
        availability.check_feasible()
        caps = availability.caps
    result = solve_tikmix_d(
        B,
        prior,
        _settings(TikmixDSettings, args),
        normalisation=_settings(Normalisation, args),
        caps=caps,
    )
    provenance = {
        "influence": str(args.influence),
        "influence_sha256": file_sha256(args.influence),
        "prior": args.prior,
        "prior_weights": {d: float(v) for d, v in result.prior.items()},
        "caps": None if caps is None else {d: float(v) for d, v in caps.items()},
    }
    _write_output(
        args, result.weights, "tikmix_d", provenance, result.solver_report(), availability
    )
    return 0


def _add_mix_m(subparsers) -> None:
    parser = subparsers.add_parser(
        "mix-m",
        help="TiKMiX-M: surrogate-guided mixture search over measured runs (Algorithm 1)",
        description="TiKMiX-M, the same procedure as the workflow's: fit a LightGBM surrogate "
        f"(RegMix settings) to a table of mixtures and their measured response (at least "
        f"{MIN_SURROGATE_ROWS} rows), report its "
        "5-fold held-out Spearman and RMSE, and search from --start (TiKMiX-D's mixture) inside "
        "the box [LOW*w_start, HIGH*w_start] intersected with the Pareto set B.w >= B.w_prior "
        "(Dirichlet sampling around the current best, concentration rising log-spaced, mean of "
        "the top-k; every candidate projected onto that set). The table's runs should be "
        "sampled in the same box. A gate keeps the start when the surrogate's Spearman is below "
        "--min-spearman or its predicted gain is within its cross-validated RMSE. The output "
        "is the proposal (or the start) and is marked unconfirmed: measure both with your "
        "response and keep the proposal only if it wins.",
    )
    parser.add_argument(
        "--table",
        required=True,
        help="CSV, one run per row: domain weight columns + response; at least "
        f"{MIN_SURROGATE_ROWS} rows (the surrogate's 5-fold cross-validation)",
    )
    parser.add_argument(
        "--response", required=True, help="column of the table to maximise (larger is better)"
    )
    parser.add_argument(
        "--weights-columns",
        nargs="+",
        help="the domain columns (default: every column except the response); each row "
        "must sum to 1",
    )
    parser.add_argument(
        "--influence", required=True, help="benefit matrix CSV (tasks x domains) of the Pareto set"
    )
    parser.add_argument(
        "--prior",
        required=True,
        help="the current mixture of the Pareto constraint (as for mix-d)",
    )
    _add_tokens_argument(parser)
    parser.add_argument(
        "--start", required=True, help="mixture file to start from, e.g. the mix-d output"
    )
    parser.add_argument(
        "--box",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=(TikmixMBox.low, TikmixMBox.high),
        help="the support [LOW*w_start, HIGH*w_start] per domain, widened to contain the prior "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--min-spearman",
        type=float,
        default=TikmixMGate.min_spearman,
        help="gate: the surrogate's held-out Spearman needed to leave the start "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--linear-r2",
        type=float,
        default=TikmixMGate.linear_r2,
        help="a linear fit whose cross-validated R² exceeds this replaces the surrogate and the "
        "mixture solves a linear program (default %(default)s; 1 never)",
    )
    _add_settings_arguments(parser, Normalisation)
    _add_settings_arguments(parser, TikmixMSearch)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of surrogate and search (default 0)"
    )
    parser.add_argument("--num-threads", type=int, default=1, help="LightGBM threads (default 1)")
    _add_output_arguments(parser)
    parser.set_defaults(handler=_run_mix_m)


def _run_mix_m(args: argparse.Namespace) -> int:
    from tikmix.core.conventions import normalised_matrix
    from tikmix.core.mixture import read_mixture
    from tikmix.mixing.search import propose_tikmix_m
    from tikmix.mixing.weights import read_influence_matrix, read_runs_table

    W, y = read_runs_table(args.table, args.response, args.weights_columns)
    if len(y) < MIN_SURROGATE_ROWS:
        raise ValueError(
            f"{args.table}: {len(y)} runs, but the surrogate needs at least "
            f"{MIN_SURROGATE_ROWS} rows (5-fold cross-validation, 4 rows per fold)"
        )
    if len(set(y.tolist())) < 2:
        raise ValueError(
            f"{args.table}: column {args.response!r} has the same value in all {len(y)} rows: "
            "there is nothing for the surrogate to learn"
        )
    B = read_influence_matrix(args.influence).reindex(columns=W.columns)
    B_hat = normalised_matrix(B.to_numpy(), _settings(Normalisation, args))
    prior = _prior(args, W.columns)
    start = read_mixture(args.start, W.columns)
    proposal = propose_tikmix_m(
        W,
        y,
        start,
        B_hat=B_hat,
        prior=prior,
        pareto_floor=B_hat @ prior.to_numpy(),
        box=TikmixMBox(*args.box),
        min_spearman=args.min_spearman,
        linear_r2=args.linear_r2,
        seed=args.seed,
        num_threads=args.num_threads,
        search=_settings(TikmixMSearch, args),
    )
    provenance = {
        "table": str(args.table),
        "table_sha256": file_sha256(args.table),
        "response": args.response,
        "n_runs": int(len(y)),
        "influence": str(args.influence),
        "prior": args.prior,
        "start": str(args.start),
    }
    solver = {
        **proposal.to_dict(),
        "decision": {
            "chosen": "proposal" if proposal.passed else "start",
            "confirmed": False,
            "reason": proposal.reason,
        },
    }
    weights = proposal.weights if proposal.passed else proposal.start
    _write_output(args, weights, "tikmix_m", provenance, solver)
    print(
        f"{proposal.surrogate_reason}; {proposal.surrogate} model's 5-fold held-out Spearman "
        f"{proposal.quality.spearman:.3f}, RMSE {proposal.quality.rmse:.4g} over {len(y)} runs; gate "
        f"{'passed' if proposal.passed else 'kept the start'}: {proposal.reason}",
        file=sys.stderr,
    )
    return 0


def _add_plan(subparsers) -> None:
    from tikmix.cost import DEFAULT_GPU, DEFAULT_MFU, GPUS

    parser = subparsers.add_parser(
        "plan",
        help="the cost of a study before it runs: each rule's jobs, memory, disk, FLOPs, GPU hours",
        description="Print the cost model's table (tikmix.cost) for a study config: per rule its "
        "jobs, peak host and device memory per job, disk written, TFLOP and GPU hours on a named "
        "GPU at an assumed MFU, from each checkpoint's config.json (no weights are read). Warns "
        "about every rule whose device peak exceeds the GPU's memory and names the setting that "
        "makes it fit.",
    )
    parser.add_argument(
        "--configfile",
        default="config/config.yaml",
        help="the study config (as for snakemake --configfile; default config/config.yaml)",
    )
    parser.add_argument(
        "--gpu", choices=sorted(GPUS), default=DEFAULT_GPU, help=f"GPU kind (default {DEFAULT_GPU})"
    )
    parser.add_argument(
        "--mfu",
        type=float,
        default=DEFAULT_MFU,
        help=f"model FLOP utilisation assumed for GPU hours (default {DEFAULT_MFU})",
    )
    parser.add_argument(
        "--device",
        choices=("gpu", "cpu"),
        default="gpu",
        help="where the model-running jobs hold their tensors (default gpu)",
    )
    parser.add_argument(
        "--gpus-per-job",
        type=int,
        default=1,
        help="GPUs of one node per model-running job (FSDP, planned: weights and batch split)",
    )
    parser.set_defaults(handler=_run_plan)


def _run_plan(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from tikmix.config import check_schema
    from tikmix.cost import GPUS, Settings, plan, study_shapes

    path = Path(args.configfile)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    config = yaml.safe_load(path.read_text()) or {}
    schema = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    check_schema(config, schema)
    validate(config, str(schema), set_default=True)
    shapes = study_shapes(config)
    settings = replace(
        Settings.from_config(config, device=args.device), gpus_per_job=args.gpus_per_job
    )
    evaluated = config["stage2"]["checkpoint"] if config["checkpoints"] else None
    result = plan(shapes, settings, GPUS[args.gpu], args.mfu, evaluated)
    print(result.table())
    print(result.assumptions())
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


#: Subcommand registrars, in ``--help`` order. Add one function per new subcommand.
SUBCOMMANDS: tuple[Callable, ...] = (_add_mix_d, _add_mix_m, _add_plan)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tikmix",
        description="TiKMiX: data mixtures for LLM pre-training from Group Influence.",
    )
    parser.add_argument("--version", action="version", version=f"tikmix {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"tikmix {args.command}: error: {exc}", file=sys.stderr)
        return 1
