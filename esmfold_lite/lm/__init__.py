"""ESM protein language models and their embeddings API."""

from esmfold_lite.lm.embed import Embeddings, embed
from esmfold_lite.lm.esm1 import ESM1, ESM1Config
from esmfold_lite.lm.esm2 import ESM2, ESM2_ARCHITECTURES, ESM2Config
from esmfold_lite.lm.esmc import ESMC, ESMC_ARCHITECTURES, ESMCConfig
from esmfold_lite.lm.msa_transformer import MSATransformer, MSATransformerConfig

__all__ = [
    "ESM1",
    "ESM1Config",
    "ESM2",
    "ESM2_ARCHITECTURES",
    "ESM2Config",
    "ESMC",
    "ESMC_ARCHITECTURES",
    "ESMCConfig",
    "Embeddings",
    "MSATransformer",
    "MSATransformerConfig",
    "embed",
]
