"""`python -m attn_tools.run` (console script `attn-run`): collect, plan, run the workers, merge, save."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from ..runs import gpu_model
from .args import UsageError, gpu_ids, split_pytest_args
from .merge import MergeError, merge_shards
from .plan import balance, estimate_costs
from .shards import Shard, device_label, exit_description
from .storage import inductor_cache_dir, previous_runs, save_run, storage_folder
from .workers import Interrupted, Progress, collect, run_shards

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TESTS = "tests/test_train_step.py"
DESCRIPTION = "Run the selected cells on every GPU of this host: one pytest worker per GPU, one merged run."
NOTE_SHARED_GPU = ("{k} workers shared each GPU: this run proves sharding and merging (correctness), "
                   "not wall time; its timings are not comparable with one worker per GPU")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m attn_tools.run", description=DESCRIPTION,
                                usage="python -m attn_tools.run [options] -- <pytest args>")
    p.add_argument("--gpus", default="all", help="how many visible GPUs to use: N or 'all' (default)")
    p.add_argument("--workers-per-gpu", type=int, default=1, metavar="K",
                   help="workers per GPU (K > 1 proves sharding on one GPU; it does not measure wall time)")
    p.add_argument("--json", metavar="OUT", help="also write the merged run here")
    p.add_argument("--previous", metavar="RUN.json", action="append",
                   help="earlier run(s) whose timings estimate the costs (default: the newest runs of the same "
                        "GPU model and profile in the storage folder)")
    p.add_argument("--inductor-cache", metavar="DIR",
                   help="Inductor's and Triton's on-disk caches, kept between runs, one folder per implementation "
                        "(pytest's --attn-inductor-cache); default: inductor-cache/ in the GPU model's storage "
                        "folder (.benchmarks/<gpu>/inductor-cache); 'none': Inductor's own folder")
    p.add_argument("--workdir", metavar="DIR", help="where shard JSONs, logs and progress files go (default: a new "
                                                    "temporary folder, kept)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, pytest_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser().parse_args(ours)
    try:
        return _main(args, pytest_args, argv)
    except (UsageError, MergeError) as e:
        print(f"run error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run interrupted before the workers started or while merging: nothing merged", file=sys.stderr)
        return 130


def _main(args, pytest_args: list[str], argv: list[str]) -> int:
    begin = time.perf_counter()
    if args.workers_per_gpu < 1:
        raise UsageError(f"--workers-per-gpu must be at least 1, got {args.workers_per_gpu}")
    test_paths, rest = split_pytest_args(pytest_args)
    if not test_paths:
        default = ROOT / DEFAULT_TESTS
        test_paths = [DEFAULT_TESTS if Path.cwd() == ROOT else str(default)]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="attn-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    env = dict(os.environ)

    found = collect(test_paths, rest, workdir, env)
    if not found.items:
        raise UsageError(f"no tests selected by: {shlex.join(pytest_args)}")
    gpu = gpu_model(found.run)
    folder = storage_folder(rest, (found.run["machine_info"].get("gpu") or {}).get("gpu_slug", "unknown"))
    slots = [g for g in gpu_ids(args.gpus, found.cuda_device_count, env.get("CUDA_VISIBLE_DEVICES"))
             for _ in range(args.workers_per_gpu)]
    previous = previous_runs(args.previous, folder, gpu, found.suite.get("profile"))
    costs, measured = estimate_costs(found.items, found.suite.get("availability"), [r for _, r in previous])
    cache = inductor_cache_dir(args.inductor_cache, folder)
    if cache:
        rest = [*rest, f"--attn-inductor-cache={cache}"]
    plan = [Shard(i, slots[i], cells, sum(costs[c] for c in cells))
            for i, cells in enumerate(balance(costs, len(slots))) if cells]
    for i, shard in enumerate(plan):
        shard.index = i
    print(f"attn_tools.run: {len(found.items)} cells on {gpu}, profile {found.suite.get('profile')}, "
          f"{len(plan)} worker(s); work folder {workdir}")
    print(f"Inductor cache: {cache or 'Inductor default (shared by every implementation)'}")
    print(f"costs: {measured} measured in earlier runs ({', '.join(n for n, _ in previous) or 'none'}), "
          f"{len(found.items) - measured} from the cost model")
    for shard in plan:
        print(f"  worker {shard.index}: {device_label(shard.gpu)}, {len(shard.cells)} cell(s), "
              f"~{shard.estimated_s:.0f} s estimated")
    note = NOTE_SHARED_GPU.format(k=args.workers_per_gpu) if args.workers_per_gpu > 1 else None
    if note:
        print(f"note: {note}")

    try:
        progress = Progress(len(found.items), costs, begin)
        shards, interrupted = run_shards(plan, rest, workdir, found.rootdir, env, costs, progress=progress), False
    except Interrupted as e:
        shards, interrupted = e.shards, True
        print("run interrupted: merging the cells that finished; the others are reported failed", file=sys.stderr)
    wall_s = time.perf_counter() - begin
    runner = {"command": shlex.join(["python", "-m", "attn_tools.run", *argv]),
              "gpus": sorted({s.gpu for s in plan}, key=str), "workers_per_gpu": args.workers_per_gpu,
              "workers": len(plan), "workdir": str(workdir), "inductor_cache": cache, "interrupted": interrupted,
              "note": note,
              "cost_previous_runs": [n for n, _ in previous], "cost_measured_cells": measured}
    merged = merge_shards(shards, wall_s, runner, workers_per_gpu=args.workers_per_gpu)
    path = save_run(merged, folder)
    if args.json:
        from pytest_benchmark.utils import safe_dumps

        Path(args.json).write_text(safe_dumps(merged, ensure_ascii=True, indent=4), encoding="utf-8")
    _print_summary(merged, path, args.json, note)
    if interrupted:
        return 130
    return 1 if merged["attn_suite"]["failed"] else 0


def _print_summary(merged: dict, path: Path, json_out: str | None, note: str | None) -> None:
    from ..report import merge, text_report

    suite = merged["attn_suite"]
    print(text_report(merge([merged], names=[str(path)])), end="")
    for s in suite["shards"]:
        print(f"worker {s['shard']}: {device_label(s['gpu'])}, {len(s['cells'])} cell(s), {s['wall_s']:.0f} s, "
              f"{exit_description(s['exit_code'])}" + (f" (restart of worker {s['restart_of']})"
                                                       if s["restart_of"] is not None else ""))
    print(f"{len(merged['benchmarks'])} timed, {len(suite['skipped'])} skipped, {len(suite['failed'])} failed; "
          f"wall {suite['wall_s']:.0f} s")
    print(f"saved {path}" + (f" and {json_out}" if json_out else ""))
    storage = path.parent.parent  # <storage>/<machine-id>/NNNN_*.json
    print(f"pytest-benchmark's own tools read it with: pytest-benchmark --storage {storage} list | compare")
    if note:
        print(f"note: {note}")

