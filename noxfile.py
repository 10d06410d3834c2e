"""Environment sets for nox: one virtual environment per set of attention libraries.

    nox -l                                   # bench(SET) for each set, matrix, merge
    nox                                      # the default: bench(torch), the host's torch only
    nox -s "bench(fa4)" -- --attn-seq-len 196 --attn-shard 1/2
    nox -s matrix -- --attn-mode eager       # every set on this host, then one merged run

Each `bench(SET)` creates its own environment with the host's site-packages visible
(`--system-site-packages`: the host's CUDA build of torch, which is machine-specific, is used as
it is and never reinstalled), installs the suite and the set's libraries
(`attn_tools/envsets.py` declares them), and runs the set's implementations through the
multi-GPU runner (`python -m attn_tools.run`: every GPU of the host, one merged run) with the
arguments after `--` passed to pytest. It writes `out/sets/SET.json` (or `$ATTN_RUN_JSON`);
`$ATTN_INDUCTOR_CACHE` names a compile cache kept between runs (the runner's `--inductor-cache`).
`matrix` runs every set one after another and `merge` merges their runs into `out/matrix.json`.

Why nox: the sets differ in how they install (a source build against the host's torch, a
wheel that pins an older torch and needs `--no-deps`, a locally built wheel, an extra
LD_LIBRARY_PATH), which is Python code here rather than tox's ini options and conditionals;
parametrization gives one named environment per set with one definition; `session.notify`
chains the sets and the merge into one command; and `--no-venv` runs a set in an existing
environment. A uv-only setup (`uv venv` + `uv pip`) creates environments quickly but has nothing
to name, list or chain: it would need this file's logic as a script anyway. nox can
still use uv as its backend (`nox -db uv`).
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from attn_tools.envsets import DEFAULT_SET, ENV_SETS  # noqa: E402

OUT = ROOT / "out"
SETS_DIR = OUT / "sets"

nox.options.sessions = [f"bench({DEFAULT_SET})"]
nox.options.reuse_existing_virtualenvs = True  # a set's environment is minutes to build (builds from source)


def _has_venv(session: nox.Session) -> bool:
    return not isinstance(session.virtualenv, nox.virtualenv.PassthroughEnv)


def _install(session: nox.Session, env_set) -> None:
    """The suite, then the set's libraries, with torch pinned to the host's build."""
    session.install("-e", ".")  # torch, timm, pytest-benchmark come from the host's site-packages when there
    torch = session.run("python", "-c", "import torch; print(torch.__version__)", silent=True).strip()
    constraints = Path(session.create_tmp()) / "torch-constraint.txt"
    constraints.write_text(f"torch=={torch}\n", encoding="utf-8")
    if env_set.install:
        session.install("-c", str(constraints), *env_set.pip_args, *env_set.install, env=env_set.env)
    if env_set.wheel_env:
        wheel = os.environ.get(env_set.wheel_env)
        if wheel:
            session.install("-c", str(constraints), "--no-deps", wheel)
        else:
            session.warn(f"${env_set.wheel_env} is not set: {env_set.name}'s cells will skip with their reason")


def _run_env(session: nox.Session, env_set) -> dict:
    env = {"ATTN_ENV_SET": env_set.name, **env_set.env}
    if env_set.lib_dirs:
        site = session.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                           silent=True).strip()
        dirs = [str(Path(site) / d) for d in env_set.lib_dirs]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*dirs, *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])
    return env


@nox.session(venv_params=["--system-site-packages"])
@nox.parametrize("env_set", list(ENV_SETS), ids=list(ENV_SETS))
def bench(session: nox.Session, env_set: str) -> None:
    """One environment set: install it, then run its implementations (pytest arguments after --)."""
    spec = ENV_SETS[env_set]
    if _has_venv(session):
        _install(session, spec)
    else:
        session.log("no virtual environment (--no-venv): using the running environment's packages as they are")
    out = Path(os.environ.get("ATTN_RUN_JSON") or SETS_DIR / f"{env_set}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    runner = ["--json", str(out), "--workdir", str(out.with_suffix(".work"))]
    if os.environ.get("ATTN_INDUCTOR_CACHE"):
        runner += ["--inductor-cache", os.environ["ATTN_INDUCTOR_CACHE"]]
    # A set's run is part of a run: it must not be autosaved beside whole runs (it would become the
    # newest baseline), so its storage is its own; the merged run is what gets stored.
    storage = f"--benchmark-storage=file://{out.with_suffix('.storage')}"
    # The set's --attn-impl comes first: a later --attn-impl among the arguments narrows it.
    session.run("python", "-m", "attn_tools.run", *runner, "--", "--attn-impl", ",".join(spec.impls),
                storage, *session.posargs, env=_run_env(session, spec))


@nox.session(venv_backend="none")
def matrix(session: nox.Session) -> None:
    """Every environment set on this host, one after another, then `merge` (pytest arguments after --)."""
    for old in glob.glob(str(SETS_DIR / "*.json")):
        os.remove(old)
    for name in ENV_SETS:
        session.notify(f"bench({name})", posargs=session.posargs)
    session.notify("merge")


@nox.session(venv_backend="none")
def merge(session: nox.Session) -> None:
    """Merge the sets' runs in out/sets/ into out/matrix.json (attn-merge)."""
    runs = sorted(glob.glob(str(SETS_DIR / "*.json")))
    if not runs:
        session.error(f"no set's run in {SETS_DIR}: run nox -s matrix (or bench sessions) first")
    session.run(sys.executable, "-m", "attn_tools.merge", *runs, "--output", str(OUT / "matrix.json"),
                external=True)
