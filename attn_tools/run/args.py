"""The runner's handling of the pytest arguments it passes on, and of the GPUs it uses."""
from __future__ import annotations

from pathlib import Path


class UsageError(Exception):
    """Bad arguments or a failed collection; exit 2, the message is for the user."""


# pytest options the runner sets itself or that cannot mean anything for a sharded run.
REFUSED_ARGS = {
    "--benchmark-json": "use the runner's --json OUT",
    "--benchmark-save": "the runner saves the merged run itself, with autosave's file name",
    "--benchmark-compare": "gate the merged run afterwards: python -m attn_tools.gate compare BASELINE RUN",
    "--benchmark-compare-fail": "gate the merged run afterwards: python -m attn_tools.gate compare",
    "--benchmark-disable": "the runner times every cell (--benchmark-only)",
    "--benchmark-skip": "the runner times every cell (--benchmark-only)",
    "--collect-only": "the runner collects by itself",
    "--co": "the runner collects by itself",
    "--attn-inductor-cache": "use the runner's --inductor-cache DIR",
    "-n": "the runner is the parallelism (pytest-xdist disables benchmarks)",
    "--numprocesses": "the runner is the parallelism (pytest-xdist disables benchmarks)",
}
# Options whose value is the next argument: that value is never taken for a test path.
VALUE_OPTIONS = {"-k", "-m", "-p", "-o", "-c", "--rootdir", "--confcutdir", "--basetemp", "--benchmark-storage",
                 "--attn-impl", "--attn-variant", "--attn-seq-len", "--attn-mode", "--attn-profile",
                 "--attn-rounds", "--attn-warmup", "--attn-slowdown", "--attn-direction", "--attn-compile-scope",
                 "--attn-varlen-lengths", "--attn-group", "--attn-price-per-gpu-hour", "--attn-shard",
                 "--attn-shard-costs"}


def split_pytest_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(test paths, other args): a test path is an argument naming an existing file or folder
    (optionally with ::node), not the value of an option in VALUE_OPTIONS. UsageError for REFUSED_ARGS."""
    paths, rest = [], []
    for i, arg in enumerate(args):
        name = arg.split("=", 1)[0]
        if name in REFUSED_ARGS:
            raise UsageError(f"{name} cannot be passed to the runner's workers: {REFUSED_ARGS[name]}")
        is_value = i > 0 and args[i - 1] in VALUE_OPTIONS
        if not arg.startswith("-") and not is_value and Path(arg.split("::")[0]).exists():
            paths.append(arg)
        else:
            rest.append(arg)
    return paths, rest


def gpu_ids(requested: str, count: int, visible: str | None) -> list[str | None]:
    """The GPUs to use: the first N (or all) of the `count` visible ones, named as
    CUDA_VISIBLE_DEVICES names them (`visible`), else 0..count-1. [None] (one CPU slot) without a GPU."""
    if requested != "all" and (not requested.isdigit() or int(requested) < 1):
        raise UsageError(f"--gpus {requested}: give a positive number or 'all'")
    if count == 0:
        if requested not in ("all", "1"):
            raise UsageError(f"--gpus {requested}: no CUDA GPU is visible (the cells run on the CPU, one device)")
        return [None]
    names = [v.strip() for v in visible.split(",") if v.strip()][:count] if visible else []
    if len(names) < count:
        names = [str(i) for i in range(count)]
    n = count if requested == "all" else int(requested)
    if n > count:
        raise UsageError(f"--gpus {n}: only {count} GPU(s) visible ({', '.join(names)})")
    return names[:n]


def node_arg(nodeid: str, rootdir: Path) -> str:
    """A node id (relative to pytest's rootdir) as an argument valid from the current folder."""
    path, sep, rest = nodeid.partition("::")
    full = rootdir / path
    try:
        arg = str(full.relative_to(Path.cwd()))
    except ValueError:
        arg = str(full)
    return arg + sep + rest

