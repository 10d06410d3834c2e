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
