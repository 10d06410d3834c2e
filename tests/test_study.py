"""The suite's model computes exactly what the study's transcribed model computes; the yardstick
runs the study's own attention functions (never the suite's callables) and leaves no global state."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from attn_bench import study
from attn_bench.harness import MODES, Cell, Suite
from attn_bench.model import CONFIGS, build_model, synthetic_batch
from attn_bench.study import study_model
from attn_impls import REGISTRY, VARIANTS, AttnShape, neighborhood_mask

pytestmark = pytest.mark.suite


def _outputs(model, images, labels, autocast):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("impl_id", ["native", "sdpa_math"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_suite_model_matches_the_study_transcription(impl_id, autocast):
    cfg = CONFIGS["smoke"][196]
    impl = REGISTRY[impl_id]
    attention = impl.factory("plain", AttnShape(cfg.heads, cfg.head_dim, cfg.seq_len, "cpu"))
    suite, study = build_model(cfg, attention, impl.layout, "cpu"), study_model(cfg, attention, impl.layout, "cpu")
    study.load_state_dict(suite.state_dict())  # same parameter names, strict
    images, labels = synthetic_batch(cfg, "cpu")
    logits, grads = _outputs(suite, images, labels, autocast)
    study_logits, study_grads = _outputs(study, images, labels, autocast)
    assert torch.equal(logits, study_logits)
    assert grads.keys() == study_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, study_grads[name]), name


def test_timed_rounds_end_with_their_sync_after_earlier_calls(monkeypatch):
    """A step called before its rounds are set up (the kernel check's profiled step) must not
    shift the sync into the middle of every later round of `sync_every` steps."""
    from attn_bench import model as model_module

    synced_after = []
    cfg = model_module.get_config("smoke", 196)
    attention = REGISTRY["native"].factory("plain", AttnShape(cfg.heads, cfg.head_dim, 196, "cpu"))
    images, labels = model_module.synthetic_batch(cfg, "cpu")
    step = model_module.TrainStep(model_module.build_model(cfg, attention, "bhsd", "cpu"), images, labels, "cpu")
    step()  # e.g. the profiled step of the kernel check
    monkeypatch.setattr(model_module, "synchronize", lambda device: synced_after.append(calls[0]))
    step.sync_every = 3
    calls = [0]
    for _ in range(6):
        calls[0] += 1
        step()
    assert synced_after == [3, 6]


def test_compile_scopes():
    """Compiled cells compile the whole model as the study's code does (default) or, with
    --attn-compile-scope block, each block."""
    from attn_bench.model import compile_model, get_config
    cfg = get_config("smoke", 196)
    attention = REGISTRY["native"].factory("plain", AttnShape(cfg.heads, cfg.head_dim, cfg.seq_len, "cpu"))
    blocks = build_model(cfg, attention, "bhsd", "cpu")
    compile_model(blocks, "block")
    assert blocks._compiled_call_impl is None and all(b._compiled_call_impl is not None for b in blocks.blocks)
    whole = build_model(cfg, attention, "bhsd", "cpu")
    compile_model(whole, "model")
    assert whole._compiled_call_impl is not None and all(b._compiled_call_impl is None for b in whole.blocks)
    with pytest.raises(ValueError, match="valid: model, block"):
        compile_model(whole, "layer")


def test_compiled_cells_compile_the_whole_model_by_default_and_varlen_cells_each_block(tmp_path):
    """By default a compiled cell compiles the whole model, as the study's code does, passes its
    gates and records the scope; a compiled packed varlen cell compiles each block even when the
    whole model is asked for (its per-step mask preparation must stay outside the graphs)."""
    import json

    from benchruns import run_suite
    out = tmp_path / "default-scope.json"
    # A cache folder of this test's own: with Inductor's shared /tmp cache warm (an earlier bench.sh or
    # run of this test), the timed model's first step loaded its graph and took no longer than a step.
    proc = run_suite(out, "--benchmark-only", "--attn-mode", "compiled", "--attn-rounds", "2",
                     "--attn-inductor-cache", str(tmp_path / "inductor-cache"),
                     "-k", "native-plain-196-compiled or sdpa_dense_math-compiled",
                     tests=("tests/test_train_step.py", "tests/test_varlen_train_step.py"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = json.loads(out.read_text())
    assert run["attn_suite"]["compile_scope"] == "model"
    assert "compiled: whole model" in proc.stdout  # the end-of-run report's legend
    cells = {b["name"]: b["extra_info"] for b in run["benchmarks"]}
    assert set(cells) == {"test_train_step[native-plain-196-compiled]",
                          "test_varlen_train_step[sdpa_dense_math-compiled]"}
    # The cell compiles in its first steps, and compile_s counts the parity model's and the timed model's.
    # Not `first_step_s > median` alone: the smoke model at 196 has the parity model's depth, so the timed
    # model may reuse the parity model's graph (cold, on CPU: 0.056 s against a 0.0555 s median).
    info = cells["test_train_step[native-plain-196-compiled]"]
    assert info["parity_first_step_s"] + info["first_step_s"] > 2 * info["median_ms"] / 1e3
    assert info["compile_cache"] == "cold" and info["aot_cache"] == "miss"  # its own cache; no bypass
    first_steps = info["parity_first_step_s"] + info["first_step_s"]
    assert info["compile_s"] == pytest.approx(first_steps - info["median_ms"] / 1e3)
    phases = info["phase_s"]  # where the cell's wall time went
    assert {"reset", "parity", "build", "first_step", "timed", "other", "total"} <= set(phases)
    assert phases["first_step"] >= info["first_step_s"] and phases["parity"] >= info["parity_first_step_s"]
    assert phases["timed"] >= info["median_ms"] / 1e3 * 2 * info["steps_per_round"]  # 2 rounds
    assert phases["total"] == pytest.approx(sum(v for k, v in phases.items() if k != "total"))

    # The packed varlen cell compiled each block although the whole model was asked for.
    varlen = cells["test_varlen_train_step[sdpa_dense_math-compiled]"]
    assert varlen["compile_scope"] == "block" and varlen["recompiles"] == 0
    assert varlen["aot_cache"] in ("miss", "hit", "mixed")
    assert varlen["phase_s"]["first_step"] >= varlen["first_step_s"] and "reset" in varlen["phase_s"]


def test_study_yardstick_and_bare_loop_options_record_their_fields(tmp_path):
    """--attn-study times the study's own loop after the cell, --attn-bare-loop the same rounds by a bare
    perf_counter loop (half before, half after the timed rounds); both fields and their phases are recorded."""
    import json
    import math

    from benchruns import run_suite
    out = tmp_path / "yardstick.json"
    proc = run_suite(out, "--benchmark-only", "--attn-impl", "native", "--attn-variant", "plain",
                     "--attn-seq-len", "196", "--attn-mode", "eager", "--attn-rounds", "4",
                     "--attn-study", "--attn-bare-loop")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (cell,) = json.loads(out.read_text())["benchmarks"]
    info = cell["extra_info"]
    assert info["study_system"] == "native" and info["study_median_ms"] > 0
    assert info["vs_study_pct"] == pytest.approx((info["median_ms"] / info["study_median_ms"] - 1) * 100)
    assert all(info[k] > 0 for k in ("bare_loop_before_ms", "bare_loop_after_ms", "bare_loop_median_ms"))
    assert {"bare_loop", "study"} <= set(info["phase_s"]) and math.isfinite(info["phase_s"]["study"])



def test_bare_loop_fields_keep_the_halves_apart():
    """The bare loop's medians: of all its rounds, of those before the timed rounds and of those after;
    with a single round (none before), `before` falls back to the rounds after."""
    from attn_bench.timer import bare_loop_fields
    assert bare_loop_fields([1.0, 3.0], [5.0, 7.0, 9.0]) == {
        "bare_loop_median_ms": 5.0, "bare_loop_before_ms": 2.0, "bare_loop_after_ms": 7.0}
    assert bare_loop_fields([], [4.0]) == {
        "bare_loop_median_ms": 4.0, "bare_loop_before_ms": 4.0, "bare_loop_after_ms": 4.0}

# --- the study's attention functions and the yardstick ------------------------------------

def _qkv(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen).to(dtype) for _ in range(3)]


# (conftest parametrizes arguments named impl, variant, seq_len and mode: these tests use other names)
@pytest.mark.parametrize("kind", ["plain", "softcap"])
def test_native_computes_in_the_study_order(kind):
    """The timed baseline is the study's function, op for op: q is scaled before q @ kᵀ. With head_dim 32
    the scale (2^-2.5) rounds in bf16, so scaling the scores instead gives different bits."""
    shape = AttnShape(heads=4, head_dim=32, seq_len=196, device="cpu")
    q, k, v = _qkv((2, 4, 196, 32), torch.bfloat16)
    native = REGISTRY["native"].factory(kind, shape)(q, k, v)
    study_fn = study.study_native if kind == "plain" else study.study_native_softcap
    assert torch.equal(native, study_fn(q, k, v))
    scores_scaled = (q @ k.transpose(-2, -1)) * 32**-0.5
    if kind == "softcap":
        scores_scaled = 30 * torch.tanh(scores_scaled / 30)
    assert not torch.equal(native, scores_scaled.softmax(-1) @ v)  # the two orders are told apart


def _plain_fp64(q, k, v, kind):
    """softmax(q·kᵀ/√d) v in float64 with the kind's softcap or neighborhood mask (the registry's mask)."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if "softcap" in kind:
        scores = 30 * torch.tanh(scores / 30)
    if kind in ("sdpa_masked", "flex_neighborhood"):
        scores = scores.masked_fill(~neighborhood_mask(q.shape[-2], q.device), float("-inf"))
    return scores.softmax(-1) @ v


CPU_SYSTEMS = [(system, mode) for system in dict.fromkeys(study.STUDY_SYSTEMS.values())
               if not system.unavailable_reason("cpu")
               for mode in (MODES if system.kind.startswith("flex") else ("eager",))]


# the compiled model's form of flex is plain flex_attention, which warns that it is unfused
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("system,how", CPU_SYSTEMS, ids=[f"{s.name}-{m}" for s, m in CPU_SYSTEMS])
def test_study_functions_compute_plain_attention(system, how):
    """Each study system that runs on CPU (forward) computes plain fp32 attention of its variant, under
    its own global setting (SDPA's backend switches)."""
    cfg = dataclasses.replace(CONFIGS["smoke"][196], heads=4, head_dim=16)
    q, k, v = _qkv((2, 4, 196, 16), torch.float32)
    if system.layout == "bshd":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    with system.settings(), torch.no_grad():
        out = system.attention(cfg, how, "cpu")(q, k, v)
    if system.layout == "bshd":
        out = out.transpose(1, 2)
    torch.testing.assert_close(out.double(), _plain_fp64(q, k, v, system.kind), rtol=1e-5, atol=1e-5)


def test_cpu_systems_are_the_expected_ones():
    """The CPU test above covers native, softcap, SDPA (math, flash), masked SDPA (math) and both flex systems."""
    kinds = {(s.kind, s.backend) for s, _ in CPU_SYSTEMS}
    assert kinds == {("native", ""), ("native_softcap", ""), ("sdpa", "math"), ("sdpa", "flash"),
                     ("sdpa_masked", "math"), ("flex_softcap", ""), ("flex_neighborhood", "")}


@pytest.mark.parametrize("impl_id", list(REGISTRY))
def test_every_registry_cell_has_a_yardstick_or_a_reason(impl_id):
    """Every (implementation, variant, mode) maps to a study system or says why it has none; an
    implementation's own variants never fall to the generic "defines no function" reason, so a new
    entry must be mapped on purpose."""
    impl = REGISTRY[impl_id]
    for variant in VARIANTS:
        for _mode in MODES:  # the mapping does not depend on the mode (it only picks flex's form)
            found = study.yardstick(impl_id, variant)
            if found.system is not None:
                assert variant in impl.variants and found.note == ""
                assert found.system.kind in study.STUDY_KINDS and found.system.layout in ("bhsd", "bshd")
            else:
                assert found.note.startswith("no yardstick: ") and found.reason
                assert found.reason != study.NOT_IN_STUDY.format(impl=impl_id), (impl_id, variant)
    assert all(key[0] in REGISTRY and key[1] in REGISTRY[key[0]].variants for key in study.STUDY_SYSTEMS)


def test_unavailable_study_systems_give_their_reason():
    found = study.yardstick("fa3", "plain", "cpu")
    assert found.system is None and "needs a CUDA GPU, found CPU" in found.note
    assert "needs a CUDA GPU" in study.yardstick("te_fused", "plain", "cpu").note
    assert "needs a CUDA GPU" in study.yardstick("xformers", "plain", "cpu").note
    assert "cuDNN backend needs a CUDA GPU" in study.yardstick("sdpa_cudnn", "plain", "cpu").note
    assert study.yardstick("not_an_impl", "plain").reason == study.NOT_IN_STUDY.format(impl="not_an_impl")


@pytest.fixture
def all_sdpa_switches_on():
    """Every SDPA switch on for the test (the process default), and on again afterwards."""
    def all_on():
        for name in study.SDPA_SWITCHES.values():
            getattr(torch.backends.cuda, f"enable_{name}")(True)
    all_on()
    yield
    all_on()


def test_settings_enable_one_sdpa_backend_and_restore_the_switches(all_sdpa_switches_on):
    torch.backends.cuda.enable_cudnn_sdp(False)  # a non-default state, which must come back as it was
    before = study.sdpa_switch_states()
    with study.STUDY_SYSTEMS[("sdpa_flash", "plain")].settings():
        assert study.sdpa_switch_states() == {"flash": True, "efficient": False, "math": False, "cudnn": False}
    assert study.sdpa_switch_states() == before
    with pytest.raises(RuntimeError, match="inside"), study.STUDY_SYSTEMS[("sdpa_math", "neighborhood")].settings():
        assert study.sdpa_switch_states() == {"flash": False, "efficient": False, "math": True, "cudnn": False}
        raise RuntimeError("inside")
    assert study.sdpa_switch_states() == before


def test_settings_set_and_restore_transformer_engines_environment(monkeypatch):
    monkeypatch.setenv("NVTE_FLASH_ATTN", "1")
    monkeypatch.delenv("NVTE_FUSED_ATTN", raising=False)
    monkeypatch.delenv("NVTE_UNFUSED_ATTN", raising=False)
    import os
    with study.STUDY_SYSTEMS[("te_fused", "plain")].settings():
        assert [os.environ.get(e) for e in study.TE_ENV.values()] == ["0", "1", "0"]
    assert os.environ.get("NVTE_FLASH_ATTN") == "1"
    assert "NVTE_FUSED_ATTN" not in os.environ and "NVTE_UNFUSED_ATTN" not in os.environ


def _poisoned(impl_id):
    """The registry entry `impl_id` whose factory fails: the yardstick must never build the suite's callable."""
    def factory(variant, shape):
        raise AssertionError(f"the yardstick built the suite's own {impl_id} callable")
    return dataclasses.replace(REGISTRY[impl_id], factory=factory)


@pytest.mark.parametrize("impl_id,kind,system", [("sdpa_math", "plain", "sdpa[math]"),
                                                 ("native", "softcap", "native softcap")])
def test_yardstick_times_the_study_function_and_restores_the_switches(monkeypatch, all_sdpa_switches_on,
                                                                       impl_id, kind, system):
    """The yardstick of a cell times the study's function for it, with the study's SDPA switches set
    before the model is built, and never the suite's callable; afterwards the switches are as before."""
    poisoned = _poisoned(impl_id)
    monkeypatch.setitem(REGISTRY, impl_id, poisoned)
    switches_at_build = []
    build = study.study_model

    def spy(*args, **kwargs):
        switches_at_build.append(study.sdpa_switch_states())
        return build(*args, **kwargs)

    monkeypatch.setattr(study, "study_model", spy)
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    before = study.sdpa_switch_states()
    record = suite.study_yardstick(Cell(poisoned, kind, 196, "eager"), median_s=1.0)
    assert record["study_system"] == system and record["study_median_ms"] > 0 and "no_yardstick" not in record
    expected = ({"flash": False, "efficient": False, "math": True, "cudnn": False} if impl_id == "sdpa_math"
                else before)
    assert switches_at_build == [expected]
    assert study.sdpa_switch_states() == before


def test_cell_without_a_yardstick_records_why_and_runs_nothing(monkeypatch):
    """native/neighborhood has no study system: the record says so and the suite's callable is not timed
    in its place (a fallback would build it, and the poisoned factory fails)."""
    poisoned = _poisoned("native")
    monkeypatch.setitem(REGISTRY, "native", poisoned)
    monkeypatch.setattr(study, "study_train_loop", lambda *a, **k: pytest.fail("a study loop ran"))
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    record = suite.study_yardstick(Cell(poisoned, "neighborhood", 196, "eager"), median_s=1.0)
    assert record == {"study_system": None,
                      "no_yardstick": "no yardstick: " + study.NO_YARDSTICK[("native", "neighborhood")]}
