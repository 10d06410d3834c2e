"""Variable-size images: the packed workload, a ViT on packed tokens, its parity check and its cells.

Workload. Each image's height and width are drawn independently and uniformly from the
multiples of 16 px in [min_side, max_side] (full: 128..448 px, so 8..28 patches a side and
64..784 tokens an image) with a fixed seed; patch size 16. Images are packed greedily in the
order drawn (next fit): an image goes into the current row if its tokens fit the row's token
budget, else it starts the next row; the image that does not fit the last row ends the batch.
Every row is padded to the budget: the unused tokens of a row form one padding segment,
masked like an image of its own (it attends only to itself and no image attends to it); the
model never reads its outputs, so its gradients are zero. `SeqLayout` records the segments.
The `padded` baseline gets the same images, one per row, padded to the longest image (its
key-padding mask lets padding queries see the image: outputs that are never read either).

Model (`PackedViT`). Patches are cut per image (unfold, 3·16·16 values each) and embedded by
one shared Linear; the position embedding is factorized (a row table and a column table of
max_side/16 entries, added per patch). The tokens are scattered into the (rows, row_len) grid
(padding tokens are zero) and go through the suite's block (`model.AttentionBlock`: pre-norm,
qkv Linear, attention, proj, residual, MLP); the attention takes the packed q, k, v and what
the implementation's `prepare` built once per step from the layout. Each image is mean-pooled
over its own tokens, then LayerNorm and the head; cross-entropy per image, labels
`index % num_classes`. The training step is `model.TrainStep` (bf16 autocast, SGD at its
default learning rate, float32 matmul precision "high").

Parity. q, k, v of the images of PARITY_ROWS packed rows, placed into each packing's grid
(padding tokens random, so a leak shows), through the implementation; output and dq, dk, dv
on the image tokens against plain softmax attention per image in fp32, with parity.py's rule
(limit = 2× (out) or 3× (gradients) the error of the same math in bf16 + an fp32 floor) and
negative controls that must exceed 1.5× the limit: attention across the images of a row and a
2 % scale error.

The hazard (`FlexLengthHazard`): compiled flex with the lengths changing every step.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from attn_impls import AttnShape
from attn_impls.native import attention_math
from attn_impls.registry import PACKINGS, SeqLayout, VarlenAttention, VarlenImpl, get_varlen_impl

from . import envinfo, parity
from .harness import MODES, CellFailure, CellSkip, PhaseClock, guarded, require
from .isolation import compile_cache_fields, peak_gib
from .kernels import check_kernels, profiled_names
from .model import AttentionBlock, TrainStep, compile_model, merge_heads, split_qkv, synchronize
from .timer import STEPS_PER_ROUND


@dataclass(frozen=True)
class VarlenConfig:
    """The variable-size workload of one profile: image sizes, packing and model width."""

    token_budget: int  # tokens per packed row
    rows: int  # packed rows per batch
    heads: int
    head_dim: int
    depth: int
    min_side: int = 128
    max_side: int = 448
    patch_size: int = 16
    num_classes: int = 1000

    def __post_init__(self):
        if self.max_grid**2 > self.token_budget:
            raise ValueError(f"the largest image ({self.max_grid ** 2} tokens) exceeds the row budget")

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def max_grid(self) -> int:
        """Patches along the longest side (the size of each position-embedding table)."""
        return self.max_side // self.patch_size

    @property
    def sides(self) -> range:
        """The image sides drawn from, uniformly: multiples of the patch size."""
        return range(self.min_side, self.max_side + 1, self.patch_size)


# "full": the 3136 config's width (12 x 64) and depth (6); 8 rows of 4096 tokens, ~12 images of
# 64-784 tokens a row (~96 images a step). "smoke": tiny, for CPU.
VARLEN_CONFIGS = {
    "full": VarlenConfig(token_budget=4096, rows=8, heads=12, head_dim=64, depth=6),
    "smoke": VarlenConfig(token_budget=64, rows=2, heads=2, head_dim=32, depth=2, min_side=32, max_side=96),
}
LENGTHS = ("fixed", "changing")  # one batch for every step, or a new batch (new lengths) each step
CHANGING_BATCHES = 8  # `changing`: steps cycle through this many batches of different lengths
PARITY_ROWS = 2  # packed rows (of the cell's budget) in the parity check
PARITY_SEED = 1234
VARLEN_COMPILE_SCOPE = "block"  # compiled cells; see _run_varlen_cell


def get_varlen_config(profile: str) -> VarlenConfig:
    """The config of `profile`; ValueError listing the valid names if unknown."""
    if profile not in VARLEN_CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(VARLEN_CONFIGS)}")
    return VARLEN_CONFIGS[profile]


# --- the workload ---------------------------------------------------------------------------

def draw_packed_images(cfg: VarlenConfig, seed: int) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """Image sides (height, width) in pixels, drawn with `seed`, and the images of each row
    (indices, in drawing order) after next-fit packing into `cfg.rows` rows of `cfg.token_budget`."""
    gen = torch.Generator().manual_seed(seed)
    sides, rows, row, used = [], [], [], 0
    while True:
        height, width = (cfg.sides[int(i)] for i in torch.randint(len(cfg.sides), (2,), generator=gen))
        tokens = (height // cfg.patch_size) * (width // cfg.patch_size)
        if used + tokens > cfg.token_budget:
            rows.append(row)
            if len(rows) == cfg.rows:
                return sides, rows
            row, used = [], 0
        row.append(len(sides))
        sides.append((height, width))
        used += tokens


def packed_layout(token_counts: list[int], rows: list[list[int]], budget: int) -> SeqLayout:
    """Rows of `budget` tokens: each row's images back to back, then one padding segment if any."""
    seqlens, is_image = [], []
    for row in rows:
        for image in row:
            seqlens.append(token_counts[image])
            is_image.append(True)
        padding = budget - sum(token_counts[image] for image in row)
        if padding:
            seqlens.append(padding)
            is_image.append(False)
    return SeqLayout(len(rows), budget, tuple(seqlens), tuple(is_image))


def padded_layout(token_counts: list[int]) -> SeqLayout:
    """One image per row, each row padded to the longest image."""
    longest = max(token_counts)
    seqlens, is_image = [], []
    for tokens in token_counts:
        seqlens.append(tokens)
        is_image.append(True)
        if tokens < longest:
            seqlens.append(longest - tokens)
            is_image.append(False)
    return SeqLayout(len(token_counts), longest, tuple(seqlens), tuple(is_image))


def image_token_slots(layout: SeqLayout) -> torch.Tensor:
    """(image tokens,) int64: the position in the flattened (rows·row_len) grid of every image
    token, image after image (in layout order), each image's patches in row-major order."""
    starts = itertools.accumulate(layout.seqlens, initial=0)
    return torch.cat([torch.arange(start, start + length)
                      for start, length, image in zip(starts, layout.seqlens, layout.is_image) if image])


def padding_fraction(layout: SeqLayout) -> float:
    """Padding tokens / all tokens of the grid."""
    padding = sum(length for length, image in zip(layout.seqlens, layout.is_image) if not image)
    return padding / (layout.rows * layout.row_len)


@dataclass
class VarlenBatch:
    """One training batch of variable-size images in one packing, on the device."""

    layout: SeqLayout
    patches: torch.Tensor  # (image tokens, 3·p²): every image's patches, image after image
    patch_rows: torch.Tensor  # (image tokens,) a patch's row in its image (position embedding index)
    patch_cols: torch.Tensor  # (image tokens,) its column
    token_slots: torch.Tensor  # (image tokens,) its position in the flattened (rows·row_len) grid
    token_image: torch.Tensor  # (image tokens,) the image it belongs to
    image_tokens: torch.Tensor  # (images,) tokens per image, float (for the mean)
    labels: torch.Tensor  # (images,) index % num_classes, as synthetic_batch

    @property
    def images(self) -> int:
        return self.labels.numel()

    @property
    def tokens(self) -> int:
        """Image tokens (padding excluded)."""
        return self.patches.shape[0]

    @property
    def padding_fraction(self) -> float:
        return padding_fraction(self.layout)


def patchify(image: torch.Tensor, patch: int) -> torch.Tensor:
    """(3, H, W) image → (H/p · W/p, 3·p·p) patches in row-major order, each flattened as
    (channel, y, x) like a Conv2d patch embedding's weight."""
    channels = image.shape[0]
    grid = image.unfold(1, patch, patch).unfold(2, patch, patch)  # (3, H/p, W/p, p, p)
    return grid.permute(1, 2, 0, 3, 4).reshape(-1, channels * patch * patch)


def make_batch(cfg: VarlenConfig, packing: str, device: str, seed: int = 0) -> VarlenBatch:
    """The batch of `seed` (random pixels, fixed sides and packing) in `packing`, on `device`.

    Both packings hold the same images in the same order: those of the packed rows.
    """
    if packing not in PACKINGS:
        raise ValueError(f"unknown packing {packing!r}; valid: {', '.join(PACKINGS)}")
    sides, rows = draw_packed_images(cfg, seed)
    p = cfg.patch_size
    token_counts = [(h // p) * (w // p) for h, w in sides]
    layout = packed_layout(token_counts, rows, cfg.token_budget) if packing == "packed" else padded_layout(token_counts)
    gen = torch.Generator().manual_seed(seed + 1)
    patches = [patchify(torch.randn(3, h, w, generator=gen), p) for h, w in sides]
    rows_cols = [torch.cartesian_prod(torch.arange(h // p), torch.arange(w // p)) for h, w in sides]
    positions = torch.cat(rows_cols)
    counts = torch.tensor(token_counts)
    batch = VarlenBatch(
        layout=layout,
        patches=torch.cat(patches),
        patch_rows=positions[:, 0],
        patch_cols=positions[:, 1],
        token_slots=image_token_slots(layout),
        token_image=torch.repeat_interleave(torch.arange(len(sides)), counts),
        image_tokens=counts.float(),
        labels=torch.arange(len(sides)) % cfg.num_classes,
    )
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name).to(device)
                                         for f in dataclasses.fields(batch) if f.name != "layout"})


# --- the model --------------------------------------------------------------------------------

class PackedBlock(AttentionBlock):
    """The suite's block (same parameters, same statement order) whose attention also takes
    what the implementation prepared for the step (`VarlenAttention.attend`)."""

    def __init__(self, dim: int, num_heads: int, attend):
        super().__init__(dim, num_heads, attention=attend, layout="bshd")

    def forward(self, x_in: torch.Tensor, prepared) -> torch.Tensor:
        B, S, C = x_in.shape
        qkv_bs3hd = self.qkv(self.norm1(x_in)).reshape(B, S, 3, self.heads, C // self.heads)
        x = merge_heads(self.attention(*split_qkv(qkv_bs3hd, "bshd"), prepared), "bshd")
        x = self.proj(x) + x_in
        return x + self.mlp(self.norm2(x))


class PackedViT(nn.Module):
    """A ViT on packed variable-size images (module docstring); forward(batch) → (images, classes) logits."""

    def __init__(self, cfg: VarlenConfig, attention: VarlenAttention):
        super().__init__()
        self.prepare = attention.prepare
        self.patch_embed = nn.Linear(3 * cfg.patch_size**2, cfg.dim)
        self.pos_row = nn.Parameter(0.02 * torch.randn(cfg.max_grid, cfg.dim))
        self.pos_col = nn.Parameter(0.02 * torch.randn(cfg.max_grid, cfg.dim))
        self.blocks = nn.ModuleList(PackedBlock(cfg.dim, cfg.heads, attention.attend) for _ in range(cfg.depth))
        self.fc_norm = nn.LayerNorm(cfg.dim)  # after pooling, as timm's global_pool="avg"
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward(self, batch: VarlenBatch) -> torch.Tensor:
        layout = batch.layout
        tokens = self.patch_embed(batch.patches) + self.pos_row[batch.patch_rows] + self.pos_col[batch.patch_cols]
        grid = tokens.new_zeros(layout.rows * layout.row_len, tokens.shape[-1])
        x = grid.index_copy(0, batch.token_slots, tokens).view(layout.rows, layout.row_len, -1)
        prepared = self.prepare(layout)  # once per step, outside the compiled blocks
        for block in self.blocks:
            x = block(x, prepared)
        image_tokens = x.reshape(-1, x.shape[-1])[batch.token_slots]
        sums = image_tokens.new_zeros(batch.images, image_tokens.shape[-1]).index_add(0, batch.token_image,
                                                                                      image_tokens)
        return self.head(self.fc_norm(sums / batch.image_tokens[:, None]))


def build_packed_model(cfg: VarlenConfig, attention: VarlenAttention, device: str, seed: int = 0) -> PackedViT:
    """PackedViT of `cfg` with `attention`; same seed → same weights."""
    torch.manual_seed(seed)
    return PackedViT(cfg, attention).to(device)


class VarlenTrainStep(TrainStep):
    """`model.TrainStep` on varlen batches; with several batches, call i trains on batch i mod n
    (new lengths every step)."""

    def __init__(self, model: PackedViT, batches: list[VarlenBatch], device: str):
        super().__init__(model, batches[0], batches[0].labels, device)
        self.batches = batches
        self.steps_run = 0

    def __call__(self) -> None:
        batch = self.batches[self.steps_run % len(self.batches)]
        self.images, self.labels = batch, batch.labels
        self.steps_run += 1
        super().__call__()


# --- parity -----------------------------------------------------------------------------------

ACROSS_IMAGES_CONTROL = "attends across the images of a row"


def grouped_attention(qkv_t3hd: torch.Tensor, group_sizes: list[int], scale_factor: float = 1.0) -> torch.Tensor:
    """Plain softmax attention within each group of consecutive tokens: (tokens, 3, H, D) →
    (tokens, H·D). With groups = images it is the per-image reference."""
    outs = []
    for qkv in qkv_t3hd.split(group_sizes):
        q_bhsd, k_bhsd, v_bhsd = qkv.permute(1, 2, 0, 3)[:, None]  # each (1, H, n, D)
        if scale_factor == 1.0:
            out_bhsd = attention_math(q_bhsd, k_bhsd, v_bhsd, "plain")
        else:
            out_bhsd = parity.math_attention(q_bhsd, k_bhsd, v_bhsd, scale_factor=scale_factor)
        outs.append(merge_heads(out_bhsd, "bhsd")[0])
    return torch.cat(outs)


def run_tokens(fn, qkv_t3hd: torch.Tensor, grad_out: torch.Tensor, backward: bool = True) -> dict[str, torch.Tensor]:
    """fn(qkv) → out over image tokens; with `backward` also dq, dk, dv (tokens, H, D)."""
    qkv = qkv_t3hd.detach().clone().requires_grad_(backward)
    out = fn(qkv)
    result = {"out": out.detach().float()}
    if backward:
        out.backward(grad_out.to(out.dtype))
        result.update(zip(("dq", "dk", "dv"), (g.float() for g in qkv.grad.unbind(1))))
    return result


@dataclass
class VarlenReference:
    """The parity inputs (image tokens of PARITY_ROWS packed rows), their fp32 per-image results,
    the limits and the controls' errors, and the layouts of both packings."""

    token_counts: list[int]
    layouts: dict[str, SeqLayout]  # by packing
    qkv: torch.Tensor  # (image tokens, 3, H, D) bf16
    grad_out: torch.Tensor  # (image tokens, H·D) bf16
    ref: dict[str, torch.Tensor]
    baseline_err: dict[str, float]
    limits: dict[str, float]
    control_errs: dict[str, dict[str, float]]


def varlen_reference(cfg: VarlenConfig, device: str, score_std: float = parity.INPUT_SETS["soft"],
                     seed: int = PARITY_SEED) -> VarlenReference:
    """Inputs, fp32 per-image results and limits of the varlen parity check (module docstring)."""
    parity_cfg = dataclasses.replace(cfg, rows=min(cfg.rows, PARITY_ROWS))
    sides, rows = draw_packed_images(parity_cfg, seed)
    p = cfg.patch_size
    counts = [(h // p) * (w // p) for h, w in sides]
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(sum(counts), 3, cfg.heads, cfg.head_dim, generator=gen)
    qkv[:, :2] *= score_std**0.5  # scores of std score_std, as parity.attention_inputs
    grad_out = torch.randn(sum(counts), cfg.dim, generator=gen)
    qkv, grad_out = qkv.to(device, torch.bfloat16), grad_out.to(device, torch.bfloat16)

    def per_image(t):
        return grouped_attention(t, counts)

    ref = run_tokens(per_image, qkv.float(), grad_out)
    base = run_tokens(per_image, qkv, grad_out)
    baseline_err = {name: parity.max_abs_error(base[name], ref[name])[0] for name in ref}
    limits = {name: (parity.FORWARD_FACTOR if name == "out" else parity.GRAD_FACTOR) * baseline_err[name]
              + parity.fp32_floor(ref[name]) for name in ref}
    row_tokens = [sum(counts[i] for i in row) for row in rows]
    controls = {ACROSS_IMAGES_CONTROL: lambda t: grouped_attention(t, row_tokens),
                parity.SCALE_CONTROL: lambda t: grouped_attention(t, counts, scale_factor=1.02)}
    control_errs = {}
    for name, fn in controls.items():
        wrong = run_tokens(fn, qkv.float(), grad_out)
        control_errs[name] = {t: parity.max_abs_error(wrong[t], ref[t])[0] for t in ref}
    layouts = {"packed": packed_layout(counts, rows, cfg.token_budget), "padded": padded_layout(counts)}
    return VarlenReference(counts, layouts, qkv, grad_out, ref, baseline_err, limits, control_errs)


def check_varlen_attention(title: str, attention: VarlenAttention, packing: str, reference: VarlenReference,
                           compiled: bool = False, backward: bool = True) -> parity.ParityReport:
    """`attention` on the block's path (packed qkv → split → attend → merge; compiled if
    `compiled`) over `packing`'s grid of the reference images, against the fp32 per-image results."""
    layout = reference.layouts[packing]
    slots = image_token_slots(layout).to(reference.qkv.device)
    gen = torch.Generator().manual_seed(PARITY_SEED + 1)
    grid = torch.randn(layout.rows * layout.row_len, *reference.qkv.shape[1:], generator=gen)
    grid = grid.to(reference.qkv.device, reference.qkv.dtype)

    def split_attend_merge(qkv_bs3hd, prepared):
        return merge_heads(attention.attend(*split_qkv(qkv_bs3hd, "bshd"), prepared), "bshd")

    fn = torch.compile(split_attend_merge) if compiled else split_attend_merge
    prepared = attention.prepare(layout)

    def on_image_tokens(qkv_t3hd):
        # Place the image tokens into the grid (padding keeps its random values), attend, read back.
        qkv_grid = grid.index_copy(0, slots, qkv_t3hd).view(layout.rows, layout.row_len, *grid.shape[1:])
        return fn(qkv_grid, prepared).reshape(layout.rows * layout.row_len, -1)[slots]

    tested = run_tokens(on_image_tokens, reference.qkv, reference.grad_out, backward)
    checks = []
    for name, value in tested.items():
        err, worst = parity.max_abs_error(value, reference.ref[name])
        checks.append(parity.TensorCheck(name, err, reference.limits[name], reference.baseline_err[name],
                                         bool(torch.isfinite(value).all()), where=f" at {list(worst)}"))
    # As in parity.check_attention: forward-only checks do not gate on the 2 % scale control.
    controls = [parity.ControlCheck(control, max(errs[t] / reference.limits[t] for t in tested),
                                    gating=backward or control != parity.SCALE_CONTROL)
                for control, errs in reference.control_errs.items()]
    note = f"{packing}, {len(reference.token_counts)} images" + ("" if backward else ", forward only")
    return parity.ParityReport(title, checks, controls, note)


# --- the hazard: compiled flex with lengths that change every step ------------------------------

HAZARD_STRATEGIES = {
    "exact_length": "each step's images in one sequence of exactly their tokens, no padding; flex compiled "
                    "with dynamic=False as the suite's flex adapter does",
    "exact_length_dynamic": "the same sequences; flex compiled with dynamic=True (every size symbolic)",
    "fixed_budget": "the suite's fix: rows of the fixed token budget (padding a document of its own), document "
                    "ids a tensor, the BlockMask rebuilt each step by create_block_mask; flex as exact_length",
}


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled since its counters were last cleared."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


class FlexLengthHazard:
    """One call = one attention step of compiled flex on the images of a new batch (new lengths).

    `strategy` is one of HAZARD_STRATEGIES. A step builds the BlockMask and runs flex forward,
    and backward where flex has one (`backward`; on CPU it has none). `recompiles` counts the
    graphs compiled after the first step; `step_ms` holds every step's wall time. Creating one
    resets Dynamo, so that every strategy starts from nothing compiled.
    """

    def __init__(self, cfg: VarlenConfig, strategy: str, device: str, backward: bool, seed: int = 0,
                 compile_backend: str = "inductor"):
        from torch.nn.attention.flex_attention import flex_attention
        if strategy not in HAZARD_STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(HAZARD_STRATEGIES)}")
        self.cfg, self.strategy, self.device, self.backward, self.seed = cfg, strategy, device, backward, seed
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        # As attn_impls.flex._compiled_flex, fresh. Dynamo decides recompilations (guards) before any
        # backend runs, so compile_backend="eager" counts the same recompiles in a fraction of the time.
        self.flex = torch.compile(flex_attention, dynamic=strategy == "exact_length_dynamic",
                                  backend=compile_backend)
        self.compile_backend = compile_backend
        self.step_ms: list[float] = []
        self.lengths: list[int] = []  # tokens per step (the sequence length of exact_length)
        self._graphs_after_first: int | None = None

    def layout(self, step: int) -> SeqLayout:
        """The SeqLayout of `step`'s batch under this strategy."""
        sides, rows = draw_packed_images(self.cfg, self.seed + step)
        p = self.cfg.patch_size
        counts = [(h // p) * (w // p) for h, w in sides]
        if self.strategy == "fixed_budget":
            return packed_layout(counts, rows, self.cfg.token_budget)
        return SeqLayout(1, sum(counts), tuple(counts), (True,) * len(counts))

    def __call__(self) -> None:
        from attn_impls.flex import document_block_mask
        cfg = self.cfg
        layout = self.layout(len(self.step_ms))
        q, k, v = (torch.randn(layout.rows, cfg.heads, layout.row_len, cfg.head_dim, device=self.device,
                               dtype=torch.bfloat16, requires_grad=self.backward) for _ in range(3))
        start = time.perf_counter()
        block_mask = document_block_mask(layout, self.device)
        if self.backward:
            self.flex(q, k, v, block_mask=block_mask).sum().backward()
        else:
            with torch.no_grad():
                self.flex(q, k, v, block_mask=block_mask)
        synchronize(self.device)
        self.step_ms.append((time.perf_counter() - start) * 1e3)
        self.lengths.append(layout.rows * layout.row_len)
        if self._graphs_after_first is None:
            self._graphs_after_first = compiled_graphs()

    @property
    def recompiles(self) -> int:
        """Graphs compiled after the first step (0 when new lengths cost no compilation)."""
        return compiled_graphs() - (self._graphs_after_first or 0)

    def as_dict(self) -> dict:
        """The hazard's fields of extra_info."""
        later = self.step_ms[1:] or self.step_ms
        return {"strategy": self.strategy, "strategy_means": HAZARD_STRATEGIES[self.strategy],
                "steps": len(self.step_ms), "recompiles": self.recompiles, "first_step_ms": self.step_ms[0],
                "later_steps_median_ms": statistics.median(later), "step_ms": self.step_ms,
                "tokens_per_step": self.lengths, "distinct_lengths": len(set(self.lengths)),
                "backward": self.backward, "compile_backend": self.compile_backend}


# --- cells ------------------------------------------------------------------------------------

_REFERENCES: dict[tuple, VarlenReference] = {}


def cell_reference(cfg: VarlenConfig, device: str) -> VarlenReference:
    """The parity reference of `cfg` on `device`, computed once per session."""
    key = (cfg, device)
    if key not in _REFERENCES:
        _REFERENCES[key] = varlen_reference(cfg, device)
    return _REFERENCES[key]


def varlen_cell(impl_id: str, mode: str, device: str) -> VarlenImpl:
    """The entry of a training cell; CellSkip with the reason if it cannot run on `device` in `mode`."""
    impl = get_varlen_impl(impl_id)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    reason = impl.unsupported_reason(device, backward=True, compiled=mode == "compiled")
    if reason:
        raise CellSkip(reason)
    return impl


def run_varlen_cell(suite, impl_id: str, mode: str, benchmark, lengths: str = "fixed") -> dict:
    """Parity gate, kernel check, then time the training step of a varlen cell with pytest-benchmark.

    `suite` gives the profile, device, rounds and warm-up rounds (harness.Suite). `lengths`:
    "fixed" trains on one batch every step; "changing" cycles through CHANGING_BATCHES batches
    of different lengths (extra_info.recompiles counts the graphs compiled after the first
    step). Raises CellSkip (the library refuses) and CellFailure (parity, kernel, NaN, out of memory).
    """
    if lengths not in LENGTHS:
        raise ValueError(f"unknown lengths {lengths!r}; valid: {', '.join(LENGTHS)}")
    impl = varlen_cell(impl_id, mode, suite.device)
    return guarded(f"{impl.id}-{mode}", suite.device,
                   lambda: _run_varlen_cell(suite, impl, mode, benchmark, lengths))


def _run_varlen_cell(suite, impl: VarlenImpl, mode: str, benchmark, lengths: str) -> dict:
    device, cfg, compiled = suite.device, get_varlen_config(suite.profile), mode == "compiled"
    name = f"{impl.id}-{mode}"
    clock = PhaseClock()
    with clock("reset"):
        suite.fresh_cell(impl.id)
    attention = impl.factory(AttnShape(cfg.heads, cfg.head_dim, cfg.token_budget, device))
    with clock("parity"):
        report = check_varlen_attention(f"varlen attention {name}", attention, impl.packing,
                                        cell_reference(cfg, device), compiled=compiled)
        require(report)

    seeds = range(CHANGING_BATCHES) if lengths == "changing" else [0]
    batches = [make_batch(cfg, impl.packing, device, seed) for seed in seeds]
    model = build_packed_model(cfg, attention, device)
    if compiled:
        # Always per block, whatever --attn-compile-scope says: the per-step preparation from the
        # layout (block masks, cu_seqlens) and the per-image pooling stay outside the compiled graphs,
        # which is what keeps new lengths from recompiling.
        compile_model(model, VARLEN_COMPILE_SCOPE)
    step = VarlenTrainStep(model, batches, device)
    torch._dynamo.utils.counters.clear()  # the parity check compiled its own graphs
    with clock("first_step"):
        start = time.perf_counter()
        step()  # compiles in compiled cells
        first_step_s = time.perf_counter() - start
        caches = compile_cache_fields()
        graphs_after_first = compiled_graphs()
        kernels = check_kernels(impl, profiled_names(step, device))
    if not kernels.ok:
        raise CellFailure(kernels.explain())

    steps = STEPS_PER_ROUND[suite.profile]
    step.sync_every = steps
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    benchmark.group = f"varlen-{mode}"
    with clock("timed"):
        benchmark.pedantic(step, rounds=suite.rounds, warmup_rounds=suite.warmup, iterations=steps)
        synchronize(device)
    loss = float(step.last_loss)
    if math.isnan(loss):
        raise CellFailure(f"{name}: loss became NaN during timing")

    images = statistics.mean(b.images for b in batches)
    tokens = statistics.mean(b.tokens for b in batches)
    info = {
        "impl": impl.id, "library": impl.library, "mode": mode, "profile": suite.profile, "device": device,
        "packing": impl.packing, "lengths": lengths, "rows": batches[0].layout.rows,
        "row_len": batches[0].layout.row_len, "token_budget": cfg.token_budget, "images_per_step": images,
        "image_tokens_per_step": tokens, "grid_tokens_per_step": statistics.mean(
            b.layout.rows * b.layout.row_len for b in batches),
        "padding_fraction": statistics.mean(b.padding_fraction for b in batches),
        "heads": cfg.heads, "head_dim": cfg.head_dim, "depth": cfg.depth,
        "proven_on_hardware": impl.proven_on_hardware, "peak_gib": peak_gib(device),
        "first_step_s": first_step_s, **caches,
        "compile_scope": VARLEN_COMPILE_SCOPE if compiled else None,
        "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values()),
        "recompiles": compiled_graphs() - graphs_after_first,
        **kernels.as_dict(), "parity": report.as_dict(),
        "numerics": envinfo.numerics(step.precision), "steps_per_round": steps,
    }
    if not benchmark.disabled:
        median_s = benchmark.stats.stats.median
        info.update(median_ms=median_s * 1e3, tokens_per_s=tokens / median_s, images_per_s=images / median_s,
                    compile_s=first_step_s - median_s)
    info["phase_s"] = clock.as_dict()
    benchmark.extra_info.update(info)
    del step, model
    return info


__all__ = ["CHANGING_BATCHES", "HAZARD_STRATEGIES", "LENGTHS", "VARLEN_CONFIGS", "FlexLengthHazard", "PackedViT",
           "VarlenBatch", "VarlenConfig", "VarlenTrainStep", "build_packed_model", "check_varlen_attention",
           "get_varlen_config", "make_batch", "run_varlen_cell", "varlen_reference"]
