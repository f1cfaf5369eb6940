"""The 33-token ESM vocabulary and batch encoding.

Token ids equal fair-esm's ``Alphabet.from_architecture("ESM-1b")`` (used by ESM-1b, ESM-1v and ESM-2):
``<cls>=0, <pad>=1, <eos>=2, <unk>=3``, the 25 residue letters, ``.``, ``-``, ``<null_1>``, ``<mask>=32``.
ESM C's ``EsmSequenceTokenizer`` (the ``esm`` package) has the same 33 ids except id 31, its chain break ``|``
(``ESMC_ALPHABET``). Unlike both, lower-case letters are accepted and any other unknown character maps to ``<unk>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SPECIAL_PREPEND = ("<cls>", "<pad>", "<eos>", "<unk>")
RESIDUE_TOKENS = tuple("LAGVSERTIDPKQNFYMHWCXBUZO.-")
SPECIAL_APPEND = ("<null_1>", "<mask>")
ALL_TOKENS = SPECIAL_PREPEND + RESIDUE_TOKENS + SPECIAL_APPEND
ESMC_TOKENS = SPECIAL_PREPEND + RESIDUE_TOKENS + ("|", "<mask>")
"""ESM C's vocabulary: ESM-2's with the chain break ``|`` at id 31 where ESM-2 has ``<null_1>``."""

_SPLIT = re.compile(r"(<[a-z_0-9]+>)")


@dataclass(frozen=True)
class Alphabet:
    """Vocabulary of the ESM language models; ``prepend_bos``/``append_eos`` as in fair-esm."""

    tokens: tuple[str, ...] = ALL_TOKENS
    prepend_bos: bool = True
    append_eos: bool = True

    @property
    def tok_to_idx(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def padding_idx(self) -> int:
        return self.tokens.index("<pad>")

    @property
    def cls_idx(self) -> int:
        return self.tokens.index("<cls>")

    @property
    def eos_idx(self) -> int:
        return self.tokens.index("<eos>")

    @property
    def unk_idx(self) -> int:
        return self.tokens.index("<unk>")

    @property
    def mask_idx(self) -> int:
        return self.tokens.index("<mask>")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, sequence: str) -> list[int]:
        """Token ids of one sequence, without ``<cls>``/``<eos>``.

        Special tokens written inline (``"AC<mask>D"``) are kept; letters are upper-cased; whitespace is dropped; any
        other character becomes ``<unk>`` (as fair-esm's alphabet does; `unknown_characters` names them).
        """
        return [token for _, token in self._tokens(sequence)]

    def unknown_characters(self, sequence: str) -> list[tuple[str, int]]:
        """The characters of ``sequence`` that `encode` reads as ``<unk>``, each with its 1-based token position."""
        return [
            (text, position)
            for position, (text, token) in enumerate(self._tokens(sequence), start=1)
            if token == self.unk_idx and text != "<unk>"
        ]

    def _tokens(self, sequence: str) -> Iterator[tuple[str, int]]:
        """(text, token id) of each token of ``sequence`` (see `encode`)."""
        table = self.tok_to_idx
        for piece in _SPLIT.split(sequence):
            if piece in table and piece.startswith("<"):
                yield piece, table[piece]
                continue
            for ch in piece:
                if not ch.isspace():
                    yield ch, table.get(ch.upper(), self.unk_idx)

    def batch_encode(self, sequences: Sequence[str]) -> torch.Tensor:
        """``(B, L_max + 2)`` long tensor: ``<cls>`` + tokens + ``<eos>``, right-padded with ``<pad>``."""
        import torch  # here, not above: the vocabulary is read by the command line's --help, which imports no torch

        encoded = [self.encode(s) for s in sequences]
        extra = int(self.prepend_bos) + int(self.append_eos)
        width = max((len(e) for e in encoded), default=0) + extra
        tokens = torch.full((len(encoded), width), self.padding_idx, dtype=torch.long)
        for i, ids in enumerate(encoded):
            row = ([self.cls_idx] if self.prepend_bos else []) + ids + ([self.eos_idx] if self.append_eos else [])
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return tokens


ESM_ALPHABET = Alphabet()
ESMC_ALPHABET = Alphabet(ESMC_TOKENS)
