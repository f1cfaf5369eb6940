"""ESMFold2's input embedder equals transformers' (``modeling_esmfold2``) on randomized weights, fp32, CPU: the
one-hot feature preparation (``EsmFold2Model._prepare_features``), the relative-position encoding and the whole
embedder (single inputs, initial pair states and the two pair encodings).

Features are built the reference's way: ``prepare_protein_features`` per protein, padded into a batch of two
(padding tokens and atoms included), and a two-chain complex (the two proteins' features concatenated: token index
running on, residue index restarting, distinct asym ids) as a heterodimer (two entities) and a homodimer (one entity,
sym ids 0 and 1). The relative offsets exceed the tiny config's bins (4 residue, 2 chain), so clipping is exercised.
The reference modules run under the eager and the sdpa attention, every parameter randomized. Bound: the encodings
are sums of the same weights in another order (a pick per feature instead of a one-hot matmul), equal to ~1e-6.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from esmfold2_reference import FEATURE_OVERRIDES as OVERRIDES
from esmfold2_reference import SEQUENCES, tiny_reference_config
from randomize import randomize_

from esmfold_lite.esmfold2.config import EsmFold2Config
from esmfold_lite.esmfold2.input_embedder import InputEmbedder
from esmfold_lite.esmfold2.input_features import encode_atoms, msa_profile, residue_one_hot
from esmfold_lite.esmfold2.relative_position import RelativePositionEncoding

reference = pytest.importorskip("transformers.models.esmfold2.modeling_esmfold2")
protein_utils = pytest.importorskip("transformers.models.esmfold2.protein_utils")

TOL = dict(atol=1e-5, rtol=1e-5)
ATOM_KEYS = ("ref_pos", "ref_charge", "atom_attention_mask", "ref_element", "ref_atom_name_chars", "ref_space_uid",
             "atom_to_token")  # fmt: skip
TOKEN_KEYS = ("token_index", "residue_index", "asym_id", "sym_id", "entity_id", "res_type", "attention_mask",
              "deletion_mean")  # fmt: skip


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def configs(request) -> tuple[object, EsmFold2Config]:
    config = tiny_reference_config(**OVERRIDES)
    config._attn_implementation = request.param
    return config, EsmFold2Config.from_dict(config.to_dict())


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    randomize_(module, torch.Generator().manual_seed(seed))
    return module.eval()


def padded_batch(sequences: list[str] = SEQUENCES) -> dict[str, torch.Tensor]:
    """``prepare_protein_features`` of each sequence, right-padded into one batch (tokens, atoms, MSA columns)."""
    features = [protein_utils.prepare_protein_features(s) for s in sequences]
    num_tokens = max(len(s) for s in sequences)
    num_atoms = max(f["ref_pos"].shape[1] for f in features)

    def pad(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
        widths = [0, 0] * (x.dim() - 1 - dim) + [0, length - x.shape[dim]]
        return F.pad(x, widths)

    batch = {k: torch.cat([pad(f[k], 1, num_atoms) for f in features]) for k in ATOM_KEYS}
    batch |= {k: torch.cat([pad(f[k], 1, num_tokens) for f in features]) for k in TOKEN_KEYS}
    for k in ("msa", "msa_attention_mask"):
        batch[k] = torch.cat([pad(f[k], 2, num_tokens) for f in features])
    batch["token_bonds"] = torch.cat([pad(pad(f["token_bonds"], 1, num_tokens), 2, num_tokens) for f in features])
    return batch


def complex_features(homodimer: bool) -> dict[str, torch.Tensor]:
    """Two chains as one complex (batch of 1): chain B's tokens and atoms after chain A's (A's padding atoms
    dropped), asym ids 0 and 1; a homodimer shares one entity with sym ids 0 and 1, a heterodimer has two entities."""
    first, second = (protein_utils.prepare_protein_features(s) for s in (SEQUENCES[0], SEQUENCES[0] if homodimer
                                                                           else SEQUENCES[1]))  # fmt: skip
    num_first, real_atoms = first["res_type"].shape[1], int(first["atom_attention_mask"].sum())
    num_second = second["res_type"].shape[1]
    chain = torch.cat([torch.zeros(num_first), torch.ones(num_second)]).long()[None]
    out = {k: torch.cat([first[k][:, :real_atoms], second[k]], dim=1) for k in ATOM_KEYS}
    for k in ("atom_to_token", "ref_space_uid"):
        out[k] = torch.cat([first[k][:, :real_atoms], second[k] + num_first], dim=1)
    out |= {k: torch.cat([first[k], second[k]], dim=-1) for k in TOKEN_KEYS + ("msa", "msa_attention_mask")}
    out["token_index"] = torch.arange(num_first + num_second)[None]
    out["asym_id"] = chain
    out["sym_id"] = chain if homodimer else torch.zeros_like(chain)
    out["entity_id"] = torch.ones_like(chain) if homodimer else chain + 1
    out["token_bonds"] = torch.zeros(1, num_first + num_second, num_first + num_second, 1)
    return out


def reference_prepared(ref_config, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``EsmFold2Model._prepare_features`` (it reads only ``self.config``)."""
    return reference.EsmFold2Model._prepare_features(
        SimpleNamespace(config=ref_config),
        res_type=batch["res_type"],
        attention_mask=batch["attention_mask"],
        msa=batch["msa"],
        msa_attention_mask=batch["msa_attention_mask"],
        deletion_mean=batch["deletion_mean"],
        ref_element=batch["ref_element"],
        ref_atom_name_chars=batch["ref_atom_name_chars"],
        atom_attention_mask=batch["atom_attention_mask"],
        atom_to_token=batch["atom_to_token"],
    )


def test_features_have_padding():
    batch = padded_batch()
    assert not batch["attention_mask"].all() and (~batch["atom_attention_mask"]).sum(1).min() > 8


@pytest.mark.parametrize("msa", [True, False])
def test_prepare_features(configs, msa):
    ref_config, config = configs
    batch = padded_batch()
    if not msa:
        batch["msa"] = batch["msa_attention_mask"] = None
    res_one_hot, profile, _, element, chars, atom_to_token = reference_prepared(ref_config, batch)
    ours_one_hot = residue_one_hot(batch["res_type"], batch["attention_mask"], config.num_res_types)
    torch.testing.assert_close(ours_one_hot, res_one_hot, atol=0, rtol=0)
    torch.testing.assert_close(residue_one_hot(ours_one_hot, batch["attention_mask"], 33), res_one_hot)
    if msa:
        ours_profile = msa_profile(batch["msa"], batch["msa_attention_mask"], config.num_res_types)
        torch.testing.assert_close(ours_profile, profile, atol=0, rtol=0)
        unmasked = reference.EsmFold2Model._prepare_features(
            SimpleNamespace(config=ref_config), batch["res_type"], batch["attention_mask"], batch["msa"], None,
            None, batch["ref_element"], batch["ref_atom_name_chars"], batch["atom_attention_mask"],
            batch["atom_to_token"],
        )[1]  # fmt: skip
        torch.testing.assert_close(msa_profile(batch["msa"], None, config.num_res_types), unmasked)
    else:
        torch.testing.assert_close(profile, res_one_hot, atol=0, rtol=0)
    atoms = encode_atoms(config, **{k: batch[k] for k in ATOM_KEYS})
    torch.testing.assert_close(atoms.ref_element, element, atol=0, rtol=0)
    torch.testing.assert_close(atoms.ref_atom_name_chars, chars, atol=0, rtol=0)
    torch.testing.assert_close(atoms.atom_to_token, atom_to_token, atol=0, rtol=0)


RELPOS_CASES = {"padded batch": padded_batch, "heterodimer": lambda: complex_features(homodimer=False),
                "homodimer": lambda: complex_features(homodimer=True)}  # fmt: skip
POSITION_KEYS = ("residue_index", "asym_id", "sym_id", "entity_id", "token_index")


@pytest.mark.parametrize("case", sorted(RELPOS_CASES))
def test_relative_position(configs, case):
    ref_config, config = configs
    ref = randomized(reference.EsmFold2RelativePositionEncoding(ref_config))
    ours = RelativePositionEncoding(config)
    ours.load_state_dict(ref.state_dict(), strict=True)
    features = {k: RELPOS_CASES[case]()[k] for k in POSITION_KEYS}
    with torch.no_grad():
        torch.testing.assert_close(ours(**features), ref(**features), **TOL)


def test_relative_position_random_indices(configs):
    """Random chains, copies, entities and residue indices (repeats included: several tokens of one residue)."""
    ref_config, config = configs
    ref = randomized(reference.EsmFold2RelativePositionEncoding(ref_config), seed=1)
    ours = RelativePositionEncoding(config)
    ours.load_state_dict(ref.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(2)
    features = {k: torch.randint(0, 4 if k != "residue_index" else 12, (3, 15), generator=generator)
                for k in POSITION_KEYS}  # fmt: skip
    features["token_index"] = torch.arange(15).expand(3, 15)
    with torch.no_grad():
        torch.testing.assert_close(ours(**features), ref(**features), **TOL)


@pytest.mark.parametrize("case", sorted(RELPOS_CASES))
def test_input_embedder(configs, case):
    ref_config, config = configs
    ref = randomized(reference.EsmFold2InputEmbedder(ref_config), seed=3)
    ours = InputEmbedder(config)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    batch = RELPOS_CASES[case]()
    generator = torch.Generator().manual_seed(4)
    batch["token_bonds"] = (torch.rand(batch["token_bonds"].shape, generator=generator) < 0.2).float()
    batch["deletion_mean"] = torch.rand(batch["deletion_mean"].shape, generator=generator)
    res_one_hot, profile, deletion_mean, element, chars, atom_to_token = reference_prepared(ref_config, batch)
    raw_atoms = {k: batch[k] for k in ATOM_KEYS}
    ref_atoms = reference.EsmFold2AtomInputs(
        **raw_atoms | dict(ref_element=element, ref_atom_name_chars=chars, atom_to_token=atom_to_token)
    )
    positions = {k: batch[k] for k in POSITION_KEYS}
    with torch.no_grad():
        expected = ref(ref_atoms, res_one_hot, profile, deletion_mean, token_bonds=batch["token_bonds"],
                       num_tokens=res_one_hot.shape[1], **positions)  # fmt: skip
        got = ours(
            encode_atoms(config, **raw_atoms),
            residue_one_hot(batch["res_type"], batch["attention_mask"], config.num_res_types),
            token_bonds=batch["token_bonds"],
            profile=msa_profile(batch["msa"], batch["msa_attention_mask"], config.num_res_types),
            deletion_mean=batch["deletion_mean"],
            **positions,
        )
    for name, ours_value, ref_value in zip(got._fields, got, expected, strict=True):
        torch.testing.assert_close(ours_value, ref_value, **TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_input_embedder_defaults_without_msa(configs):
    """No profile and no deletion mean: the residue types and zeros, as the reference's forward without an MSA."""
    _, config = configs
    ours = randomized(InputEmbedder(config), seed=5)
    batch = padded_batch()
    atoms = encode_atoms(config, **{k: batch[k] for k in ATOM_KEYS})
    one_hot = residue_one_hot(batch["res_type"], batch["attention_mask"], config.num_res_types)
    positions = {k: batch[k] for k in POSITION_KEYS}
    with torch.no_grad():
        default = ours(atoms, one_hot, token_bonds=batch["token_bonds"], **positions)
        explicit = ours(atoms, one_hot, token_bonds=batch["token_bonds"], profile=one_hot,
                        deletion_mean=torch.zeros(one_hot.shape[:2]), **positions)  # fmt: skip
    for a, b in zip(default, explicit, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
