"""Run the selected cells on every GPU of this host: one pytest worker per GPU, one merged run.

    python -m attn_tools.run [--gpus N|all] [--workers-per-gpu K] [--json OUT] [--previous RUN.json]
                             [--workdir DIR] -- <pytest args, e.g. --attn-impl native,flex --attn-seq-len 196>

1. **Collect** (`workers.collect`): `python -m pytest --collect-only -q <args> tests/test_train_step.py`
   (or the test files among the args) lists the cells, with the GPU model, profile and availability map.
2. **Plan** (`plan`): each cell's cost in seconds, from earlier runs when there are some (`--previous`,
   else the newest runs of the same GPU model and profile in the storage folder): the cell's
   recorded wall time (`attn_suite["cell_wall_s"]`, written by this runner), else
   `first_step_s + (rounds + warm-up) x steps per round x median`. Cells no run has measured use
   the cost model (`plan`'s docstring), scaled by measured / modelled over the cells that have
   both. Then balance by longest processing time first: groups of cells in decreasing cost, each
   to the least-loaded worker. A group is the cells that share a worker's memoized parity checks
   (same impl, variant, seq_len and mode), so no check runs in two workers. A worker runs its
   cells in collection order.
3. **Run** (`workers`): one `pytest --benchmark-only` worker per GPU (`CUDA_VISIBLE_DEVICES`
   pinned), or K per GPU with `--workers-per-gpu K`. K > 1 proves sharding and merging on one
   GPU; the workers then share the GPU, so that proves correctness, not wall time. Workers compile
   into `--inductor-cache DIR` (default `<storage>/<gpu>/inductor-cache`), kept between runs.
   Each worker writes `shard-N.json`, `shard-N.log` and `shard-N.progress.jsonl` to the work folder;
   the progress file (`plugin`, loaded into the worker with `-p attn_tools.run.plugin`) records
   each cell as it starts and finishes, with its benchmark entry, so that a worker that dies
   (killed, segfault) loses only the cell it was running. As each cell finishes, the runner
   prints one line:

       [done/total] <cell id> <outcome> <seconds>s  elapsed <m:ss>  ETA <m:ss>

   (ETA: the most any worker still has to do, by the planned costs of its cells not yet done).
4. **Crash** (`shards.settle`): a cell with no result (not timed, not skipped, not failed) is
   reported in `attn_suite["failed"]` with the exit code and the log's last lines. If the worker
   died before its remaining cells started, one new worker on the same GPU runs them (once).
   **Interrupt** (Ctrl-C, `timeout -s INT`): the runner stops the workers, reports their running
   and unstarted cells failed ("interrupted", "not run") and merges what finished.
5. **Merge** (`merge`): the shards become one pytest-benchmark run: the union of `benchmarks`,
   the first shard's `machine_info` and `commit_info`, the shards' skipped and failed cells, and
   `attn_suite["complete"]` (False when interrupted or a worker crashed), `["workers_per_gpu"]`,
   `["wall_s"]` (the runner's wall time, collection included), `["shards"]` (per worker: GPU,
   cells, wall seconds, exit code, log), `["cell_wall_s"]` and `["runner"]`. Shards of different
   GPU models or suite settings (profile, rounds, warm-up, ...) are not merged (exit 2).
6. **Save** (`storage`): where pytest-benchmark's autosave puts runs
   (`.benchmarks/<gpu>/<machine-id>/NNNN_<commit>_<date>.json`, or under `--benchmark-storage`),
   so `pytest-benchmark --storage .benchmarks/<gpu> list | compare`, `python -m attn_tools.report`
   and `python -m attn_tools.gate` read it like any other run; it keeps the per-round times
   (`stats.data`) that the gate needs. `--json OUT` writes a copy.

The command line is `cli`; `args` handles the pytest arguments and the GPUs.

Exit status: 0 when every cell passed or skipped, 1 when a cell failed or was lost, 2 on bad
arguments, a failed collection, or shards that cannot be merged, 130 when interrupted (after
saving what finished).
"""
from .args import REFUSED_ARGS, VALUE_OPTIONS, UsageError, gpu_ids, node_arg, split_pytest_args
from .cli import main, parser
from .merge import SETTINGS, MergeError, merge_shards
from .plan import (
    CELL_S,
    COMPILED_FACTOR,
    OTHER_TEST_S,
    SKIP_CELL_S,
    balance,
    estimate_costs,
    measured_cost,
    model_cost,
    parity_group,
)
from .shards import Shard, device_label, exit_description, read_progress, run_from_progress, settle
from .storage import DEFAULT_STORAGE, inductor_cache_dir, previous_runs, save_run, storage_folder, storage_option
from .workers import Interrupted, Progress, collect, run_shards

__all__ = [
    "CELL_S", "COMPILED_FACTOR", "DEFAULT_STORAGE", "OTHER_TEST_S", "REFUSED_ARGS", "SETTINGS", "SKIP_CELL_S",
    "VALUE_OPTIONS", "Interrupted", "MergeError", "Progress", "Shard", "UsageError", "balance", "collect",
    "device_label", "estimate_costs", "exit_description", "gpu_ids", "inductor_cache_dir", "main", "measured_cost",
    "merge_shards", "model_cost", "node_arg", "parity_group", "parser", "previous_runs", "read_progress",
    "run_from_progress", "run_shards", "save_run", "settle", "split_pytest_args", "storage_folder", "storage_option",
]
