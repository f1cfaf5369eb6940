"""``FoldingOptions``: what a folding run is asked to do, made and checked once, then handed as one object to both
drivers (``predict_fasta``, ``fold_proteome``), the Ray workers and the command line (``commands/predict.py`` builds
it from the flags of the same names). Plain values only: the command line's ``--help`` imports no torch."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from esmfold_lite.pipeline.names import DEFAULT_FORMATS, DEFAULT_MAX_TOKENS_PER_BATCH, FORMATS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FoldingOptions:
    """The options of a folding run; each value is checked when the object is made (ValueError naming the option by
    its Python name and its flag).

    Attributes:
        model_source: ESMFold weights for ``esmfold_lite.load_model`` (registry name, checkpoint, folder), loaded
            only if something needs folding; with ``lm``, ``dtype`` and ``lm_dtype`` (a dtype, its name, ``"auto"``
            or None, as for ``load_model``) and ``cpu_offload`` (the language model on the CPU).
        formats: any of ``FORMATS`` ("pdb", "cif", "json", "pae", "npz", "png"), kept as a tuple.
        num_recycles: recycling iterations (None: the checkpoint's default).
        chunk_size: trunk chunk size to start with (None: unchunked; "auto": from free memory and length); lowered
            on out-of-memory errors.
        max_tokens_per_batch: budget of padded positions per batch (count × longest, chain linkers included).
        max_length: records with more residues (all chains) are rejected.
        cpu_fallback: fold proteins that do not fit in GPU memory on the CPU (slow).
        overwrite: recompute proteins whose outputs are complete instead of skipping them; needed to reuse an
            OUTDIR whose results were made with other settings (``run_settings``) or whose run state is damaged.
        progress: show a progress bar (only on a terminal; elsewhere one log line per protein).
    """

    model_source: str | os.PathLike | None = None
    lm: str | os.PathLike | None = None
    dtype: torch.dtype | str | None = None
    lm_dtype: torch.dtype | str | None = None
    cpu_offload: bool = False
    formats: Sequence[str] = DEFAULT_FORMATS
    num_recycles: int | None = None
    chunk_size: int | str | None = None
    max_tokens_per_batch: int = DEFAULT_MAX_TOKENS_PER_BATCH
    max_length: int | None = None
    cpu_fallback: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", checked_formats(self.formats, "formats (--formats): "))
        _check_count("num_recycles", self.num_recycles, minimum=0, optional=True)
        if self.chunk_size != "auto":
            _check_count("chunk_size", self.chunk_size, minimum=1, optional=True, also="auto")
        _check_count("max_tokens_per_batch", self.max_tokens_per_batch, minimum=1)
        _check_count("max_length", self.max_length, minimum=1, optional=True)

    @classmethod
    def of(cls, options: FoldingOptions | None = None, **changes: object) -> FoldingOptions:
        """``options`` (default: every option at its default) with ``changes`` to its fields, checked: what the
        drivers make of their ``options=`` and keyword arguments. TypeError for a keyword that is no option."""
        return cls(**changes) if options is None else dataclasses.replace(options, **changes)


def checked_formats(formats: Sequence[str], context: str = "") -> tuple[str, ...]:
    """``formats`` as a tuple; ValueError unless it is a non-empty selection of ``FORMATS`` (``context`` starts the
    message)."""
    formats = tuple(formats)
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        what = f"unknown format {', '.join(map(str, unknown))}" if unknown else "no format given"
        raise ValueError(f"{context}{what}; choose from {', '.join(FORMATS)}")
    return formats


def _check_count(name: str, value: object, minimum: int, optional: bool = False, also: str = "") -> None:
    """ValueError unless ``value`` is a whole number >= ``minimum`` (or None when ``optional``), naming the option and
    its flag."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive whole number" if minimum == 1 else f"a whole number, {minimum} or more"
        raise ValueError(f"{name} (--{name.replace('_', '-')}) must be {also + ' or ' if also else ''}{wanted}, "
                         f"got {value!r}")  # fmt: skip
