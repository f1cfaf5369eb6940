"""esmfold_lite: pure-PyTorch ESMFold and ESM language models that load the official checkpoints.

The names below are resolved on first use (`esmfold_lite.lazy`): ``import esmfold_lite`` and the command line's
``--help`` import neither torch nor a model; ``esmfold_lite.load_model`` imports what it needs when first named.
"""

from typing import TYPE_CHECKING

from esmfold_lite.lazy import lazy_names
from esmfold_lite.version import __version__

if TYPE_CHECKING:
    from esmfold_lite import viz as viz  # a submodule, imported on first use
    from esmfold_lite.alphabet import ESM_ALPHABET, Alphabet
    from esmfold_lite.fold.load import load_model
    from esmfold_lite.lm.load import load_language_model
    from esmfold_lite.lm.variants import score_variants
    from esmfold_lite.pipeline import predict_fasta
    from esmfold_lite.pipeline.embedding_shards import open_embeddings
    from esmfold_lite.pipeline.proteome import fold_proteome

__all__ = [
    "ESM_ALPHABET",
    "Alphabet",
    "__version__",
    "fold_proteome",
    "load_language_model",
    "load_model",
    "open_embeddings",
    "predict_fasta",
    "score_variants",
]
__getattr__, __dir__ = lazy_names(
    globals(),
    {
        "ESM_ALPHABET": "esmfold_lite.alphabet",
        "Alphabet": "esmfold_lite.alphabet",
        "fold_proteome": "esmfold_lite.pipeline.proteome",
        "load_language_model": "esmfold_lite.lm.load",
        "load_model": "esmfold_lite.fold.load",
        "open_embeddings": "esmfold_lite.pipeline.embedding_shards",
        "predict_fasta": "esmfold_lite.pipeline",
        "score_variants": "esmfold_lite.lm.variants",
        "viz": "esmfold_lite.viz",  # `esmfold_lite.viz` after a bare `import esmfold_lite`
    },
)
