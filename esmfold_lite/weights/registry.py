"""The official checkpoints: names, download URLs (as fair-esm's ``esm/pretrained.py`` builds them; for ESM C the
HuggingFace files the ``esm`` package's ``esm/pretrained.py`` loads), companions.

Sizes are approximate download sizes, for display only; no exact byte counts or checksums are published, so
``size_bytes``/``sha256`` stay ``None`` unless filled from a trusted source. Without them a download is verified by
the length the server announces and the file's structure (:mod:`esmfold_lite.weights.download`).
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{}.pt"
REGRESSION_URL = "https://dl.fbaipublicfiles.com/fair-esm/regression/{}-contact-regression.pt"
ESMC_URL = "https://huggingface.co/EvolutionaryScale/{repo}/resolve/main/data/weights/{stem}.pth"

KINDS = ("esm2", "esmfold", "esm1b", "esm1v", "msa", "esmc")
HOME_ENV = "ESMFOLD_LITE_HOME"  # the cache folder (``download.cache_dir``): $ESMFOLD_LITE_HOME, else DEFAULT_HOME
DEFAULT_HOME = "~/.cache/esmfold_lite"


@dataclass(frozen=True)
class CheckpointInfo:
    """One official checkpoint.

    Attributes:
        name: the registry name (what ``load_language_model`` / ``load_model`` accept).
        kind: "esm2", "esmfold", "esm1b", "esm1v", "msa" or "esmc".
        file_stem: the file name without its suffix (differs from ``name`` for ESMFold and ESM C).
        approx_size_gb: approximate download size in GB (display only).
        description: one line for ``esmfold-lite weights list``.
        has_contact_regression: whether ``<file_stem>-contact-regression.pt`` exists (fair-esm: all but ESM-1v
            and ESMFold).
        lm: the registry name of the language model an ESMFold checkpoint needs.
        size_bytes, sha256: exact size / SHA-256 of the main file when known (verified after download).
        suffix: the file name's suffix (``.pt``; ESM C: ``.pth``).
        download_url: where the file is downloaded from; None: fair-esm's ``MODEL_URL`` of ``file_stem``.
    """

    name: str
    kind: str
    file_stem: str
    approx_size_gb: float
    description: str
    has_contact_regression: bool = True
    lm: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    suffix: str = ".pt"
    download_url: str | None = None

    @property
    def filename(self) -> str:
        return f"{self.file_stem}{self.suffix}"

    @property
    def url(self) -> str:
        return self.download_url or MODEL_URL.format(self.file_stem)

    @property
    def regression_filename(self) -> str | None:
        return f"{self.file_stem}-contact-regression.pt" if self.has_contact_regression else None

    @property
    def regression_url(self) -> str | None:
        return REGRESSION_URL.format(self.file_stem) if self.has_contact_regression else None


def _esm2(layers: int, params: str, size_gb: float, width: int) -> CheckpointInfo:
    name = f"esm2_t{layers}_{params}_UR50D"
    return CheckpointInfo(name, "esm2", name, size_gb, f"ESM-2, {params} parameters, {layers} layers, width {width}")


def _esmc(params: str, layers: int, width: int, size_gb: float, terms: str) -> CheckpointInfo:
    stem = f"esmc_{params.lower()}_2024_12_v0"
    description = f"ESM C {params} (EvolutionaryScale), {layers} layers, width {width}; {terms} (no contacts)"
    url = ESMC_URL.format(repo=f"esmc-{params.lower()}-2024-12", stem=stem)
    return CheckpointInfo(
        f"esmc_{params.lower()}", "esmc", stem, size_gb, description, False, suffix=".pth", download_url=url
    )


def _esm1v(seed: int) -> CheckpointInfo:
    name = f"esm1v_t33_650M_UR90S_{seed}"
    description = f"ESM-1v variant-effect model {seed} of 5, 650M parameters (UniRef90)"
    return CheckpointInfo(name, "esm1v", name, 7.3, description, has_contact_regression=False)


CHECKPOINTS: dict[str, CheckpointInfo] = {
    info.name: info
    for info in (
        _esm2(6, "8M", 0.03, 320),
        _esm2(12, "35M", 0.13, 480),
        _esm2(30, "150M", 0.6, 640),
        _esm2(33, "650M", 2.5, 1280),
        _esm2(36, "3B", 5.7, 2560),
        _esm2(48, "15B", 29.0, 5120),
        CheckpointInfo(
            "esmfold_v1",
            "esmfold",
            "esmfold_3B_v1",
            2.7,
            "ESMFold v1 folding trunk and structure module (needs esm2_t36_3B_UR50D)",
            has_contact_regression=False,
            lm="esm2_t36_3B_UR50D",
        ),
        CheckpointInfo("esm1b_t33_650M_UR50S", "esm1b", "esm1b_t33_650M_UR50S", 7.3, "ESM-1b, 650M parameters"),
        *(_esm1v(seed) for seed in range(1, 6)),
        CheckpointInfo(
            "esm_msa1b_t12_100M_UR50S", "msa", "esm_msa1b_t12_100M_UR50S", 1.3, "MSA Transformer, 100M parameters"
        ),
        _esmc("300M", 30, 960, 1.3, "Cambrian Open License"),
        _esmc("600M", 36, 1152, 2.3, "Cambrian Non-Commercial License"),
    )
}
"""Registry name -> checkpoint."""


def lookup(name: str) -> CheckpointInfo | None:
    """The checkpoint with this registry name or file stem (``esmfold_3B_v1`` finds ``esmfold_v1``), else None."""
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    return next((info for info in CHECKPOINTS.values() if info.file_stem == name), None)


def get(name: str) -> CheckpointInfo:
    """Like :func:`lookup` but raises ``KeyError`` listing the known names."""
    info = lookup(name)
    if info is None:
        raise KeyError(f"unknown checkpoint name {name!r}; known names: {', '.join(CHECKPOINTS)}")
    return info
