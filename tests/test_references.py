"""Parity references are computed once per process: shared by every Suite, implementation and mode."""
import pytest

from attn_bench import harness, parity
from attn_bench.harness import Suite

pytestmark = pytest.mark.suite


def test_references_are_computed_once_per_shape_and_variant_across_suites(monkeypatch):
    monkeypatch.setattr(harness, "_REFERENCES", {})  # this test's own process-wide cache
    computed = []

    def fake_reference(kind, variant_at):
        def compute(*args, **kwargs):
            computed.append((kind, args[variant_at]))
            return object()
        return compute

    monkeypatch.setattr(parity, "attention_reference", fake_reference("attention", 0))  # (variant, shape, batch)
    monkeypatch.setattr(parity, "model_references", fake_reference("model", 1))  # (cfg, variant, device, runs)
    monkeypatch.setattr(parity, "check_attention", lambda title, attention, layout, reference, **kw: reference)

    first, second = (Suite(profile="smoke", device="cpu", rounds=1, warmup=0) for _ in range(2))
    seen = {}
    for suite in (first, second):
        for impl in ("native", "sdpa_math"):
            for mode in ("eager", "compiled"):
                for variant in ("plain", "neighborhood"):
                    cell = suite.cell(impl, variant, 196, mode)
                    reference = suite.attention_parity(cell, cell.impl.factory(variant, suite.shape(196)))
                    assert seen.setdefault(variant, reference) is reference
                    suite.model_references(variant, 196)
    assert sorted(computed) == [("attention", "neighborhood"), ("attention", "plain"),
                                ("model", "neighborhood"), ("model", "plain")]
    # Another length is another shape; the full profile another config.
    first.model_references("plain", 3136)
    Suite(profile="full", device="cpu", rounds=1, warmup=0).model_references("plain", 196)
    assert computed[4:] == [("model", "plain"), ("model", "plain")]
