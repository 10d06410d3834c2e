"""GPU energy, SM clock and throttling over a cell's timed rounds, read from NVML (nvidia-ml-py).

The harness wraps the callable it passes to `benchmark.pedantic` with `EnergyMeter.wrap`. The
wrapper counts calls, so it knows the warm-up rounds, the timed rounds and pytest-benchmark's
extra call after them, and reads:

- NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ since the driver
  loaded) just before the first call of the first timed round and just after the last call of
  the last one. Every round ends with a device synchronize, so both reads fall where the device
  is idle: the window holds the timed rounds and pytest-benchmark's bookkeeping between them
  (microseconds a round), and not the warm-up rounds or the extra call.
- Once per timed round, right after the round's first call returns, the SM clock
  (`nvmlDeviceGetClockInfo(NVML_CLOCK_SM)`) and the clocks-event ("throttle") reasons
  (`nvmlDeviceGetCurrentClocksEventReasons`, in older nvidia-ml-py `...ThrottleReasons`). The host
  has then queued that call's work, so the device is loaded and the clock is the loaded clock
  (with one call per round, that call has just finished, after its synchronize).

These reads lie *inside* the timed region: the meter is cheap rather than outside it (pytest-
benchmark before 5.2, which the suite supports, has no per-round hook that allows several calls
per round). Each read
is one NVML query, microseconds to tens of microseconds of host time, against rounds of tens to
hundreds of milliseconds. The record says what it cost: `meter_us_max`, the most host time the
meter spent inside any one timed round.

The throttle rule: a round is throttled when its reasons include one in THROTTLE_REASONS (power
capping, a hardware slowdown, thermal or power-brake slowdown, board or reliability limits); GPU
idle, the applications-clocks setting, sync boost and the display clock are not throttling and
are recorded apart (`other_clock_reasons`). A cell is throttled if any timed round was.

The CUDA device is mapped to its NVML handle by the GPU's UUID (or else its PCI bus id), never
by index: NVML ignores CUDA_VISIBLE_DEVICES and orders GPUs by PCI bus, CUDA by its own order.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

# NVML's clocks-event reason bits (nvml.h; the same bits under the old "ThrottleReason" names).
# Those that lower the clock below what the workload would get: throttling.
THROTTLE_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x200: "board_limit",
    0x400: "reliability",
}
# Reported, but not throttling: no work, or a clock someone chose.
OTHER_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x10: "sync_boost",
    0x100: "display_clock_setting",
}
NO_CUDA = "no CUDA device"
NO_NVML_PY = "nvidia-ml-py not installed"
NO_NVML = "no NVML"


def reason_names(mask: int) -> tuple[list[str], list[str]]:
    """(throttling reasons, other reasons) named in a clocks-event reasons bitmask, in bit order.
    A bit NVML may add later is reported among the others as `bit_0x...`."""
    throttling, other = [], []
    for bit in range(64):
        flag = 1 << bit
        if not mask & flag:
            continue
        if flag in THROTTLE_REASONS:
            throttling.append(THROTTLE_REASONS[flag])
        else:
            other.append(OTHER_REASONS.get(flag, f"bit_{flag:#x}"))
    return throttling, other


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"


class NvmlCounters:
    """One GPU's NVML readings: the energy counter (mJ), the SM clock (MHz), the clocks-event
    reasons (bitmask), and, read once, its maximum SM clock and enforced power limit.

    `nvml` is the `pynvml` module (nvidia-ml-py) or a stand-in with the same functions; `handle`
    its device handle; `device_id` the UUID or PCI bus id it was found by (for the record).
    """

    def __init__(self, nvml, handle, device_id: str):
        self.nvml, self.handle, self.device_id = nvml, handle, device_id
        # NVML renamed ...ClocksThrottleReasons to ...ClocksEventReasons (same bits); older
        # nvidia-ml-py has only the old name, newer deprecates it.
        self._reasons = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                         or nvml.nvmlDeviceGetCurrentClocksThrottleReasons)

    def energy_mj(self) -> int:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def sm_clock_mhz(self) -> int:
        return self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)

    def clock_reasons(self) -> int:
        return self._reasons(self.handle)

    def static_info(self) -> dict:
        """The GPU's maximum SM clock (MHz) and enforced power limit (W); None where NVML refuses."""
        info = {}
        for key, read in (("sm_clock_max_mhz", lambda: self.nvml.nvmlDeviceGetMaxClockInfo(
                                self.handle, self.nvml.NVML_CLOCK_SM)),
                          ("power_limit_w", lambda: self.nvml.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1e3)):
            try:
                info[key] = read()
            except Exception:  # optional context for the record, never a reason to drop the energy
                info[key] = None
        return info


def nvml_handle(nvml, props) -> tuple[object, str] | str:
    """(NVML handle, the id it was found by) of the CUDA device whose torch properties are
    `props`, or the reason it cannot be found.

    By UUID (`props.uuid`, torch >= 2.0 on CUDA), else by PCI bus id (`props.pci_domain_id`,
    `pci_bus_id`, `pci_device_id`); never by index, which NVML and CUDA count differently under
    CUDA_VISIBLE_DEVICES (NVML sees every GPU, CUDA only the visible ones, renumbered).
    """
    from .envinfo import gpu_uuid

    tried = []
    uuid = gpu_uuid(props)
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid.encode()), uuid
        except Exception as e:
            tried.append(f"UUID {uuid}: {_error(e)}")
    pci = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    if None not in pci:
        bus_id = "{:08x}:{:02x}:{:02x}.0".format(*pci)
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode()), bus_id
        except Exception as e:
            tried.append(f"PCI bus id {bus_id}: {_error(e)}")
    if not tried:
        return f"{NO_NVML}: torch reports neither the GPU's UUID nor its PCI bus id"
    return f"{NO_NVML}: no NVML device with " + "; ".join(tried)


def open_counters(device: str, nvml=None, props=None) -> NvmlCounters | str:
    """The NVML counters of `device` ("cuda", "cuda:N"), or the reason there are none.

    `nvml` defaults to the installed `pynvml`, `props` to torch's properties of `device`; tests
    pass stand-ins. Reasons start with NO_CUDA, NO_NVML_PY or NO_NVML.
    """
    if not device.startswith("cuda"):
        return f"{NO_CUDA} ({device} run)"
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as e:
            return f"{NO_NVML_PY} ({e})"
    try:
        nvml.nvmlInit()
    except Exception as e:
        return f"{NO_NVML}: nvmlInit failed: {_error(e)}"
    if props is None:
        import torch

        props = torch.cuda.get_device_properties(device)
    found = nvml_handle(nvml, props)
    if isinstance(found, str):
        return found
    handle, device_id = found
    counters = NvmlCounters(nvml, handle, device_id)
    for what, read in (("energy counter", counters.energy_mj), ("SM clock", counters.sm_clock_mhz),
                       ("clocks-event reasons", counters.clock_reasons)):
        try:
            read()
        except Exception as e:
            return f"{NO_NVML}: {what} of {device_id} not readable: {_error(e)}"
    return counters


_OPENED: dict[str, NvmlCounters | str] = {}


def counters_for(device: str) -> NvmlCounters | str:
    """`open_counters(device)`, once per device and process."""
    if device not in _OPENED:
        _OPENED[device] = open_counters(device)
    return _OPENED[device]


class EnergyMeter:
    """Energy, SM clock and throttle reasons over the timed rounds of one `benchmark.pedantic`.

    `counters`: an NvmlCounters, or the reason there are none (the meter then only records it).
    The rounds are pedantic's: `warmup_rounds` untimed then `rounds` timed ones of
    `calls_per_round` calls, each call processing `images_per_call` images (the cell's batch).
    `timer` times the energy window and the meter's own reads.

    Use: `benchmark.pedantic(meter.wrap(fn), rounds=R, warmup_rounds=W, iterations=C)`, then
    `meter.fields()` for extra_info. What is read when, and why that does not perturb the timing:
    this module's docstring.
    """

    def __init__(self, counters: NvmlCounters | str, warmup_rounds: int, rounds: int, calls_per_round: int,
                 images_per_call: int, timer: Callable[[], float] = time.perf_counter):
        self.counters = counters if not isinstance(counters, str) else None
        self.reason = counters if isinstance(counters, str) else None
        self.warmup_calls = warmup_rounds * calls_per_round
        self.rounds, self.calls_per_round, self.images_per_call = rounds, calls_per_round, images_per_call
        self.timer = timer
        self.calls = 0
        self.start: tuple[float, int] | None = None  # (time, mJ)
        self.end: tuple[float, int] | None = None
        self.clocks: list[int] = []
        self.masks: list[int] = []
        self.meter_s: list[float] = [0.0] * rounds  # host time of the meter's reads, per timed round

    def wrap(self, fn: Callable) -> Callable:
        """`fn`, metered over the timed rounds; `fn` itself where there is nothing to read."""
        if self.counters is None:
            return fn

        def metered():
            timed = self.calls - self.warmup_calls
            self.calls += 1
            if not 0 <= timed < self.rounds * self.calls_per_round or self.reason:
                return fn()
            round_index, call = divmod(timed, self.calls_per_round)
            if timed == 0:
                self._read(round_index, self._read_start)
            result = fn()
            if call == 0:
                self._read(round_index, self._sample)
            if timed == self.rounds * self.calls_per_round - 1:
                self._read(round_index, self._read_end)
            return result

        return metered

    def _read_start(self) -> None:
        self.start = (self.timer(), self.counters.energy_mj())

    def _read_end(self) -> None:
        self.end = (self.timer(), self.counters.energy_mj())

    def _sample(self) -> None:
        self.clocks.append(self.counters.sm_clock_mhz())
        self.masks.append(self.counters.clock_reasons())

    def _read(self, round_index: int, read: Callable[[], None]) -> None:
        """`read()`, its host time charged to the round; a failing read ends the metering with its reason."""
        started = time.perf_counter()
        try:
            read()
        except Exception as e:
            self.reason = f"{NO_NVML}: a read failed during the timed rounds: {_error(e)}"
        self.meter_s[round_index] += time.perf_counter() - started

    def fields(self) -> dict:
        """{"energy": {...}} for extra_info, or {"energy_unavailable": reason}.

        energy: joules and window_s (the counter's difference and the time between its reads),
        j_per_step (per call of the timed callable: a training step, an inference forward, an
        attention call), j_per_image (per image of the batch), mean_w, sm_clock_mhz {min, median}
        over the sampled rounds, throttled and throttle_reasons (THROTTLE_REASONS seen in any
        round), throttled_rounds of rounds, other_clock_reasons, sm_clock_max_mhz and power_limit_w
        (the GPU's), nvml_device (its UUID or PCI bus id), meter_us_max.
        """
        if self.reason:
            return {"energy_unavailable": self.reason}
        if self.start is None or self.end is None:
            return {"energy_unavailable": "the timed rounds did not run (benchmark disabled?)"}
        window_s = self.end[0] - self.start[0]
        joules = (self.end[1] - self.start[1]) / 1e3
        if joules <= 0:
            return {"energy_unavailable": f"the energy counter did not advance over the {window_s:.3f} s of timed "
                                          "rounds (the driver updates it less often)"}
        steps = self.rounds * self.calls_per_round
        throttling, other = set(), set()
        throttled_rounds = 0
        for mask in self.masks:
            names, rest = reason_names(mask)
            throttled_rounds += bool(names)
            throttling.update(names)
            other.update(rest)
        return {"energy": {
            "joules": joules,
            "window_s": window_s,
            "steps": steps,
            "images_per_step": self.images_per_call,
            "j_per_step": joules / steps,
            "j_per_image": joules / (steps * self.images_per_call),
            "mean_w": joules / window_s,
            "sm_clock_mhz": {"min": min(self.clocks), "median": statistics.median(self.clocks)},
            "throttled": throttled_rounds > 0,
            "throttle_reasons": sorted(throttling),
            "throttled_rounds": throttled_rounds,
            "rounds": len(self.masks),
            "other_clock_reasons": sorted(other),
            **self.counters.static_info(),
            "nvml_device": self.counters.device_id,
            "meter_us_max": max(self.meter_s) * 1e6,
        }}


def meter(device: str, warmup_rounds: int, rounds: int, calls_per_round: int, images_per_call: int) -> EnergyMeter:
    """An EnergyMeter of `device`'s NVML counters (`counters_for`) for one cell's timed rounds."""
    return EnergyMeter(counters_for(device), warmup_rounds, rounds, calls_per_round, images_per_call)


__all__ = ["OTHER_REASONS", "THROTTLE_REASONS", "EnergyMeter", "NvmlCounters", "counters_for", "meter",
           "nvml_handle", "open_counters", "reason_names"]
