"""Where runs live: the storage folder of a GPU model (as conftest.py and pytest-benchmark's autosave
lay it out), the Inductor cache kept beside it, saving the merged run, and the earlier runs whose
timings estimate the costs."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..runs import RUN_GLOB, RunFileError, gpu_model, latest_runs, load_run
from .args import UsageError

DEFAULT_STORAGE = "file://./.benchmarks"  # pytest-benchmark's default; conftest.py adds /<gpu-slug>
PREVIOUS_RUNS = 10  # newest runs in storage searched for measured costs


def storage_option(pytest_args: list[str]) -> str:
    """The --benchmark-storage the user gave (last one wins), else pytest-benchmark's default."""
    value = DEFAULT_STORAGE
    for i, arg in enumerate(pytest_args):
        if arg == "--benchmark-storage" and i + 1 < len(pytest_args):
            value = pytest_args[i + 1]
        elif arg.startswith("--benchmark-storage="):
            value = arg.split("=", 1)[1]
    return value


def storage_folder(pytest_args: list[str], gpu_slug: str) -> Path:
    """The folder a worker's autosave would use: the default gets /<gpu-slug>, as conftest.py does."""
    value = storage_option(pytest_args)
    if value == DEFAULT_STORAGE:
        value = f"{DEFAULT_STORAGE}/{gpu_slug}"
    if "://" not in value:  # as pytest-benchmark's load_storage
        value = "file://" + value
    scheme, _, path = value.partition("://")
    if scheme != "file":
        raise UsageError(f"--benchmark-storage {value}: the runner saves only to file:// storage")
    return Path(path)


def inductor_cache_dir(requested: str | None, folder: Path) -> str | None:
    """The workers' --attn-inductor-cache: `requested`, else FOLDER/inductor-cache (FOLDER is the GPU
    model's storage folder, so the compiled code persists per GPU model); None for 'none'."""
    if requested == "none":
        return None
    return str(Path(requested or folder / "inductor-cache").resolve())


def save_run(run: dict, folder: Path) -> Path:
    """Save `run` as pytest-benchmark's autosave would: FOLDER/<machine-id>/NNNN_<commit>_<date>.json.

    NNNN is one more than the highest in that machine-id folder. Unlike a plain autosave, the
    per-round times (`stats.data`) are kept, as `--benchmark-save-data` keeps them: the gate's
    rule needs them.
    """
    from pytest_benchmark.utils import get_machine_id, safe_dumps

    folder = Path(folder) / get_machine_id()
    folder.mkdir(parents=True, exist_ok=True)
    commit = run.get("commit_info") or {}
    tag = f"{commit.get('id', 'unknown')}_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}"
    if commit.get("dirty"):
        tag += "_uncommitted-changes"
    number = max((int(p.name[:4]) for p in folder.glob(RUN_GLOB)), default=0) + 1
    while True:
        path = folder / f"{number:04d}_{tag}.json"
        try:
            with path.open("x", encoding="utf-8") as fh:
                fh.write(safe_dumps(run, ensure_ascii=True, indent=4))
            return path
        except FileExistsError:
            number += 1


def previous_runs(paths: list[str] | None, folder: Path, gpu: str, profile: str | None) -> list[tuple[str, dict]]:
    """(name, run) of the runs whose timings estimate the costs, newest first.

    Given paths are used as they are (a bad file is a UsageError); otherwise the newest
    PREVIOUS_RUNS runs in `folder` of the same GPU model and profile (unreadable ones skipped).
    """
    if paths:
        out = []
        for path in paths:
            try:
                out.append((path, load_run(path)))
            except RunFileError as e:
                raise UsageError(f"--previous: {e}") from None
        return out
    try:
        newest = latest_runs(folder, PREVIOUS_RUNS)
    except RunFileError as e:
        print(f"costs: not using earlier runs in {folder}: {e}")
        return []
    found = []
    for path in reversed(newest):
        try:
            run = load_run(path)
        except RunFileError:
            continue
        if gpu_model(run) == gpu and (run.get("attn_suite") or {}).get("profile") == profile:
            found.append((str(path), run))
    return found

