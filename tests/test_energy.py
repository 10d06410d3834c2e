"""Energy and cost per image (issue 32): the NVML meter against a stand-in NVML whose energy,
clock and throttle reasons are scripted per call, a CPU cell's record, and the torch-free
functions over stored cells."""
from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from benchruns import ROOT

from attn_bench import energy
from attn_bench.energy import EnergyMeter, NvmlCounters, open_counters, reason_names
from attn_tools.energy import (
    cell_energy,
    chart_points,
    energy_saved_vs_native,
    throttle_note,
    usd_per_million_images,
    write_energy_chart,
)

pytestmark = pytest.mark.suite

UUID_0, UUID_1 = "GPU-00000000-aaaa", "GPU-11111111-bbbb"
BUS_0, BUS_1 = "00000000:1b:00.0", "00000000:3b:00.0"


class FakeNvmlError(Exception):
    """pynvml raises NVMLError subclasses; the meter only relies on them being exceptions."""


class FakeNvml:
    """The part of `pynvml` (nvidia-ml-py) the meter uses, for two GPUs (handles 0 and 1).

    `work()` stands for one call of the timed callable on GPU 1: it adds `mj_per_call` (a number,
    or a function of the call's index) to the energy counter and `s_per_call` to the fake clock,
    and sets the SM clock and reasons that `script` gives for the call's index.
    """

    NVML_CLOCK_SM = 1

    def __init__(self, mj_per_call=1500, s_per_call=0.1, script=lambda i: (1980, 0)):
        self.mj_per_call, self.s_per_call, self.script = mj_per_call, s_per_call, script
        self.mj, self.now, self.calls = 10_000_000, 1000.0, 0
        self.clock_mhz, self.mask = script(0)
        self.fail_clock_read_at = None  # the n-th clock read raises
        self.clock_reads = 0

    def work(self):
        self.clock_mhz, self.mask = self.script(self.calls)
        self.calls += 1
        self.mj += self.mj_per_call(self.calls - 1) if callable(self.mj_per_call) else self.mj_per_call
        self.now += self.s_per_call

    def timer(self):
        return self.now

    # --- the pynvml functions -------------------------------------------------------------
    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        found = {UUID_0.encode(): 0, UUID_1.encode(): 1}.get(uuid)
        if found is None:
            raise FakeNvmlError("Not Found")
        return found

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        found = {BUS_0.encode(): 0, BUS_1.encode(): 1}.get(bus_id.lower())
        if found is None:
            raise FakeNvmlError("Not Found")
        return found

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.mj if handle == 1 else 0  # GPU 0 stays idle: reading it is the mapping bug

    def nvmlDeviceGetClockInfo(self, handle, kind):
        assert kind == self.NVML_CLOCK_SM
        self.clock_reads += 1
        if self.clock_reads == self.fail_clock_read_at:
            raise FakeNvmlError("GPU is lost")
        return self.clock_mhz if handle == 1 else 0

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.mask if handle == 1 else 0

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return 1980

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000  # mW


PROPS_1 = SimpleNamespace(uuid=UUID_1[4:], pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0)


def pedantic(target, rounds, warmup_rounds, iterations):
    """pytest-benchmark's pedantic call pattern: warm-up rounds, timed rounds, then one more call
    (it makes one after looped rounds to get a result)."""
    for _ in range((warmup_rounds + rounds) * iterations + 1):
        target()


def metered_run(nvml, warmup=2, rounds=4, calls=3, images=8, props=PROPS_1) -> dict:
    counters = open_counters("cuda:0", nvml=nvml, props=props)  # cuda:0 of CUDA_VISIBLE_DEVICES=1
    assert not isinstance(counters, str), counters
    meter = EnergyMeter(counters, warmup, rounds, calls, images, timer=nvml.timer)
    pedantic(meter.wrap(nvml.work), rounds, warmup, calls)
    assert nvml.calls == (warmup + rounds) * calls + 1  # the workload ran every call, metered or not
    return meter.fields()


# --- the meter ---------------------------------------------------------------------------------
def test_joules_per_step_and_image_cover_the_timed_rounds_only():
    """2 warm-up and 4 timed rounds of 3 calls, then pytest-benchmark's extra call; 1.5 J and 0.1 s
    a timed call, 8 images a call. The other calls draw 99 J each, which must not be counted."""
    def mj(call):
        return 1500 if 6 <= call < 18 else 99_000

    e = metered_run(FakeNvml(mj_per_call=mj, s_per_call=0.1))["energy"]
    assert e["steps"] == 12 and e["joules"] == pytest.approx(18.0)
    assert e["j_per_step"] == pytest.approx(1.5)
    assert e["j_per_image"] == pytest.approx(1.5 / 8)
    assert e["window_s"] == pytest.approx(1.2) and e["mean_w"] == pytest.approx(15.0)
    assert e["nvml_device"] == UUID_1 and e["sm_clock_max_mhz"] == 1980 and e["power_limit_w"] == 700


def test_one_call_per_round_is_metered_too():
    e = metered_run(FakeNvml(mj_per_call=400), warmup=1, rounds=3, calls=1, images=2)["energy"]
    assert e["steps"] == 3 and e["j_per_image"] == pytest.approx(0.2) and e["rounds"] == 3


def _per_round(values, calls=3, warmup=2):
    """A script giving round r's (clock, mask) = values[r] for timed rounds, warm-up's for earlier calls."""
    def script(i):
        r = i // calls - warmup
        return values[r] if 0 <= r < len(values) else (1000, 0x8)  # warm-up/extra call: hw_slowdown
    return script


def test_throttled_when_a_timed_round_reports_a_throttling_reason():
    rounds = [(1980, 0x1), (1860, 0x4 | 0x1), (1560, 0x4), (1900, 0x2)]
    e = metered_run(FakeNvml(script=_per_round(rounds)))["energy"]
    assert e["throttled"] is True and e["throttle_reasons"] == ["sw_power_cap"]
    assert e["throttled_rounds"] == 2 and e["rounds"] == 4
    assert e["other_clock_reasons"] == ["applications_clocks_setting", "gpu_idle"]
    assert e["sm_clock_mhz"] == {"min": 1560, "median": 1880}


def test_idle_app_clocks_sync_boost_and_display_are_not_throttling():
    """The warm-up rounds report a hardware slowdown: only the timed rounds count."""
    rounds = [(1980, 0x1), (1980, 0x2), (1980, 0x10), (1980, 0x100)]
    e = metered_run(FakeNvml(script=_per_round(rounds)))["energy"]
    assert e["throttled"] is False and e["throttle_reasons"] == [] and e["throttled_rounds"] == 0
    assert e["other_clock_reasons"] == ["applications_clocks_setting", "display_clock_setting", "gpu_idle",
                                        "sync_boost"]


@pytest.mark.parametrize("bit, name", sorted(energy.THROTTLE_REASONS.items()))
def test_each_throttling_reason_sets_the_flag(bit, name):
    e = metered_run(FakeNvml(script=_per_round([(1980, 0)] * 3 + [(1500, bit)])))["energy"]
    assert e["throttled"] is True and e["throttle_reasons"] == [name] and e["throttled_rounds"] == 1


def test_reason_names_split_nvml_bits():
    assert reason_names(0x4 | 0x40 | 0x1) == (["sw_power_cap", "hw_thermal_slowdown"], ["gpu_idle"])
    assert reason_names(0x8 | 0x20 | 0x80) == (["hw_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown"], [])
    assert reason_names(0x0) == ([], [])
    assert reason_names(0x800) == ([], ["bit_0x800"])  # a bit NVML adds later is shown, not counted


def test_meter_cost_is_measured_per_round():
    e = metered_run(FakeNvml())["energy"]
    assert 0 <= e["meter_us_max"] < 50_000  # the fake's reads; on a GPU: NVML's, recorded for the record


def test_a_failing_read_ends_metering_but_not_the_workload():
    nvml = FakeNvml()
    nvml.fail_clock_read_at = 3  # the initial probe reads once, then round 0 and 1 are sampled
    fields = metered_run(nvml)
    assert fields == {"energy_unavailable": "no NVML: a read failed during the timed rounds: "
                                            "FakeNvmlError: GPU is lost"}


def test_a_counter_that_did_not_advance_is_no_measurement():
    fields = metered_run(FakeNvml(mj_per_call=0))
    assert "did not advance" in fields["energy_unavailable"]


def test_a_meter_without_counters_records_the_reason_and_leaves_the_callable_alone():
    meter = EnergyMeter("no CUDA device (cpu run)", 1, 2, 3, 4)

    def fn():
        pass

    assert meter.wrap(fn) is fn
    assert meter.fields() == {"energy_unavailable": "no CUDA device (cpu run)"}


# --- finding the GPU --------------------------------------------------------------------------
def test_device_is_found_by_uuid_not_by_index():
    """Under CUDA_VISIBLE_DEVICES=1, torch's cuda:0 is NVML's GPU 1 (found by its UUID)."""
    counters = open_counters("cuda:0", nvml=FakeNvml(), props=PROPS_1)
    assert counters.handle == 1 and counters.device_id == UUID_1


def test_device_is_found_by_pci_bus_id_without_uuid():
    props = SimpleNamespace(uuid=None, pci_domain_id=0, pci_bus_id=0x3B, pci_device_id=0)
    counters = open_counters("cuda:0", nvml=FakeNvml(), props=props)
    assert counters.handle == 1 and counters.device_id == BUS_1


def test_unknown_device_gives_the_reason():
    props = SimpleNamespace(uuid="ffff", pci_domain_id=0, pci_bus_id=0x99, pci_device_id=0)
    reason = open_counters("cuda:0", nvml=FakeNvml(), props=props)
    assert reason.startswith("no NVML: no NVML device with UUID GPU-ffff: FakeNvmlError: Not Found; PCI bus id "
                             "00000000:99:00.0")
    assert open_counters("cuda", nvml=FakeNvml(), props=SimpleNamespace()) == (
        "no NVML: torch reports neither the GPU's UUID nor its PCI bus id")


def test_reasons_where_there_is_no_nvml(monkeypatch):
    assert open_counters("cpu") == "no CUDA device (cpu run)"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert open_counters("cuda").startswith("nvidia-ml-py not installed")

    class NoDriver(FakeNvml):
        def nvmlInit(self):
            raise FakeNvmlError("NVML Shared Library Not Found")

    assert open_counters("cuda", nvml=NoDriver(), props=PROPS_1) == (
        "no NVML: nvmlInit failed: FakeNvmlError: NVML Shared Library Not Found")

    class NoEnergy(FakeNvml):
        def nvmlDeviceGetTotalEnergyConsumption(self, handle):
            raise FakeNvmlError("Not Supported")

    assert open_counters("cuda", nvml=NoEnergy(), props=PROPS_1) == (
        f"no NVML: energy counter of {UUID_1} not readable: FakeNvmlError: Not Supported")


def test_older_nvidia_ml_py_reads_the_throttle_reasons_under_their_old_name():
    class OldNvml(FakeNvml):
        nvmlDeviceGetCurrentClocksEventReasons = None

        def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
            return 0x40

    counters = NvmlCounters(OldNvml(), 1, UUID_1)
    assert counters.clock_reasons() == 0x40


NVML_FUNCTIONS = ("nvmlInit", "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetHandleByPciBusId",
                  "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetClockInfo", "nvmlDeviceGetMaxClockInfo",
                  "nvmlDeviceGetEnforcedPowerLimit", "NVML_CLOCK_SM")


def _real_nvml_reason() -> str | None:
    try:
        import pynvml  # noqa: F401
    except ImportError as e:
        return f"nvidia-ml-py not installed ({e})"
    return None


def test_the_stand_in_and_the_reason_bits_match_the_real_pynvml():
    """The stand-in's functions and the meter's reason bits are nvidia-ml-py's (where installed)."""
    reason = _real_nvml_reason()
    if reason:
        pytest.skip(reason)
    import pynvml

    assert [name for name in NVML_FUNCTIONS if not hasattr(pynvml, name)] == []
    assert hasattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons") or hasattr(
        pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons")
    assert pynvml.NVML_CLOCK_SM == FakeNvml.NVML_CLOCK_SM
    for bit, name in {**energy.THROTTLE_REASONS, **energy.OTHER_REASONS}.items():
        constant = "nvmlClocksThrottleReason" + "".join(word.capitalize() for word in name.split("_"))
        assert getattr(pynvml, constant) == bit, constant


def test_nvml_meter_on_this_gpu():
    """The real NVML path: skipped with its reason where there is none (every CPU machine)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    counters = open_counters(device)
    if isinstance(counters, str):
        pytest.skip(counters)
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)

    def step():
        for _ in range(20):
            a @ a
        torch.cuda.synchronize(device)

    meter = EnergyMeter(counters, 1, 10, 1, 1)
    pedantic(meter.wrap(step), 10, 1, 1)
    e = meter.fields()["energy"]
    assert e["joules"] > 0 and e["mean_w"] > 0 and e["sm_clock_mhz"]["min"] > 0 and e["rounds"] == 10


# --- a cell on CPU ------------------------------------------------------------------------------
class FakeBenchmark:
    """What the harness uses of pytest-benchmark's fixture (its call pattern, perf_counter times)."""

    disabled = False

    def __init__(self):
        self.extra_info, self.group = {}, None

    def pedantic(self, target, rounds, warmup_rounds, iterations):
        times = []
        for i in range(warmup_rounds + rounds):
            start = time.perf_counter()
            for _ in range(iterations):
                target()
            if i >= warmup_rounds:
                times.append((time.perf_counter() - start) / iterations)
        self.stats = SimpleNamespace(stats=SimpleNamespace(median=sorted(times)[len(times) // 2]))
        return target()


@pytest.fixture(scope="module")
def cpu_suite():
    """One smoke suite for the cell tests: the attention cells reuse the training cell's parity check."""
    from attn_bench.harness import Suite

    return Suite(profile="smoke", device="cpu", rounds=3, warmup=1, price_per_gpu_hour=3.6)


def test_a_training_cell_is_metered_over_its_timed_steps_and_priced(cpu_suite, monkeypatch):
    """run_cell's wrapper sees every step pedantic makes: each training step draws 2 J from the stand-in."""
    from attn_bench.model import TrainStep
    from attn_bench.timer import STEPS_PER_ROUND

    nvml = FakeNvml(mj_per_call=0, s_per_call=0.0)
    counters = open_counters("cuda:0", nvml=nvml, props=PROPS_1)
    monkeypatch.setattr(energy, "counters_for", lambda device: counters)
    step_call = TrainStep.__call__

    def drawing_2_j(self):
        nvml.mj += 2000
        return step_call(self)

    monkeypatch.setattr(TrainStep, "__call__", drawing_2_j)
    info = cpu_suite.run_cell(cpu_suite.cell("native", "plain", 196, "eager"), FakeBenchmark())
    e = info["energy"]
    assert e["steps"] == 3 * STEPS_PER_ROUND["smoke"] and e["images_per_step"] == info["batch"] and e["rounds"] == 3
    assert e["j_per_step"] == pytest.approx(2.0) and e["j_per_image"] == pytest.approx(2.0 / info["batch"])
    # $3.6 an hour is $0.001 a second: a million images take 1e6 / batch steps
    assert info["usd_per_million_images"] == pytest.approx(0.001 * info["median_ms"] / 1e3 * 1e6 / info["batch"])


def test_a_cpu_cell_records_why_there_is_no_energy_and_its_cost(cpu_suite):
    """An inference cell (it reuses the training cell's model parity), with the real NVML path."""
    info = cpu_suite.run_infer_cell(cpu_suite.cell("native", "plain", 196, "eager", backward=False), FakeBenchmark())
    assert info["energy_unavailable"] == "no CUDA device (cpu run)" and "energy" not in info
    assert info["usd_per_million_images"] == pytest.approx(0.001 * info["median_ms"] / 1e3 * 1e6 / info["batch"])


def test_an_attention_cell_is_metered_over_its_timed_calls(cpu_suite, monkeypatch):
    """RoundTimer.time_calls' wrapper sees every call pedantic makes: each attention call draws 0.1 J."""
    from attn_bench.kernel_bench import AttentionCall

    nvml = FakeNvml(mj_per_call=0, s_per_call=0.0)
    counters = open_counters("cuda:0", nvml=nvml, props=PROPS_1)
    monkeypatch.setattr(energy, "counters_for", lambda device: counters)
    attention_call = AttentionCall.__call__

    def drawing_0_1_j(self):
        nvml.mj += 100
        return attention_call(self)

    monkeypatch.setattr(AttentionCall, "__call__", drawing_0_1_j)
    cell = cpu_suite.attention_cell("native", "plain", 196, "eager", "fwd")
    info = cpu_suite.run_attention_cell(cell, FakeBenchmark())
    e = info["energy"]
    assert e["steps"] == 3 * info["calls_per_round"] and e["images_per_step"] == info["batch"]
    assert e["j_per_step"] == pytest.approx(0.1) and e["j_per_image"] == pytest.approx(0.1 / info["batch"])
    assert e["throttled"] is False


# --- the tools over stored cells ------------------------------------------------------------------
def _bench(test, median_s=0.1, batch=8, **extra):
    return {"fullname": f"tests/test_x.py::{test}", "stats": {"median": median_s},
            "extra_info": {"batch": batch, **extra}}


def _energy(j_per_image, throttled=False, reasons=(), window_s=5.0, **more):
    return {"energy": {"j_per_step": j_per_image * 8, "j_per_image": j_per_image, "mean_w": 500.0,
                       "window_s": window_s, "sm_clock_mhz": {"min": 1560, "median": 1830},
                       "throttled": throttled, "throttle_reasons": list(reasons), **more}}


def test_usd_per_million_images():
    # $2 per GPU-hour, 0.36 s per step of 128 images: 2 / 3600 * 0.36 / 128 * 1e6
    assert usd_per_million_images(2.0, 0.36, 128) == pytest.approx(1.5625)
    with pytest.raises(ValueError, match="price per GPU-hour must be positive"):
        usd_per_million_images(0, 0.36, 128)


def test_cell_energy_values_and_cost():
    bench = _bench("test_train_step[flex-plain-196-eager]", median_s=0.36, batch=128, **_energy(0.5))
    values = cell_energy(bench, price_per_gpu_hour=2.0)
    assert (values.j_per_image, values.mean_w, values.throttled) == (0.5, 500.0, False)
    assert values.usd_per_million_images == pytest.approx(1.5625)  # computed: the run recorded no cost
    bench["extra_info"]["usd_per_million_images"] = 9.0
    assert cell_energy(bench, price_per_gpu_hour=2.0).usd_per_million_images == 9.0  # the recorded one wins
    cpu = cell_energy(_bench("test_train_step[flex-plain-196-eager]", energy_unavailable="no CUDA device (cpu run)"))
    assert cpu.unavailable == "no CUDA device (cpu run)" and cpu.j_per_image is None and cpu.throttled is None
    assert "not recorded" in cell_energy(_bench("test_train_step[flex-plain-196-eager]")).unavailable


def test_energy_saved_vs_native_same_kind_variant_seq_len_and_mode():
    run = [
        _bench("test_train_step[native-plain-196-eager]", **_energy(2.0)),
        _bench("test_train_step[sdpa_flash-plain-196-eager]", **_energy(1.5)),
        _bench("test_train_step[sdpa_math-plain-196-eager]", **_energy(2.5)),
        _bench("test_train_step[sdpa_flash-softcap-196-eager]", **_energy(1.0)),  # no native/softcap
        _bench("test_train_step[sdpa_flash-plain-196-compiled]", **_energy(1.0)),  # no native compiled
        _bench("test_infer_step[native-plain-196-eager]", **_energy(1.0)),
        _bench("test_infer_step[sdpa_flash-plain-196-eager]", **_energy(0.9)),
        _bench("test_attention[native-plain-196-eager-fwd]", **_energy(0.4)),
        _bench("test_attention[sdpa_flash-plain-196-eager-fwd_bwd]", **_energy(0.1)),  # native has fwd only
        _bench("test_train_step[fa3-plain-196-eager]", energy_unavailable="no CUDA device (cpu run)"),
    ]
    saved = energy_saved_vs_native(run)
    assert saved == pytest.approx({
        "tests/test_x.py::test_train_step[sdpa_flash-plain-196-eager]": 25.0,
        "tests/test_x.py::test_train_step[sdpa_math-plain-196-eager]": -25.0,
        "tests/test_x.py::test_infer_step[sdpa_flash-plain-196-eager]": 10.0,
    })


def test_throttle_note():
    throttled = _bench("test_train_step[flex-plain-196-eager]",
                       **_energy(1.0, throttled=True, reasons=["sw_power_cap"], throttled_rounds=4, rounds=10))
    assert throttle_note(throttled) == ("throttled (sw_power_cap) in 4 of 10 rounds, SM clock from 1560 MHz "
                                        "(median 1830)")
    assert throttle_note(_bench("test_train_step[flex-plain-196-eager]", **_energy(1.0))) is None
    short = throttle_note(_bench("test_attention[flex-plain-196-eager-fwd]", **_energy(1.0, window_s=0.2)))
    assert short == "energy over only 0.20 s of timed rounds (counter resolution)"
    assert throttle_note(_bench("test_train_step[flex-plain-196-eager]", energy_unavailable="x")) is None


def test_energy_chart_one_point_per_implementation_and_mode(tmp_path):
    run = [
        _bench("test_train_step[native-plain-196-eager]", median_s=0.2, **_energy(2.0)),
        _bench("test_train_step[native-plain-196-compiled]", median_s=0.15, **_energy(1.6)),
        _bench("test_train_step[flex-plain-196-eager]", median_s=0.1, **_energy(1.0, throttled=True)),
        _bench("test_train_step[flex-softcap-3136-eager]", median_s=0.3, **_energy(3.0)),
        _bench("test_infer_step[flex-plain-196-eager]", median_s=0.05, **_energy(0.3)),  # another kind
        _bench("test_train_step[fa3-plain-196-eager]", energy_unavailable="no CUDA device (cpu run)"),
    ]
    points = chart_points(run)
    assert list(points) == [(196, "plain"), (3136, "softcap")]
    assert [(p["impl"], p["mode"], p["step_ms"], p["j_per_image"], p["throttled"]) for p in points[(196, "plain")]] == [
        ("native", "eager", 200.0, 2.0, False), ("native", "compiled", 150.0, 1.6, False),
        ("flex", "eager", 100.0, 1.0, True)]
    path = tmp_path / "energy.png"
    write_energy_chart(run, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no test_train_step cell has energy"):
        write_energy_chart(run[-1:], tmp_path / "none.png")


def test_the_tools_import_without_torch():
    code = "import sys; sys.modules['torch'] = None; import attn_tools.energy; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_price_option_is_validated_and_recorded_in_attn_suite():
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", "tests/test_train_step.py",
           "--attn-price-per-gpu-hour", "-1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4 and "--attn-price-per-gpu-hour must be a positive price in $, got -1.0" in proc.stderr

    import conftest
    from attn_bench.harness import Suite

    config = SimpleNamespace(_attn_suite=Suite(profile="smoke", device="cpu", rounds=1, warmup=0,
                                               price_per_gpu_hour=2.5), _attn_skipped=[], _attn_failed=[])
    output = {}
    conftest.pytest_benchmark_update_json(config, [], output)
    assert output["attn_suite"]["price_per_gpu_hour"] == 2.5
