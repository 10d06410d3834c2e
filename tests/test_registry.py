"""Tests of the suite itself: registry, kernel classification, bad input, skip reasons."""
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from attn_bench.harness import Cell, CellFailure, Suite
from attn_bench.kernels import check_kernels, profiled_names
from attn_impls import REGISTRY, VARIANTS, AttnImpl, get_impl, neighborhood_mask
from attn_impls.sdpa import SDPA_MATH

pytestmark = pytest.mark.suite
ROOT = Path(__file__).resolve().parents[1]
H200_NAMES = json.loads((ROOT / "tests/data/h200_profiled_names.json").read_text())["names"]


def run_pytest(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_training_cells_move_before_the_first_inference_cell():
    """Inference cells reuse the model parity of their training cell, which must have run first."""
    from conftest import train_cells_before_inference_cells
    names = ["test_unit", "test_attention", "test_infer_step", "test_other", "test_train_step", "test_infer_step",
             "test_train_step"]
    items = [SimpleNamespace(originalname=name, index=i) for i, name in enumerate(names)]
    train_cells_before_inference_cells(items)
    assert [item.index for item in items] == [0, 1, 4, 6, 2, 3, 5]
    unchanged = [SimpleNamespace(originalname="test_train_step"), object()]  # no inference cell; no name
    train_cells_before_inference_cells(unchanged)
    assert unchanged[0].originalname == "test_train_step"


def test_registry_has_every_library_with_unique_ids():
    ids = list(REGISTRY)
    assert len(ids) == len(set(ids))
    assert {"native", "sdpa_flash", "sdpa_efficient", "sdpa_math", "sdpa_cudnn", "flex", "fa2", "fa3",
            "fa4", "te_flash", "te_fused", "te_unfused", "xformers", "xformers_cutlass",
            "xformers_flash"} <= set(ids)


@pytest.mark.parametrize("impl_id", list(REGISTRY))
def test_probe_returns_a_reason_string(impl_id):
    reason = REGISTRY[impl_id].probe("cpu")
    assert isinstance(reason, str)
    cpu_capable = {"native", "sdpa_flash", "sdpa_math", "flex"}
    assert (reason == "") == (impl_id in cpu_capable), reason


def test_unknown_names_raise_with_the_valid_names():
    with pytest.raises(ValueError, match="valid: native, sdpa_flash"):
        get_impl("flash9")
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    with pytest.raises(ValueError, match="valid: plain, softcap, neighborhood"):
        suite.cell("native", "sliding", 196, "eager")
    with pytest.raises(ValueError, match="valid: 196, 3136"):
        suite.cell("native", "plain", 197, "eager")


def test_entries_validate_their_data():
    with pytest.raises(ValueError, match="layout"):
        AttnImpl(id="x", library="torch", layout="sbhd", variants=("plain",), backward=True,
                 compile=True, kernel_fwd="", kernel_bwd="", probe=lambda d: "", factory=lambda v, s: None)
    with pytest.raises(ValueError, match="unknown variants"):
        AttnImpl(id="x", library="torch", layout="bhsd", variants=("causal",), backward=True,
                 compile=True, kernel_fwd="", kernel_bwd="", probe=lambda d: "", factory=lambda v, s: None)
    with pytest.raises(ValueError, match="variant_limits names variants it supports"):
        AttnImpl(id="x", library="torch", layout="bhsd", variants=("plain",), backward=True,
                 compile=True, kernel_fwd="", kernel_bwd="", probe=lambda d: "", factory=lambda v, s: None,
                 variant_limits={"plain": "why"})


def test_a_variant_a_library_cannot_express_skips_with_the_librarys_limit():
    reason = REGISTRY["sdpa_math"].unsupported_reason("softcap", "cpu")
    assert reason.startswith("sdpa_math cannot express variant 'softcap'") and "no score modification" in reason
    for impl_id in ("fa2", "fa3", "fa4", "xformers_flash3"):
        assert REGISTRY[impl_id].variant_limits["neighborhood"]


def test_neighborhood_mask_is_the_5_radius_window_on_the_grid():
    mask = neighborhood_mask(196, "cpu")  # 14 x 14 grid
    assert mask.shape == (196, 196) and torch.equal(mask, mask.T) and mask.diagonal().all()
    center = 7 * 14 + 7
    assert int(mask[center].sum()) == 9 * 9  # |Δrow| < 5 and |Δcol| < 5
    assert int(mask[0].sum()) == 5 * 5       # corner token
    assert not mask[0, 5] and mask[0, 4] and not mask[0, 5 * 14] and mask[0, 4 * 14]


BACKWARD_NAME = re.compile(r"(?i)backward|bwd|bprop")  # independent of the registry's patterns
FUSED_IN_FIXTURE = sorted(i for i in H200_NAMES if REGISTRY[i].kernel_fwd)


@pytest.mark.parametrize("impl_id", sorted(H200_NAMES))
def test_names_profiled_on_the_h200_classify_as_their_own_kernel(impl_id):
    impl = REGISTRY[impl_id]
    check = check_kernels(impl, set(H200_NAMES[impl_id]))
    assert check.ok and not check.foreign, check.explain()
    if impl.kernel_fwd:
        assert check.own_fwd and check.own_bwd, check.explain()
        assert not set(check.own_fwd) & set(check.own_bwd), "a name counted as both forward and backward"
        assert not any(BACKWARD_NAME.search(n) for n in check.own_fwd), check.explain()


@pytest.mark.parametrize("impl_id", FUSED_IN_FIXTURE)
def test_a_forward_without_its_backward_fails_naming_the_backward(impl_id):
    """Fused forward, unfused backward (e.g. math): no backward name of its own."""
    forward_only = {n for n in H200_NAMES[impl_id] if not BACKWARD_NAME.search(n)}
    check = check_kernels(REGISTRY[impl_id], forward_only)
    assert not check.ok and check.own_fwd, check.explain()
    assert [p for p in check.problems if p.startswith("backward: no backward kernel")], check.explain()
    assert not [p for p in check.problems if p.startswith("forward")], check.explain()
    assert check_kernels(REGISTRY[impl_id], forward_only, backward=False).ok


@pytest.mark.parametrize("impl_id", sorted(set(H200_NAMES) - {"sdpa_cudnn"}) + ["sdpa_cudnn"])
def test_another_implementations_backward_fails_as_foreign(impl_id):
    """Own forward with another library's backward (e.g. cuDNN forward, cutlass backward)."""
    other = "sdpa_efficient" if impl_id == "sdpa_cudnn" else "sdpa_cudnn"
    names = ({n for n in H200_NAMES[impl_id] if not BACKWARD_NAME.search(n)}
             | {n for n in H200_NAMES[other] if BACKWARD_NAME.search(n)})
    check = check_kernels(REGISTRY[impl_id], names)
    assert other in check.foreign_ids and check.foreign_bwd and not check.foreign_fwd, check.explain()
    if REGISTRY[impl_id].compiler_may_rewrite:
        assert check.ok and check.label.startswith(f"rewritten to {other}"), check.explain()
    else:
        assert not check.ok, check.explain()
        assert [p for p in check.problems if p.startswith("backward: other implementations'")], check.explain()


def test_a_fallback_to_another_kernel_fails_the_check():
    # sdpa_cudnn's names where flash's kernels ran instead: a silent fallback, both directions.
    check = check_kernels(REGISTRY["sdpa_cudnn"], set(H200_NAMES["sdpa_flash"]))
    assert not check.ok and "expected a name matching" in check.explain()
    assert {p.split(":")[0] for p in check.problems} == {"forward", "backward"}, check.explain()
    # sdpa_math must not run any fused kernel, in either direction.
    check = check_kernels(REGISTRY["sdpa_math"], set(H200_NAMES["sdpa_efficient"]))
    assert not check.ok and "sdpa_efficient" in check.foreign_ids
    assert check.foreign_fwd and check.foreign_bwd, check.explain()


def test_native_rewritten_by_the_compiler_is_reported_not_hidden():
    check = check_kernels(REGISTRY["native"], set(H200_NAMES["sdpa_efficient"]))
    assert check.ok and check.label.startswith("rewritten to ")
    assert check.as_dict()["foreign_kernel_names"] == list(check.foreign) != []


def test_kernel_check_gives_a_result_its_label_and_names_per_direction():
    check = check_kernels(REGISTRY["sdpa_cudnn"], set(H200_NAMES["sdpa_cudnn"]), variant="plain")
    record = check.as_dict()
    assert record["kernel"] == check.label == "aten::_scaled_dot_product_cudnn_attention"
    assert "aten::_scaled_dot_product_cudnn_attention" in record["kernel_fwd_names"]
    assert "aten::_scaled_dot_product_cudnn_attention_backward" in record["kernel_bwd_names"]
    assert any("flash_bprop" in n for n in record["kernel_bwd_names"])
    assert record["kernel_variant_proof"] == "not distinguishable by name"
    json.dumps(record)


def test_a_variant_requirement_must_be_met_by_a_name():
    """kernel_variants, on an entry given one. No registered entry has one: on the H200 no
    variant changed an attention kernel's name (H200 runs: fa4 softcap = plain, flex and
    cuDNN neighborhood = plain; TE's masked softmax shows only at seq 3136)."""
    impl = dataclasses.replace(REGISTRY["flex"], kernel_variants={"softcap": r"tanh"})
    names = set(H200_NAMES["flex"])
    check = check_kernels(impl, names, variant="softcap")
    assert check.problems == ("variant softcap: no name matches /tanh/",), check.explain()
    check = check_kernels(impl, names | {"triton_tem_fused_flex_attention_tanh_7"}, variant="softcap")
    assert check.ok and check.variant_names == ("triton_tem_fused_flex_attention_tanh_7",), check.explain()
    plain = check_kernels(impl, names, variant="plain")
    assert plain.ok and plain.variant_proof == "not distinguishable by name"
    with pytest.raises(ValueError, match="kernel_variants"):
        dataclasses.replace(REGISTRY["sdpa_flash"], kernel_variants={"softcap": "tanh"})


@pytest.mark.parametrize("impl_id", ["sdpa_flash", "sdpa_math"])
def test_a_cpu_training_step_shows_forward_and_backward_names(impl_id):
    """The split end to end on CPU: profiled names of a real training step."""
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    cell = suite.cell(impl_id, "plain", 196, "eager")
    step = suite.new_step(cell, cell.impl.factory("plain", suite.shape(196)))
    names = profiled_names(step, "cpu")
    assert "autograd::engine::evaluate_function: MmBackward0" in names  # the step ran a backward
    check = check_kernels(cell.impl, names, variant="plain")
    assert check.ok, check.explain()
    if impl_id == "sdpa_flash":
        assert check.own_fwd == ("aten::_scaled_dot_product_flash_attention_for_cpu",)
        assert check.own_bwd == ("aten::_scaled_dot_product_flash_attention_for_cpu_backward",)
        # The same step judged as sdpa_math: a fused kernel ran in both directions.
        as_math = check_kernels(REGISTRY["sdpa_math"], names)
        assert as_math.foreign_fwd and as_math.foreign_bwd and not as_math.ok, as_math.explain()
    else:
        assert "aten::_scaled_dot_product_attention_math" in names and "SafeSoftmaxBackward0" in names
        assert not check.own and not check.foreign
        # The same step judged as sdpa_flash: neither direction ran flash.
        as_flash = check_kernels(REGISTRY["sdpa_flash"], names)
        assert [p.split(":")[0] for p in as_flash.problems] == ["forward", "backward"], as_flash.explain()


def test_model_parity_catches_a_layout_mixup():
    """A bhsd kernel declared as bshd sees a scrambled q/k/v; the model check must fail."""
    wrong = AttnImpl(id="native", library="torch", layout="bshd", variants=VARIANTS,
                     backward=True, compile=True, kernel_fwd="", kernel_bwd="", probe=lambda d: "",
                     factory=SDPA_MATH.factory)
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    cell = suite.cell("sdpa_math", "plain", 196, "eager")
    good = suite.model_parity(cell, cell.impl.factory("plain", suite.shape(196)))
    assert good.ok, good.summary()
    bad_cell = type(cell)(wrong, "plain", 196, "eager")
    bad = suite.model_parity(bad_cell, wrong.factory("plain", suite.shape(196)))
    assert not bad.ok
    assert "FAIL" in bad.summary()


def test_bad_option_is_a_usage_error_listing_valid_names():
    result = run_pytest("tests/test_train_step.py", "--attn-impl", "native,bogus", "--co", "-q")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "unknown name 'bogus'" in result.stderr and "sdpa_cudnn" in result.stderr


def test_selection_gives_readable_ids_and_skip_reasons():
    result = run_pytest("tests/test_train_step.py", "-k", "sdpa_cudnn and 3136 and eager and plain",
                        "--benchmark-disable", "-rs")
    assert "needs a CUDA GPU, found CPU" in result.stdout, result.stdout
    ids = run_pytest("tests/test_train_step.py", "--co", "-q", "--attn-impl", "flex",
                     "--attn-variant", "softcap", "--attn-seq-len", "3136").stdout
    assert "test_train_step[flex-softcap-3136-compiled]" in ids


def test_attn_impls_table_lists_every_implementation():
    result = subprocess.run([sys.executable, "-m", "attn_impls"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for impl_id in REGISTRY:
        assert f"\n{impl_id} " in result.stdout
    assert "UNPROVEN on hardware" not in result.stdout  # every entry has passed on the H200


def test_attn_impls_table_marks_an_entry_not_proven_on_hardware(monkeypatch, capsys):
    from attn_impls import __main__ as table
    from attn_impls.registry import VARLEN_REGISTRY
    monkeypatch.setitem(VARLEN_REGISTRY, "sdpa_nested_math",
                        dataclasses.replace(VARLEN_REGISTRY["sdpa_nested_math"], proven_on_hardware=False))
    table.main()
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("sdpa_nested_math "))
    assert "UNPROVEN on hardware" in line


def test_nan_output_fails_parity_naming_the_tensor():
    def nan_factory(variant, shape):
        def attention(q, k, v):
            return q * float("nan")
        return attention

    broken = AttnImpl(id="broken", library="torch", layout="bhsd", variants=VARIANTS, backward=True,
                      compile=True, kernel_fwd="", kernel_bwd="", probe=lambda d: "", factory=nan_factory)
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    cell = Cell(broken, "plain", 196, "eager")
    report = suite.attention_parity(cell, broken.factory("plain", suite.shape(196)))
    assert not report.ok
    assert "max abs inf" in report.summary() and "NON-FINITE" in report.summary()


def test_out_of_memory_fails_only_the_cell_with_a_clear_message(monkeypatch):
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    cell = suite.cell("native", "plain", 196, "eager")

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Suite, "_run_cell", out_of_memory)
    with pytest.raises(CellFailure, match=r"native-plain-196-eager: out of memory: CUDA out of memory\. "
                                          r"Tried to allocate 20\.00 GiB \| CPU run"):
        suite.run_cell(cell, benchmark=None)


@pytest.mark.parametrize("returns_lse", [True, False])
def test_flash_adapters_follow_the_documented_api(monkeypatch, returns_lse):
    """FA2/3/4 adapters on CPU, against a stand-in with flash_attn_func's documented
    signature and layout (bshd, softcap=, out or (out, lse)): the adapter must pass
    parity, including the softcap variant and the outside-the-graph wrapper."""
    from attn_impls.flash import _factory
    from attn_impls.native import attention_math

    def flash_attn_func(q, k, v, softcap=0.0):
        variant = "softcap" if softcap else "plain"
        out = attention_math(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), variant).transpose(1, 2)
        return (out, None) if returns_lse else out

    monkeypatch.setitem(sys.modules, "stand_in_flash", type(sys)("stand_in_flash"))
    sys.modules["stand_in_flash"].flash_attn_func = flash_attn_func
    impl = AttnImpl(id="fa_stand_in", library="torch", layout="bshd", variants=("plain", "softcap"),
                    backward=True, compile=True, kernel_fwd="", kernel_bwd="", probe=lambda d: "",
                    factory=_factory("stand_in_flash", outside_graph=True))
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    for variant in ("plain", "softcap"):
        report = suite.attention_parity(Cell(impl, variant, 196, "eager"), impl.factory(variant, suite.shape(196)))
        assert report.ok, report.summary()


def _stand_in_transformer_engine(monkeypatch, seen_pointers):
    """Stand-in modules for the parts of Transformer Engine 2.20 the TE adapter touches,
    with two behaviours seen on the H200: its fused backend misreads a bshd view of bhsd
    memory, and it logs why it disabled a backend at debug level only."""
    import logging

    from attn_impls.native import attention_math

    class AttentionLogging:
        _log_level = logging.WARNING

    backends = {"backend_selection_requires_update": False}

    class DotProductAttention:
        def __init__(self, heads, head_dim, qkv_format, attention_dropout, attn_mask_type, softcap=None):
            self.softcap = softcap

        def __call__(self, q, k, v, attention_mask=None):
            logger = logging.getLogger("DotProductAttention")
            logger.setLevel(AttentionLogging._log_level)
            if self.softcap:
                logger.debug("Disabling FusedAttention as it does not support softcap")
                raise ValueError("No dot product attention backend is available for the provided inputs.")
            backends.update(use_fused_attention=True, use_flash_attention=False, use_unfused_attention=False)
            seen_pointers.extend(t.data_ptr() for t in (q, k, v))
            B, S, H, D = q.shape
            read = [t if t.stride(1) >= t.stride(2) else
                    torch.as_strided(t, t.shape, (S * H * D, H * D, D, 1), t.storage_offset()) for t in (q, k, v)]
            out = attention_math(*(t.transpose(1, 2) for t in read), "plain")
            return out.transpose(1, 2).reshape(B, S, H * D)

    modules = {name: type(sys)(name) for name in (
        "transformer_engine", "transformer_engine.pytorch", "transformer_engine.pytorch.attention",
        "transformer_engine.pytorch.attention.dot_product_attention",
        "transformer_engine.pytorch.attention.dot_product_attention.utils")}
    modules["transformer_engine.pytorch"].DotProductAttention = DotProductAttention
    modules["transformer_engine.pytorch.attention.dot_product_attention"]._attention_backends = backends
    modules["transformer_engine.pytorch.attention.dot_product_attention.utils"].AttentionLogging = AttentionLogging
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for env in ("NVTE_FLASH_ATTN", "NVTE_FUSED_ATTN", "NVTE_UNFUSED_ATTN"):
        monkeypatch.delenv(env, raising=False)


@pytest.mark.parametrize("found", ["none", "fa2_too_new", "fa3"])
def test_te_flash_availability_follows_tes_own_flash_attention_checks(monkeypatch, found):
    """te_flash runs on whichever FlashAttention TE's import-time checks accepted (FA2, FA3 or
    FA4), and otherwise says what TE found, with TE's version bounds and install steps."""
    from packaging.version import Version

    from attn_impls import te

    class FlashAttentionUtils:
        is_installed = v3_is_installed = v4_is_installed = False
        version = Version("2.8.5" if found == "fa2_too_new" else "0")
        version_required, max_version = Version("2.1.1"), Version("2.8.4")
        v3_installation_steps = "(1) git clone ...\n(2) cd flash-attention/hopper && python setup.py install"

    FlashAttentionUtils.v3_is_installed = found == "fa3"
    package = "transformer_engine.pytorch.attention.dot_product_attention"
    utils = type(sys)(f"{package}.utils")
    utils.FlashAttentionUtils = FlashAttentionUtils
    for name, module in {package: type(sys)(package), f"{package}.backends": type(sys)("backends"),
                         f"{package}.utils": utils}.items():
        monkeypatch.setitem(sys.modules, name, module)
    sys.modules[package].backends = sys.modules[f"{package}.backends"]
    reason = te._flash_unavailable_reason()
    if found == "fa3":
        assert reason == ""
    else:
        assert reason.startswith("TE flash backend unavailable") and "2.1.1..<2.8.4" in reason
        assert ("found flash-attn 2.8.5" if found == "fa2_too_new" else "flash-attn not installed") in reason
        assert "cd flash-attention/hopper" in reason


def test_te_adapter_layout_and_refusal_reasons(monkeypatch):
    """TE adapter on CPU against a stand-in: parity's bshd views of bhsd memory are copied
    (the fused backend misread them on the H200), the ViT block's packed qkv views are
    passed as they are, and a refusal carries TE's debug-log reason, not only its generic error."""
    from attn_impls import te
    from attn_impls.registry import AttnShape, Unsupported

    seen = []
    _stand_in_transformer_engine(monkeypatch, seen)
    suite = Suite(profile="smoke", device="cpu", rounds=1, warmup=0)
    cell = Cell(te.TE_FUSED, "plain", 196, "eager")
    report = suite.attention_parity(cell, te.TE_FUSED.factory("plain", suite.shape(196)))
    assert report.ok, report.summary()

    shape = AttnShape(2, 64, 196, "cpu")
    packed = torch.randn(1, 196, 3, 2, 64)
    q, k, v = packed.unbind(2)
    seen.clear()
    te.TE_FUSED.factory("plain", shape)(q, k, v)
    assert seen == [t.data_ptr() for t in (q, k, v)]

    with pytest.raises(Unsupported, match="fused backend only.*does not support softcap"):
        te.TE_FUSED.factory("softcap", shape)(q, k, v)
