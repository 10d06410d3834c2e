"""The study's own model and training loop, transcribed: the yardstick the suite is measured against.

The study ("Increasing Transformer Model Efficiency Through Attention Layer Optimization",
C. Rand, 2024) defines a ViT block that takes an attention function, a timm
`VisionTransformer` built with that block, and a training loop: bf16 autocast,
`nn.CrossEntropyLoss`, `torch.optim.SGD(model.parameters())` with its default learning
rate, `torch.set_float32_matmul_precision("high")`, `torch.compile(model)` for the
compiled runs, and the mean step time after 20 warm-up steps, timed with
`time.perf_counter()` between steps with no synchronization inside the loop.

`StudyAttentionBlock` and `study_train_loop` follow that code statement for statement,
with two changes, both said where they happen:
- the batch is one fixed batch already on the device, instead of the study's DataLoader
  of random images copied to the GPU each step (no input pipeline is timed);
- the loop synchronizes the device once after it, outside the timing.
Without synchronization the host runs a few steps ahead of the device; in steady state each
host step waits for the device, so the per-step host times are the device's step times.

The suite's own model (`attn_bench.model`) must compute what this one computes:
`tests/test_study.py` checks outputs and gradients from the same weights, so the two
cannot drift apart.

The study's attention functions are written here too, from the study's code (`STUDY_SYSTEMS`),
never taken from the suite's adapters: `--attn-study` times this model and loop with the
study's function for the cell (`yardstick`, `time_study_system`), so that the suite is measured
against the study's computation, not against itself. A cell whose implementation the study does
not define has no yardstick and records why.
"""
from __future__ import annotations

import contextlib
import functools
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer

from attn_impls import AttnFn, get_impl
from attn_impls.registry import import_reason, needs_cuda, needs_sm

from .model import TIMED_MATMUL_PRECISION, VitConfig, float32_matmul_precision, synchronize, synthetic_batch

STUDY_WARMUP_STEPS = 20  # the study skips its first steps ("if step > 20")


class StudyAttentionBlock(nn.Module):
    """The study's block, as written there (its names, its statement order)."""

    def __init__(self, attn_fn, format=None, dim: int = 768, num_heads: int = 12, **kwargs) -> None:
        super().__init__()
        self.attn_fn = attn_fn
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.mlp = Mlp(in_features=dim, hidden_features=dim * 4)
        permute = (2, 0, 3, 1, 4)
        self.permute_attn = functools.partial(torch.transpose, dim0=1, dim1=2)
        if format == "bshd":
            permute = (2, 0, 1, 3, 4)
            self.permute_attn = nn.Identity()
        self.permute_qkv = functools.partial(torch.permute, dims=permute)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        # norm
        x = self.norm1(x_in)
        B, N, C = x.shape
        # qkv
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        qkv = self.permute_qkv(qkv)
        q, k, v = qkv.unbind(0)
        # attention
        x = self.attn_fn(q, k, v)
        x = self.permute_attn(x).reshape(B, N, C)
        # projection and residual
        x = self.proj(x)
        x = x + x_in
        # mlp and residual
        x = x + self.mlp(self.norm2(x))
        return x


def study_model(cfg: VitConfig, attn_fn, layout: str, device: str, seed: int = 0) -> VisionTransformer:
    """The study's `VisionTransformer(..., block_fn=partial(MyAttentionBlock, ...))` for `cfg`."""
    torch.random.manual_seed(seed)
    block_fn = functools.partial(StudyAttentionBlock, attn_fn=attn_fn, format=layout)
    model = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.heads * cfg.head_dim,
        depth=cfg.depth,
        num_heads=cfg.heads,
        class_token=False,
        global_pool="avg",
        block_fn=block_fn,
    ).to(device)
    return model


def study_train_loop(model: nn.Module, inputs: torch.Tensor, label: torch.Tensor, device: str,
                     steps: int, compile: bool = False, warmup: int = STUDY_WARMUP_STEPS) -> dict:
    """The study's training loop on one fixed on-device batch (instead of its DataLoader).

    Returns the per-step times after `warmup` steps (`step_ms`), their mean (the study's
    statistic, `mean_ms`) and median (`median_ms`), and the loss of the last step.
    The float32 matmul precision is the study's "high" during the loop.
    """
    # The study sets this once, before building its model.
    with float32_matmul_precision(TIMED_MATMUL_PRECISION):
        if compile:
            model = torch.compile(model)
        criterion = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters())
        model.train()
        device_type = device.split(":")[0]
        step_s = []
        t0 = time.perf_counter()
        for step in range(warmup + steps):
            with torch.amp.autocast(device_type, enabled=True, dtype=torch.bfloat16):
                outputs = model(inputs)
                loss = criterion(outputs, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch_time = time.perf_counter() - t0
            if step >= warmup:
                step_s.append(batch_time)
            t0 = time.perf_counter()
    synchronize(device)  # after the timing, as the study's loop has none
    return {"step_ms": [s * 1e3 for s in step_s], "mean_ms": statistics.fmean(step_s) * 1e3,
            "median_ms": statistics.median(step_s) * 1e3, "loss": float(loss.detach())}


# --- the study's attention functions ------------------------------------------------------
# Written from the study's code (../shared/NOTES.md, "The study's attention functions, exactly").
# Each is what the study passes to its block as `attn_fn(q, k, v)`.

STUDY_SOFTCAP = 30  # the study's constant, `30 * tanh(scores / 30)`
STUDY_NEIGHBORHOOD = 5  # the study's patch-grid window: |Δrow| < 5 and |Δcol| < 5


def study_native(q, k, v):
    """The study's hand-written attention (bhsd): q scaled first, then q @ kᵀ, softmax, @ v."""
    scale = q.shape[-1] ** -0.5
    q = q * scale
    attn = q @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    x = attn @ v
    return x


def study_native_softcap(q, k, v):
    """The study's hand-written soft-capping (bhsd): as `study_native`, with 30·tanh(s/30) before the softmax."""
    scale = q.shape[-1] ** -0.5
    q = q * scale
    attn = q @ k.transpose(-2, -1)
    attn = STUDY_SOFTCAP * torch.tanh(attn / STUDY_SOFTCAP)
    attn = attn.softmax(dim=-1)
    x = attn @ v
    return x


def study_softcap_score_mod(score, b, h, q_idx, kv_idx):
    """The study's FlexAttention `score_mod`: 30·tanh(score/30)."""
    return STUDY_SOFTCAP * torch.tanh(score / STUDY_SOFTCAP)


def study_neighborhood_mask_mod(seq_len: int):
    """The study's `mask_mod` on the square patch grid of `seq_len` tokens: |Δrow| < 5 and |Δcol| < 5."""
    side = round(seq_len**0.5)

    def mask_mod(b, h, q_idx, kv_idx):
        q_row, q_col = q_idx // side, q_idx % side
        kv_row, kv_col = kv_idx // side, kv_idx % side
        return ((q_row - kv_row).abs() < STUDY_NEIGHBORHOOD) & ((q_col - kv_col).abs() < STUDY_NEIGHBORHOOD)

    return mask_mod


# SDPA backend → the name in torch.backends.cuda's switches `enable_<name>` / `<name>_enabled`.
SDPA_SWITCHES = {"flash": "flash_sdp", "efficient": "mem_efficient_sdp", "math": "math_sdp", "cudnn": "cudnn_sdp"}
# Transformer Engine backend → its environment variable.
TE_ENV = {"flash": "NVTE_FLASH_ATTN", "fused": "NVTE_FUSED_ATTN", "unfused": "NVTE_UNFUSED_ATTN"}
# How each kind of system finds out that it cannot run on a device ("" when it can).
_KIND_PROBES = {
    "fa3": lambda device: needs_sm(device, 9, 9) or import_reason(
        "flash_attn_interface", "FlashAttention-3: build it from the flash-attention repo's hopper folder"),
    "te": lambda device: needs_cuda(device) or import_reason(
        "transformer_engine.pytorch", "Transformer Engine: pip install --no-build-isolation 'attn-bench[te]'"),
    "xformers": lambda device: needs_cuda(device) or import_reason(
        "xformers.ops", "xFormers: pip install 'attn-bench[xformers]'"),
    "flex_softcap": lambda device: import_reason("torch.nn.attention.flex_attention", "needs torch>=2.5"),
    "flex_neighborhood": lambda device: import_reason("torch.nn.attention.flex_attention", "needs torch>=2.5"),
}
_CUDA_ONLY_SDPA = {"efficient": "SDPA's mem-efficient backend", "cudnn": "SDPA's cuDNN backend"}


@dataclass(frozen=True)
class StudySystem:
    """One attention system the study defines: the function its block gets and the global setting
    (SDPA's backend switches, Transformer Engine's environment) the study makes before building the model.

    name: what the record's `study_system` says; kind: which function (STUDY_KINDS); layout: "bhsd" or
    "bshd"; backend: the SDPA backend (SDPA_SWITCHES) or TE backend (TE_ENV) enabled alone, "" otherwise.
    """

    name: str
    kind: str
    layout: str
    backend: str = ""

    def unavailable_reason(self, device: str) -> str:
        """Why this system cannot run on `device` ("" if it can)."""
        if self.kind in ("sdpa", "sdpa_masked") and self.backend in _CUDA_ONLY_SDPA:
            reason = needs_cuda(device)
            return f"{_CUDA_ONLY_SDPA[self.backend]} {reason}" if reason else ""
        probe = _KIND_PROBES.get(self.kind)
        return probe(device) if probe else ""

    def attention(self, cfg: VitConfig, mode: str, device: str) -> AttnFn:
        """The study's `attn_fn` for a model of `cfg` run in `mode` ("eager" or "compiled").

        FlexAttention follows the study's pairing with the model's mode: in eager runs the study wraps
        `flex_attention` in `torch.compile` itself, in compiled runs it passes plain `flex_attention` and
        compiles the whole model.
        """
        seq_len = cfg.seq_len
        if self.kind == "native":
            return study_native
        if self.kind == "native_softcap":
            return study_native_softcap
        if self.kind == "sdpa":
            return F.scaled_dot_product_attention  # called bare; the backend comes from `settings`
        if self.kind == "sdpa_masked":
            from torch.nn.attention.flex_attention import create_mask
            mask = create_mask(study_neighborhood_mask_mod(seq_len), 1, 1, seq_len, seq_len, device=device)
            return functools.partial(F.scaled_dot_product_attention, attn_mask=mask)
        if self.kind in ("flex_softcap", "flex_neighborhood"):
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
            flex = torch.compile(flex_attention) if mode == "eager" else flex_attention
            if self.kind == "flex_softcap":
                return functools.partial(flex, score_mod=study_softcap_score_mod)
            block_mask = create_block_mask(study_neighborhood_mask_mod(seq_len), None, None, seq_len, seq_len,
                                           device=device)
            return functools.partial(flex, block_mask=block_mask)
        if self.kind == "fa3":
            from flash_attn_interface import flash_attn_func

            def fa3_attention(q, k, v):
                out = flash_attn_func(q, k, v)
                return out[0] if isinstance(out, tuple) else out  # (out, lse) in some versions
            return fa3_attention
        if self.kind == "te":
            from transformer_engine.pytorch import DotProductAttention
            # output (B, S, H·D), which the study's block reshapes as it is
            return DotProductAttention(cfg.heads, cfg.head_dim, cfg.heads, qkv_format="bshd",
                                       attn_mask_type="no_mask")
        if self.kind == "xformers":
            from xformers.ops import memory_efficient_attention
            return memory_efficient_attention
        raise ValueError(f"unknown study system kind {self.kind!r}; valid: {', '.join(STUDY_KINDS)}")

    @contextlib.contextmanager
    def settings(self):
        """The study's global setting for this system, restored on exit: SDPA's four backend switches
        (all off, then this system's on) or TE's backend environment variables (this one "1", the others "0")."""
        if self.kind in ("sdpa", "sdpa_masked"):
            with sdpa_backend_switches(self.backend):
                yield
        elif self.kind == "te":
            with te_backend_env(self.backend):
                yield
        else:
            yield


STUDY_KINDS = ("native", "native_softcap", "sdpa", "sdpa_masked", "fa3", "te", "xformers", "flex_softcap",
               "flex_neighborhood")


def sdpa_switch_states() -> dict[str, bool]:
    """The four global SDPA backend switches: backend → enabled."""
    return {backend: getattr(torch.backends.cuda, f"{name}_enabled")() for backend, name in SDPA_SWITCHES.items()}


@contextlib.contextmanager
def sdpa_backend_switches(backend: str):
    """The study's SDPA backend selection: all four global switches off, then `backend`'s on; the
    previous states come back on exit (they are process-global and would leak into later cells)."""
    if backend not in SDPA_SWITCHES:
        raise ValueError(f"unknown SDPA backend {backend!r}; valid: {', '.join(SDPA_SWITCHES)}")
    previous = sdpa_switch_states()
    try:
        for other, name in SDPA_SWITCHES.items():
            getattr(torch.backends.cuda, f"enable_{name}")(other == backend)
        yield
    finally:
        for other, name in SDPA_SWITCHES.items():
            getattr(torch.backends.cuda, f"enable_{name}")(previous[other])


def _te_requires_reselection() -> None:
    """TE caches its backend choice keyed by the inputs, not by the environment: ask it to choose again."""
    try:
        from transformer_engine.pytorch.attention.dot_product_attention import _attention_backends
    except ImportError:  # TE not importable: nothing cached
        return
    _attention_backends["backend_selection_requires_update"] = True


@contextlib.contextmanager
def te_backend_env(backend: str):
    """The study's Transformer Engine backend selection: `backend`'s NVTE_* variable "1", the others "0",
    set before first use; the previous environment comes back on exit."""
    if backend not in TE_ENV:
        raise ValueError(f"unknown Transformer Engine backend {backend!r}; valid: {', '.join(TE_ENV)}")
    previous = {env: os.environ.get(env) for env in TE_ENV.values()}
    try:
        os.environ.update({env: "1" if name == backend else "0" for name, env in TE_ENV.items()})
        _te_requires_reselection()
        yield
    finally:
        for env, value in previous.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value
        _te_requires_reselection()


# --- the yardstick: which study system measures which suite cell ---------------------------

def _sdpa(backend: str) -> StudySystem:
    return StudySystem(f"sdpa[{backend}]", "sdpa", "bhsd", backend)


def _sdpa_masked(backend: str) -> StudySystem:
    return StudySystem(f"sdpa[{backend}] dense neighborhood mask", "sdpa_masked", "bhsd", backend)


def _te(backend: str) -> StudySystem:
    return StudySystem(f"te[{backend}]", "te", "bshd", backend)


# (suite implementation id, variant) → the study system that is its yardstick.
STUDY_SYSTEMS: dict[tuple[str, str], StudySystem] = {
    ("native", "plain"): StudySystem("native", "native", "bhsd"),
    ("native", "softcap"): StudySystem("native softcap", "native_softcap", "bhsd"),
    **{(f"sdpa_{b}", "plain"): _sdpa(b) for b in SDPA_SWITCHES},
    # The study's neighborhood baseline, with the cell's backend chosen as the study chooses SDPA's.
    **{(f"sdpa_{b}", "neighborhood"): _sdpa_masked(b) for b in ("efficient", "math", "cudnn")},
    ("fa3", "plain"): StudySystem("fa3", "fa3", "bshd"),
    **{(f"te_{b}", "plain"): _te(b) for b in TE_ENV},
    ("xformers", "plain"): StudySystem("xformers", "xformers", "bshd"),
    ("flex", "softcap"): StudySystem("flex softcap score_mod", "flex_softcap", "bhsd"),
    ("flex", "neighborhood"): StudySystem("flex neighborhood block_mask", "flex_neighborhood", "bhsd"),
}
# Why the study has no yardstick for a cell: by (implementation id, variant), or by implementation id
# for all of its variants that STUDY_SYSTEMS does not name.
_TE_REASON = "the study's Transformer Engine attention is attn_mask_type='no_mask' without softcap"
NO_YARDSTICK: dict[tuple[str, str] | str, str] = {
    ("native", "neighborhood"): "the study's neighborhood baseline is SDPA with the dense mask "
                                "(sdpa_* neighborhood cells), not hand-written attention",
    ("flex", "plain"): "the study's FlexAttention functions are the softcap score_mod and the neighborhood "
                       "block_mask; it times no plain FlexAttention",
    ("fa3", "softcap"): "the study's FlashAttention-3 call passes no softcap",
    **{(f"te_{b}", v): _TE_REASON for b in TE_ENV for v in ("softcap", "neighborhood")},
    ("xformers", "neighborhood"): "the study's xFormers call passes no attn_bias",
    "fa2": "the study ran FlashAttention-3 (flash_attn_interface), not flash-attn 2",
    "fa4": "the study ran FlashAttention-3 (flash_attn_interface), not flash-attn-4",
    **{f"xformers_{op}": f"the study's xFormers call uses xFormers' own dispatch; this entry pins the {op} operator"
       for op in ("cutlass", "flash", "flash3")},
}
NOT_IN_STUDY = "the study defines no attention function for {impl}"


@dataclass(frozen=True)
class Yardstick:
    """A suite cell's yardstick: the study system (None when there is none) and, if none, why."""

    system: StudySystem | None
    reason: str = ""

    @property
    def note(self) -> str:
        """'no yardstick: <reason>' when there is no system, else ''."""
        return f"no yardstick: {self.reason}" if self.system is None else ""


def yardstick(impl_id: str, variant: str, device: str | None = None) -> Yardstick:
    """The study system that measures the suite's (`impl_id`, `variant`) cells in either mode (the mode
    only picks FlexAttention's form, `StudySystem.attention`), or the reason there is none: the study
    defines none, or (with `device`) the system cannot run there. Never the suite's own callable."""
    system = STUDY_SYSTEMS.get((impl_id, variant))
    if system is not None:
        reason = system.unavailable_reason(device) if device else ""
        return Yardstick(None, f"the study's {system.name} cannot run here: {reason}") if reason else Yardstick(system)
    reason = NO_YARDSTICK.get((impl_id, variant)) or NO_YARDSTICK.get(impl_id)
    if reason is None:
        try:
            impl = get_impl(impl_id)
        except ValueError:
            impl = None
        if impl is not None and variant not in impl.variants:
            reason = f"{impl_id} cannot express variant {variant!r}"
        else:
            reason = NOT_IN_STUDY.format(impl=impl_id)
    return Yardstick(None, reason)


@contextlib.contextmanager
def _compile_caches_off_for_global_switches(system: StudySystem, mode: str):
    """Inductor's and AOTAutograd's cache keys omit SDPA's backend when it is chosen outside the compiled
    code (pytorch/pytorch#185449): on the H200 such a process ran another backend's cached graph. The
    study chooses it outside, so its compiled SDPA runs compile without those caches (compilation
    happens in the warm-up steps, which are not timed)."""
    if mode != "compiled" or system.kind not in ("sdpa", "sdpa_masked"):
        yield
        return
    import torch._functorch.config
    import torch._inductor.config
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        yield


def time_study_system(system: StudySystem, cfg: VitConfig, mode: str, device: str, steps: int,
                      warmup: int = STUDY_WARMUP_STEPS) -> dict:
    """The study's model of `cfg` with `system`'s attention function, trained by `study_train_loop`
    (compiled whole in compiled `mode`), with the system's global setting made before the model is
    built and restored afterwards. Returns `study_train_loop`'s result."""
    reason = system.unavailable_reason(device)
    if reason:
        raise RuntimeError(f"study system {system.name} cannot run here: {reason}")
    with system.settings(), _compile_caches_off_for_global_switches(system, mode):
        model = study_model(cfg, system.attention(cfg, mode, device), system.layout, device)
        images, labels = synthetic_batch(cfg, device)
        result = study_train_loop(model, images, labels, device, steps=steps, compile=mode == "compiled",
                                  warmup=warmup)
    del model
    return result
