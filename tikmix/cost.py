"""Cost model of a study: per rule, peak host and device memory, disk written, FLOPs and jobs.

Pure arithmetic from a checkpoint's ``config.json`` (no weights) and the study config, so that
``tikmix plan`` sizes a 7B study in well under a second and the Snakefile can size every rule's
``resources:`` at parse time. It imports no torch.

What each pass holds is written as one small function per pass (``*_pass_bytes``), each term
named after the tensor the code allocates (``tikmix/influence/gradients.py``, ``ekfac.py``,
``stages.py``, ``store.py``):

* weights: parameters × the checkpoint's dtype (``load_checkpoint`` keeps the saved dtype);
* activations: ``batch × seq`` tokens × what autograd saves per layer, plus the LM head's logits;
* float64 sums: a domain's or task's gradient sum and the Λ sums (one ``[out', in']`` per tracked
  module), the covariance sums (one ``[out', out']`` per module and one ``[in', in']`` per distinct
  input: q/k/v and gate/up share theirs);
* eigendecompositions: every module's ``A`` and ``S`` in float64, plus their eigenvectors;
* stores: the same arrays in Zarr, uncompressed size (an upper bound: Zarr compresses);
* projection (``influence.projection``) replaces ``out``, ``in`` by ``rank_out``, ``rank_in``
  where the side is wider than its rank (``tikmix.influence.projection``).

A job whose rule gets a GPU holds its tensors on the device; its host memory is the process
floor, the weights once (loaded on the CPU first) and the largest array on its way to the store.
On a CPU-only run (``device: cpu``, or the demo) everything is host memory. Module partitions
(``influence.ekfac.module_partitions``, planned in issue 23) divide an EK-FAC job's per-module
state by the number of partitions; GPUs per job (FSDP over one node, planned in issue 23) divide
weights, their gradients and optimiser state, and the batch, by the number of GPUs, while each
rank still holds the full influence sums (they are summed over ranks). Both are assumptions of
this model, not code that runs today. docs/cluster.md shows the plan of a 7B study.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

GB = 10**9
MIB = 2**20
FLOAT64 = 8
FLOAT32 = 4

#: Resident memory of a job before its tensors (MiB): Python, the imported libraries, the
#: allocator's arenas and BLAS/OpenMP buffers of a job that runs a model. Measured as the peak RSS
#: of a fresh process that imports the influence stages and runs a gradient pass of a 3-layer,
#: d=16 model (``benchmarks/bench_cost_model.py``: 428 MiB, torch 2.13 CPU), not fitted to any
#: rule's measurement. A real Snakemake job peaks higher (docs/cluster.md compares).
MODEL_JOB_FLOOR_MIB = 430
#: The same for a job that runs no model (pandas, zarr, the mixing code): 242 MiB measured.
LIGHT_JOB_FLOOR_MIB = 245
#: ``--mem`` asks for the estimate times this: the demo's largest model job peaked at 683 MiB, 1.6x
#: the import-only floor (docs/cluster.md), so a tiny-model job is not killed on its first try.
REQUEST_HEADROOM = 1.6

#: Dtype names of ``config.json`` (``torch_dtype`` / ``dtype``) → bytes per parameter.
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class Gpu:
    """A GPU kind: usable memory and dense peak TFLOP/s (datasheet) per precision."""

    name: str
    memory_gb: float
    bf16_tflops: float
    fp32_tflops: float

    def peak_tflops(self, precision: str) -> float:
        return self.bf16_tflops if precision == "bf16" else self.fp32_tflops


#: Datasheet numbers, dense (no sparsity); fp32 is the non-tensor-core rate (torch does not use
#: TF32 for float32 matmuls by default).
GPUS = {
    "h100": Gpu("NVIDIA H100 SXM 80 GB", 80, 989, 67),
    "h200": Gpu("NVIDIA H200 141 GB", 141, 989, 67),
    "a100": Gpu("NVIDIA A100 SXM 80 GB", 80, 312, 19.5),
    "a100-40": Gpu("NVIDIA A100 40 GB", 40, 312, 19.5),
    "l40s": Gpu("NVIDIA L40S 48 GB", 48, 362, 91.6),
}
DEFAULT_GPU = "h100"
DEFAULT_MFU = 0.3
#: Float64 FLOP/s a CPU-only job (eigendecompositions) is assumed to reach.
CPU_TFLOPS = 0.5


@dataclass(frozen=True)
class Linear:
    """One linear layer: its name, ``[out, in]`` (``in`` counts a bias column, as the gradient
    matrix does) and the key of the input it reads (shared by q/k/v and by gate/up, whose
    activation covariance is one sum)."""

    name: str
    out_dim: int
    in_dim: int
    input_key: str


#: ``model_type`` → the family whose layer names and MLP the model has; any other type with
#: ``hidden_size`` and ``intermediate_size`` is read as a Llama-family model (Mistral, Qwen2, ...).
FAMILIES = {"gpt_neox": "gpt_neox", "gpt2": "gpt2", "phi": "phi"}


@dataclass(frozen=True)
class ModelShape:
    """The shape of a decoder-only causal LM, from its ``config.json``.

    Families (tikmix.influence.DEFAULT_MODULE_PATTERN's): ``llama`` (the built-in model, Llama,
    Mistral, Qwen2, ...: gated MLP of three matrices, no biases), ``gpt_neox``, ``gpt2`` and
    ``phi`` (two-matrix MLP, biases).
    """

    vocab_size: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tie_embeddings: bool
    weight_bytes: int = 4
    prefix: str = ""  # "model." for Hugging Face Llama names, "" for the built-in model
    family: str = "llama"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "config.json") -> ModelShape:
        """From a built-in (``d_model``) or Hugging Face (``hidden_size`` / GPT-2's ``n_embd``)
        config."""
        if "d_model" in config:  # tikmix.models.llama.ModelConfig (always saved in float32)
            d = int(config["d_model"])
            d_ff = config.get("d_ff") or 32 * math.ceil(int(8 * d / 3) / 32)
            return cls(
                vocab_size=int(config["vocab_size"]),
                hidden=d,
                intermediate=int(d_ff),
                layers=int(config["n_layers"]),
                heads=int(config["n_heads"]),
                kv_heads=int(config["n_heads"]),
                tie_embeddings=bool(config.get("tie_embeddings", True)),
            )
        dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"{source}: torch_dtype {dtype!r} is not one of {sorted(DTYPE_BYTES)}")
        family = FAMILIES.get(config.get("model_type"), "llama")
        if family == "gpt2":
            keys = {"hidden": "n_embd", "layers": "n_layer", "heads": "n_head"}
        else:
            keys = {"hidden": "hidden_size", "layers": "num_hidden_layers"}
            keys["heads"] = "num_attention_heads"
        missing = [key for key in (*keys.values(), "vocab_size") if key not in config]
        if family != "gpt2" and "intermediate_size" not in config:
            missing.append("intermediate_size")
        if missing:
            raise ValueError(
                f"{source}: no {', '.join(missing)} (model_type "
                f"{config.get('model_type')!r}): the cost model reads Llama-family, GPT-NeoX, "
                "GPT-2 and Phi configs"
            )
        hidden = int(config[keys["hidden"]])
        heads = int(config[keys["heads"]])
        intermediate = (
            int(config.get("n_inner") or 4 * hidden)
            if family == "gpt2"
            else int(config["intermediate_size"])
        )
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden=hidden,
            intermediate=intermediate,
            layers=int(config[keys["layers"]]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            tie_embeddings=bool(config.get("tie_word_embeddings", family == "gpt2")),
            weight_bytes=DTYPE_BYTES[dtype],
            prefix={"gpt_neox": "gpt_neox.", "gpt2": "transformer."}.get(family, "model."),
            family=family,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ModelShape:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: no such file (the checkpoint's config.json)"
            ) from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_config(config, str(path))

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def gated(self) -> bool:
        """A gated (SwiGLU) MLP of three matrices, as Llama's."""
        return self.family == "llama"

    def linears(self) -> list[Linear]:
        """Every linear layer, named as the loaded model names it (the LM head last)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        out = []
        for n in range(self.layers):
            base = f"{self.prefix}{'h' if self.family == 'gpt2' else 'layers'}.{n}"
            out += self._block(base, str(n), h, i, kv)
        head = "embed_out" if self.family == "gpt_neox" else "lm_head"
        return out + [Linear(head, self.vocab_size, h, "head")]

    def _block(self, base: str, n: str, h: int, i: int, kv: int) -> list[Linear]:
        if self.family == "gpt_neox":
            attn, mlp = f"{base}.attention", f"{base}.mlp"
            names = (f"{attn}.query_key_value", f"{attn}.dense")
            names += (f"{mlp}.dense_h_to_4h", f"{mlp}.dense_4h_to_h")
        elif self.family == "gpt2":
            attn, mlp = f"{base}.attn", f"{base}.mlp"
            names = (f"{attn}.c_attn", f"{attn}.c_proj", f"{mlp}.c_fc", f"{mlp}.c_proj")
        if self.family in ("gpt_neox", "gpt2"):  # fused q/k/v, biases
            return [
                Linear(names[0], h + 2 * kv, h + 1, f"{n}.attn"),
                Linear(names[1], h, h + 1, f"{n}.o"),
                Linear(names[2], i, h + 1, f"{n}.mlp"),
                Linear(names[3], h, i + 1, f"{n}.down"),
            ]
        attn, mlp = f"{base}.self_attn", f"{base}.mlp"
        bias = int(self.family == "phi")
        projections = [
            Linear(f"{attn}.q_proj", h, h + bias, f"{n}.attn"),
            Linear(f"{attn}.k_proj", kv, h + bias, f"{n}.attn"),
            Linear(f"{attn}.v_proj", kv, h + bias, f"{n}.attn"),
        ]
        if self.family == "phi":
            return projections + [
                Linear(f"{attn}.dense", h, h + 1, f"{n}.o"),
                Linear(f"{mlp}.fc1", i, h + 1, f"{n}.mlp"),
                Linear(f"{mlp}.fc2", h, i + 1, f"{n}.down"),
            ]
        return projections + [
            Linear(f"{attn}.o_proj", h, h, f"{n}.o"),
            Linear(f"{mlp}.gate_proj", i, h, f"{n}.mlp"),
            Linear(f"{mlp}.up_proj", i, h, f"{n}.mlp"),
            Linear(f"{mlp}.down_proj", h, i, f"{n}.down"),
        ]

    def parameters(self) -> int:
        """Distinct parameters (a tied head counted once)."""
        blocks = (
            sum(m.out_dim * m.in_dim for m in self.linears()[:-1]) + 2 * self.layers * self.hidden
        )
        head = 0 if self.tie_embeddings else self.vocab_size * self.hidden
        return self.vocab_size * self.hidden + blocks + self.hidden + head

    def training_flops_per_token(self, seq_len: int) -> int:
        """The PaLM count, as ``tikmix.models.llama.model_flops_per_token``: 6·N_matmul + attention."""
        matmul = sum(m.out_dim * m.in_dim for m in self.linears())
        return 6 * matmul + 12 * self.layers * self.hidden * seq_len


@dataclass(frozen=True)
class Projection:
    rank_out: int
    rank_in: int

    def shape(self, out_dim: int, in_dim: int) -> tuple[int, int]:
        """A side at most its rank wide is left unprojected (``tikmix.influence.projection``)."""
        return min(out_dim, self.rank_out), min(in_dim, self.rank_in)


@dataclass(frozen=True)
class Settings:
    """The study settings the costs depend on (read from the workflow config)."""

    seq_len: int
    batch_size: int
    task_batch_size: int
    precision: str  # fp32 | bf16 (auto resolved: bf16 on a GPU)
    projection: Projection | None
    tracked_modules: str
    domains: int
    tasks: int
    domain_tokens: int
    shards_per_domain: int
    ekfac_tokens: int
    ekfac_shards: int
    fisher_sampled: bool
    domain_lambda_tokens: int | None  # None: TiKMiX-M does not use the curvature response
    stage1_tokens: int | None  # None: the user brings checkpoints
    stage1_batch_size: int
    device: str  # cpu | gpu: where the model-running jobs hold their tensors
    module_partitions: int = 1
    gpus_per_job: int = 1
    stage2_methods: int = 0
    stage2_seeds: int = 0
    stage2_tokens: int = 0
    stage2_batch_size: int = 32
    eval_batch_size: int = 32
    pilot_jobs: int = 0  # candidates of the recommendation's pilot (0: no pilot)
    pilot_seeds: int = 0
    pilot_tokens: int = 0
    rollouts: int = 0  # tikmix_c's rollout runs, continue's reference included (0: no tikmix_c)
    additivity_mixtures: int = 0  # sampled plus repeated mixtures; 0: the check is off
    additivity_tokens: int = 0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], device: str | None = None) -> Settings:
        """From a workflow config with the schema's defaults filled in."""
        influence = config["influence"]
        projection = influence.get("projection")
        mixing_m = config["mixing"]["tikmix_m"]
        stage2 = config.get("stage2", {})
        additivity = config.get("checks", {}).get("additivity", {"enabled": False})
        on_gpu = (device or config.get("device", "auto")) not in ("cpu", "mps")
        precision = influence.get("precision", "fp32")
        if precision == "auto":
            precision = "bf16" if on_gpu else "fp32"
        return cls(
            seq_len=config["data"]["seq_len"],
            batch_size=influence["batch_size"],
            task_batch_size=influence.get("task_batch_size", influence["batch_size"]),
            precision=precision,
            projection=Projection(projection["rank_out"], projection["rank_in"])
            if projection
            else None,
            tracked_modules=influence["tracked_modules"],
            domains=len(config["domains"]),
            tasks=len(config["tasks"]),
            domain_tokens=influence["domain_tokens"],
            shards_per_domain=influence["shards_per_domain"],
            ekfac_tokens=influence["ekfac"]["tokens"],
            ekfac_shards=influence["ekfac"]["shards"],
            fisher_sampled=influence["ekfac"].get("fisher", "sampled") == "sampled",
            domain_lambda_tokens=mixing_m["curvature"]["tokens_per_domain"]
            if mixing_m.get("response", "curvature") == "curvature"
            else None,
            stage1_tokens=None if config.get("checkpoints") else config["stage1"]["tokens"],
            stage1_batch_size=config["stage1"]["batch_size"],
            device="gpu" if on_gpu else "cpu",
            stage2_methods=len(stage2.get("methods", [])),
            stage2_seeds=len(stage2.get("seeds", [])),
            stage2_tokens=stage2.get("tokens", 0),
            stage2_batch_size=stage2.get("batch_size", 32),
            eval_batch_size=stage2.get("eval_batch_size", 32),
            **_decision_runs(config),
            additivity_mixtures=additivity["mixtures"]
            + additivity["noise"]["mixtures"] * additivity["noise"]["replicates"]
            if additivity.get("enabled", True)
            else 0,
            additivity_tokens=additivity.get("tokens", 0),
        )


# --- what one pass holds (bytes) ------------------------------------------------------------


def tracked(shape: ModelShape, settings: Settings) -> list[Linear]:
    """The tracked linear layers (``re.search`` of ``influence.tracked_modules``).

    A pattern that matches none of the modelled names (a mixture-of-experts model's experts, a
    family the model does not name) is sized as if every block's linear layer were tracked
    (:func:`tracks_modelled_layers` says so).
    """
    modules = [m for m in shape.linears() if re.search(settings.tracked_modules, m.name)]
    return modules or shape.linears()[:-1]


def tracks_modelled_layers(shape: ModelShape, settings: Settings) -> bool:
    """Whether ``influence.tracked_modules`` matches any layer name the cost model knows."""
    return any(re.search(settings.tracked_modules, m.name) for m in shape.linears())


def stored_shape(module: Linear, settings: Settings) -> tuple[int, int]:
    """``[out', in']`` of a module's statistics (projected where configured)."""
    if settings.projection is None:
        return module.out_dim, module.in_dim
    return settings.projection.shape(module.out_dim, module.in_dim)


def gradient_sum_bytes(modules: Sequence[Linear], settings: Settings) -> int:
    """One float64 ``[out', in']`` per module: a gradient sum, a Λ sum, a gradient store."""
    return sum(math.prod(stored_shape(m, settings)) for m in modules) * FLOAT64


def covariance_sum_bytes(modules: Sequence[Linear], settings: Settings) -> int:
    """Float64 ``Σ g gᵀ`` per module and ``Σ a aᵀ`` per distinct input (held once in memory)."""
    gradient = sum(stored_shape(m, settings)[0] ** 2 for m in modules)
    return (gradient + sum(d**2 for d in _distinct_inputs(modules, settings).values())) * FLOAT64


def _distinct_inputs(modules: Sequence[Linear], settings: Settings) -> dict[str, int]:
    """Input key → ``in'``: modules share an input's sum unless it is projected (each module
    draws its own ``P_in``)."""
    return {
        (m.name if stored_shape(m, settings)[1] < m.in_dim else m.input_key): stored_shape(
            m, settings
        )[1]
        for m in modules
    }


def covariance_store_bytes(modules: Sequence[Linear], settings: Settings) -> int:
    """A covariance or eigenbasis store: each module's ``A`` and ``S`` (no sharing on disk)."""
    return sum(o**2 + i**2 for o, i in (stored_shape(m, settings) for m in modules)) * FLOAT64


def largest_array_bytes(modules: Sequence[Linear], settings: Settings) -> int:
    """The largest float64 array a job writes or reduces at a time."""
    return (
        max(max(o * i, o * o, i * i) for o, i in (stored_shape(m, settings) for m in modules))
        * FLOAT64
    )


def activation_bytes(shape: ModelShape, batch: int, seq: int, precision: str) -> int:
    """What autograd keeps for a backward pass of ``batch × seq`` tokens.

    Per layer and token: norms, q/k/v and their rotated copies, attention output, and the MLP's
    gate, up, SiLU and product (``11·h + 3·kv + 4·i`` values; ``2·i`` for an ungated MLP:
    its up projection and activation); attention is SDPA, no ``L²`` scores.
    """
    mlp = (4 if shape.gated else 2) * shape.intermediate
    per_token = shape.layers * (11 * shape.hidden + 3 * shape.kv_dim + mlp)
    work = 2 if precision == "bf16" else FLOAT32
    return batch * seq * per_token * work + lm_head_bytes(shape, batch, seq, False)


def lm_head_bytes(shape: ModelShape, batch: int, seq: int, fisher_sampled: bool) -> int:
    """Float32 logits, their log-softmax and gradient; a sampled Fisher adds the float32
    probabilities and their float64 cumulative sum (``ekfac._sample_labels``)."""
    per_token = 3 * FLOAT32 + ((FLOAT32 + FLOAT64) if fisher_sampled else 0)
    return batch * seq * shape.vocab_size * per_token


def recorded_pairs_bytes(modules: Sequence[Linear], tokens: int, settings: Settings) -> int:
    """The hooks' per-batch ``(a, g)`` (projected ``a'``, ``g'``; unprojected ``a`` is the input
    autograd keeps anyway, so only ``g`` is new)."""
    if settings.projection is None:
        return tokens * sum(m.out_dim for m in modules) * FLOAT32
    return tokens * sum(sum(stored_shape(m, settings)) for m in modules) * FLOAT32


def projection_matrices_bytes(modules: Sequence[Linear], settings: Settings) -> int:
    """``P_out``, ``P_in`` per projected module in the working dtype (drawn in float64 first)."""
    if settings.projection is None:
        return 0
    total = 0
    for m in modules:
        o, i = stored_shape(m, settings)
        total += (o * m.out_dim if o < m.out_dim else 0) + (i * m.in_dim if i < m.in_dim else 0)
    return total * FLOAT32


def weights_bytes(shape: ModelShape, settings: Settings) -> int:
    return shape.parameters() * shape.weight_bytes // settings.gpus_per_job


def _per_rank_batch(batch: int, settings: Settings) -> int:
    return max(1, math.ceil(batch / settings.gpus_per_job))


def gradient_pass_bytes(shape: ModelShape, settings: Settings, batch: int) -> int:
    """``summed_gradients``: the model, a batch's activations, the float64 sums and, unprojected,
    one batch's tracked weight gradients (``torch.autograd.grad``) and a float64 copy of one."""
    modules = tracked(shape, settings)
    batch = _per_rank_batch(batch, settings)
    held = weights_bytes(shape, settings) + activation_bytes(
        shape, batch, settings.seq_len, settings.precision
    )
    held += gradient_sum_bytes(modules, settings)
    if settings.projection is None:
        held += sum(m.out_dim * m.in_dim for m in modules) * shape.weight_bytes
        held += largest_array_bytes(modules, settings)
    else:
        held += projection_matrices_bytes(modules, settings)
        held += recorded_pairs_bytes(modules, batch * settings.seq_len, settings)
    return held


def covariance_pass_bytes(shape: ModelShape, settings: Settings) -> int:
    """``covariance_sums``: the model, activations, the hooks' pairs, the covariance sums (a
    module partition's share) and, while they are symmetrised, a copy of the larger half."""
    modules = tracked(shape, settings)
    batch = _per_rank_batch(settings.batch_size, settings)
    tokens = batch * settings.seq_len
    sums = covariance_sum_bytes(modules, settings) / settings.module_partitions
    held = weights_bytes(shape, settings) + activation_bytes(
        shape, batch, settings.seq_len, settings.precision
    )
    held += lm_head_bytes(shape, batch, settings.seq_len, settings.fisher_sampled)
    held += recorded_pairs_bytes(modules, tokens, settings) / settings.module_partitions
    held += projection_matrices_bytes(modules, settings)
    return int(held + 1.5 * sums + largest_array_bytes(modules, settings))


def eigen_pass_bytes(shape: ModelShape, settings: Settings) -> int:
    """``ekfac_eigen``: every shard's covariance store loaded, their sum, the eigenvectors, and
    ``eigh``'s working copies of the largest matrix."""
    modules = tracked(shape, settings)
    store = covariance_store_bytes(modules, settings) / settings.module_partitions
    return int((settings.ekfac_shards + 2) * store + 3 * largest_array_bytes(modules, settings))


def lambda_pass_bytes(shape: ModelShape, settings: Settings) -> int:
    """``lambda_sums``: the model, activations, the hooks' pairs, every module's eigenvectors in
    the working dtype, the float64 Λ sums, and the largest module's per-sequence products
    ``[B, out', in']`` (and their square)."""
    modules = tracked(shape, settings)
    batch = _per_rank_batch(settings.batch_size, settings)
    partitions = settings.module_partitions
    held = weights_bytes(shape, settings) + activation_bytes(
        shape, batch, settings.seq_len, settings.precision
    )
    held += lm_head_bytes(shape, batch, settings.seq_len, settings.fisher_sampled)
    held += recorded_pairs_bytes(modules, batch * settings.seq_len, settings) / partitions
    held += projection_matrices_bytes(modules, settings)
    held += covariance_store_bytes(modules, settings) / 2 * FLOAT32 / FLOAT64 / partitions
    held += gradient_sum_bytes(modules, settings) / partitions
    largest = max(math.prod(stored_shape(m, settings)) for m in modules)
    held += 2 * batch * largest * FLOAT32
    return int(held)


def training_bytes(shape: ModelShape, settings: Settings, batch: int) -> int:
    """A training step: float32 weights, gradients and two AdamW moments, and activations."""
    state = shape.parameters() * 4 * FLOAT32 // settings.gpus_per_job
    batch = _per_rank_batch(batch, settings)
    return state + activation_bytes(shape, batch, settings.seq_len, settings.precision)


def streamed_module_bytes(shape: ModelShape, settings: Settings, arrays: int) -> int:
    """A job that streams one module at a time: ``arrays`` float64 arrays of the largest one."""
    return arrays * largest_array_bytes(tracked(shape, settings), settings)


# --- per rule -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleCost:
    """One rule over a study: per-job peaks, and totals over its ``jobs``."""

    rule: str
    jobs: int
    host_bytes: int
    device_bytes: int  # 0: a CPU-only job
    disk_bytes: int
    flops: float
    fits_on: str = "gpu"  # gpu | cpu: where `device_bytes` lives (cpu: host memory)

    def device_hours(self, gpu: Gpu, mfu: float, precision: str) -> float:
        if not self.device_bytes:
            return 0.0
        return self.flops / (gpu.peak_tflops(precision) * 1e12 * mfu) / 3600

    def job_minutes(self, gpu: Gpu, mfu: float, precision: str) -> float:
        """Estimated wall minutes of one job (a CPU-only job at :data:`CPU_TFLOPS`)."""
        rate = gpu.peak_tflops(precision) * mfu if self.device_bytes else CPU_TFLOPS
        return self.flops / max(self.jobs, 1) / (rate * 1e12) / 60


def _floor(model_job: bool) -> int:
    return (MODEL_JOB_FLOOR_MIB if model_job else LIGHT_JOB_FLOOR_MIB) * MIB


def _rule(
    name: str,
    jobs: int,
    tensors: int,
    disk: int,
    flops: float,
    *,
    shape: ModelShape,
    settings: Settings,
    on_device: bool,
    staged: int = 0,
) -> RuleCost:
    """A rule whose jobs hold ``tensors``: on the device for a GPU job (the host then holds the
    weights once and ``staged``, the largest array on its way to disk), else in host memory."""
    if on_device and settings.device == "gpu":
        host = _floor(True) + weights_bytes(shape, settings) + staged
        return RuleCost(name, jobs, host, tensors, disk, flops)
    return RuleCost(name, jobs, _floor(True) + tensors, 0, disk, flops, fits_on="cpu")


def rule_costs(shape: ModelShape, settings: Settings, evaluated: bool = True) -> list[RuleCost]:
    """The model-running rules of one checkpoint: the influence rules and, when it is the
    ``evaluated`` one (stage 2 and the checks run at one checkpoint), stage 1, the additivity
    check and the evaluations."""
    modules = tracked(shape, settings)
    s = settings
    per_token = shape.training_flops_per_token(s.seq_len)
    largest = largest_array_bytes(modules, s)
    grads = gradient_sum_bytes(modules, s)
    cov_store = covariance_store_bytes(modules, s)
    rotations = sum(
        2 * (o * o + i * i) + 2 * o * i for o, i in (stored_shape(m, s) for m in modules)
    )
    grams = sum(2 * stored_shape(m, s)[0] ** 2 for m in modules) + sum(
        2 * d**2 for d in _distinct_inputs(modules, s).values()
    )
    eigh = sum(9 * (o**3 + i**3) for o, i in (stored_shape(m, s) for m in modules))
    common = dict(shape=shape, settings=s)
    parts = s.module_partitions
    costs = []
    if s.stage1_tokens and evaluated:
        costs.append(
            _rule(
                "train_stage1",
                1,
                training_bytes(shape, s, s.stage1_batch_size),
                0,
                per_token * s.stage1_tokens,
                on_device=True,
                **common,
            )
        )
    costs += [
        _rule(
            "domain_gradients",
            s.domains * s.shards_per_domain,
            gradient_pass_bytes(shape, s, s.batch_size),
            s.domains * s.shards_per_domain * grads,
            per_token * s.domain_tokens * s.domains,
            on_device=True,
            staged=largest,
            **common,
        ),
        RuleCost(
            "reduce_domain_gradients",
            s.domains,
            _floor(True) + 2 * largest,
            0,
            s.domains * grads,
            0,
            "cpu",
        ),
        _rule(
            "task_gradients",
            s.tasks,
            gradient_pass_bytes(shape, s, s.task_batch_size),
            s.tasks * grads,
            # a task file fixes its rows; assumed the size of one domain's sample
            per_token * s.domain_tokens * s.tasks,
            on_device=True,
            staged=largest,
            **common,
        ),
        _rule(
            "ekfac_covariances",
            s.ekfac_shards * parts,
            covariance_pass_bytes(shape, s),
            s.ekfac_shards * cov_store,
            (per_token + grams) * s.ekfac_tokens * parts,
            on_device=True,
            staged=largest,
            **common,
        ),
        RuleCost(
            "ekfac_eigen",
            parts,
            eigen_pass_bytes(shape, s) + _floor(True),
            0,
            cov_store,
            eigh,
            "cpu",
        ),
        _rule(
            "ekfac_lambda",
            s.ekfac_shards * parts,
            lambda_pass_bytes(shape, s),
            s.ekfac_shards * grads,
            (per_token + rotations) * s.ekfac_tokens * parts,
            on_device=True,
            staged=largest,
            **common,
        ),
    ]
    if s.domain_lambda_tokens:
        costs.append(
            _rule(
                "ekfac_domain_lambda",
                s.domains * parts,
                lambda_pass_bytes(shape, s),
                s.domains * grads,
                (per_token + rotations) * s.domain_lambda_tokens * s.domains * parts,
                on_device=True,
                staged=largest,
                **common,
            )
        )
    costs += [
        RuleCost(
            "ekfac_factors",
            1,
            _floor(True) + int((s.ekfac_shards + 2) * grads / parts + cov_store / parts),
            0,
            cov_store + grads,
            0,
            "cpu",
        ),
        RuleCost(
            "precondition_task_gradients",
            1,
            _floor(True) + streamed_module_bytes(shape, s, 4 + 2 * s.tasks),
            0,
            s.tasks * grads,
            # two rotations into and out of the eigenbasis per module and task (as its record)
            s.tasks * sum(4 * o * i * (o + i) for o, i in (stored_shape(m, s) for m in modules)),
            "cpu",
        ),
        RuleCost(
            "influence_matrix",
            1,
            _floor(True) + streamed_module_bytes(shape, s, s.tasks + s.domains),
            0,
            0,
            0,
            "cpu",
        ),
    ]
    # TiKMiX-M's direct/lookahead measurements (response other than curvature) keep fixed resources.
    if not evaluated:
        return costs
    if s.additivity_mixtures:
        costs.append(
            _rule(
                "additivity",
                1,
                gradient_pass_bytes(shape, s, s.batch_size) + s.tasks * grads,
                0,
                per_token * s.additivity_tokens * s.additivity_mixtures,
                on_device=True,
                **common,
            )
        )
    # Evaluation and stage 2 load the checkpoint in float32 (tikmix.models.stage2).
    fp32 = replace(shape, weight_bytes=FLOAT32)
    costs.append(
        _rule(
            "evaluate_checkpoint",
            1,
            weights_bytes(fp32, s) + lm_head_bytes(shape, s.eval_batch_size, s.seq_len, False),
            0,
            per_token / 3 * s.domain_tokens * s.tasks,  # forward only; task rows assumed
            on_device=True,
            shape=fp32,
            settings=s,
        )
    )
    # Stage 2, the recommendation's pilots and tikmix_c's rollouts are the same training job
    # (tikmix.models.stage2.run_stage2_seeds): jobs, tokens per run, runs per job.
    for rule, jobs, tokens, runs in (
        ("evaluate_stage2", s.stage2_methods, s.stage2_tokens, s.stage2_seeds),
        ("pilot_stage2", s.pilot_jobs, s.pilot_tokens, s.pilot_seeds),
        ("tikmix_c_rollout", s.rollouts, s.pilot_tokens, 1),
    ):
        if jobs:
            costs.append(
                _rule(
                    rule,
                    jobs,
                    training_bytes(shape, s, s.stage2_batch_size),
                    0,
                    per_token * tokens * runs * jobs,
                    on_device=True,
                    shape=fp32,
                    settings=s,
                )
            )
    return costs


def _decision_runs(config: Mapping[str, Any]) -> dict[str, int]:
    """The pilot's and tikmix_c's training runs (workflow/rules/recommend.smk, calibrate.smk):
    every candidate may train a pilot; tikmix_c trains its rollouts and continue's reference."""
    stage2 = config.get("stage2", {})
    recommendation = config.get("recommendation", {})
    pilot = recommendation.get("pilot")
    candidates = list(recommendation.get("candidates", []))
    tokens = (pilot or {}).get("tokens") or stage2.get("tokens", 0)
    tikmix_c = config.get("mixing", {}).get("tikmix_c", {})
    wanted = "tikmix_c" in candidates or "tikmix_c" in stage2.get("methods", [])
    return {
        "pilot_jobs": len(candidates) if pilot else 0,
        "pilot_seeds": len(pilot["seeds"]) if pilot else 0,
        "pilot_tokens": tokens,
        "rollouts": tikmix_c.get("n_levels", 3) * tikmix_c.get("per_level", 4) + 1 if wanted else 0,
    }


# --- fitting a device ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fix:
    """A setting that makes a rule fit, and the rule's device peak with it."""

    setting: str
    value: Any
    device_bytes: int

    def __str__(self) -> str:
        return f"{self.setting}: {json.dumps(self.value)}"


#: Tried in this order; the first that fits is suggested.
SUGGESTED_PROJECTION = {"rank_out": 64, "rank_in": 64}


def _candidates(settings: Settings) -> list[tuple[str, Any, Settings]]:
    out = []
    if settings.precision == "fp32":
        out.append(("influence.precision", "bf16", replace(settings, precision="bf16")))
    if settings.projection is None:
        projection = Projection(SUGGESTED_PROJECTION["rank_out"], SUGGESTED_PROJECTION["rank_in"])
        out.append(
            ("influence.projection", SUGGESTED_PROJECTION, replace(settings, projection=projection))
        )
    for partitions in (2, 4, 8, 16, 32, 64):
        if partitions > settings.module_partitions:
            out.append(
                (
                    "influence.ekfac.module_partitions",
                    partitions,
                    replace(settings, module_partitions=partitions),
                )
            )
    for gpus in (2, 4, 8):
        if gpus > settings.gpus_per_job:
            out.append(("GPUs per job", gpus, replace(settings, gpus_per_job=gpus)))
    for key in ("batch_size", "task_batch_size"):
        batch = getattr(settings, key) // 2
        while batch >= 1:
            out.append((f"influence.{key}", batch, replace(settings, **{key: batch})))
            batch //= 2
    return out


def _applies(setting: str, rule: str) -> bool:
    if setting.endswith("module_partitions"):
        return rule.startswith("ekfac_")
    if setting.endswith("task_batch_size"):
        return rule == "task_gradients"
    return not (setting.endswith("batch_size") and rule == "task_gradients")


def _device_bytes(rule: str, shape: ModelShape, settings: Settings) -> int:
    return next(c.device_bytes for c in rule_costs(shape, settings) if c.rule == rule)


def fixes_for(
    rule: str, shape: ModelShape, settings: Settings, device_gb: float
) -> list[tuple[Fix, ...]]:
    """Alternatives that make ``rule``'s device peak fit ``device_gb``: each single setting
    (precision, projection, module partitions, GPUs per job, batch size) that does, at its
    smallest value, module partitions first for an EK-FAC rule (they leave its results
    unchanged); where none does alone, one combination, built by applying them in that order."""
    limit = device_gb * GB
    found: dict[str, Fix] = {}
    for setting, value, changed in _candidates(settings):
        if setting in found or not _applies(setting, rule):
            continue
        needed = _device_bytes(rule, shape, changed)
        if needed <= limit:
            found[setting] = Fix(setting, value, needed)
    if found:
        partitions = found.pop("influence.ekfac.module_partitions", None)
        return [(f,) for f in ([partitions] if partitions else []) + list(found.values())]
    combined: list[Fix] = []
    current = settings
    for setting, value, _ in _candidates(settings):
        if not _applies(setting, rule):
            continue
        trial = with_fixes(current, [Fix(setting, value, 0)])
        needed = _device_bytes(rule, shape, trial)
        if needed < _device_bytes(rule, shape, current):
            current = trial
            # a smaller batch or more partitions replace the earlier value of the setting
            combined = [f for f in combined if f.setting != setting] + [Fix(setting, value, needed)]
            if needed <= limit:
                return [tuple(combined)]
    return []


def with_fixes(settings: Settings, fixes: Sequence[Fix]) -> Settings:
    """``settings`` with each fix applied (the largest value where several name one setting)."""
    fields = {
        "influence.precision": "precision",
        "influence.ekfac.module_partitions": "module_partitions",
        "GPUs per job": "gpus_per_job",
    }
    for fix in fixes:
        if fix.setting == "influence.projection":
            settings = replace(
                settings, projection=Projection(fix.value["rank_out"], fix.value["rank_in"])
            )
        elif fix.setting in ("influence.batch_size", "influence.task_batch_size"):
            key = fix.setting.split(".")[1]
            settings = replace(settings, **{key: min(getattr(settings, key), fix.value)})
        else:
            name = fields[fix.setting]
            value = fix.value if name == "precision" else max(getattr(settings, name), fix.value)
            settings = replace(settings, **{name: value})
    return settings


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A study's rule costs, summed over its checkpoints, and the device they are judged on."""

    costs: list[RuleCost]
    warnings: list[str]
    fixes: list[Fix]  # the first alternative of each rule that does not fit
    gpu: Gpu
    mfu: float
    precision: str

    def table(self) -> str:
        header = (
            f"{'rule':<28}{'jobs':>6}{'host GB':>10}{'device GB':>11}{'disk GB':>10}"
            f"{'TFLOP':>12}{'GPU hours':>11}"
        )
        rows = [header, "-" * len(header)]
        for c in self.costs:
            device = f"{c.device_bytes / GB:.2f}" if c.device_bytes else "cpu"
            rows.append(
                f"{c.rule:<28}{c.jobs:>6}{c.host_bytes / GB:>10.2f}{device:>11}"
                f"{c.disk_bytes / GB:>10.2f}{c.flops / 1e12:>12.1f}"
                f"{c.device_hours(self.gpu, self.mfu, self.precision):>11.2f}"
            )
        total_hours = sum(c.device_hours(self.gpu, self.mfu, self.precision) for c in self.costs)
        total_disk = sum(c.disk_bytes for c in self.costs)
        rows.append("-" * len(header))
        rows.append(
            f"{'total':<28}{sum(c.jobs for c in self.costs):>6}{'':>10}{'':>11}"
            f"{total_disk / GB:>10.2f}{sum(c.flops for c in self.costs) / 1e12:>12.1f}"
            f"{total_hours:>11.2f}"
        )
        return "\n".join(rows)

    def assumptions(self) -> str:
        peak = self.gpu.peak_tflops(self.precision)
        return (
            f"device: {self.gpu.name}, {self.gpu.memory_gb:g} GB; GPU hours at {peak:g} TFLOP/s "
            f"({self.precision} dense peak) x MFU {self.mfu:g}. Peaks are per job, estimated by "
            "tikmix.cost (arithmetic, not measured); disk is uncompressed; task_gradients assumes "
            "influence.domain_tokens tokens per task; GB = 10^9 bytes."
        )


def plan(
    shapes: Mapping[str, ModelShape],
    settings: Settings,
    gpu: Gpu,
    mfu: float = DEFAULT_MFU,
    evaluated: str | None = None,
) -> Plan:
    """The rule costs of every checkpoint (jobs, disk and FLOPs added; peaks the largest), with
    stage 1, the checks and the evaluations once, at ``evaluated`` (default: the last), and a
    warning per rule whose device peak exceeds the GPU's memory, naming what makes it fit."""
    by_rule: dict[str, RuleCost] = {}
    warnings, first_fixes = [], []
    evaluated = evaluated or list(shapes)[-1]
    for ckpt, shape in shapes.items():
        if not tracks_modelled_layers(shape, settings):
            warnings.append(
                f"influence.tracked_modules matches none of the layers the cost model names for "
                f"{ckpt} (e.g. {shape.linears()[0].name}): sized as if every block's linear "
                "layer were tracked"
            )
        for cost in rule_costs(shape, settings, ckpt == evaluated):
            if cost.device_bytes > gpu.memory_gb * GB:
                fixes = fixes_for(cost.rule, shape, settings, gpu.memory_gb)
                first_fixes += fixes[0] if fixes else ()
                advice = (
                    "set "
                    + " or ".join(
                        " and ".join(map(str, alt)) + f" ({alt[-1].device_bytes / GB:.1f} GB)"
                        for alt in fixes
                    )
                    if fixes
                    else "no single setting (influence.precision, influence.projection, "
                    "influence.ekfac.module_partitions, GPUs per job, influence.batch_size) makes it fit"
                )
                warnings.append(
                    f"{cost.rule} ({ckpt}) needs {cost.device_bytes / GB:.1f} GB of device memory, "
                    f"more than the {gpu.memory_gb:g} GB of one {gpu.name}: {advice}"
                )
            seen = by_rule.get(cost.rule)
            by_rule[cost.rule] = (
                cost
                if seen is None
                else replace(
                    seen,
                    jobs=seen.jobs + cost.jobs,
                    host_bytes=max(seen.host_bytes, cost.host_bytes),
                    device_bytes=max(seen.device_bytes, cost.device_bytes),
                    disk_bytes=seen.disk_bytes + cost.disk_bytes,
                    flops=seen.flops + cost.flops,
                )
            )
    return Plan(list(by_rule.values()), warnings, first_fixes, gpu, mfu, settings.precision)


# --- the workflow's resources ---------------------------------------------------------------


def checkpoint_shapes(
    config: Mapping[str, Any], checkpoints: Mapping[str, str]
) -> dict[str, ModelShape]:
    """Checkpoint name → shape: each user checkpoint's config.json, else the built-in model of
    ``model:`` with the tokenizer's vocabulary (stage 1's checkpoints, before they exist)."""
    if checkpoints:
        return {name: ModelShape.from_file(path) for name, path in checkpoints.items()}
    builtin = {**config["model"], "vocab_size": config["tokenizer"]["vocab_size"]}
    return {"stage1": ModelShape.from_config(builtin, "config model:")}


def study_shapes(config: Mapping[str, Any]) -> dict[str, ModelShape]:
    """Every checkpoint influence is computed at, in order, and its shape (for :func:`plan`)."""
    shapes = checkpoint_shapes(config, config["checkpoints"])
    if config["checkpoints"]:
        return shapes
    fractions = config["stage1"]["checkpoint_fractions"]
    return {f"stage-1 checkpoint at {f:g}": shapes["stage1"] for f in fractions}


def job_mem_mb(cost: RuleCost, attempt: int = 1) -> int:
    """SLURM ``--mem`` of a job (MiB): its host peak with :data:`REQUEST_HEADROOM`, times
    ``attempt`` on a retry."""
    return math.ceil(REQUEST_HEADROOM * cost.host_bytes / MIB) * attempt


def job_runtime_min(cost: RuleCost, attempt: int = 1, gpu: Gpu | None = None) -> int:
    """SLURM ``-t`` of a job (minutes): 3× the estimate at :data:`DEFAULT_MFU` on
    :data:`DEFAULT_GPU`, at least 10 minutes, times ``attempt`` on a retry."""
    gpu = gpu or GPUS[DEFAULT_GPU]
    estimate = cost.job_minutes(gpu, DEFAULT_MFU, "bf16")
    return max(10, math.ceil(3 * estimate)) * attempt


def light_job_mem_mb(attempt: int = 1) -> int:
    """``--mem`` of a job that runs no model: its floor with :data:`REQUEST_HEADROOM`."""
    return math.ceil(REQUEST_HEADROOM * LIGHT_JOB_FLOOR_MIB) * attempt


class WorkflowResources:
    """The workflow's ``resources:`` callables, one cost table per checkpoint of the study.

    A job's ``mem_mb`` is its rule's estimated host peak with headroom, its ``runtime`` 3× its
    estimated FLOP time (:func:`job_mem_mb`, :func:`job_runtime_min`); both grow with ``attempt``.
    Rules without a ``{ckpt}`` wildcard (the evaluation) run at ``evaluation_checkpoint``; the
    built-in model's checkpoints all share one shape.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        checkpoints: Mapping[str, str],
        evaluation_checkpoint: str,
    ) -> None:
        settings = Settings.from_config(config)
        self._costs = {
            name: {c.rule: c for c in rule_costs(shape, settings)}
            for name, shape in checkpoint_shapes(config, checkpoints).items()
        }
        self._per_checkpoint = bool(checkpoints)
        self._evaluation_checkpoint = evaluation_checkpoint

    def cost(self, rule: str, wildcards: Mapping[str, str]) -> RuleCost:
        if not self._per_checkpoint:
            return self._costs["stage1"][rule]
        return self._costs[wildcards.get("ckpt", self._evaluation_checkpoint)][rule]

    def mem_mb(self, rule: str):
        return lambda wildcards, attempt: job_mem_mb(self.cost(rule, wildcards), attempt)

    def runtime(self, rule: str):
        return lambda wildcards, attempt: job_runtime_min(self.cost(rule, wildcards), attempt)
