"""``FoldingEngine``: the one interface through which the pipeline drives a folding model: sequences in,
``Prediction``s out, and the settings that make its numbers recorded for resume. ESMFold's is ``ESMFoldEngine``
(``esmfold_engine.py``); a test's fake or another model plugs in the same way (``predict_fasta(engine=...)``,
``fold_proteome(engine=...)``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from esmfold_lite.prediction import Prediction


class FoldingEngine(Protocol):
    """A folding model as the pipeline uses it, in this order: ``settings`` in the driver, before anything loads;
    ``load`` once, only when something needs folding (for ``fold_proteome`` on each Ray worker: an engine not loaded
    yet is pickled to the workers); then ``fold`` per batch, by ``pipeline.batching.BatchFolder``, which recovers
    from out-of-memory errors.

    An engine may also have ``planned_peak_bytes(length, batch, chunk_size) -> int | None``, the memory a batch of
    ``batch`` sequences padded to ``length`` positions needs (progress announces a batch far beyond the others).
    """

    model: object
    """The loaded model (None before ``load``): its parameters and buffers, if it is a ``torch.nn.Module``, are what
    the CPU fallback moves."""

    def settings(self) -> dict[str, object]:
        """What makes the engine's numbers, JSON-able and cheap to get (no weights loaded): recorded in OUTDIR's run
        state, and a run with other settings does not reuse the results there."""
        ...

    def load(self, device: str | None = None) -> None:
        """Load the model onto ``device`` (None: the engine's choice); PipelineError if it cannot be loaded."""
        ...

    def fold(self, sequences: list[str], chunk_size: int | str | None = None) -> Prediction:
        """Fold ``sequences`` (chains separated by ``:``) as one padded batch: a ``Prediction`` of batch size
        ``len(sequences)``. ``chunk_size``: rows per chunk in the trunk (None: unchunked; "auto"), lowered by the
        out-of-memory recovery."""
        ...
