"""build_model's weights cache: later models are exact copies of timm's init, never aliases."""
import pytest
import torch

from attn_bench import model as model_module
from attn_bench.model import CONFIGS, build_model
from attn_bench.parity import math_attention as native

pytestmark = pytest.mark.suite


def test_later_models_copy_the_first_init_and_leave_the_rng_alike():
    cfg = CONFIGS["smoke"][196]
    model_module._INITIAL_WEIGHTS.pop((cfg, 3), None)
    first = build_model(cfg, native, "bhsd", "cpu", seed=3)
    rng_after_first = torch.get_rng_state()
    assert (cfg, 3) in model_module._INITIAL_WEIGHTS
    second = build_model(cfg, native, "bhsd", "cpu", seed=3)
    assert torch.equal(torch.get_rng_state(), rng_after_first)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
        assert a.data_ptr() != b.data_ptr(), name

    # Training one model changes neither the cache nor the next model.
    with torch.no_grad():
        for p in second.parameters():
            p.add_(1.0)
    third = build_model(cfg, native, "bhsd", "cpu", seed=3)
    for (name, a), (_, c) in zip(first.state_dict().items(), third.state_dict().items(), strict=True):
        torch.testing.assert_close(c, a, rtol=0, atol=0, msg=name)

    other_seed = build_model(cfg, native, "bhsd", "cpu", seed=4)
    assert not torch.equal(other_seed.pos_embed, first.pos_embed)
    images = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    torch.testing.assert_close(third(images), first(images), rtol=0, atol=0)
