"""pytest wiring of the suite: options, the cell matrix, and what goes into the JSON."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from attn_bench import envinfo
from attn_bench.harness import DEFAULT_ROUNDS, MODES, Suite
from attn_bench.kernel_bench import DIRECTIONS
from attn_bench.model import COMPILE_SCOPES, CONFIGS, DEFAULT_COMPILE_SCOPE, SEQ_LENS, TIMED_MATMUL_PRECISION
from attn_impls import REGISTRY, VARIANTS
from attn_impls.registry import VARLEN_REGISTRY
from attn_tools import merge as shards
from attn_tools.run.plugin import PROGRESS_ENV
from attn_tools.runs import gpu_model, report_outcome

DEFAULT_STORAGE = "file://./.benchmarks"

# --attn-group: named parts of the benchmark matrix (the tests marked `cell` in pytest.ini).
# The study's attention functions as registry ids: native, SDPA's four backends, FlashAttention-3,
# Transformer Engine's three backends, xFormers with its own dispatch, FlexAttention.
STUDY_IMPLS = ("native", "sdpa_flash", "sdpa_efficient", "sdpa_math", "sdpa_cudnn", "fa3",
               "te_flash", "te_fused", "te_unfused", "xformers", "flex")
# group: (the test functions it selects, what it is)
GROUPS = {
    "study": (("test_train_step",), "training steps of the study's implementations (" + ", ".join(STUDY_IMPLS)
              + "; those of --attn-impl when given), every variant, both lengths and modes"),
    "train": (("test_train_step",), "training steps of every implementation"),
    "kernels": (("test_attention",), "the attention call alone (test_attention)"),
    "inference": (("test_infer_step",), "inference forwards (test_infer_step)"),
    "packed": (("test_varlen_train_step", "test_varlen_flex_lengths"), "packed variable-size images (test_varlen_*)"),
    "all": ((), "every test: the groups above, the parity matrix and the unit tests of the suite"),
}
AUTO_GROUP = "auto"


def pytest_addoption(parser):
    group = parser.getgroup("attn", "attention benchmark matrix")
    group.addoption("--attn-impl", default="all",
                    help=f"comma-separated implementation ids or 'all': matrix cells ({', '.join(REGISTRY)}); "
                         f"packed-image cells ({', '.join(VARLEN_REGISTRY)})")
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
    group.addoption("--attn-price-per-gpu-hour", type=float, default=None, metavar="USD",
                    help="price of one GPU-hour: training and inference cells then record $ per million images "
                         "(extra_info.usd_per_million_images; default: none)")
    group.addoption("--attn-group", default=AUTO_GROUP, metavar="NAME[,NAME...]",
                    help="which tests run, by name: "
                         + "; ".join(f"{name}: {what}" for name, (_, what) in GROUPS.items())
                         + ". Default (auto): study with --benchmark-only (the benchmark's first answer), else all "
                           "(the test command); all whenever test paths or node ids are named. A group other "
                           "than all deselects every other test, unit tests included (those are -m 'not cell')")
    group.addoption("--attn-varlen-lengths", default="fixed", choices=("fixed", "changing"),  # varlen.LENGTHS
                    help="test_varlen_train_step: the same image sizes every step, or new ones every step "
                         "(extra_info.recompiles); 'changing' also runs test_varlen_flex_lengths (the hazard)")
    group.addoption("--attn-shard", default=None, metavar="K/N",
                    help="run only shard K of N of the selected cells, balanced by cost; N jobs with the same "
                         "arguments run every cell exactly once (attn_tools/merge.py)")
    group.addoption("--attn-shard-costs", action="append", default=[], metavar="RUN.json",
                    help="earlier run(s) whose timings balance --attn-shard (default: the runner's cost model)")


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


def _impl_selection(config) -> tuple[list, list]:
    """(matrix impls, packed-image impls) that --attn-impl selects; an id names either or both."""
    valid = list(dict.fromkeys([*REGISTRY, *VARLEN_REGISTRY]))
    chosen = _selection(config, "attn_impl", valid)
    return [i for i in chosen if i in REGISTRY], [i for i in chosen if i in VARLEN_REGISTRY]


def chosen_groups(config) -> tuple[list[str], str]:
    """The groups --attn-group names (UsageError listing the valid ones) and why: "" when named,
    else what the default resolved by."""
    raw = config.getoption("attn_group")
    if raw == AUTO_GROUP:
        if config.args_source == pytest.Config.ArgsSource.ARGS:
            return ["all"], "default with test paths named"
        if config.getoption("benchmark_only", False):
            return ["study"], "default with --benchmark-only"
        return ["all"], "default"
    names = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown or not names:
        raise pytest.UsageError(f"--attn-group: unknown group {(unknown or [raw])[0]!r}; "
                                f"valid: {', '.join(GROUPS)} (or {AUTO_GROUP}, the default)")
    return names, ""


def in_groups(item, groups: list[str], study_impls) -> bool:
    """Whether test `item` belongs to one of `groups` (a study cell's impl must be in `study_impls`)."""
    if "all" in groups:
        return True
    name = getattr(item, "originalname", None)
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(name in GROUPS[group][0] and (group != "study" or params.get("impl") in study_impls)
               for group in groups)


def select_groups(config, items) -> None:
    """Deselect the tests outside the chosen groups (pytest counts them as deselected) and say which."""
    groups, why = config._attn_groups
    study_impls = STUDY_IMPLS if config.getoption("attn_impl") == "all" else config._attn_selection["impl"]
    keep, drop = [], []
    for item in items:
        (keep if in_groups(item, groups, study_impls) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"attn group: {','.join(groups)}" + (f" ({why})" if why else "")
                            + (f"; other groups: {', '.join(g for g in GROUPS if g not in groups)}"
                               if "all" not in groups else ""))


def pytest_configure(config):
    config._attn_groups = chosen_groups(config)
    impls, varlen_impls = _impl_selection(config)
    config._attn_selection = {
        "impl": impls,
        "varlen_impl": varlen_impls,
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
    price = config.getoption("attn_price_per_gpu_hour")
    if price is not None and not price > 0:
        raise pytest.UsageError(f"--attn-price-per-gpu-hour must be a positive price in $, got {price}")
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
        price_per_gpu_hour=price,
    )
    config._attn_skipped = []
    config._attn_failed = []
    config.pluginmanager.register(_OutcomeRecorder(config), "attn-outcomes")
    config._attn_shard = None
    if config.getoption("attn_shard"):
        try:
            index, count = shards.parse_shard(config.getoption("attn_shard"))
            costs = shards.load_cost_runs(config.getoption("attn_shard_costs"))
        except ValueError as e:
            raise pytest.UsageError(str(e)) from None
        config._attn_shard = {"spec": f"{index}/{count}", "index": index, "count": count,
                              "costs_from": config.getoption("attn_shard_costs")}
        # A worker of attn_tools.run gets the cells its runner's collection already sharded.
        if not os.environ.get(PROGRESS_ENV):
            config.pluginmanager.register(_Shard(index, count, costs), "attn-shard")
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
    check_impls_select_cells(config, items)
    select_groups(config, items)
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


def check_impls_select_cells(config, items):
    """UsageError if an --attn-impl id selects none of the collected cells (e.g. a packed-image id
    with only tests/test_train_step.py collected), naming the ids the collected tests accept. A test
    that --attn-impl leaves without any implementation (packed-image ids only) is deselected."""
    if config.getoption("attn_impl") == "all":
        return
    uses = {name for item in items for name in ("impl", "varlen_impl") if name in item.fixturenames}
    empty = [item for item in items if any(
        name in item.fixturenames and getattr(item, "callspec", None)
        and item.callspec.params.get(name) not in (*REGISTRY, *VARLEN_REGISTRY) for name in ("impl", "varlen_impl"))]
    if empty:
        config.hook.pytest_deselected(items=empty)
        dropped = set(map(id, empty))
        items[:] = [item for item in items if id(item) not in dropped]
    params = [getattr(getattr(item, "callspec", None), "params", {}) for item in items]
    found = {p.get(name) for p in params for name in ("impl", "varlen_impl")} - {None}
    if not uses:
        return  # no test of the matrix collected (e.g. the suite's own unit tests)
    unused = [i for i in (*config._attn_selection["impl"], *config._attn_selection["varlen_impl"])
              if i not in found]
    if unused:
        valid = [*(REGISTRY if "impl" in uses else ()), *(VARLEN_REGISTRY if "varlen_impl" in uses else ())]
        raise pytest.UsageError(
            f"--attn-impl: {', '.join(dict.fromkeys(unused))} selects no collected cell; the collected tests take: "
            f"{', '.join(dict.fromkeys(valid))}")


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


class _Shard:
    """Keeps shard K of N of the selected cells (after -k/-m deselection, hence trylast)."""

    def __init__(self, index: int, count: int, costs: list[dict]):
        self.index, self.count, self.costs = index, count, costs

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        keep = set(shards.shard_cells([item.nodeid for item in items], self.index, self.count, self.costs))
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid not in keep])
        items[:] = [item for item in items if item.nodeid in keep]


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
        "price_per_gpu_hour": s.price_per_gpu_hour,  # $, or None: then no cell records a cost
        # bf16 dense matmul TFLOP/s, measured once by the first attention-kernel cell on CUDA
        "matmul_peak_tflops": s.matmul_peak_tflops,
        "availability": envinfo.availability(s.device),
        # False when the run stopped before its selected tests ended (Ctrl-C, an internal error, -x)
        "complete": getattr(config, "_attn_complete", True),
        "workers_per_gpu": 1,  # attn_tools.run records its own
        "skipped": config._attn_skipped,
        "failed": config._attn_failed,
        "shard": getattr(config, "_attn_shard", None),
        "env_set": os.environ.get("ATTN_ENV_SET"),  # set by noxfile.py's bench(SET)
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


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Whether the run completed, known before pytest-benchmark's own wrapper saves the JSON."""
    session.config._attn_complete = (exitstatus not in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
                                     and not session.shouldstop and not session.shouldfail)
    yield


def pytest_terminal_summary(terminalreporter, config):
    from attn_bench.pytest_report import terminal_summary
    terminal_summary(terminalreporter, config)
