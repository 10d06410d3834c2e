"""The round timer: `benchmark.pedantic` in rounds of several calls ending with one synchronize,
the energy over the timed rounds, and the two instruments beside it (--attn-bare-loop's
perf_counter rounds, --attn-slowdown's injected work)."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import energy
from .isolation import peak_gib
from .kernel_bench import SyncedRounds
from .model import synchronize

# Training steps per timed round, synchronized once at the round's end: the study's loop
# never synchronizes, so the device never idles between steps; one sync per step made the
# suite 0.2-2.7 % slower than the study's code on the H200 (2026-12-01).
# pytest-benchmark records the round's time divided by this (its `iterations`).
STEPS_PER_ROUND = {"full": 3, "smoke": 1}
# --attn-slowdown: rounds per measurement and most re-sizings of the injected work (slowed_down)
CALIBRATION_ROUNDS, CALIBRATION_PASSES = 5, 4


@dataclass(frozen=True)
class RoundTimer:
    """How a run times its cells: `rounds` timed rounds after `warmup` warm-up rounds on `device`,
    with --attn-slowdown's injected fraction (`slowdown`) and --attn-bare-loop (`bare_loop`)."""

    device: str
    rounds: int
    warmup: int
    slowdown: float = 0.0
    bare_loop: bool = False

    def time_calls(self, fn, calls: int, benchmark, group: str, images_per_call: int) -> dict:
        """Time `fn` with `benchmark.pedantic` in rounds of `calls` calls ending with one
        synchronize, after `warmup` such rounds; returns the timing fields of extra_info,
        the energy over the timed rounds (`energy.EnergyMeter`, `images_per_call` images a call) included.

        With --attn-slowdown, `fn` is followed by the injected work and synchronized every call;
        with --attn-bare-loop, the same rounds are also timed by a bare perf_counter loop, half
        before and half after the timed ones (as in training cells).
        """
        work, injected = fn, {"injected_slowdown_ms": 0.0}
        if self.slowdown:
            work, injected = slowed_down(fn, calls, self.slowdown, self.device)

        def rounds():  # a fresh count per phase: each phase's first round starts aligned
            return SyncedRounds(work, self.device, calls)

        bare_before = bare_round_ms(rounds(), calls, self.rounds // 2) if self.bare_loop else []
        meter = self._meter(calls, benchmark, group, images_per_call)
        self._pedantic(meter, rounds(), calls, benchmark)
        synchronize(self.device)  # pytest-benchmark makes one more call after looped rounds
        timing = {"peak_gib": peak_gib(self.device), **injected}
        if not benchmark.disabled:
            timing.update(meter.fields())
        if self.bare_loop:
            bare_after = bare_round_ms(rounds(), calls, self.rounds - self.rounds // 2)
            timing.update(bare_loop_fields(bare_before, bare_after))
        return timing

    def time_steps(self, step, steps: int, benchmark, group: str, images_per_step: int, clock) -> dict:
        """`time_calls` for a training step that synchronizes itself every `steps` calls
        (`TrainStep.sync_every`), with the slowdown's sizing, the bare loop and the timed rounds
        in their own phases of `clock` (a PhaseClock). Returns the timing fields of extra_info:
        peak memory and the injected work always; energy and the bare loop when timed."""
        target, injected = step, {"injected_slowdown_ms": 0.0}
        if self.slowdown:
            with clock("slowdown_sizing"):
                target, injected = slowed_down(step, steps, self.slowdown, self.device)
        bare_before, bare_after = [], []
        if self.bare_loop:
            with clock("bare_loop"):
                bare_before = bare_round_ms(target, steps, self.rounds // 2)
        meter = self._meter(steps, benchmark, group, images_per_step)
        with clock("timed"):
            self._pedantic(meter, target, steps, benchmark)
        # The bare rounds come half before and half after the timed ones, so that an order
        # effect shows as a difference between the halves rather than as an instrument bias.
        if self.bare_loop:
            with clock("bare_loop"):
                bare_after = bare_round_ms(target, steps, self.rounds - self.rounds // 2)
        timing = {"peak_gib": peak_gib(self.device), **injected}
        if not benchmark.disabled:
            timing.update(meter.fields())
            if self.bare_loop:
                timing.update(bare_loop_fields(bare_before, bare_after))
        return timing

    def _meter(self, calls: int, benchmark, group: str, images_per_call: int) -> energy.EnergyMeter:
        """Ready the timed rounds: fresh peak-memory statistics, the benchmark's group, and the
        energy meter of `calls` calls a round, `images_per_call` images a call."""
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        benchmark.group = group
        return energy.meter(self.device, self.warmup, self.rounds, calls, images_per_call)

    def _pedantic(self, meter: energy.EnergyMeter, rounds, calls: int, benchmark) -> None:
        """The warm-up and timed rounds themselves, each of `calls` calls of `rounds`, metered."""
        benchmark.pedantic(meter.wrap(rounds), rounds=self.rounds, warmup_rounds=self.warmup, iterations=calls)


def bare_round_ms(step, steps: int, rounds: int) -> list[float]:
    """Per-step ms of `rounds` rounds of `steps` calls each, timed by a bare perf_counter."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps * 1e3)
    return times


def bare_loop_fields(before: list[float], after: list[float]) -> dict[str, float]:
    """extra_info's bare-loop medians: over all its rounds, those before and those after the timed rounds."""
    return {"bare_loop_median_ms": statistics.median(before + after),
            "bare_loop_before_ms": statistics.median(before or after),
            "bare_loop_after_ms": statistics.median(after)}


def slowed_down(fn, calls: int, fraction: float, device: str) -> tuple[Callable, dict]:
    """`fn` preceded by extra real work that makes it slower by `fraction`, as measured.

    Used to prove the regression gate. The extra work is a device spin (`torch.cuda._sleep`)
    on CUDA, a busy wait on CPU. Its size is found by measurement, in rounds of `calls` calls
    ending with one synchronize, as the cell is timed: the spin is scaled until the measured
    slowdown is within a tenth of the target (at most CALIBRATION_PASSES passes). Sized open loop
    from the spin's clock rate alone, a nominal +5 % measured +3.2 % to +7.1 % on the H200
    (H200 gate runs of 2026-12-01), because launches and spins overlap differently in each cell.

    Returns the slowed callable and the fields for extra_info: the target and the measured
    extra ms per call, and the measured ms per call without it.
    """
    def per_call_ms(f) -> float:
        return statistics.median(bare_round_ms(SyncedRounds(f, device, calls), calls, CALIBRATION_ROUNDS))

    base_ms = per_call_ms(fn)
    target_ms = fraction * base_ms
    cuda = device.startswith("cuda")
    units_per_ms = (_spin_cycles_per_second(device) if cuda else 1.0) / 1e3  # spin cycles or seconds
    amount = target_ms * units_per_ms

    def slow():
        if cuda:
            torch.cuda._sleep(int(amount))
        else:
            end = time.perf_counter() + amount
            while time.perf_counter() < end:
                pass
        return fn()

    achieved_ms = per_call_ms(slow) - base_ms
    for _ in range(CALIBRATION_PASSES):
        if abs(achieved_ms - target_ms) <= 0.1 * target_ms:
            break
        # Additive: work hidden in idle gaps (the device waiting for launches) shows as an offset.
        amount = max(amount + (target_ms - achieved_ms) * units_per_ms, 0.0)
        achieved_ms = per_call_ms(slow) - base_ms
    return slow, {"injected_slowdown_ms": target_ms, "injected_measured_ms": achieved_ms,
                  "injected_base_ms": base_ms}


def _spin_cycles_per_second(device: str) -> float:
    cycles = 10_000_000
    torch.cuda._sleep(cycles)
    synchronize(device)
    start = time.perf_counter()
    torch.cuda._sleep(cycles)
    synchronize(device)
    return cycles / (time.perf_counter() - start)


__all__ = ["CALIBRATION_PASSES", "CALIBRATION_ROUNDS", "STEPS_PER_ROUND", "RoundTimer", "bare_loop_fields",
           "bare_round_ms", "slowed_down"]
