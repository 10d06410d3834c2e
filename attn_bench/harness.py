"""The cells and the Suite that runs them: the run's settings, the matrix of cells (`Cell`), the
parity cache, and each test kind's cell flow, which reads as one short sequence: reset, parity,
build, first call, time, record.

Its parts live in their own modules: cell isolation (`isolation`), the round timer (`timer`) and
what a cell records (`record`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from attn_impls import REGISTRY, AttnFn, AttnImpl, AttnShape, Unsupported, get_impl
from attn_impls.registry import VARIANTS

from . import kernel_bench, parity, record, study
from .isolation import compile_cache_fields, fresh_cell_state, memory_summary, release_memory, use_inductor_cache
from .kernel_bench import DIRECTIONS, SyncedRounds
from .kernels import check_kernels, own_names_visible, profiled_names
from .model import (
    CONFIGS,
    DEFAULT_COMPILE_SCOPE,
    SEQ_LENS,
    TIMED_MATMUL_PRECISION,
    InferStep,
    TrainStep,
    VitConfig,
    build_model,
    compile_model,
    float32_matmul_precision,
    forward_flops,
    get_config,
    synthetic_batch,
    train_step_flops,
)
from .timer import STEPS_PER_ROUND, RoundTimer

MODES = ("eager", "compiled")
# rounds, warm-up rounds per profile when the user gives none
DEFAULT_ROUNDS = {"full": (10, 2), "smoke": (3, 1)}
PARITY_DEPTH = 2  # blocks in the model-level parity check (see Suite.parity_config)


class PhaseClock:
    """Wall seconds a cell spends in each phase, for `extra_info["phase_s"]`: where a matrix's time
    goes (reset of the previous cell's state, parity, build of the timed model, first step with its
    compilation, warm-up and timed rounds, the study's loop...).

    `with clock("parity"): ...` adds the block's seconds to that phase; `as_dict()` gives every
    phase, `other` (the rest since the clock started) and `total`.
    """

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def as_dict(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        return {**self.seconds, "other": max(total - sum(self.seconds.values()), 0.0), "total": total}


class CellFailure(Exception):
    """A cell failed with a message meant for the user (no traceback needed)."""


class CellSkip(Exception):
    """A cell cannot run here; the message is the reason."""


@dataclass(frozen=True)
class Cell:
    """One benchmark cell; `direction` ("fwd" or "fwd_bwd") only in attention-kernel cells."""

    impl: AttnImpl
    variant: str
    seq_len: int
    mode: str
    direction: str = ""

    @property
    def name(self) -> str:
        name = f"{self.impl.id}-{self.variant}-{self.seq_len}-{self.mode}"
        return f"{name}-{self.direction}" if self.direction else name

    @property
    def parity_key(self) -> tuple:
        """The key of the parity checks that cells of every test kind and direction share."""
        return (self.impl.id, self.variant, self.seq_len, self.mode)


@dataclass
class Suite:
    """The settings and caches shared by the cells of one pytest run: the matrix of cells
    (`cell`, `attention_cell`), the parity cache, the timed models, and each test kind's cell flow
    (`run_cell`, `run_infer_cell`, `run_attention_cell`)."""

    profile: str
    device: str
    rounds: int
    warmup: int
    bare_loop: bool = False
    study: bool = False
    slowdown: float = 0.0
    compile_scope: str = DEFAULT_COMPILE_SCOPE  # model.COMPILE_SCOPES
    inductor_cache: str | None = None  # use_inductor_cache's root; None: Inductor's default folder
    price_per_gpu_hour: float | None = None  # $; training and inference cells then record usd_per_million_images
    # Measured once per run by the first attention-kernel cell on CUDA (`matmul_peak`).
    matmul_peak_tflops: float | None = None
    _attention_parity: dict = field(default_factory=dict)
    _model_parity: dict = field(default_factory=dict)

    # --- the matrix of cells ------------------------------------------------------
    def config(self, seq_len: int) -> VitConfig:
        """The model config of this run's profile at `seq_len`."""
        return get_config(self.profile, seq_len)

    def shape(self, seq_len: int) -> AttnShape:
        """The attention shape the adapters' factories take at `seq_len` on this run's device."""
        cfg = self.config(seq_len)
        return AttnShape(cfg.heads, cfg.head_dim, seq_len, self.device)

    def cell(self, impl_id: str, variant: str, seq_len: int, mode: str, backward: bool = True) -> Cell:
        """The cell for these names; CellSkip with the reason if it cannot run here.

        `backward=False` for cells that run no backward pass (inference, attention fwd): an
        implementation without a backward on this device may still run them.
        """
        impl = get_impl(impl_id)
        validate_choice("variant", variant, VARIANTS)
        validate_choice("mode", mode, MODES)
        validate_choice("seq_len", seq_len, SEQ_LENS)
        reason = impl.unsupported_reason(variant, self.device, backward=backward)
        if mode == "compiled" and not reason and not impl.compile:
            reason = f"{impl.id} does not run under torch.compile"
        if reason:
            raise CellSkip(reason)
        return Cell(impl, variant, seq_len, mode)

    def attention_cell(self, impl_id: str, variant: str, seq_len: int, mode: str, direction: str) -> Cell:
        """The attention-kernel cell for these names; CellSkip with the reason if it cannot run here."""
        validate_choice("direction", direction, DIRECTIONS)
        cell = self.cell(impl_id, variant, seq_len, mode, backward=direction == "fwd_bwd")
        return dataclasses.replace(cell, direction=direction)

    @property
    def timer(self) -> RoundTimer:
        """The round timer of this run's settings (rounds, warm-up, --attn-slowdown, --attn-bare-loop)."""
        return RoundTimer(self.device, self.rounds, self.warmup, self.slowdown, self.bare_loop)

    # --- the parity cache -------------------------------------------------------------
    def attention_parity(self, cell: Cell, attention: AttnFn) -> parity.ParityReport:
        """Parity of `attention` (the cell's callable) on the block's packed-qkv path, compiled
        in compiled cells, against the fp32 reference (memoized per impl, variant, seq_len, mode)."""
        key = cell.parity_key
        if key not in self._attention_parity:
            shape, batch = self.shape(cell.seq_len), min(self.config(cell.seq_len).batch, 2)
            reference = once_per_process(("attention", cell.variant, shape, batch),
                                         lambda: parity.attention_reference(cell.variant, shape, batch))
            backward = cell.impl.backward and (self.device != "cpu" or cell.impl.cpu_backward)
            self._attention_parity[key] = parity.check_attention(
                f"attention {cell.name}", attention, cell.impl.layout, reference,
                compiled=cell.mode == "compiled", backward=backward)
        return self._attention_parity[key]

    def model_references(self, variant: str, seq_len: int) -> list[parity.ModelReference]:
        """The parity models of (variant, seq_len) with their fp32 results and the errors of
        correct bf16 runs (native, sdpa_math where it has the variant), computed once per process."""
        shape, cfg = self.shape(seq_len), self.parity_config(seq_len)
        correct_impls = [impl for impl in (REGISTRY["native"], REGISTRY["sdpa_math"]) if variant in impl.variants]

        def compute():
            correct = {impl.id: (impl.factory(variant, shape), impl.layout) for impl in correct_impls}
            references = parity.model_references(cfg, variant, self.device, correct)
            release_memory(self.device)
            return references

        return once_per_process(("model", variant, cfg, self.device, tuple(impl.id for impl in correct_impls)),
                                compute)

    def parity_config(self, seq_len: int) -> VitConfig:
        """The cell's config with at most PARITY_DEPTH blocks, for the model-level check.

        The model rule's constants were measured on 1- and 2-block models; in 24 blocks with
        the parity init, bf16 rounding grows chaotically with depth (on the H200 every fused
        kernel exceeded 100x the limit in the last blocks' gradients while being correct).
        The block, its attention callable, the batch and the mode stay the cell's own.
        """
        cfg = self.config(seq_len)
        return dataclasses.replace(cfg, depth=min(cfg.depth, PARITY_DEPTH))

    def model_parity(self, cell: Cell, attention: AttnFn) -> parity.ParityReport:
        """First training step of fresh parity models of `cell` (same callable, same mode) against
        native fp32; `first_step_s` is the wall time of the first model's first step."""
        references = self.model_references(cell.variant, cell.seq_len)
        report = parity.check_model(f"model {cell.name}", attention, cell.impl.layout, references,
                                    self.device, compile_scope=self.cell_compile_scope(cell))
        release_memory(self.device)
        return report

    def model_parity_once(self, cell: Cell, attention: AttnFn) -> parity.ParityReport:
        """`model_parity`, memoized per (impl, variant, seq_len, mode) like `attention_parity`: for
        the tests that need only its verdict (inference cells, test_model_parity). Training cells
        run their own, whose first step is their compile time, and leave it here for them
        (conftest runs training cells before inference cells)."""
        key = cell.parity_key
        if key not in self._model_parity:
            self._model_parity[key] = self.model_parity(cell, attention)
        return self._model_parity[key]

    def infer_model_parity(self, cell: Cell, attention: AttnFn) -> parity.ParityReport:
        """The model-level gate of an inference cell.

        Where the implementation has a backward on this device, it is the training cells'
        check (`model_parity_once`: a training step of the parity models, gradients
        included): the stronger test of the same callable, and a cell then passes or fails
        the same way in both tests. A forward-only check of the logits misses what the
        gradients catch: on CPU (smoke, 196) the 2 % scale error of tests/test_power.py used
        0.55-0.61 of its logit limit, while every other wrong attention there used 6-92x.
        Where there is no backward (flex on CPU), the forward-only equivalent is all there is:
        the logits of an inference forward of the same parity models
        (`parity.check_model_forward`) against the same references and logit limits; the
        attention-level check then runs forward-only too.
        """
        if self.has_backward(cell.impl):
            return self.model_parity_once(cell, attention)
        report = parity.check_model_forward(f"model {cell.name}", attention, cell.impl.layout,
                                            self.model_references(cell.variant, cell.seq_len), self.device,
                                            compile_scope=self.cell_compile_scope(cell))
        release_memory(self.device)
        return report

    def fresh_cell(self, impl_id: str) -> None:
        """The boundary before a cell of `impl_id`: `fresh_cell_state`, then the implementation's
        Inductor cache folder (`use_inductor_cache`)."""
        fresh_cell_state(self.device)
        use_inductor_cache(self.inductor_cache, impl_id)

    def has_backward(self, impl: AttnImpl) -> bool:
        """Whether `impl` has a backward pass on this suite's device."""
        return impl.backward and (self.device != "cpu" or impl.cpu_backward)

    def matmul_peak(self) -> float:
        """The GPU's bf16 dense matmul TFLOP/s, measured on the first call of the run (CUDA only)."""
        if self.matmul_peak_tflops is None:
            self.matmul_peak_tflops, _ = kernel_bench.matmul_peak_tflops(self.device)
            release_memory(self.device)
        return self.matmul_peak_tflops

    # --- the timed models ---------------------------------------------------------
    def new_model(self, cell: Cell, attention: AttnFn):
        """A fresh full ViT of `cell` (timm's init) with the cell's `attention`, compiled with the
        suite's `compile_scope` in compiled cells, and the cell's synthetic batch: (model, images, labels)."""
        cfg = self.config(cell.seq_len)
        model = build_model(cfg, attention, cell.impl.layout, self.device)
        if cell.mode == "compiled":
            compile_model(model, self.compile_scope)
        return (model, *synthetic_batch(cfg, self.device))

    def cell_compile_scope(self, cell: Cell) -> str | None:
        """How `cell`'s models are compiled: the suite's scope in compiled cells, None in eager."""
        return self.compile_scope if cell.mode == "compiled" else None

    def new_step(self, cell: Cell, attention: AttnFn) -> TrainStep:
        """A fresh timed training step of `cell` (timm's init) with the cell's `attention`."""
        model, images, labels = self.new_model(cell, attention)
        return TrainStep(model, images, labels, self.device)

    def new_infer_step(self, cell: Cell, attention: AttnFn) -> InferStep:
        """A fresh inference forward of `cell`'s full ViT (timm's init) on the training batch."""
        model, images, _ = self.new_model(cell, attention)
        return InferStep(model, images, self.device)

    # --- the cell flows -----------------------------------------------------------
    def run_cell(self, cell: Cell, benchmark) -> dict:
        """Parity gate, kernel check, then time `cell` with pytest-benchmark.

        Raises CellFailure (parity, kernel mismatch, NaN, out of memory) with a
        message that says what and by how much; the cell is then not timed.
        Raises CellSkip when the library refuses the inputs (adapters raise Unsupported).
        """
        return self._guarded(cell, self._run_cell, benchmark)

    def _run_cell(self, cell: Cell, benchmark) -> dict:
        clock = PhaseClock()
        with clock("reset"):
            self.fresh_cell(cell.impl.id)
        # One attention callable per cell: the parity checks test the callable that is timed.
        attention = cell.impl.factory(cell.variant, self.shape(cell.seq_len))
        with clock("parity"):
            # The cell's first training step (its compile, autotuning and JIT) happens in here.
            model_report = self.model_parity(cell, attention)
            # The same check of the same kind of callable: inference cells and test_model_parity reuse it.
            self._model_parity.setdefault(cell.parity_key, model_report)
            require(model_report)
            report = self.attention_parity(cell, attention)
            require(report)

        cfg = self.config(cell.seq_len)
        with clock("build"):
            step = self.new_step(cell, attention)
        # The timed model's own first step: per block it reuses the parity model's compiled block,
        # compiled whole it compiles again (24 blocks at seq 196 are a bigger graph than 2).
        with clock("first_step"):
            first_step_s, caches, kernels = self._first_call_and_kernels(cell, step, backward=True, own_visible=True)

        steps = STEPS_PER_ROUND[self.profile]
        step.sync_every = steps
        timing = self.timer.time_steps(step, steps, benchmark, f"{cell.seq_len}-{cell.mode}", cfg.batch, clock)
        if math.isnan(float(step.last_loss)):
            raise CellFailure(f"{cell.name}: loss became NaN during timing")

        flops = train_step_flops(cfg)
        info = {
            **record.cell_fields(cell, self.profile, self.device, cfg, depth=True),
            "parity_first_step_s": model_report.first_step_s,
            "first_step_s": first_step_s,
            "model_flops": flops,
            **record.check_fields(caches, kernels, report, step.precision, model_report),
            **timing,
        }
        if benchmark.disabled:  # --benchmark-disable: every check ran, nothing was timed
            return record.finish(benchmark, info, clock)
        median_s = benchmark.stats.stats.median
        # The same definition in every mode and compile scope: what the first steps of the
        # parity model and of the timed model cost beyond a timed step (compilation,
        # autotuning, JIT in either); compile_cache says whether Inductor's on-disk cache
        # was cold or warm.
        compile_s = model_report.first_step_s + first_step_s - median_s
        info.update(record.step_results(median_s, cfg.batch, flops, compile_s, self.price_per_gpu_hour))
        info["steps_per_round"] = steps
        del step
        release_memory(self.device)
        if self.study:
            with clock("study"):
                info.update(self.study_yardstick(cell, median_s))
        return record.finish(benchmark, info, clock)

    def study_yardstick(self, cell: Cell, median_s: float) -> dict:
        """Time the study's own model and loop (attn_bench.study) with the study's attention function for
        `cell` (`study.yardstick`), never the cell's own callable. Records `study_system` (None when the
        study defines none) and either the study's times or `no_yardstick` ("no yardstick: <reason>")."""
        found = study.yardstick(cell.impl.id, cell.variant, self.device)
        if found.system is None:
            return {"study_system": None, "no_yardstick": found.note}
        steps = STEPS_PER_ROUND[self.profile]
        result = study.time_study_system(found.system, self.config(cell.seq_len), cell.mode, self.device,
                                         steps=self.rounds * steps, warmup=max(self.warmup * steps, 5))
        release_memory(self.device)
        return {
            "study_system": found.system.name,
            "study_median_ms": result["median_ms"],
            "study_mean_ms": result["mean_ms"],
            "vs_study_pct": (median_s * 1e3 / result["median_ms"] - 1) * 100,
        }

    def run_infer_cell(self, cell: Cell, benchmark) -> dict:
        """Parity gate (`infer_model_parity`, `attention_parity`), kernel check (forward),
        then time one inference forward of the cell's full ViT with pytest-benchmark, in
        rounds of STEPS_PER_ROUND forwards with one synchronize each.

        The batch is the training batch of the cell's config, so that images/s compare with
        the training cell's. Raises CellFailure and CellSkip as `run_cell` does.
        """
        return self._guarded(cell, self._run_infer_cell, benchmark)

    def _run_infer_cell(self, cell: Cell, benchmark) -> dict:
        clock = PhaseClock()
        with clock("reset"):
            self.fresh_cell(cell.impl.id)
        attention = cell.impl.factory(cell.variant, self.shape(cell.seq_len))
        with clock("parity"):
            model_report = self.infer_model_parity(cell, attention)
            require(model_report)
            report = self.attention_parity(cell, attention)
            require(report)

        cfg = self.config(cell.seq_len)
        with clock("build"):
            step = self.new_infer_step(cell, attention)
        with clock("first_step"):
            first_step_s, caches, kernels = self._first_call_and_kernels(
                cell, step, backward=False, own_visible=own_names_visible(cell.impl, self.device))
        steps = STEPS_PER_ROUND[self.profile]
        with clock("timed"):
            timing = self.timer.time_calls(step, steps, benchmark, f"infer-{cell.seq_len}-{cell.mode}", cfg.batch)
        if not bool(torch.isfinite(step.last_logits).all()):
            raise CellFailure(f"{cell.name}: logits became NaN or inf during timing")

        flops = forward_flops(cfg)
        info = {
            **record.cell_fields(cell, self.profile, self.device, cfg, depth=True),
            "first_step_s": first_step_s,
            "model_flops": flops,
            **record.check_fields(caches, kernels, report, step.precision, model_report),
            **timing,
            "steps_per_round": steps,
        }
        if not benchmark.disabled:
            median_s = benchmark.stats.stats.median
            info.update(record.step_results(median_s, cfg.batch, flops, first_step_s - median_s,
                                            self.price_per_gpu_hour))
        return record.finish(benchmark, info, clock)

    def run_attention_cell(self, cell: Cell, benchmark) -> dict:
        """Attention parity (the memoized `attention_parity` of the training cells), kernel
        check, then time the attention call alone (`kernel_bench.attention_call`: the cell's
        (batch, heads, seq_len, head_dim), bf16, in the implementation's layout; compiled in
        compiled cells) with pytest-benchmark, in rounds of calls lasting at least
        `kernel_bench.ROUND_TARGET_S` with one synchronize each, at float32 matmul precision
        "high" as in a training step. On CUDA also a bare median of the same call
        (`kernel_bench.bare_median_ms`) and the run's matmul peak (`matmul_peak`).

        Raises CellFailure and CellSkip as `run_cell` does.
        """
        return self._guarded(cell, self._run_attention_cell, benchmark)

    def _run_attention_cell(self, cell: Cell, benchmark) -> dict:
        clock = PhaseClock()
        with clock("reset"):
            self.fresh_cell(cell.impl.id)
        shape, cfg = self.shape(cell.seq_len), self.config(cell.seq_len)
        attention = cell.impl.factory(cell.variant, shape)
        with clock("parity"):
            report = self.attention_parity(cell, attention)
            require(report)

        backward = cell.direction == "fwd_bwd"
        call = kernel_bench.attention_call(attention, cell.impl.layout, cfg.batch, shape, cell.direction,
                                           compiled=cell.mode == "compiled")
        cuda, bare = self.device.startswith("cuda"), None
        with float32_matmul_precision(TIMED_MATMUL_PRECISION):
            with clock("first_step"):
                first_call_s, caches, kernels = self._first_call_and_kernels(
                    cell, call, backward, own_visible=own_names_visible(cell.impl, self.device))
            calls = kernel_bench.size_rounds(call, self.device)
            group = f"attention-{cell.seq_len}-{cell.mode}-{cell.direction}"
            with clock("timed"):
                timing = self.timer.time_calls(call, calls, benchmark, group, cfg.batch)
            if not bool(torch.isfinite(call.last_out).all()):
                raise CellFailure(f"{cell.name}: output became NaN or inf during timing")
            if cuda and not benchmark.disabled:
                with clock("do_bench"):
                    bare = kernel_bench.bare_median_ms(call, self.device)
                    host_ms = kernel_bench.host_ms_per_call(call, self.device, calls)
                    device_ms = kernel_bench.device_ms_per_call(call, self.device, calls)

        flops = kernel_bench.attention_flops(cfg.batch, cfg.heads, cell.seq_len, cfg.head_dim, cell.direction)
        info = {
            **record.cell_fields(cell, self.profile, self.device, cfg),
            "direction": cell.direction,
            "first_call_s": first_call_s,
            "flops": flops,
            **record.check_fields(caches, kernels, report, TIMED_MATMUL_PRECISION),
            **timing,
            "calls_per_round": calls,
        }
        if cell.variant == "neighborhood":
            info["tile_density"] = kernel_bench.neighborhood_tile_density(cell.seq_len)
        if not benchmark.disabled:
            median_s = benchmark.stats.stats.median
            info.update(record.attention_results(median_s, flops, first_call_s, info.get("tile_density")))
            if bare:
                info.update(record.do_bench_fields(median_s, flops, bare, host_ms, device_ms, self.matmul_peak()))
        return record.finish(benchmark, info, clock)

    # --- the flows' shared steps --------------------------------------------------
    def _guarded(self, cell: Cell, run, benchmark) -> dict:
        """`run(cell, benchmark)`, with Unsupported as CellSkip and out of memory as CellFailure."""
        return guarded(cell.name, self.device, lambda: run(cell, benchmark))

    def _first_call_and_kernels(self, cell: Cell, fn, backward: bool, own_visible: bool):
        """Time `fn`'s first call (compilation included in compiled cells), read the compile caches'
        states, then profile one more call and check its kernels (`check_kernels`' `backward` and
        `own_visible`); CellFailure if they are wrong. Returns (first call seconds, the fields
        `compile_cache` and `aot_cache`, kernel check)."""
        first_s = kernel_bench.seconds_per_call(fn, self.device, calls=1)
        caches = compile_cache_fields()
        names = profiled_names(SyncedRounds(fn, self.device), self.device)
        kernels = check_kernels(cell.impl, names, backward=backward, variant=cell.variant, own_visible=own_visible)
        if not kernels.ok:
            raise CellFailure(kernels.explain())
        return first_s, caches, kernels


# Parity references by everything they depend on (kind, variant, shape or parity config, batch, device,
# the correct runs), shared by every Suite, implementation and mode of the process: the fp32 results,
# the errors of correct same-dtype runs and the controls' errors. The unit tests build several suites.
_REFERENCES: dict[tuple, object] = {}


def once_per_process(key: tuple, compute: Callable[[], object]):
    """`compute()` the first time `key` is asked for in this process, the stored result after."""
    if key not in _REFERENCES:
        _REFERENCES[key] = compute()
    return _REFERENCES[key]


def guarded(name: str, device: str, run):
    """`run()`, with the adapter's Unsupported as CellSkip and out of memory as CellFailure
    (with the memory figures); memory is released either way."""
    failure = None
    try:
        return run()
    except Unsupported as e:
        raise CellSkip(str(e)) from None
    except torch.OutOfMemoryError as e:
        # Build the message here and raise outside this block so the
        # traceback (and the tensors its frames hold) is freed first.
        failure = f"{name}: out of memory: {str(e).splitlines()[0]}"
    finally:
        release_memory(device)
    raise CellFailure(f"{failure} | {memory_summary(device)}")


def require(report: parity.ParityReport) -> None:
    """The parity gate: CellFailure with the measured errors and limits unless `report` passed."""
    if not report.ok:
        raise CellFailure(report.summary())


def validate_choice(what: str, value, valid) -> None:
    """ValueError naming the valid values unless `value` is one of `valid`."""
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


__all__ = ["CONFIGS", "DEFAULT_ROUNDS", "MODES", "Cell", "CellFailure", "CellSkip", "PhaseClock", "Suite",
           "guarded", "require"]
