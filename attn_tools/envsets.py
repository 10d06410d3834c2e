"""The environment sets: which libraries each installs and which implementations it measures.

The attention libraries cannot share one Python environment (flash-attn 2 and flash-attn-4
install the same `flash_attn` package; xFormers' CUDA 12 runtime stops Transformer Engine's
cuDNN from loading), so the matrix runs in one environment per set, each with the host's
torch and one library. `noxfile.py` creates and runs them (`nox -s "bench(fa4)"`); the GPU
workflow asks this module for its job matrix:

    python -m attn_tools.envsets list
    python -m attn_tools.envsets plan [--shards N] [--changed-files FILE]
    python -m attn_tools.envsets rerun GATE.json CURRENT.json [SET]

`plan` prints the GitHub Actions matrix (`{"include": [{"set", "shard", "pytest_args"}, ...]}`):
without `--changed-files`, every set in N shards on the full matrix (FULL_TESTS); with it (a
pull request's changed paths, one a line), the small profile (SMALL_ARGS: seq 3136, eager), one
shard per set: a changed adapter `attn_impls/<module>.py` selects that module's implementations
in their set, and any other change selects the torch set.

`rerun` splits the gate's confirmation rerun (`rerun.cells` of `gate compare --json`) by set:
without SET it prints the sets that have cells to rerun, one a line; with SET, the pytest
arguments that rerun that set's cells with CURRENT's settings, one a line (for `mapfile`).

Plain data, no torch: it runs where the workflow plans, on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EnvSet:
    """One environment: the host's torch plus `install`.

    impls: the implementation ids it measures (`--attn-impl`); each id is in one set.
    install: pip requirements on top of the host's torch (`-c` pins torch to the host's build,
        so a library that wants another torch fails to install instead of replacing it).
    pip_args: extra pip arguments for `install` (`--no-build-isolation` for builds against the
        host's torch, `--no-deps` where the wheel pins an older torch).
    env: environment variables for the install and the run.
    lib_dirs: folders under the environment's site-packages put on LD_LIBRARY_PATH for the run.
    wheel_env: a variable naming a locally built wheel to install (FA3 has no wheel on PyPI).
    """

    name: str
    impls: tuple[str, ...]
    install: tuple[str, ...] = ()
    pip_args: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    lib_dirs: tuple[str, ...] = ()
    wheel_env: str | None = None
    note: str = ""


ENV_SETS: dict[str, EnvSet] = {s.name: s for s in (
    EnvSet("torch", ("native", "sdpa_flash", "sdpa_efficient", "sdpa_math", "sdpa_cudnn", "flex"),
           note="the host's torch only: native, SDPA's backends, FlexAttention"),
    EnvSet("fa2", ("fa2",), install=("flash-attn>=2.6",), pip_args=("--no-build-isolation",),
           env={"FLASH_ATTN_CUDA_ARCHS": "90", "MAX_JOBS": "16"},
           note="flash-attn 2, built from source against the host's torch (no wheel for torch 2.11)"),
    EnvSet("fa3", ("fa3",), wheel_env="FA3_WHEEL",
           note="FlashAttention-3 (Hopper): the wheel named by $FA3_WHEEL, built from flash-attention's hopper/; "
                "without it the fa3 cells skip with their reason"),
    EnvSet("fa4", ("fa4",), install=("flash-attn-4",),
           note="flash-attn-4 (CuTe DSL, JIT-compiled); shares the flash_attn package name with flash-attn 2"),
    EnvSet("te", ("te_flash", "te_fused", "te_unfused"), install=("transformer_engine[pytorch]>=2.0",),
           pip_args=("--no-build-isolation",), env={"NVTE_FRAMEWORK": "pytorch"},
           note="Transformer Engine, its torch extension built against the host's torch; te_flash needs "
                "flash-attn as well and skips with its reason without it"),
    EnvSet("xformers", ("xformers", "xformers_cutlass", "xformers_flash", "xformers_flash3"),
           install=("xformers>=0.0.28", "nvidia-cuda-runtime-cu12"), pip_args=("--no-deps",),
           lib_dirs=("nvidia/cuda_runtime/lib",),
           note="xFormers (its wheel pins an older torch: --no-deps) and the CUDA 12 runtime its extension "
                "links; xformers_flash3 needs FA3 and skips with its reason without it"),
)}
DEFAULT_SET = "torch"

# The implementations each adapter module registers (attn_impls/<module>.py): what a change to
# that file can affect. tests/test_ci.py checks this against the registry.
ADAPTER_IMPLS = {
    "native": ("native",),
    "sdpa": ("sdpa_flash", "sdpa_efficient", "sdpa_math", "sdpa_cudnn"),
    "flex": ("flex",),
    "flash": ("fa2", "fa3", "fa4"),
    "te": ("te_flash", "te_fused", "te_unfused"),
    "xformers": ("xformers", "xformers_cutlass", "xformers_flash", "xformers_flash3"),
}
FULL_TESTS = ("tests/test_train_step.py", "tests/test_infer_step.py", "tests/test_attention.py")
SMALL_ARGS = ("--attn-seq-len", "3136", "--attn-mode", "eager")  # the pull-request profile


def set_of(impl: str) -> str:
    """The environment set that measures `impl`; ValueError listing the known ids otherwise."""
    for env_set in ENV_SETS.values():
        if impl in env_set.impls:
            return env_set.name
    known = [i for s in ENV_SETS.values() for i in s.impls]
    raise ValueError(f"unknown implementation {impl!r}; valid: {', '.join(known)}")


def changed_impls(paths: list[str]) -> tuple[dict[str, list[str]], bool]:
    """({set: [impl, ...]} the changed adapters select, whether any other path changed)."""
    chosen: dict[str, list[str]] = {}
    other = False
    for path in (p.strip() for p in paths if p.strip()):
        parts = Path(path).parts
        module = Path(path).stem
        if len(parts) == 2 and parts[0] == "attn_impls" and path.endswith(".py") and module in ADAPTER_IMPLS:
            for impl in ADAPTER_IMPLS[module]:
                chosen.setdefault(set_of(impl), [])
                if impl not in chosen[set_of(impl)]:
                    chosen[set_of(impl)].append(impl)
        else:
            other = True
    return chosen, other


def plan(shards: int = 1, changed: list[str] | None = None) -> list[dict]:
    """The workflow's jobs: {"set", "shard" ("K/N"), "pytest_args" (one string)} each (module docstring)."""
    if shards < 1:
        raise ValueError(f"--shards must be at least 1, got {shards}")
    if changed is None:
        return [{"set": name, "shard": f"{k}/{shards}", "pytest_args": " ".join(FULL_TESTS)}
                for name in ENV_SETS for k in range(1, shards + 1)]
    chosen, other = changed_impls(changed)
    if other or not chosen:
        chosen.setdefault(DEFAULT_SET, [])
    jobs = []
    for name in ENV_SETS:  # declaration order
        if name not in chosen:
            continue
        impls = chosen[name]
        if name == DEFAULT_SET and other:
            impls = []  # every implementation of the set (its own --attn-impl)
        args = [*(("--attn-impl", ",".join(impls)) if impls else ()), *SMALL_ARGS, FULL_TESTS[0]]
        jobs.append({"set": name, "shard": "1/1", "pytest_args": " ".join(args)})
    return jobs


def rerun_by_set(cells: list[str]) -> dict[str, list[str]]:
    """{set: [cell, ...]} of the cells to rerun, in declaration order of the sets; a cell that is not a
    matrix cell (no implementation in its id) goes to the default set."""
    from .runs import cell_params

    by_set: dict[str, list[str]] = {}
    for cell in cells:
        params = cell_params(cell)
        by_set.setdefault(set_of(params["impl"]) if params else DEFAULT_SET, []).append(cell)
    return {name: by_set[name] for name in ENV_SETS if name in by_set}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m attn_tools.envsets", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the environment sets, their implementations and installs")
    pl = sub.add_parser("plan", help="the GPU workflow's job matrix as JSON")
    pl.add_argument("--shards", type=int, default=1, help="shards per set for the full matrix (default 1)")
    pl.add_argument("--changed-files", metavar="FILE",
                    help="a pull request's changed paths, one a line: the small profile narrowed by them")
    rr = sub.add_parser("rerun", help="the gate's confirmation rerun, split by environment set")
    rr.add_argument("gate_json", metavar="GATE.json", help="the verdict written by gate compare --json")
    rr.add_argument("current", metavar="CURRENT.json", help="the gated run (its settings are rerun)")
    rr.add_argument("set", nargs="?", choices=list(ENV_SETS), help="print this set's pytest arguments")
    args = p.parse_args(argv)
    if args.command == "rerun":
        from .gate import rerun_pytest_args
        from .runs import load_run, run_settings

        cells = (json.loads(Path(args.gate_json).read_text(encoding="utf-8")).get("rerun") or {}).get("cells", [])
        by_set = rerun_by_set(cells)
        if args.set is None:
            print("\n".join(by_set))
        elif args.set in by_set:
            print("\n".join(rerun_pytest_args(by_set[args.set], run_settings(load_run(args.current)))))
        return 0
    if args.command == "list":
        for s in ENV_SETS.values():
            default = " (default)" if s.name == DEFAULT_SET else ""
            install = " ".join(s.install) or (f"${s.wheel_env}" if s.wheel_env else "nothing")
            print(f"{s.name}{default}: {', '.join(s.impls)}\n    installs: {install}\n    {s.note}")
        return 0
    changed = None
    if args.changed_files:
        changed = Path(args.changed_files).read_text(encoding="utf-8").splitlines()
    try:
        print(json.dumps({"include": plan(args.shards, changed)}))
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
