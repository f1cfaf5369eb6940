"""esmfold_lite: pure-PyTorch ESMFold and ESM language models that load the official checkpoints."""

from esmfold_lite.alphabet import ESM_ALPHABET, Alphabet
from esmfold_lite.fold.load import load_model
from esmfold_lite.io.embedding_shards import open_embeddings
from esmfold_lite.lm.load import load_language_model
from esmfold_lite.lm.variants import score_variants
from esmfold_lite.pipeline import predict_fasta
from esmfold_lite.proteome import fold_proteome

__version__ = "0.1.0"
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
