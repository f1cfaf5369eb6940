"""esmfold_lite: pure-PyTorch ESMFold and ESM language models that load the official checkpoints."""

from esmfold_lite.alphabet import ESM_ALPHABET, Alphabet

__version__ = "0.1.0"
__all__ = ["ESM_ALPHABET", "Alphabet", "__version__"]
