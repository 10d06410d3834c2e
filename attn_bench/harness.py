"""One benchmark cell, end to end: skip reasons, parity gate, kernel check, timing, record."""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field

import torch

from attn_impls import REGISTRY, AttnImpl, AttnShape, Unsupported, get_impl
from attn_impls.registry import VARIANTS

from . import parity
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

MODES = ("eager", "compiled")
CHECK_STEPS = 3  # training steps compared with native/fp32 before timing
# rounds, warm-up rounds per profile when the user gives none
DEFAULT_ROUNDS = {"full": (20, 5), "smoke": (3, 1)}


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
    bare_loop: int = 0
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
    def attention_parity(self, impl: AttnImpl, variant: str, seq_len: int) -> parity.ParityReport:
        """Kernel-level parity on the cell's heads, head dim and length (memoized)."""
        key = (impl.id, variant, seq_len)
        if key not in self._attention_parity:
            backward = impl.backward and (self.device != "cpu" or impl.cpu_backward)
            batch = min(self.config(seq_len).batch, 2)
            self._attention_parity[key] = parity.attention_parity(
                impl, variant, self.shape(seq_len), batch, backward=backward)
        return self._attention_parity[key]

    def reference_traces(self, variant: str, seq_len: int):
        """(native bf16 eager, native fp32 eager) training traces for the model check."""
        key = (variant, seq_len)
        if key not in self._references:
            native = REGISTRY["native"]
            traces = []
            for autocast in (True, False):
                step = self._new_step(native, variant, seq_len, "eager", autocast=autocast)
                traces.append(parity.trace_steps(step, CHECK_STEPS))
                del step
                release_memory(self.device)
            self._references[key] = tuple(traces)
        return self._references[key]

    def model_parity(self, cell: Cell, step: TrainStep) -> parity.ParityReport:
        """Run CHECK_STEPS steps of a fresh `step` and compare with the native references."""
        baseline, reference = self.reference_traces(cell.variant, cell.seq_len)
        tested = parity.trace_steps(step, CHECK_STEPS)
        return parity.model_parity(f"model {cell.name}", tested, baseline, reference)

    # --- building and running ---------------------------------------------------
    def _new_step(self, impl: AttnImpl, variant: str, seq_len: int, mode: str,
                  autocast: bool = True) -> TrainStep:
        cfg = self.config(seq_len)
        attention = impl.factory(variant, self.shape(seq_len))
        model = build_model(cfg, attention, impl.layout, self.device)
        if mode == "compiled":
            compile_blocks(model)
        images, labels = synthetic_batch(cfg, self.device)
        return TrainStep(model, images, labels, self.device, autocast=autocast)

    def new_step(self, cell: Cell) -> TrainStep:
        return self._new_step(cell.impl, cell.variant, cell.seq_len, cell.mode)

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
        report = self.attention_parity(cell.impl, cell.variant, cell.seq_len)
        if not report.ok:
            raise CellFailure(report.summary())

        cfg = self.config(cell.seq_len)
        step = self.new_step(cell)
        model_report = self.model_parity(cell, step)
        if not model_report.ok:
            raise CellFailure(model_report.summary())
        first_step_s = model_report.first_step_s

        names = profiled_names(step, self.device)
        kernels = check_kernels(cell.impl, names)
        if not kernels.ok:
            raise CellFailure(kernels.explain())

        target = step
        injected_ms = 0.0
        if self.slowdown:
            target, injected_ms = slowed_down(step, self.slowdown, self.device)

        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        benchmark.group = f"{cell.seq_len}-{cell.mode}"
        benchmark.pedantic(target, rounds=self.rounds, warmup_rounds=self.warmup, iterations=1)
        loss = float(step.last_loss)
        if loss != loss:
            raise CellFailure(f"{cell.name}: loss became NaN during timing")

        median_s = benchmark.stats.stats.median
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
            "median_ms": median_s * 1e3,
            "images_per_s": cfg.batch / median_s,
            "peak_gib": peak_gib(self.device),
            "first_step_s": first_step_s,
            "compile_s": first_step_s - median_s if cell.mode == "compiled" else 0.0,
            "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()),
            "model_flops": train_step_flops(cfg),
            "tflops": train_step_flops(cfg) / median_s / 1e12,
            "kernel": kernels.label,
            "kernel_names": list(kernels.own or kernels.foreign),
            "attention_like_names": list(kernels.candidates),
            "parity": report.as_dict(),
            "model_parity": model_report.as_dict(),
            "injected_slowdown_ms": injected_ms,
        }
        if self.bare_loop:
            info["bare_loop_median_ms"] = bare_loop_median(target, self.bare_loop) * 1e3
        benchmark.extra_info.update(info)
        return info


def validate_choice(what: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def bare_loop_median(step, rounds: int) -> float:
    """Median seconds of `step` timed by a plain perf_counter loop (the suite's yardstick)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def slowed_down(step, fraction: float, device: str):
    """Wrap `step` with extra real work worth `fraction` of its median time.

    On CUDA the extra work is a device spin (`torch.cuda._sleep`) calibrated to
    the step's median; on CPU a busy wait. Used to prove the regression gate.
    The spin runs after the step's closing synchronize, so the host's launching of
    the step cannot overlap it: on the H200, a spin placed before the step showed
    only +4 % to +7.5 % of a nominal +8 %.
    """
    median = bare_loop_median(step, 3)
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
