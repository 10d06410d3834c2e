"""The parity gate has power: wrong attentions fail it at the attention level and the model
level, correct ones pass it, and no variant's check is powerless (smoke profile, CPU)."""
import dataclasses

import pytest
import torch

from attn_bench.harness import Cell, Suite
from attn_impls import REGISTRY
from attn_impls.native import attention_math
from attn_impls.registry import NEIGHBORHOOD_RADIUS, VARIANTS, neighborhood_mask

pytestmark = pytest.mark.parity
SEQ_LENS = (196, 3136)


def _wrong(body):
    """A factory whose callable is `body(q, k, v, variant, mask, shape)` on bhsd tensors."""
    def factory(variant, shape):
        mask = neighborhood_mask(shape.seq_len, shape.device) if variant == "neighborhood" else None
        return lambda q, k, v: body(q, k, v, variant, mask, shape)
    return factory


def _head_zero_zeroed(q, k, v, variant, mask, shape):
    out = attention_math(q, k, v, variant, mask)
    keep = torch.ones(out.shape[1], 1, 1, dtype=out.dtype, device=out.device)
    keep[0] = 0
    return out * keep


def _softcap_20(q, k, v, variant, mask, shape):
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    return (20 * torch.tanh(scores / 20)).softmax(-1) @ v


def _radius_4(q, k, v, variant, mask, shape):
    return attention_math(q, k, v, variant, neighborhood_mask(shape.seq_len, q.device, radius=NEIGHBORHOOD_RADIUS - 1))


def _heads_beyond_the_second_zeroed(q, k, v, variant, mask, shape):
    out = attention_math(q, k, v, variant, mask)
    keep = torch.ones(out.shape[1], 1, 1, dtype=out.dtype, device=out.device)
    keep[2:] = 0  # heads 0 and 1 exact: a 2-head smoke profile could not see this
    return out * keep


def _kv_of_the_next_sample(q, k, v, variant, mask, shape):
    # each sample attends to the keys and values of another sample of the batch (batch 1 could not see it)
    return attention_math(q, k.roll(1, dims=0), v.roll(1, dims=0), variant, mask)


class _ScaledGradient(torch.autograd.Function):
    """The identity forward; the backward passes the gradient on scaled by `factor`."""

    @staticmethod
    def forward(ctx, t, factor):
        ctx.factor = factor
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _one_gradient_2pct_small(which):
    """An exact forward whose backward returns `which` (0: dq, 1: dk, 2: dv) 2 % too small."""
    def body(q, k, v, variant, mask, shape):
        qkv = [q, k, v]
        qkv[which] = _ScaledGradient.apply(qkv[which], 0.98)
        return attention_math(*qkv, variant, mask)
    return body


# name: (variants it is tested on, layout it declares, factory)
WRONG = {
    "mean_of_v": (("plain",), "bhsd", _wrong(lambda q, k, v, var, m, s: v.mean(-2, keepdim=True).expand_as(v))),
    "no_scale": (("plain",), "bhsd", _wrong(
        lambda q, k, v, var, m, s: attention_math(q * q.shape[-1] ** 0.5, k, v, var, m))),
    "scale_2pct": (VARIANTS, "bhsd", _wrong(lambda q, k, v, var, m, s: attention_math(q * 1.02, k, v, var, m))),
    "softcap_ignored": (("softcap",), "bhsd", _wrong(lambda q, k, v, var, m, s: attention_math(q, k, v, "plain"))),
    "softcap_20": (("softcap",), "bhsd", _wrong(_softcap_20)),
    "radius_4": (("neighborhood",), "bhsd", _wrong(_radius_4)),
    "q_k_swapped": (("plain",), "bhsd", _wrong(lambda q, k, v, var, m, s: attention_math(k, q, v, var, m))),
    "head_0_zeroed": (("plain",), "bhsd", _wrong(_head_zero_zeroed)),
    # a bhsd kernel declared as bshd: it reads (B, S, H, D) views as (B, H, S, D)
    "layout_mixed_up": (("plain",), "bshd", _wrong(lambda q, k, v, var, m, s: attention_math(q, k, v, var, m))),
    "heads_beyond_2nd_zeroed": (("plain",), "bhsd", _wrong(_heads_beyond_the_second_zeroed)),
    "kv_of_next_sample": (VARIANTS, "bhsd", _wrong(_kv_of_the_next_sample)),
    **{f"{g}_2pct_small": (VARIANTS, "bhsd", _wrong(_one_gradient_2pct_small(i)))
       for i, g in enumerate(("dq", "dk", "dv"))},
    "heads_rolled_in_kv": (("plain",), "bhsd", _wrong(
        lambda q, k, v, var, m, s: attention_math(q, k.roll(1, dims=1), v.roll(1, dims=1), var, m))),
}
WRONG_CASES = [(name, variant) for name, (variants, _, _) in WRONG.items() for variant in variants]


@pytest.fixture(scope="module")
def smoke_suite(suite):
    """A smoke-profile CPU suite for the module: the run's own where it is one, so that the checks of
    correct implementations are memoized with the matrix's cells (the same checks), else a new one."""
    if (suite.profile, suite.device) == ("smoke", "cpu"):
        return suite
    return Suite(profile="smoke", device="cpu", rounds=1, warmup=0)


@pytest.fixture
def wrong_impl():
    """Register wrong attention implementations for one test, then remove them."""
    added = []

    def register(name):
        variants, layout, factory = WRONG[name]
        impl = dataclasses.replace(REGISTRY["native"], id=f"wrong_{name}", layout=layout, variants=variants,
                                   factory=factory, description=f"deliberately wrong: {name}")
        REGISTRY[impl.id] = impl
        added.append(impl.id)
        return impl

    yield register
    for impl_id in added:
        del REGISTRY[impl_id]


# (conftest parametrizes arguments named impl, variant, seq_len and mode: these use other names)
@pytest.mark.parametrize("length", SEQ_LENS)
@pytest.mark.parametrize("name,kind", WRONG_CASES)
def test_wrong_attention_fails_at_both_levels(smoke_suite, wrong_impl, name, kind, length):
    impl, variant, seq_len = wrong_impl(name), kind, length
    cell = smoke_suite.cell(impl.id, variant, seq_len, "eager")
    attention = impl.factory(variant, smoke_suite.shape(seq_len))
    model = smoke_suite.model_parity(cell, attention)
    kernel = smoke_suite.attention_parity(cell, attention)
    for report in (kernel, model):
        print(f"{report.title}: max {report.max_budget_used:.2f} of budget")
        assert not report.powerless, report.summary()
        assert not all(check.ok for check in report.checks), report.summary()


@pytest.mark.parametrize("length", SEQ_LENS)
@pytest.mark.parametrize("kind", VARIANTS)
def test_no_variant_is_powerless(smoke_suite, kind, length):
    variant, seq_len = kind, length
    cell = smoke_suite.cell("native", variant, seq_len, "eager")
    report = smoke_suite.attention_parity(cell, cell.impl.factory(variant, smoke_suite.shape(seq_len)))
    print(report.summary())
    expected = {"plain": 2, "softcap": 4, "neighborhood": 4}[variant]  # the wrong references and a 2 % gradient
    assert len(report.controls) == expected and not report.powerless, report.summary()


CORRECT = [(impl, variant, seq_len, mode) for impl in ("native", "sdpa_math", "sdpa_flash", "flex")
           for variant in VARIANTS if variant in REGISTRY[impl].variants
           for seq_len in SEQ_LENS for mode in ("eager", "compiled")
           # compiled 3136 blocks in bf16 may compute NaN on CPU (conftest INDUCTOR_CPU_NAN)
           if not (seq_len == 3136 and mode == "compiled")]


@pytest.mark.parametrize("impl_id,kind,length,how", CORRECT)
def test_correct_attention_passes(smoke_suite, impl_id, kind, length, how):
    impl, variant, seq_len = REGISTRY[impl_id], kind, length
    cell = Cell(impl, variant, seq_len, how)
    attention = impl.factory(variant, smoke_suite.shape(seq_len))
    reports = [smoke_suite.attention_parity(cell, attention)]
    if impl.cpu_backward:
        reports.append(smoke_suite.model_parity_once(cell, attention))
    for report in reports:
        print(report.summary())
        assert report.ok, report.summary()
        # correct kernels keep their margin on the gradients' scale
        assert max((c.budget_used for c in report.checks if c.metric == "proj dev"), default=0.0) <= 0.5, \
            report.summary()
