"""pytest wiring of the suite: options, the cell matrix, and what goes into the JSON."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attn_bench import envinfo
from attn_bench.harness import DEFAULT_ROUNDS, MODES, Suite
from attn_bench.kernel_bench import DIRECTIONS
from attn_bench.model import COMPILE_SCOPES, CONFIGS, DEFAULT_COMPILE_SCOPE, SEQ_LENS, TIMED_MATMUL_PRECISION
from attn_tools.runs import gpu_model, report_outcome
from attn_impls import REGISTRY, VARIANTS

DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_addoption(parser):
    group = parser.getgroup("attn", "attention benchmark matrix")
    group.addoption("--attn-impl", default="all",
                    help=f"comma-separated implementation ids or 'all' ({', '.join(REGISTRY)})")
    group.addoption("--attn-variant", default="all", help=f"comma-separated variants ({', '.join(VARIANTS)})")
    group.addoption("--attn-seq-len", default="all",
                    help=f"comma-separated sequence lengths ({', '.join(map(str, SEQ_LENS))})")
    group.addoption("--attn-mode", default="all", help=f"comma-separated modes ({', '.join(MODES)})")
    group.addoption("--attn-direction", default="all",
                    help=f"comma-separated directions of test_attention ({', '.join(DIRECTIONS)})")
    group.addoption("--attn-profile", default="auto", choices=("auto", *CONFIGS),
                    help="model sizes: 'full' (the study's), 'smoke' (tiny, for CPU); "
                         "auto = full on CUDA, smoke on CPU")
    group.addoption("--attn-rounds", type=int, default=None,
                    help="timed rounds per cell (default: {} full, {} smoke)".format(
                        DEFAULT_ROUNDS["full"][0], DEFAULT_ROUNDS["smoke"][0]))
    group.addoption("--attn-warmup", type=int, default=None,
                    help="untimed warm-up rounds after the parity steps (default: {} full, {} smoke)".format(
                        DEFAULT_ROUNDS["full"][1], DEFAULT_ROUNDS["smoke"][1]))
    group.addoption("--attn-bare-loop", action="store_true",
                    help="also time one step with a bare perf_counter before each timed round, interleaved "
                         "(extra_info.bare_loop_median_ms): checks the instrument, not the order")
    group.addoption("--attn-study", action="store_true",
                    help="after each cell, time the study's own model and loop (attn_bench/study.py) with the "
                         "study's attention function for the cell, in the same process (extra_info.study_system, "
                         "study_median_ms, vs_study_pct; no_yardstick where the study defines none)")
    group.addoption("--attn-slowdown", type=float, default=0.0,
                    help="inject real extra work worth this fraction of each step (gate testing)")
    group.addoption("--attn-compile-scope", default=DEFAULT_COMPILE_SCOPE, choices=COMPILE_SCOPES,
                    help="compiled ViT cells: compile the whole model (default, as the study's code does) "
                         "or each block (regional); packed varlen cells always compile each block")
    group.addoption("--attn-inductor-cache", default=None, metavar="DIR",
                    help="keep Inductor's on-disk caches in DIR/<impl> (one folder per implementation) and "
                         "Triton's in DIR/triton, so a later run on this GPU model reuses the compiled code "
                         "(default: Inductor's own folder, shared by every implementation)")
    group.addoption("--attn-varlen-lengths", default="fixed", choices=("fixed", "changing"),  # varlen.LENGTHS
                    help="test_varlen_train_step: the same image sizes every step, or new ones every step "
                         "(extra_info.recompiles); 'changing' also runs test_varlen_flex_lengths (the hazard)")


def _selection(config, option: str, valid) -> list:
    raw = config.getoption(option)
    if raw == "all":
        return list(valid)
    chosen = []
    for name in (part.strip() for part in raw.split(",") if part.strip()):
        value = int(name) if name.isdigit() else name
        if value not in valid:
            raise pytest.UsageError(
                f"--{option.replace('_', '-')}: unknown name {name!r}; valid: {', '.join(map(str, valid))}")
        chosen.append(value)
    return chosen


def pytest_configure(config):
    config._attn_selection = {
        "impl": _selection(config, "attn_impl", list(REGISTRY)),
        "variant": _selection(config, "attn_variant", VARIANTS),
        "seq_len": _selection(config, "attn_seq_len", SEQ_LENS),
        "mode": _selection(config, "attn_mode", MODES),
        "direction": _selection(config, "attn_direction", DIRECTIONS),
    }
    for option, minimum in (("attn_rounds", 1), ("attn_warmup", 0)):
        value = config.getoption(option)
        if value is not None and value < minimum:
            raise pytest.UsageError(f"--{option.replace('_', '-')} must be at least {minimum}, got {value}")
    if not 0 <= config.getoption("attn_slowdown") < 10:
        raise pytest.UsageError("--attn-slowdown is a fraction of a step, e.g. 0.05")
    device = envinfo.default_device()
    profile = config.getoption("attn_profile")
    if profile == "auto":
        profile = "full" if device == "cuda" else "smoke"
    rounds, warmup = DEFAULT_ROUNDS[profile]
    config._attn_suite = Suite(
        profile=profile, device=device,
        rounds=config.getoption("attn_rounds") or rounds,
        warmup=warmup if config.getoption("attn_warmup") is None else config.getoption("attn_warmup"),
        bare_loop=config.getoption("attn_bare_loop"),
        study=config.getoption("attn_study"),
        slowdown=config.getoption("attn_slowdown"),
        compile_scope=config.getoption("attn_compile_scope"),
        inductor_cache=config.getoption("attn_inductor_cache"),
    )
    config._attn_skipped = []
    config._attn_failed = []
    config.pluginmanager.register(_OutcomeRecorder(config), "attn-outcomes")
    # Results of different GPU models never share a baseline folder.
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{envinfo.gpu_info(device)['gpu_slug']}"


# Seen on the 2-core CPU machines with torch 2.14.1: Inductor's CPU code for the smoke
# profile's 3136-token block, in bf16, yields NaN in some processes and not in others (in one
# CI run every compiled 3136 train-step cell, in the same run none of the parity-test ones);
# eager bf16 and compiled fp32 stay finite. The model parity gate catches it, so these cells
# may fail (not strict) until torch fixes it.
INDUCTOR_CPU_NAN = ("torch.compile on CPU (torch 2.14) sometimes computes NaN for the smoke 3136 block in "
                    "bf16; eager bf16 and compiled fp32 are finite, and the parity gate fails the cell")


# Cold, Inductor's C++ compilation dominates a CPU run (bench.sh measured 6.5 min on a fresh
# machine on 2026-12-01, 2.5 min of it compiling). Compiled cells that run no code of the suite
# that other cells do not are skipped on CPU unless --attn-mode is given:
# - compiled 3136 cells (train, kernel, inference and parity tests): their compiled 196 and
#   eager 3136 cells run the same code, and under INDUCTOR_CPU_NAN they could only ever be
#   non-strict xfails, which pass whatever happens;
# - compiled cells of test_attention and test_infer_step other than native/plain: their timed
#   path is the same for every implementation and variant, and each implementation's and
#   variant's compiled path is covered by its test_train_step and test_parity cells (flex has no
#   CPU backward: its compiled forward by test_parity).
CPU_COMPILED_3136 = ("CPU run: compiled 3136 cells are skipped unless --attn-mode is given (their compiled 196 "
                     "and eager 3136 cells run the same code; " + INDUCTOR_CPU_NAN + ")")
CPU_COMPILED_NATIVE_PLAIN_ONLY = ("test_attention", "test_infer_step")
CPU_COMPILED_NOT_NATIVE_PLAIN = (
    "CPU run: compiled cells of test_attention and test_infer_step run for native/plain only unless --attn-mode "
    "is given (the same timed path; each implementation's and variant's compiled path is covered by "
    "test_train_step and test_parity)")


def pytest_collection_modifyitems(config, items):
    train_cells_before_inference_cells(items)
    if config._attn_suite.device != "cpu":
        return
    known_nan = torch.__version__.startswith("2.14.")
    narrow = config.getoption("attn_mode") == "all"
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("mode") != "compiled":
            continue
        if narrow and params.get("seq_len") == 3136:
            item.add_marker(pytest.mark.skip(reason=CPU_COMPILED_3136))
        elif (narrow and item.originalname in CPU_COMPILED_NATIVE_PLAIN_ONLY
              and (params["impl"], params["variant"]) != ("native", "plain")):
            item.add_marker(pytest.mark.skip(reason=CPU_COMPILED_NOT_NATIVE_PLAIN))
        elif known_nan and params.get("seq_len") == 3136:
            item.add_marker(pytest.mark.xfail(reason=INDUCTOR_CPU_NAN, strict=False))


def train_cells_before_inference_cells(items):
    """Move the training cells that come after the first inference cell to just before it: an
    inference cell then reuses the model parity of its training cell (Suite.model_parity_once)
    instead of running it again. Every other item keeps its place and order."""
    names = [getattr(item, "originalname", None) for item in items]
    if "test_infer_step" not in names:
        return
    first = names.index("test_infer_step")
    tail = list(zip(names[first:], items[first:]))
    items[first:] = ([item for name, item in tail if name == "test_train_step"]
                     + [item for name, item in tail if name != "test_train_step"])


def pytest_generate_tests(metafunc):
    selection = metafunc.config._attn_selection
    for name in ("impl", "variant", "seq_len", "mode", "direction"):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, selection[name])


@pytest.fixture(scope="session")
def suite(request) -> Suite:
    return request.config._attn_suite


def pytest_report_header(config):
    s = config._attn_suite
    gpu = envinfo.gpu_info(s.device)
    return [f"attn suite: profile={s.profile} device={s.device} gpu={gpu['gpu']} "
            f"rounds={s.rounds} warmup={s.warmup} torch={envinfo.library_versions()['torch']}"]


class _OutcomeRecorder:
    """Keeps the skipped and failed cells, which never reach pytest-benchmark's JSON."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        outcome = report_outcome(report)
        if outcome:
            kind, record = outcome
            getattr(self.config, f"_attn_{kind}").append(record)


def pytest_benchmark_update_machine_info(config, machine_info):
    device = config._attn_suite.device
    machine_info["gpu"] = envinfo.gpu_info(device)
    machine_info["libraries"] = envinfo.library_versions()
    machine_info["numerics"] = envinfo.numerics(TIMED_MATMUL_PRECISION)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    s = config._attn_suite
    output_json["attn_suite"] = {
        "profile": s.profile,
        "device": s.device,
        "rounds": s.rounds,
        "warmup": s.warmup,
        "slowdown": s.slowdown,
        "compile_scope": s.compile_scope,
        "inductor_cache": s.inductor_cache,
        "bare_loop": s.bare_loop,
        "study": s.study,
        # bf16 dense matmul TFLOP/s, measured once by the first attention-kernel cell on CUDA
        "matmul_peak_tflops": s.matmul_peak_tflops,
        "availability": envinfo.availability(s.device),
        "skipped": config._attn_skipped,
        "failed": config._attn_failed,
    }


def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    """Refuse --benchmark-compare across GPU models (pytest-benchmark's own hook only warns)."""
    current, saved = gpu_model({"machine_info": machine_info}), gpu_model(compared_benchmark)
    if current != saved:
        selector = () if benchmarksession.compare is True else (benchmarksession.compare,)
        storage = benchmarksession.storage
        path = next((p for p, data in storage.load(*selector) if data is compared_benchmark), None)
        where = Path(getattr(storage, "path", ""), path) if path else f"the run from {storage}"
        raise pytest.UsageError(
            f"--benchmark-compare: {where} was measured on {saved!r}, this run is on {current!r}; "
            "compare only runs of the same GPU model (storage is kept per GPU model under .benchmarks/<gpu>/)")


def pytest_terminal_summary(terminalreporter, config):
    from attn_bench.pytest_report import terminal_summary
    terminal_summary(terminalreporter, config)
