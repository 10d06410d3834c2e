"""Variable-size images: one timed training step per (varlen implementation, mode) cell, and the
FlexAttention recompilation hazard (attn_bench/varlen.py, README "Variable-size images (packed)")."""
import pytest
import torch
from cells import run_cell

from attn_bench.varlen import HAZARD_STRATEGIES, FlexLengthHazard, get_varlen_config, run_varlen_cell
from attn_tools.runs import CHANGING_ID_SUFFIX

pytestmark = pytest.mark.cell


def pytest_generate_tests(metafunc):
    # Ids test_varlen_train_step[<impl>-<mode>]; --attn-mode selects modes as for test_train_step.
    # With new lengths every step the ids end in CHANGING_ID_SUFFIX: another measurement, which
    # reports, storage and the gate must never take for the fixed-lengths cell.
    if "varlen_impl" in metafunc.fixturenames:
        metafunc.parametrize("varlen_impl", metafunc.config._attn_selection["varlen_impl"])  # --attn-impl
    if "varlen_mode" in metafunc.fixturenames:
        modes = metafunc.config._attn_selection["mode"]
        suffix = CHANGING_ID_SUFFIX if metafunc.config.getoption("attn_varlen_lengths") == "changing" else ""
        metafunc.parametrize("varlen_mode", modes, ids=[mode + suffix for mode in modes])


def test_varlen_train_step(benchmark, suite, request, varlen_impl, varlen_mode):
    lengths = request.config.getoption("attn_varlen_lengths")
    run_cell(lambda: varlen_impl,
             lambda impl, bench: run_varlen_cell(suite, impl, varlen_mode, bench, lengths), benchmark)


@pytest.mark.parametrize("strategy", list(HAZARD_STRATEGIES))
def test_varlen_flex_lengths(benchmark, suite, request, strategy):
    """Compiled flex with new image sizes every step: recompiles and step time per strategy."""
    if request.config.getoption("attn_varlen_lengths") != "changing":
        pytest.skip("the FlexAttention recompilation hazard runs with --attn-varlen-lengths changing")
    from attn_impls.flex import FLEX
    reason = FLEX.probe(suite.device)
    if reason:
        pytest.skip(reason)
    hazard = FlexLengthHazard(get_varlen_config(suite.profile), strategy, suite.device,
                              backward=suite.device != "cpu")  # flex has no backward on CPU
    benchmark.group = "varlen-flex-lengths"
    # Every call is a step with new lengths; the warm-up round is the first compilation. The steps stay
    # below Dynamo's recompile limit: past it exact_length would fall back to eager flex, which
    # materializes the scores (fp32, ~46 GB for one ~31 k-token sequence of the full profile).
    limit = getattr(torch._dynamo.config, "recompile_limit", None) or torch._dynamo.config.cache_size_limit
    benchmark.pedantic(hazard, rounds=min(suite.rounds, limit - 1), warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(hazard.as_dict(), profile=suite.profile, device=suite.device)
    if strategy == "fixed_budget":
        assert hazard.recompiles == 0, f"the suite's fix recompiled: {hazard.as_dict()}"
