"""The study's ViT: configs, the attention block, the training step and its FLOPs."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
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
# same code path at both sequence lengths, small enough for a 2-core CPU.
CONFIGS: dict[str, dict[int, VitConfig]] = {
    "full": {
        196: VitConfig(img_size=224, patch_size=16, batch=128, heads=16, head_dim=64, depth=24),
        3136: VitConfig(img_size=224, patch_size=4, batch=8, heads=12, head_dim=64, depth=6),
    },
    "smoke": {
        196: VitConfig(img_size=224, patch_size=16, batch=4, heads=2, head_dim=64, depth=2),
        3136: VitConfig(img_size=224, patch_size=4, batch=1, heads=2, head_dim=64, depth=1),
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
    layout change happens here and nowhere else.
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, C = x.shape
        qkv_bs3hd = self.qkv(self.norm1(x)).view(B, S, 3, self.heads, C // self.heads)
        if self.layout == "bshd":
            q, k, v = qkv_bs3hd.unbind(2)
            out_bsc = self.attention(q, k, v).reshape(B, S, C)
        else:
            q, k, v = qkv_bs3hd.permute(2, 0, 3, 1, 4).unbind(0)
            out_bsc = self.attention(q, k, v).transpose(1, 2).reshape(B, S, C)
        x = x + self.proj(out_bsc)
        return x + self.mlp(self.norm2(x))


def build_model(cfg: VitConfig, attention: AttnFn, layout: str, device: str,
                seed: int = 0) -> VisionTransformer:
    """timm VisionTransformer of `cfg` with AttentionBlock; same seed → same weights."""
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.dim, depth=cfg.depth,
        num_heads=cfg.heads, num_classes=cfg.num_classes, class_token=False, global_pool="avg",
        block_fn=functools.partial(AttentionBlock, attention=attention, layout=layout),
    )
    return model.to(device)


def synthetic_batch(cfg: VitConfig, device: str, seed: int = 0):
    """A fixed batch of images and labels, made on `device`."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randn(cfg.batch, 3, cfg.img_size, cfg.img_size, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (cfg.batch,), generator=gen)
    return images.to(device), labels.to(device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


class TrainStep:
    """One training step (bf16 autocast, cross-entropy, SGD), ending with a device sync.

    Call it to run a step; `last_loss` and `last_logits` hold the latest outputs.
    With autocast=False it runs in the parameters' dtype (the fp32 reference).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 device: str, lr: float = 0.1, autocast: bool = True):
        self.model, self.images, self.labels, self.device = model, images, labels, device
        self.autocast = autocast
        self.opt = torch.optim.SGD(model.parameters(), lr=lr)
        self.last_loss: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16,
                            enabled=self.autocast):
            logits = self.model(self.images)
            loss = F.cross_entropy(logits, self.labels)
        loss.backward()
        self.opt.step()
        self.last_loss, self.last_logits = loss.detach(), logits.detach()
        synchronize(self.device)


def compile_blocks(model: VisionTransformer) -> None:
    """Regional compilation: one compiled graph for the repeated block, reused by all."""
    for block in model.blocks:
        block.compile()


def train_step_flops(cfg: VitConfig) -> float:
    """Model FLOPs of one training step (forward + backward = 3× forward).

    Counts matmuls only; attention is counted dense (4·S²·dim per image and
    layer) for every variant, so neighborhood cells report dense-equivalent
    TFLOP/s.
    """
    S, C = cfg.seq_len, cfg.dim
    per_block = 24 * S * C * C + 4 * S * S * C  # qkv 6SC², proj 2SC², mlp 16SC²; QKᵀ and PV
    patch_embed = 2 * S * 3 * cfg.patch_size**2 * C
    head = 2 * C * cfg.num_classes
    return 3.0 * cfg.batch * (cfg.depth * per_block + patch_embed + head)
