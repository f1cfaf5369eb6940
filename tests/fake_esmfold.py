"""A deterministic stand-in for ESMFold, for pipeline and CLI tests that must not need weights.

``FakeFolder.fold`` returns a real ``Prediction`` (so PDB/mmCIF writing runs for real) built from the sequences:
residues on a line 3.8 Å apart, pLDDT and PAE from simple formulas. It records every call and can be told to run
out of memory or fail. Run as a script, it is ``esmfold-lite`` with ``load_model`` returning a ``FakeFolder``
(``FAKE_ESMFOLD_DELAY`` seconds per call, folded sequences appended to the file ``FAKE_ESMFOLD_LOG``, calls after
the first waiting until the file ``FAKE_ESMFOLD_GATE`` exists), for tests that run the CLI in a subprocess; in
``fold-proteome`` on a local Ray its workers fold with it too. ``patch_load_model`` puts a loader where the pipeline
loads its model. ``FakeEngine`` is a second engine beside ESMFold's, folding with a ``FakeFolder``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import torch

from esmfold_lite.fold.chains import encode_batch
from esmfold_lite.geometry.residue_constants import restype_atom37_mask
from esmfold_lite.prediction import Prediction


def patch_load_model(monkeypatch, loader: Callable[..., torch.nn.Module]) -> None:
    """Make the pipeline load its model with ``loader`` (``load_model``'s arguments) for the rest of the test; with
    ``monkeypatch`` None, for the rest of the process."""
    from esmfold_lite.pipeline import esmfold_engine

    if monkeypatch is None:
        esmfold_engine.load_model = loader
    else:
        monkeypatch.setattr(esmfold_engine, "load_model", loader)


def fake_plddt(aatype: torch.Tensor) -> torch.Tensor:
    """(B, L) pLDDT in 30–84 from residue type and position."""
    position = torch.arange(aatype.shape[-1])
    return 30.0 + 6.0 * ((aatype * 7 + position) % 10).float()


class FakeFolder(torch.nn.Module):
    """Records calls in ``calls`` as dicts (sequences, chunk_size, num_recycles, on_cpu).

    Args:
        oom_if: ``oom_if(sequences, chunk_size, on_cpu) -> bool``: raise an out-of-memory error instead of folding.
        oom_message: None raises ``torch.cuda.OutOfMemoryError``; a string raises ``RuntimeError(oom_message)``.
        fail_on: sequences that raise ``ValueError`` (and fail their whole batch).
        interrupt_at_call: raise ``KeyboardInterrupt`` at this call number (1-based), as a crash would stop a run.
        on_gpu: start with a float64 parameter standing for "on the accelerator"; ``.to(dtype=float32)`` (what the
            CPU fallback does) then means "on the CPU".
        delay: seconds to sleep per call.
        log_path: append the folded sequences to this file.
        gate: a path; every call after the first waits until it exists (a test holds a run mid-way with it).
    """

    def __init__(
        self,
        oom_if: Callable[[list[str], int | None, bool], bool] | None = None,
        oom_message: str | None = None,
        fail_on: tuple[str, ...] = (),
        interrupt_at_call: int | None = None,
        on_gpu: bool = False,
        delay: float = 0.0,
        log_path: str | None = None,
        gate: str | None = None,
    ) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64 if on_gpu else torch.float32))
        self.scale = torch.nn.Parameter(torch.ones(1, dtype=torch.float16))  # mixed precision, as ESMFold's LM
        self.register_buffer("steps", torch.zeros(1, dtype=torch.long))
        self.oom_if = oom_if
        self.oom_message = oom_message
        self.fail_on = set(fail_on)
        self.interrupt_at_call = interrupt_at_call
        self.delay = delay
        self.log_path = log_path
        self.gate = gate
        self.calls: list[dict] = []

    @property
    def folded(self) -> list[str]:
        """Sequences of the calls that succeeded, in order."""
        return [s for call in self.calls if call["ok"] for s in call["sequences"]]

    def fold(self, sequences, num_recycles=None, chunk_size=None) -> Prediction:
        sequences = [sequences] if isinstance(sequences, str) else list(sequences)
        on_cpu = self.weight.dtype == torch.float32
        call = {"sequences": sequences, "chunk_size": chunk_size, "num_recycles": num_recycles, "on_cpu": on_cpu}
        call["ok"] = False
        self.calls.append(call)
        time.sleep(self.delay)
        while self.gate and len(self.calls) > 1 and not os.path.exists(self.gate):
            time.sleep(0.02)
        if self.interrupt_at_call == len(self.calls):
            raise KeyboardInterrupt
        if self.oom_if is not None and self.oom_if(sequences, chunk_size, on_cpu):
            if self.oom_message is None:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            raise RuntimeError(self.oom_message)
        bad = self.fail_on.intersection(sequences)
        if bad:
            raise ValueError(f"cannot fold {sorted(bad)}")
        call["ok"] = True
        if self.log_path:
            with open(self.log_path, "a") as log:
                log.writelines(s + "\n" for s in sequences)
        return fake_prediction(sequences)


class FakeEngine:
    """A folding engine that is not ESMFold, for tests of the pipeline's engine interface
    (``pipeline.engine.FoldingEngine``): ``load`` makes a ``FakeFolder`` (``**fake_options``), ``fold`` folds with it
    (its own recycles: none asked), ``settings`` names the engine and its ``version`` (another version: other
    settings). Picklable until loaded, as ``fold_proteome``'s workers need."""

    def __init__(self, version: int = 1, **fake_options) -> None:
        self.version, self.fake_options = version, fake_options
        self.model: FakeFolder | None = None
        self.devices: list[str | None] = []  # one per load

    def settings(self) -> dict[str, object]:
        return {"engine": "fake", "version": self.version}

    def load(self, device: str | None = None) -> None:
        self.devices.append(device)
        self.model = FakeFolder(**self.fake_options)

    def fold(self, sequences: list[str], chunk_size: int | str | None = None) -> Prediction:
        return self.model.fold(sequences, chunk_size=chunk_size)


def fake_prediction(sequences: list[str]) -> Prediction:
    batch = encode_batch(sequences)
    B, L = batch.aatype.shape
    position = torch.arange(L, dtype=torch.float32)
    ca = torch.stack([3.8 * position, torch.zeros(L), torch.zeros(L)], -1)  # (L, 3)
    offsets = torch.stack([torch.arange(37) * 0.1, torch.ones(37), (torch.arange(37) % 3) * 0.5], -1)  # (37, 3)
    positions = (ca[:, None, :] + offsets[None]).expand(B, L, 37, 3).clone()
    atom_mask = torch.as_tensor(restype_atom37_mask, dtype=torch.float32)[batch.aatype] * batch.mask[..., None]
    plddt = fake_plddt(batch.aatype) * batch.mask
    mean_plddt = plddt.sum(-1) / batch.mask.sum(-1)
    distance = (position[:, None] - position[None, :]).abs()
    pae = (1.0 + 0.25 * distance).clamp(max=30.0).expand(B, L, L).clone()
    ptm = 0.5 + 0.001 * batch.linker_mask.sum(-1)
    return Prediction(
        positions=positions,
        atom_mask=atom_mask,
        plddt=plddt,
        mean_plddt=mean_plddt,
        ptm=ptm,
        pae=pae,
        aatype=batch.aatype,
        residue_index=batch.residue_index,
        chain_index=batch.chain_index.clamp(min=0),
        mask=batch.linker_mask,
        sequences=sequences,
    )


if __name__ == "__main__":
    from esmfold_lite.cli import main
    from esmfold_lite.pipeline import proteome, ray_workers

    def _load_fake(*args, **kwargs) -> FakeFolder:
        return FakeFolder(
            delay=float(os.environ.get("FAKE_ESMFOLD_DELAY", "0")),
            log_path=os.environ.get("FAKE_ESMFOLD_LOG"),
            gate=os.environ.get("FAKE_ESMFOLD_GATE"),
        )

    class _FakeFoldWorker(ray_workers.FoldWorker):
        """fold-proteome's worker with the fake model: defined in ``__main__``, so Ray ships it (and the fake) to its
        worker processes by value; they inherit the ``FAKE_ESMFOLD_*`` variables from the Ray this driver starts."""

        def __init__(self, *args) -> None:
            patch_load_model(None, _load_fake)
            super().__init__(*args)

    patch_load_model(None, _load_fake)
    proteome.FoldWorker = _FakeFoldWorker
    sys.exit(main(sys.argv[1:]))
