"""The study's ViT: configs, the attention block, the training step and its FLOPs."""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.nn as nn
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer

from attn_impls import AttnFn


@dataclass(frozen=True)
class VitConfig:
    """One ViT training configuration; seq_len = (img_size / patch_size)²."""

    img_size: int
    patch_size: int
    batch: int
    heads: int
    head_dim: int
    depth: int
    num_classes: int = 1000

    @property
    def seq_len(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


# Keyed by profile, then sequence length. "full" is the study's; "smoke" runs the
# same code path at both sequence lengths, small enough for a 2-core CPU. Smoke has 4 heads and a
# batch of 2 at both lengths, so that an error confined to heads beyond the second or a leak between
# the samples of a batch fails parity on CPU (tests/test_power.py); head_dim 16 keeps the attention's
# matmuls at 3136 as cheap as 2 heads × 64 of one image, and its scale 16**-0.5 = 1/4 is exact in bf16.
CONFIGS: dict[str, dict[int, VitConfig]] = {
    "full": {
        196: VitConfig(img_size=224, patch_size=16, batch=128, heads=16, head_dim=64, depth=24),
        3136: VitConfig(img_size=224, patch_size=4, batch=8, heads=12, head_dim=64, depth=6),
    },
    "smoke": {
        196: VitConfig(img_size=224, patch_size=16, batch=2, heads=4, head_dim=16, depth=2),
        3136: VitConfig(img_size=224, patch_size=4, batch=2, heads=4, head_dim=16, depth=1),
    },
}
SEQ_LENS = tuple(CONFIGS["full"])


def get_config(profile: str, seq_len: int) -> VitConfig:
    """The config for `profile` and `seq_len`; ValueError listing valid names if unknown."""
    if profile not in CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(CONFIGS)}")
    if seq_len not in CONFIGS[profile]:
        raise ValueError(f"unknown seq_len {seq_len!r}; valid: {', '.join(map(str, CONFIGS[profile]))}")
    return CONFIGS[profile][seq_len]


class AttentionBlock(nn.Module):
    """The study's block: LN → qkv (no bias) → attention → proj → residual → LN → MLP(4×) → residual.

    `attention` takes and returns tensors in `layout` ("bhsd" or "bshd"); the
    layout change happens in `split_qkv` and `merge_heads` and nowhere else.
    The statements follow the study's order (`attn_bench.study.StudyAttentionBlock`).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *,
                 attention: AttnFn, layout: str, **_timm_kwargs):
        super().__init__()
        self.heads = num_heads
        self.layout = layout
        self.attention = attention
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        B, S, C = x_in.shape
        qkv_bs3hd = self.qkv(self.norm1(x_in)).reshape(B, S, 3, self.heads, C // self.heads)
        x = merge_heads(self.attention(*split_qkv(qkv_bs3hd, self.layout)), self.layout)
        # In the study's order: `x = x_in + self.proj(x)` made eager H200 steps 2-14 % slower
        # (H200, 2026-12-01; docs/findings.md; cause not isolated).
        x = self.proj(x) + x_in
        return x + self.mlp(self.norm2(x))


def split_qkv(qkv_bs3hd: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as views of the packed (B, S, 3, H, D) projection, in `layout`: what attention gets."""
    dims = (2, 0, 3, 1, 4) if layout == "bhsd" else (2, 0, 1, 3, 4)
    return qkv_bs3hd.permute(dims).unbind(0)


def merge_heads(out: torch.Tensor, layout: str) -> torch.Tensor:
    """Attention output in `layout` → (B, S, H·D), as the block feeds it to the projection."""
    out_bshd = out.transpose(1, 2) if layout == "bhsd" else out
    B, S = out_bshd.shape[:2]
    return out_bshd.reshape(B, S, -1)


# timm's init of each (config, seed), made once per process: at seq 196 (304 M parameters) it takes
# 4.4 s on a 2-core CPU, and a full run builds dozens of such models.
_INITIAL_WEIGHTS: dict[tuple[VitConfig, int], dict[str, torch.Tensor]] = {}


def build_model(cfg: VitConfig, attention: AttnFn, layout: str, device: str,
                seed: int = 0) -> VisionTransformer:
    """timm VisionTransformer of `cfg` with AttentionBlock; same seed → same weights.

    timm's init runs on the CPU the first time a process asks for (`cfg`, `seed`); later models are
    built on the meta device and get a copy of those weights. The global RNG is left seeded with
    `seed` either way.
    """
    initial = _INITIAL_WEIGHTS.get((cfg, seed))
    torch.manual_seed(seed)
    with torch.device("meta") if initial is not None else contextlib.nullcontext():
        model = VisionTransformer(
            img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.dim, depth=cfg.depth,
            num_heads=cfg.heads, num_classes=cfg.num_classes, class_token=False, global_pool="avg",
            block_fn=functools.partial(AttentionBlock, attention=attention, layout=layout),
        )
    torch.manual_seed(seed)
    if initial is None:
        _INITIAL_WEIGHTS[(cfg, seed)] = {name: t.detach().clone() for name, t in model.state_dict().items()}
        return model.to(device)
    model.to_empty(device=device)
    model.load_state_dict(initial)
    return model


def synthetic_batch(cfg: VitConfig, device: str, seed: int = 0):
    """A fixed batch made on the CPU from `seed`, then moved to `device`.

    Random images, and labels `index % num_classes` as in the study's fake dataset.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randn(cfg.batch, 3, cfg.img_size, cfg.img_size, generator=gen)
    labels = torch.arange(cfg.batch) % cfg.num_classes
    return images.to(device), labels.to(device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


# The study calls torch.set_float32_matmul_precision("high") before training; the
# fp32 references of the parity checks run at "highest" (true fp32 matmuls).
TIMED_MATMUL_PRECISION = "high"
REFERENCE_MATMUL_PRECISION = "highest"


@contextlib.contextmanager
def float32_matmul_precision(precision: str):
    """Set torch's float32 matmul precision for the block, then restore the previous one."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class TrainStep:
    """One training step as the study's loop runs it, ending with a device sync
    (after every `sync_every`-th step: timed rounds run several steps back to back).

    bf16 autocast, `nn.CrossEntropyLoss`, `SGD(model.parameters())` at its default
    learning rate, zero_grad after the forward, float32 matmul precision "high".
    Call it to run a step; `last_loss` and `last_logits` hold the latest outputs.
    With autocast=False it runs in the parameters' dtype at "highest" precision
    (the fp32 reference).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 device: str, autocast: bool = True):
        self.model, self.images, self.labels, self.device = model, images, labels, device
        self.autocast = autocast
        self.precision = TIMED_MATMUL_PRECISION if autocast else REFERENCE_MATMUL_PRECISION
        self.criterion = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(model.parameters())
        self.last_loss: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None
        self._sync_every = 1
        self._calls = 0

    @property
    def sync_every(self) -> int:
        """Synchronize after every n-th call (timed rounds of n steps)."""
        return self._sync_every

    @sync_every.setter
    def sync_every(self, n: int) -> None:
        # Restart the count, so that every later round of n calls ends with the sync
        # (calls made before, e.g. a profiled step, would otherwise shift it mid-round).
        self._sync_every, self._calls = n, 0

    def __call__(self) -> None:
        with float32_matmul_precision(self.precision):
            with torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16,
                                enabled=self.autocast):
                logits = self.model(self.images)
                loss = self.criterion(logits, self.labels)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.last_loss, self.last_logits = loss.detach(), logits.detach()
        self._calls += 1
        if self._calls % self.sync_every == 0:
            synchronize(self.device)


class InferStep:
    """One inference forward: `model.eval()`, `torch.inference_mode()`, and the numerics of
    TrainStep's forward (bf16 autocast, float32 matmul precision "high"). It does not
    synchronize (the harness wraps it to time it); `last_logits` holds the latest output.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, device: str):
        self.model, self.images, self.device = model.eval(), images, device
        self.precision = TIMED_MATMUL_PRECISION
        self.last_logits: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        with float32_matmul_precision(self.precision), torch.inference_mode():
            with torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16):
                self.last_logits = self.model(self.images)
        return self.last_logits


# How compiled cells compile the model: "model" (the whole model, as the study's code does; the
# default) or "block" (regional: one graph for the repeated block, reused by all). For sdpa_math at
# seq 3136 regional compilation recomputes the softmax in the backward: 89.14 ms against the study's
# 77.82 on the H200, while the whole model measured 79.01 against 77.77 (H200, 2026-12-01).
COMPILE_SCOPES = ("model", "block")
DEFAULT_COMPILE_SCOPE = "model"


def compile_blocks(model: nn.Module) -> None:
    """Regional compilation of a model with `.blocks` (the ViT, the packed ViT): one compiled
    graph for the repeated block, reused by all."""
    for block in model.blocks:
        block.compile()


def compile_model(model: nn.Module, scope: str) -> None:
    """Compile `model` in place with `scope` (COMPILE_SCOPES)."""
    if scope == "block":
        compile_blocks(model)
    elif scope == "model":
        model.compile()
    else:
        raise ValueError(f"unknown compile scope {scope!r}; valid: {', '.join(COMPILE_SCOPES)}")


def forward_flops(cfg: VitConfig) -> float:
    """Model FLOPs of one forward pass of a batch (an inference step).

    Counts matmuls only; attention is counted dense (4·S²·dim per image and
    layer) for every variant, so neighborhood cells report dense-equivalent
    TFLOP/s.
    """
    S, C = cfg.seq_len, cfg.dim
    per_block = 24 * S * C * C + 4 * S * S * C  # qkv 6SC², proj 2SC², mlp 16SC²; QKᵀ and PV
    patch_embed = 2 * S * 3 * cfg.patch_size**2 * C
    head = 2 * C * cfg.num_classes
    return float(cfg.batch * (cfg.depth * per_block + patch_embed + head))


def train_step_flops(cfg: VitConfig) -> float:
    """Model FLOPs of one training step (forward + backward = 3× `forward_flops`)."""
    return 3.0 * forward_flops(cfg)
