"""Execution branches: which blocks run, where the model exits, and at what bit-width each block runs.

A :class:`Branch` is an immutable value with a canonical string id that is stable across runs
(``b0_1_3-ef-w8_8_4``: kept blocks 0, 1, 3; final head; 8, 8 and 4 bits). Manifests, profiles
and results name branches by that id; :func:`parse_id` turns it back into the value.

Bit-widths: 32 is fp32 and 16 is fp16 (float precision of an unquantized block); 8, 6, 5, 4,
3 and 2 are integer weight bit-widths (post-training quantization, see :mod:`edgeinf.quant`).
"""
from __future__ import annotations

import functools
import operator
import re
from dataclasses import dataclass, field
from typing import Mapping

from edgeinf.errors import EdgeinfError

FLOAT_BITS: tuple[int, ...] = (32, 16)
INT_BITS: tuple[int, ...] = (8, 6, 5, 4, 3, 2)
SUPPORTED_BITS: tuple[int, ...] = FLOAT_BITS + INT_BITS

_ID_RE = re.compile(r"^b(?P<blocks>[0-9_]*)-e(?P<exit>f|[0-9]+)-w(?P<bits>[0-9_]*)$")


def check_bits(bits: int, what: str = "bit-width") -> int:
    """Return ``bits`` as an int or raise a one-line error naming the supported widths."""
    value = _as_int(bits)
    if value is None or value not in SUPPORTED_BITS:
        supported = ", ".join(str(b) for b in SUPPORTED_BITS)
        raise EdgeinfError(f"{what} {bits!r} is not supported; use one of {supported} (32 = fp32, 16 = fp16)")
    return value


def is_float_bits(bits: int) -> bool:
    """True for the float precisions (32 = fp32, 16 = fp16)."""
    return bits in FLOAT_BITS


def bits_label(bits: int) -> str:
    """Human label of a bit-width: ``fp32``, ``fp16``, ``w8``..."""
    return f"fp{bits}" if is_float_bits(bits) else f"w{bits}"


@dataclass(frozen=True)
class Branch:
    """One execution branch of a split model.

    Args:
        blocks: indices of the kept residual blocks, strictly increasing.
        exit: index of the block after which the exit head runs; ``None`` = the final head.
            All kept blocks must be at or before the exit.
        bits: one bit-width per kept block (32 = fp32, 16 = fp16, else integer bits);
            ``None`` = fp32 everywhere.

    Example:
        >>> b = Branch(blocks=(0, 1, 3), exit=None, bits=(8, 8, 4))
        >>> b.id
        'b0_1_3-ef-w8_8_4'
        >>> parse_id(b.id) == b
        True
    """

    blocks: tuple[int, ...]
    exit: int | None = None
    bits: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        blocks = tuple(_as_index(b, "block index") for b in self.blocks)
        if any(b2 <= b1 for b1, b2 in zip(blocks, blocks[1:])):
            raise EdgeinfError(f"branch blocks must be strictly increasing, got {list(blocks)}")
        exit_ = None if self.exit is None else _as_index(self.exit, "exit index")
        if exit_ is not None and blocks and blocks[-1] > exit_:
            raise EdgeinfError(f"branch keeps block {blocks[-1]} after its exit {exit_}; keep only blocks <= the exit")
        bits = (32,) * len(blocks) if self.bits is None else tuple(check_bits(b) for b in self.bits)
        if len(bits) != len(blocks):
            raise EdgeinfError(f"branch has {len(blocks)} kept blocks but {len(bits)} bit-widths; give one per kept block")
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "exit", exit_)
        object.__setattr__(self, "bits", bits)

    @functools.cached_property
    def id(self) -> str:
        """The canonical, stable string id (``b<blocks>-e<exit|f>-w<bits>``); computed once."""
        exit_ = "f" if self.exit is None else str(self.exit)
        return f"b{_join(self.blocks)}-e{exit_}-w{_join(self.bits)}"

    @property
    def depth(self) -> int:
        """Number of kept blocks."""
        return len(self.blocks)

    def bits_of(self, block: int) -> int:
        """The bit-width of kept block ``block``."""
        try:
            return self.bits[self.blocks.index(block)]  # type: ignore[index]
        except ValueError:
            raise EdgeinfError(f"block {block} is not kept by branch {self.id}") from None

    def is_monotone(self) -> bool:
        """True if bits never increase along the path (QuEE's rule: no low -> high steps)."""
        bits = self.bits or ()
        return all(b2 <= b1 for b1, b2 in zip(bits, bits[1:]))

    def describe(self) -> str:
        """A short human description, e.g. ``6/8 blocks, exit 5, w8x4 w4x2``."""
        exit_ = "final head" if self.exit is None else f"exit {self.exit}"
        counts: dict[int, int] = {}
        for b in self.bits or ():
            counts[b] = counts.get(b, 0) + 1
        prec = " ".join(f"{bits_label(b)}x{n}" for b, n in sorted(counts.items(), reverse=True))
        return f"{self.depth} blocks, {exit_}, {prec or 'no blocks'}"

    @classmethod
    def full(cls, num_blocks: int, bits: int = 32, exit: int | None = None) -> "Branch":
        """All blocks up to ``exit`` (or all ``num_blocks``) at uniform ``bits``."""
        last = num_blocks - 1 if exit is None else exit
        blocks = tuple(range(last + 1))
        return cls(blocks=blocks, exit=exit, bits=(bits,) * len(blocks))


    @classmethod
    def from_row(cls, row: Mapping) -> "Branch":
        """The branch a stored row describes (a manifest's ``branches``, a profile row, a gates path).

        The row's ``blocks``, ``exit`` and ``bits`` (missing or empty bits = fp32) are the branch;
        its ``id``, when present, must be that branch's canonical id, else the row names one
        branch and describes another.

        Raises:
            EdgeinfError: one line naming the row's id and the id its structure has.
        """
        try:
            blocks, exit_, bits = tuple(row["blocks"]), row.get("exit"), tuple(row.get("bits") or ()) or None
        except (KeyError, TypeError):
            raise EdgeinfError(f"branch row {str(row)[:80]} needs 'blocks', 'exit' and 'bits'; re-export the package") from None
        branch = cls(blocks=blocks, exit=exit_, bits=bits)
        row_id = row.get("id")
        if row_id is not None and row_id != branch.id:
            raise EdgeinfError(f"branch id {row_id!r} does not name its blocks, exit and bits (their id is "
                               f"{branch.id!r}); re-export the package (edgeinf export or edgeinf build)")
        return branch


def parse_id(branch_id: str) -> Branch:
    """Turn a branch id (as produced by :attr:`Branch.id`) back into a :class:`Branch`."""
    match = _ID_RE.match(branch_id.strip()) if isinstance(branch_id, str) else None
    if match is None:
        raise EdgeinfError(f"not a branch id: {branch_id!r}; expected e.g. 'b0_1_3-ef-w8_8_4' or 'b0_1-e1-w32_32'")
    exit_ = None if match["exit"] == "f" else int(match["exit"])
    return Branch(blocks=_split(match["blocks"]), exit=exit_, bits=_split(match["bits"]))


def _as_int(value: object) -> int | None:
    """``value`` as a plain int (numpy integers included), or None if it is not an integer."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _as_index(value: object, what: str) -> int:
    index = _as_int(value)
    if index is None or index < 0:
        raise EdgeinfError(f"{what} must be a non-negative integer, got {value!r}")
    return index


def _join(values: tuple[int, ...] | None) -> str:
    return "_".join(str(v) for v in values or ())


def _split(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split("_")) if text else ()
