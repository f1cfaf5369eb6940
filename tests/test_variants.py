"""Zero-shot variant scores (esmfold_lite.lm.variants) equal direct computations with fair-esm's ESM2."""

import functools

import esm
import pytest
import torch
from test_esm2_parity import fair_esm_model, ours_from

import esmfold_lite
from esmfold_lite.lm.variants import STRATEGIES, score_variants

WILD_TYPE = "MKTAYIAKQRQISF"
# singles, doubles (any order), a synonymous mutation, the last residue, lower case
MUTATIONS = ["M1A", "K2L:T3G", "F14W", "Y5Y", "A7C:K2R", "s13p", "K2L"]
SIZE = (2, 32, 4)

FAIR_ALPHABET = esm.Alphabet.from_architecture("ESM-1b")
CONVERT = FAIR_ALPHABET.get_batch_converter()


@functools.cache
def log_probs(fair, sequence: str, masked: int | None = None) -> torch.Tensor:
    """fair-esm's log-probabilities ``(L + 2, V)`` of ``sequence``, residue ``masked`` (0-based) set to <mask>."""
    _, _, tokens = CONVERT([("protein", sequence)])
    if masked is not None:
        tokens[0, masked + 1] = FAIR_ALPHABET.mask_idx  # +1 for <cls>
    with torch.no_grad():
        return torch.log_softmax(fair(tokens)["logits"][0], dim=-1)


def direct_score(fair, strategy: str, wild_type: str, mutation: str) -> float:
    """The definition of each strategy, written out with one forward pass per term."""
    changes = [(part[0].upper(), int(part[1:-1]) - 1, part[-1].upper()) for part in mutation.split(":")]
    mutant = list(wild_type)
    for _, i, mt in changes:
        mutant[i] = mt
    mutant = "".join(mutant)
    idx = FAIR_ALPHABET.get_idx
    if strategy == "pseudo-ppl":
        pll = [sum(float(log_probs(fair, s, i)[i + 1, idx(s[i])]) for i in range(len(s))) for s in (wild_type, mutant)]
        return pll[1] - pll[0]
    score = 0.0
    for wt, i, mt in changes:
        if strategy == "wt-marginals":
            lp = log_probs(fair, wild_type)
        elif strategy == "masked-marginals":
            lp = log_probs(fair, wild_type, masked=i)
        else:  # mutant-marginals
            lp = log_probs(fair, mutant)
        score += float(lp[i + 1, idx(mt)] - lp[i + 1, idx(wt)])
    return score


@pytest.fixture(scope="module")
def fair():
    return fair_esm_model(SIZE)


@pytest.fixture(scope="module")
def ours(fair):
    return ours_from(fair)


@pytest.fixture(scope="module")
def expected(fair):
    return {s: [direct_score(fair, s, WILD_TYPE, m) for m in MUTATIONS] for s in STRATEGIES}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("budget", [None, 50, 4096])
def test_each_strategy_equals_direct_computation(ours, expected, strategy, budget):
    got = score_variants(ours, WILD_TYPE, MUTATIONS, strategy=strategy, max_tokens_per_batch=budget)
    assert isinstance(got, list) and all(isinstance(x, float) for x in got)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected[strategy]), atol=1e-4, rtol=1e-5)
    assert got[MUTATIONS.index("Y5Y")] == 0.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fair_esm_model_scores_the_same(fair, ours, strategy):
    """Any masked LM with the ESM interface works: fair-esm's own ESM2 gives our scores."""
    with_fair = score_variants(fair, WILD_TYPE, MUTATIONS, strategy=strategy)
    with_ours = score_variants(ours, WILD_TYPE, MUTATIONS, strategy=strategy)
    torch.testing.assert_close(torch.tensor(with_fair), torch.tensor(with_ours), atol=1e-5, rtol=1e-5)


def test_double_mutant_is_sum_of_singles_for_site_independent_strategies(ours):
    for strategy in ("wt-marginals", "masked-marginals"):
        double, first, second = score_variants(ours, WILD_TYPE, ["K2L:T3G", "K2L", "T3G"], strategy=strategy)
        assert double == pytest.approx(first + second, abs=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ensemble_is_mean_of_members(strategy):
    members = [ours_from(fair_esm_model(SIZE, seed=seed)) for seed in (1, 2, 3)]
    ensemble = score_variants(members, WILD_TYPE, MUTATIONS, strategy=strategy)
    alone = torch.tensor([score_variants(m, WILD_TYPE, MUTATIONS, strategy=strategy) for m in members])
    torch.testing.assert_close(torch.tensor(ensemble), alone.mean(0), atol=1e-6, rtol=1e-6)
    assert esmfold_lite.score_variants is score_variants


def test_forward_passes_per_strategy(ours):
    """masked-marginals costs one pass per mutated position, not per mutation; budgets only pack the passes."""
    rows, widths = [], set()

    def count(module, inputs):
        rows.append(inputs[0].shape[0])
        widths.add(inputs[0].shape[1])

    mutations = ["M1A", "K2L:T3G", "K2R", "Y5Y"]
    length = len(WILD_TYPE)
    handle = ours.register_forward_pre_hook(count)
    try:
        for strategy, expected_rows in (
            ("wt-marginals", 1),
            ("masked-marginals", 4),  # positions 1, 2, 3, 5
            ("mutant-marginals", 4),
            ("pseudo-ppl", 4 * length),  # wild type (= Y5Y) and 3 mutants, every position masked in turn
        ):
            rows.clear()
            score_variants(ours, WILD_TYPE, mutations, strategy=strategy, max_tokens_per_batch=None)
            assert sum(rows) == expected_rows and set(rows) == {1}, strategy
            rows.clear()
            score_variants(ours, WILD_TYPE, mutations, strategy=strategy, max_tokens_per_batch=2 * (length + 2))
            assert sum(rows) == expected_rows and max(rows) <= 2 and len(rows) == (expected_rows + 1) // 2, strategy
    finally:
        handle.remove()
    assert widths == {length + 2}


def test_offset_idx(ours):
    plain = score_variants(ours, WILD_TYPE, ["M1A", "K2L:T3G"])
    shifted = score_variants(ours, WILD_TYPE, ["M24A", "K25L:T26G"], offset_idx=24)
    zero_based = score_variants(ours, WILD_TYPE, ["M0A", "K1L:T2G"], offset_idx=0)
    assert plain == shifted == zero_based


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [
        ("A1G", "has M at position 1, not A"),
        ("M0A", "position 0 is outside the wild type .positions 1..14"),
        ("F15A", "position 15 is outside"),
        ("M1", "is not a substitution like A42G"),
        ("M1A:", "is not a substitution"),
        ("M1A:M1C", "position 1 is changed twice"),
        ("M1J", "'J' is not an amino-acid letter"),
        ("M1*", "not a substitution"),
        ("M\u06611A", "not a substitution"),  # digits are ASCII only
        ("", "empty"),
    ],
)
def test_bad_mutation_names_it(ours, mutation, reason):
    with pytest.raises(ValueError, match=reason) as error:
        score_variants(ours, WILD_TYPE, ["K2L", mutation])
    assert str(error.value).startswith(f"mutation {mutation!r}")


def test_other_errors(ours):
    with pytest.raises(ValueError, match="unknown scoring strategy 'pll'"):
        score_variants(ours, WILD_TYPE, ["K2L"], strategy="pll")
    with pytest.raises(ValueError, match="wild-type sequence: not amino-acid letters"):
        score_variants(ours, "MK1T", ["K2L"])
    with pytest.raises(ValueError, match="no language model"):
        score_variants([], WILD_TYPE, ["K2L"])
    assert score_variants(ours, WILD_TYPE, []) == []


def test_a_single_string_is_one_mutation(ours):
    """score_variants(lm, wt, "K2L:T3G") scores that one mutation (a list of one float), as ["K2L:T3G"] does."""
    assert score_variants(ours, WILD_TYPE, "K2L:T3G") == score_variants(ours, WILD_TYPE, ["K2L:T3G"])
    assert len(score_variants(ours, WILD_TYPE, "M1A")) == 1
    assert score_variants(ours, WILD_TYPE, ("M1A", "K2L")) == score_variants(ours, WILD_TYPE, ["M1A", "K2L"])
    with pytest.raises(TypeError, match="mutations must be a list of strings"):
        score_variants(ours, WILD_TYPE, 42)
    with pytest.raises(TypeError, match="mutation at index 1 is a int"):
        score_variants(ours, WILD_TYPE, ["M1A", 7])


def test_model_without_lm_head_is_refused(ours):
    import copy

    headless = copy.deepcopy(ours)
    headless.lm_head = None
    with pytest.raises(ValueError, match="no masked-LM head"):
        score_variants(headless, WILD_TYPE, ["M1A"])


def test_something_else_than_a_loaded_language_model_is_a_type_error():
    from esmfold_lite import score_variants

    for models in ("esm1v_t33_650M_UR90S_1", ["model.pt"], torch.nn.Linear(2, 2), None):
        with pytest.raises(TypeError, match="not a loaded language model: pass esmfold_lite.load_language_model"):
            score_variants(models, "MKV", ["M1A"])
