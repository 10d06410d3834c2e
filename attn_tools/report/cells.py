"""The test kinds a report has a section for, and a cell's kind and parameters from its test id."""
from __future__ import annotations

from ..runs import CHANGING_ID_SUFFIX, short_name

MODE_ORDER = ("eager", "compiled")
TRAIN, INFER, ATTENTION = "train step", "inference step", "attention kernel"
VARLEN, FLEX_LENGTHS = "packed images train step", "flex changing lengths"
# Report sections in order, by test function; attention-kernel ids end with a direction.
KINDS = {"test_train_step": TRAIN, "test_infer_step": INFER, "test_attention": ATTENTION}
# The packed variable-size-image workload, one section after KINDS' sections.
VARLEN_KINDS = {"test_varlen_train_step": VARLEN, "test_varlen_flex_lengths": FLEX_LENGTHS}
CELL_KEYS = ("impl", "variant", "seq_len", "mode")
ID_KEYS = {ATTENTION: CELL_KEYS + ("direction",), VARLEN: ("impl", "mode"), FLEX_LENGTHS: ("strategy",)}
CHANGING = "changing"  # the `lengths` of cells whose image sizes change every step


def cell_kind(fullname: str) -> tuple[str, dict] | None:
    """(kind, parameters) of a cell's test id, e.g. ('attention kernel', {impl, variant,
    seq_len, mode, direction}) or ('packed images train step', {impl, mode, lengths}); None for
    tests that are not cells (e.g. parity tests)."""
    function, _, rest = short_name(fullname).partition("[")
    kind = KINDS.get(function) or VARLEN_KINDS.get(function)
    if kind is None or not rest.endswith("]"):
        return None
    keys, body = ID_KEYS.get(kind, CELL_KEYS), rest[:-1]
    lengths = CHANGING if kind == VARLEN and body.endswith(CHANGING_ID_SUFFIX) else "fixed"
    if kind == VARLEN:
        body = body.removesuffix(CHANGING_ID_SUFFIX)
    parts = body.rsplit("-", len(keys) - 1)
    if len(parts) != len(keys) or ("seq_len" in keys and not parts[2].isdigit()):
        return None
    params = dict(zip(keys, parts), **({"lengths": lengths} if kind == VARLEN else {}))
    if "seq_len" in params:
        params["seq_len"] = int(params["seq_len"])
    return kind, params


def mode_rank(mode: str) -> int:
    """Eager before compiled, then any other mode."""
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def section_title(kind: str) -> str:
    """'Train steps', 'Inference steps', 'Attention kernels'."""
    return f"{kind.capitalize()}s"
