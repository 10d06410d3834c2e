"""One benchmark cell, end to end: skip reasons, parity gate, kernel check, timing, record."""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from dataclasses import dataclass, field

import torch

from attn_impls import REGISTRY, AttnFn, AttnImpl, AttnShape, Unsupported, get_impl
from attn_impls.registry import VARIANTS

from . import envinfo, parity
from .kernels import check_kernels, profiled_names
from .model import (
    CONFIGS,
    SEQ_LENS,
    TrainStep,
    VitConfig,
    build_model,
    compile_blocks,
    get_config,
    synchronize,
    synthetic_batch,
    train_step_flops,
)
from .study import study_model, study_train_loop

MODES = ("eager", "compiled")
# rounds, warm-up rounds per profile when the user gives none
DEFAULT_ROUNDS = {"full": (10, 2), "smoke": (3, 1)}
PARITY_DEPTH = 2  # blocks in the model-level parity check (see Suite.parity_config)
# Training steps per timed round, synchronized once at the round's end: the study's loop
# never synchronizes, so the device never idles between steps; one sync per step made the
# suite 0.2-2.7 % slower than the study's code on the H200 (results/h200/2026-12-01/).
# pytest-benchmark records the round's time divided by this (its `iterations`).
STEPS_PER_ROUND = {"full": 3, "smoke": 1}


class CellFailure(Exception):
    """A cell failed with a message meant for the user (no traceback needed)."""


class CellSkip(Exception):
    """A cell cannot run here; the message is the reason."""


@dataclass(frozen=True)
class Cell:
    impl: AttnImpl
    variant: str
    seq_len: int
    mode: str

    @property
    def name(self) -> str:
        return f"{self.impl.id}-{self.variant}-{self.seq_len}-{self.mode}"


@dataclass
class Suite:
    """Session-wide settings and caches shared by the cells of one pytest run."""

    profile: str
    device: str
    rounds: int
    warmup: int
    bare_loop: bool = False
    study: bool = False
    slowdown: float = 0.0
    _attention_parity: dict = field(default_factory=dict)
    _references: dict = field(default_factory=dict)

    def config(self, seq_len: int) -> VitConfig:
        return get_config(self.profile, seq_len)

    def shape(self, seq_len: int) -> AttnShape:
        cfg = self.config(seq_len)
        return AttnShape(cfg.heads, cfg.head_dim, seq_len, self.device)

    def cell(self, impl_id: str, variant: str, seq_len: int, mode: str) -> Cell:
        """The cell for these names; CellSkip with the reason if it cannot run here."""
        impl = get_impl(impl_id)
        validate_choice("variant", variant, VARIANTS)
        validate_choice("mode", mode, MODES)
        validate_choice("seq_len", seq_len, SEQ_LENS)
        reason = impl.unsupported_reason(variant, self.device, backward=True)
        if mode == "compiled" and not reason and not impl.compile:
            reason = f"{impl.id} does not run under torch.compile"
        if reason:
            raise CellSkip(reason)
        return Cell(impl, variant, seq_len, mode)

    # --- parity -----------------------------------------------------------------
    def attention_parity(self, cell: Cell, attention: AttnFn) -> parity.ParityReport:
        """Parity of `attention` (the cell's callable) on the block's packed-qkv path, compiled
        in compiled cells, against the fp32 reference (memoized per impl, variant, seq_len, mode)."""
        key = (cell.impl.id, cell.variant, cell.seq_len, cell.mode)
        if key not in self._attention_parity:
            ref_key = ("attention", cell.variant, cell.seq_len)
            if ref_key not in self._references:
                batch = min(self.config(cell.seq_len).batch, 2)
                self._references[ref_key] = parity.attention_reference(
                    cell.variant, self.shape(cell.seq_len), batch)
            backward = cell.impl.backward and (self.device != "cpu" or cell.impl.cpu_backward)
            self._attention_parity[key] = parity.check_attention(
                f"attention {cell.name}", attention, cell.impl.layout, self._references[ref_key],
                compiled=cell.mode == "compiled", backward=backward)
        return self._attention_parity[key]

    def model_references(self, variant: str, seq_len: int) -> list[parity.ModelReference]:
        """The parity models of (variant, seq_len) with their fp32 results and the errors of
        correct bf16 runs (native, sdpa_math where it has the variant), cached for the session."""
        key = ("model", variant, seq_len)
        if key not in self._references:
            shape = self.shape(seq_len)
            correct = {impl.id: (impl.factory(variant, shape), impl.layout)
                       for impl in (REGISTRY["native"], REGISTRY["sdpa_math"]) if variant in impl.variants}
            self._references[key] = parity.model_references(self.parity_config(seq_len), variant, self.device,
                                                            correct)
            release_memory(self.device)
        return self._references[key]

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
                                    self.device, compiled=cell.mode == "compiled")
        release_memory(self.device)
        return report

    # --- building and running ---------------------------------------------------
    def new_step(self, cell: Cell, attention: AttnFn) -> TrainStep:
        """A fresh timed training step of `cell` (timm's init) with the cell's `attention`."""
        cfg = self.config(cell.seq_len)
        model = build_model(cfg, attention, cell.impl.layout, self.device)
        if cell.mode == "compiled":
            compile_blocks(model)
        images, labels = synthetic_batch(cfg, self.device)
        return TrainStep(model, images, labels, self.device)

    def run_cell(self, cell: Cell, benchmark) -> dict:
        """Parity gate, kernel check, then time `cell` with pytest-benchmark.

        Raises CellFailure (parity, kernel mismatch, NaN, out of memory) with a
        message that says what and by how much; the cell is then not timed.
        Raises CellSkip when the library refuses the inputs (adapters raise Unsupported).
        """
        failure = None
        try:
            return self._run_cell(cell, benchmark)
        except Unsupported as e:
            raise CellSkip(str(e)) from None
        except torch.OutOfMemoryError as e:
            # Build the message here and raise outside this block so the
            # traceback (and the tensors its frames hold) is freed first.
            failure = f"{cell.name}: out of memory: {str(e).splitlines()[0]}"
        finally:
            release_memory(self.device)
        failure += f" | {memory_summary(self.device)}"
        raise CellFailure(failure)

    def _run_cell(self, cell: Cell, benchmark) -> dict:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()  # reset() keeps them: graph breaks are per cell
        release_memory(self.device)
        # One attention callable per cell: the parity checks test the callable that is timed.
        attention = cell.impl.factory(cell.variant, self.shape(cell.seq_len))
        # The cell's first training step (its compile, autotuning and JIT) happens in here.
        model_report = self.model_parity(cell, attention)
        compile_cache = inductor_cache_state()
        if not model_report.ok:
            raise CellFailure(model_report.summary())
        report = self.attention_parity(cell, attention)
        if not report.ok:
            raise CellFailure(report.summary())

        cfg = self.config(cell.seq_len)
        step = self.new_step(cell, attention)
        names = profiled_names(step, self.device)
        kernels = check_kernels(cell.impl, names, variant=cell.variant)
        if not kernels.ok:
            raise CellFailure(kernels.explain())

        target = step
        injected_ms = 0.0
        if self.slowdown:
            target, injected_ms = slowed_down(step, self.slowdown, self.device)
        steps = STEPS_PER_ROUND[self.profile]
        step.sync_every = steps
        bare_before = bare_round_ms(target, steps, self.rounds // 2) if self.bare_loop else []

        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        benchmark.group = f"{cell.seq_len}-{cell.mode}"
        benchmark.pedantic(target, rounds=self.rounds, warmup_rounds=self.warmup, iterations=steps)
        # The bare rounds come half before and half after the timed ones, so that an order
        # effect shows as a difference between the halves rather than as an instrument bias.
        bare_after = bare_round_ms(target, steps, self.rounds - self.rounds // 2) if self.bare_loop else []
        loss = float(step.last_loss)
        if loss != loss:
            raise CellFailure(f"{cell.name}: loss became NaN during timing")

        info = {
            "impl": cell.impl.id,
            "library": cell.impl.library,
            "variant": cell.variant,
            "seq_len": cell.seq_len,
            "mode": cell.mode,
            "profile": self.profile,
            "device": self.device,
            "batch": cfg.batch,
            "depth": cfg.depth,
            "heads": cfg.heads,
            "head_dim": cfg.head_dim,
            "peak_gib": peak_gib(self.device),
            "first_step_s": model_report.first_step_s,
            "compile_cache": compile_cache,
            "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()),
            "model_flops": train_step_flops(cfg),
            **kernels.as_dict(),
            "parity": report.as_dict(),
            "model_parity": model_report.as_dict(),
            "numerics": envinfo.numerics(step.precision),
            "injected_slowdown_ms": injected_ms,
        }
        if benchmark.disabled:  # --benchmark-disable: every check ran, nothing was timed
            benchmark.extra_info.update(info)
            return info
        median_s = benchmark.stats.stats.median
        info.update({
            "median_ms": median_s * 1e3,
            "images_per_s": cfg.batch / median_s,
            # The same definition in every mode: what the cell's first step cost beyond a
            # timed step (compilation, autotuning, JIT); compile_cache says whether Inductor's
            # on-disk cache was cold or warm.
            "compile_s": model_report.first_step_s - median_s,
            "tflops": train_step_flops(cfg) / median_s / 1e12,
        })
        if self.bare_loop:
            info.update(bare_loop_median_ms=statistics.median(bare_before + bare_after),
                        bare_loop_before_ms=statistics.median(bare_before or bare_after),
                        bare_loop_after_ms=statistics.median(bare_after))
        info["steps_per_round"] = steps
        del step, target
        release_memory(self.device)
        if self.study:
            info.update(self.study_yardstick(cell, attention, median_s))
        benchmark.extra_info.update(info)
        return info

    def study_yardstick(self, cell: Cell, attention: AttnFn, median_s: float) -> dict:
        """Time the study's own model and loop (attn_bench.study) with the cell's attention."""
        cfg = self.config(cell.seq_len)
        model = study_model(cfg, attention, cell.impl.layout, self.device)
        images, labels = synthetic_batch(cfg, self.device)
        steps = STEPS_PER_ROUND[self.profile]
        result = study_train_loop(model, images, labels, self.device, steps=self.rounds * steps,
                                  compile=cell.mode == "compiled", warmup=max(self.warmup * steps, 5))
        del model
        release_memory(self.device)
        return {
            "study_median_ms": result["median_ms"],
            "study_mean_ms": result["mean_ms"],
            "vs_study_pct": (median_s * 1e3 / result["median_ms"] - 1) * 100,
        }


def inductor_cache_state() -> str:
    """'cold', 'warm' or 'mixed' from Inductor's FX-graph cache counters; 'none' if nothing compiled."""
    counters = torch._dynamo.utils.counters["inductor"]
    hits, misses = counters.get("fxgraph_cache_hit", 0), counters.get("fxgraph_cache_miss", 0)
    if not hits and not misses:
        return "none"
    return "mixed" if hits and misses else ("warm" if hits else "cold")


def bare_round_ms(step, steps: int, rounds: int) -> list[float]:
    """Per-step ms of `rounds` rounds of `steps` calls each, timed by a bare perf_counter."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps * 1e3)
    return times


def validate_choice(what: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def slowed_down(step, fraction: float, device: str):
    """Wrap `step` with extra real work worth `fraction` of its median time.

    On CUDA the extra work is a device spin (`torch.cuda._sleep`) calibrated to
    the step's median; on CPU a busy wait. Used to prove the regression gate.
    The spin runs after the step's closing synchronize, so the host's launching of
    the step cannot overlap it: on the H200, a spin placed before the step showed
    only +4 % to +7.5 % of a nominal +8 %.
    """
    median = statistics.median(bare_round_ms(step, 1, 3)) / 1e3
    extra_s = fraction * median
    if device.startswith("cuda"):
        cycles = _spin_cycles_per_second(device) * extra_s

        def slow_step():
            step()
            torch.cuda._sleep(int(cycles))
            synchronize(device)
    else:
        def slow_step():
            step()
            end = time.perf_counter() + extra_s
            while time.perf_counter() < end:
                pass
    return slow_step, extra_s * 1e3


def _spin_cycles_per_second(device: str) -> float:
    cycles = 10_000_000
    torch.cuda._sleep(cycles)
    synchronize(device)
    start = time.perf_counter()
    torch.cuda._sleep(cycles)
    synchronize(device)
    return cycles / (time.perf_counter() - start)


def release_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def peak_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def memory_summary(device: str) -> str:
    if not device.startswith("cuda"):
        return "CPU run"
    free, total = torch.cuda.mem_get_info(device)
    return (f"peak allocated {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB, "
            f"now allocated {torch.cuda.memory_allocated(device) / 2**30:.1f} GiB, "
            f"free {free / 2**30:.1f} of {total / 2**30:.1f} GiB")


__all__ = ["CONFIGS", "DEFAULT_ROUNDS", "MODES", "Cell", "CellFailure", "CellSkip", "Suite"]
