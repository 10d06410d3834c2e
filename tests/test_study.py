"""The suite's model computes exactly what the study's transcribed model computes."""
import pytest
import torch
import torch.nn.functional as F

from attn_bench.model import CONFIGS, build_model, synthetic_batch
from attn_bench.study import study_model
from attn_impls import REGISTRY, AttnShape

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
    proc = run_suite(out, "--benchmark-only", "--attn-mode", "compiled", "--attn-rounds", "2",
                     "-k", "native-plain-196-compiled or sdpa_dense_math-compiled",
                     tests=("tests/test_train_step.py", "tests/test_varlen_train_step.py"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = json.loads(out.read_text())
    assert run["attn_suite"]["compile_scope"] == "model"
    assert "compiled: whole model" in proc.stdout  # the end-of-run report's legend
    cells = {b["name"]: b["extra_info"] for b in run["benchmarks"]}
    assert set(cells) == {"test_train_step[native-plain-196-compiled]",
                          "test_varlen_train_step[sdpa_dense_math-compiled]"}
    # The whole timed model compiles in its own first step, and compile_s counts it with the parity model's.
    info = cells["test_train_step[native-plain-196-compiled]"]
    assert info["first_step_s"] > info["median_ms"] / 1e3 and info["parity_first_step_s"] > 0
    assert info["compile_cache"] in ("cold", "warm") and info["aot_cache"] in ("miss", "hit")  # no bypass
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
    assert info["study_median_ms"] > 0
    assert info["vs_study_pct"] == pytest.approx((info["median_ms"] / info["study_median_ms"] - 1) * 100)
    assert all(info[k] > 0 for k in ("bare_loop_before_ms", "bare_loop_after_ms", "bare_loop_median_ms"))
    assert {"bare_loop", "study"} <= set(info["phase_s"]) and math.isfinite(info["phase_s"]["study"])
