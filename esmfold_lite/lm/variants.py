"""Zero-shot variant effects from masked language models (Meier et al. 2021, "Language models enable zero-shot
prediction of the effects of mutations on protein function").

A score is ``log p(mutant) - log p(wild type)`` summed over the mutated positions ``M`` (higher: the model favours
the mutant), with ``x`` the wild type, ``x^mt`` the mutant and ``x_{-i}`` a sequence with ``<mask>`` at ``i``:

* ``wt-marginals``: ``sum_{i in M} log p(x_i = x^mt_i | x) - log p(x_i = x_i | x)``; one forward pass in all.
* ``masked-marginals``: ``sum_{i in M} log p(x_i = x^mt_i | x_{-i}) - log p(x_i = x_i | x_{-i})``; one forward pass
  per mutated position, shared by every mutation that changes it. For a multiple mutant this is the sum of its
  single-site scores, as in fair-esm's ``predict.py`` and ProteinGym (the paper's formula masks all of ``M`` at once).
* ``mutant-marginals``: ``sum_{i in M} log p(x_i = x^mt_i | x^mt) - log p(x_i = x_i | x^mt)``; one pass per mutant.
* ``pseudo-ppl``: ``PLL(x^mt) - PLL(x)`` with the pseudo-log-likelihood ``PLL(s) = sum_i log p(s_i | s_{-i})`` over
  every residue; ``L`` passes per distinct sequence. (fair-esm's ``predict.py`` reports the mutant's PLL alone, which
  ranks mutants the same way, and reads each masked position's log-probability one residue off.)

Works with every single-sequence masked LM whose ``forward(tokens)`` returns ``{"logits": (B, T, V)}`` (``V`` at
least the alphabet's size; ESM C has 64 logits for its 33 tokens) and that has
an ``alphabet`` with ``tok_to_idx``, ``mask_idx``, ``cls_idx``, ``eos_idx``, ``prepend_bos`` and ``append_eos``
(esmfold_lite's and fair-esm's models alike); not the MSA Transformer (``takes_msa``), whose input is an MSA. The
forward passes of one model are packed into batches under a token budget by
`esmfold_lite.lm.embed.token_budget_batches`, the batching ``embed`` uses.

Length: a model with learned positions (``max_residues``: 1,022 residues for ESM-1b and ESM-1v) refuses a longer wild
type with a ``ValueError`` before any forward pass; nothing is windowed or truncated, because where to cut depends on
where the mutations are. Score a window of the wild type around them instead (with ``offset_idx`` set to the number
of the window's first residue), or use ESM-2, whose rotary positions have no limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from esmfold_lite.io.mutations import Mutation, check_wild_type, parse_mutation
from esmfold_lite.lm.embed import token_budget_batches
from esmfold_lite.progress_display import Progress

STRATEGIES = ("wt-marginals", "masked-marginals", "mutant-marginals", "pseudo-ppl")
DEFAULT_MAX_TOKENS = 4096


def score_variants(
    models: nn.Module | Sequence[nn.Module],
    wild_type: str,
    mutations: str | Iterable[str],
    strategy: str = "masked-marginals",
    offset_idx: int = 1,
    max_tokens_per_batch: int | None = DEFAULT_MAX_TOKENS,
    progress: bool = False,
) -> list[float]:
    """Score mutations of ``wild_type`` with one language model or the mean of several (the ESM-1v ensemble).

    Args:
        models: a masked language model (see the module docstring) or a list of them; a list gives the mean of
            their scores.
        wild_type: the unmutated sequence (one chain of residue letters).
        mutations: strings like ``"A42G"`` or ``"A42G:L50P"`` (see `esmfold_lite.io.mutations`); a single string is
            one mutation (``"A42G:L50P"`` is one double mutant), scored as ``[mutations]``, so the result is a list
            of one float.
        strategy: one of `STRATEGIES` (see the module docstring).
        offset_idx: the position number of the wild type's first residue (1: positions are 1-based).
        max_tokens_per_batch: budget on ``rows x (L + 2)`` tokens in one forward pass; ``None``: one row per pass.
        progress: show progress over the forward passes: a bar on a terminal (or in a notebook), else a log line
            every 30 s (``esmfold_lite.progress_display``).

    Returns:
        One float per mutation, in input order.

    Raises:
        TypeError: ``mutations`` is neither a string nor an iterable of strings (the index of a non-string is named);
            ``models`` holds something that is not a loaded language model (a path, a name, an ESMFold model).
        ValueError: a bad wild type, one longer than a model's ``max_residues`` (1,022 for ESM-1b/1v), an MSA
            model, an unknown strategy, or a mutation that is not well formed, lies outside the wild type or does
            not match it (the message names the mutation).
    """
    one = isinstance(models, nn.Module | str) or not isinstance(models, Iterable)
    model_list = [models] if one else list(models)
    if not model_list:
        raise ValueError("no language model given")
    for i, model in enumerate(model_list):
        if not isinstance(model, nn.Module) or not hasattr(model, "alphabet"):
            raise TypeError(
                f"model {i} is a {type(model).__name__}, not a loaded language model: pass "
                "esmfold_lite.load_language_model(source) (a path or name is not loaded here)"
            )
    wild_type = check_wild_type(wild_type)
    parsed = [parse_mutation(text, wild_type, offset_idx) for text in _mutation_list(mutations)]
    per_model = [
        score_mutations(model, wild_type, parsed, strategy, max_tokens_per_batch, progress) for model in model_list
    ]
    return torch.stack(per_model).mean(0).tolist()


def _mutation_list(mutations: str | Iterable[str]) -> list[str]:
    """``mutations`` as a list: a single string is one mutation; anything else must be an iterable of strings (a
    list, a tuple, a pandas Series ...)."""
    if isinstance(mutations, str):
        return [mutations]
    if not isinstance(mutations, Iterable):
        raise TypeError(
            f"mutations must be a list of strings like ['A42G', 'A42G:L50P'] (or one such string), got "
            f"{type(mutations).__name__}"
        )
    texts = list(mutations)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"mutation at index {i} is a {type(text).__name__}, not a string like 'A42G'")
    return texts


def score_mutations(
    model: nn.Module,
    wild_type: str,
    mutations: Sequence[Mutation],
    strategy: str = "masked-marginals",
    max_tokens_per_batch: int | None = DEFAULT_MAX_TOKENS,
    progress: bool = False,
    description: str | None = None,
) -> torch.Tensor:
    """Scores ``(N,)`` (float64, CPU) of parsed, checked mutations of ``wild_type`` under one model.

    ``description`` labels the progress (bar or lines). See `score_variants` for the other arguments.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown scoring strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not mutations:
        return torch.zeros(0, dtype=torch.float64)
    scorer = _Scorer(model, wild_type, max_tokens_per_batch, progress, description)
    method = {
        "wt-marginals": scorer.wt_marginals,
        "masked-marginals": scorer.masked_marginals,
        "mutant-marginals": scorer.mutant_marginals,
        "pseudo-ppl": scorer.pseudo_ppl,
    }[strategy]
    with torch.no_grad():
        return method(list(mutations))


class _Scorer:
    """One model and one wild type; each strategy method maps mutations to a ``(N,)`` float64 tensor."""

    def __init__(
        self, model: nn.Module, wild_type: str, max_tokens: int | None, progress: bool, description: str | None
    ):
        if getattr(model, "takes_msa", False):
            raise ValueError(
                f"{type(model).__name__} reads MSAs, not single sequences; score variants with ESM-1v, ESM-1b or ESM-2"
            )
        if getattr(model, "lm_head", True) is None:
            raise ValueError(
                f"this {type(model).__name__} has no masked-LM head (e.g. loaded from a transformers EsmModel folder), "
                "so it gives no logits to score with; load a checkpoint saved with its LM head (EsmForMaskedLM)"
            )
        limit = getattr(model, "max_residues", None)
        if limit is not None and len(wild_type) > limit:
            raise ValueError(
                f"the wild type has {len(wild_type)} residues, more than the {limit} residues {type(model).__name__}'s "
                "learned positions cover; score a window of at most that length around the mutations (with "
                "offset_idx / --offset-idx set to the number of its first residue), or use ESM-2 (no length limit)"
            )
        alphabet = model.alphabet
        self.model = model
        self.max_tokens = max_tokens
        self.device = next(model.parameters()).device
        self.token_of = alphabet.tok_to_idx
        self.mask_idx = alphabet.mask_idx
        self.start = int(alphabet.prepend_bos)  # token index of residue 0: +1 for <cls>
        self.wild_type = wild_type
        self.wt_tokens = self.tokens(wild_type)
        self.progress = progress
        self.description = description

    def tokens(self, sequence: str) -> torch.Tensor:
        """``(T,)``: ``<cls>`` + residues + ``<eos>`` as the alphabet asks."""
        alphabet = self.model.alphabet
        ids = [alphabet.cls_idx] * self.start + [self.token_of[c] for c in sequence]
        return torch.tensor(ids + [alphabet.eos_idx] * int(alphabet.append_eos), dtype=torch.long)

    def masked(self, tokens: torch.Tensor, index: int) -> torch.Tensor:
        """A copy of ``tokens (T,)`` with residue ``index`` replaced by ``<mask>``."""
        row = tokens.clone()
        row[self.start + index] = self.mask_idx
        return row

    def log_probs(self, count: int, row: Callable[[int], torch.Tensor]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Run rows ``row(0) .. row(count - 1)`` (each ``(T,)``, equal length) in token-budget batches.

        Yields ``(row numbers, log-probabilities (b, T, V) float32)`` per forward pass.
        """
        batches = token_budget_batches([len(self.wt_tokens)] * count, self.max_tokens)
        with Progress(count, self.description or "scoring", "seq", self.progress) as bar:
            for batch in batches:
                tokens = torch.stack([row(i) for i in batch]).to(self.device)
                logits = self.model(tokens)["logits"]
                yield batch, torch.log_softmax(logits.float(), dim=-1)
                bar.update(len(batch))

    def wt_marginals(self, mutations: list[Mutation]) -> torch.Tensor:
        ((_, log_probs),) = self.log_probs(1, lambda _: self.wt_tokens)
        table = log_probs[0, self.start : self.start + len(self.wild_type)].cpu()
        return self.sum_over_substitutions(mutations, table, [s.index for m in mutations for s in m.substitutions])

    def masked_marginals(self, mutations: list[Mutation]) -> torch.Tensor:
        indices = sorted({s.index for m in mutations for s in m.substitutions})
        table = torch.zeros(0)  # (len(indices), V) once the logits' width V is known (ESM C: 64 > the alphabet)
        for rows, log_probs in self.log_probs(len(indices), lambda i: self.masked(self.wt_tokens, indices[i])):
            if not table.numel():
                table = torch.zeros(len(indices), log_probs.shape[-1])
            table[rows] = log_probs[list(range(len(rows))), [self.start + indices[i] for i in rows]].cpu()
        row_of = {index: row for row, index in enumerate(indices)}
        rows = [row_of[s.index] for m in mutations for s in m.substitutions]
        return self.sum_over_substitutions(mutations, table, rows)

    def mutant_marginals(self, mutations: list[Mutation]) -> torch.Tensor:
        scores = torch.zeros(len(mutations), dtype=torch.float64)
        mutant_row = lambda i: self.tokens(mutations[i].apply(self.wild_type))  # noqa: E731
        for rows, log_probs in self.log_probs(len(mutations), mutant_row):
            batch = [mutations[i] for i in rows]
            picks = [(row, self.start + s.index) for row, m in enumerate(batch) for s in m.substitutions]
            table = log_probs[[row for row, _ in picks], [position for _, position in picks]].cpu()
            scores[rows] = self.sum_over_substitutions(batch, table, list(range(len(picks))))
        return scores

    def sum_over_substitutions(self, mutations: list[Mutation], table: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """Per mutation, the sum of ``table[row, mt] - table[row, wt]`` over its substitutions.

        ``table``: ``(R, V)`` log-probabilities; ``rows``: the table row of every substitution, mutation by mutation.
        """
        owner = [number for number, m in enumerate(mutations) for _ in m.substitutions]
        mutant = [self.token_of[s.mutant] for m in mutations for s in m.substitutions]
        wild = [self.token_of[s.wild_type] for m in mutations for s in m.substitutions]
        difference = (table[rows, mutant] - table[rows, wild]).double()
        return torch.zeros(len(mutations), dtype=torch.float64).index_add_(0, torch.tensor(owner).long(), difference)

    def pseudo_ppl(self, mutations: list[Mutation]) -> torch.Tensor:
        sequences = list(dict.fromkeys([self.wild_type] + [m.apply(self.wild_type) for m in mutations]))
        encoded = [self.tokens(s) for s in sequences]
        length = len(self.wild_type)
        pll = torch.zeros(len(sequences), dtype=torch.float64)
        masked_row = lambda r: self.masked(encoded[r // length], r % length)  # noqa: E731
        for rows, log_probs in self.log_probs(len(sequences) * length, masked_row):
            owner = [r // length for r in rows]
            positions = [self.start + r % length for r in rows]
            targets = [int(encoded[s][p]) for s, p in zip(owner, positions, strict=True)]
            picked = log_probs[list(range(len(rows))), positions, targets].cpu().double()
            pll.index_add_(0, torch.tensor(owner).long(), picked)
        number = {sequence: s for s, sequence in enumerate(sequences)}
        return pll[[number[m.apply(self.wild_type)] for m in mutations]] - pll[0]
