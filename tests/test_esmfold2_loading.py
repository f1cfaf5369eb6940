"""``load_esmfold2`` on a transformers ``EsmFold2Model`` folder (``save_pretrained``: config.json + safetensors, one
file or shards): the loaded model folds as the reference after the same ``torch.manual_seed`` (every parameter and
the Fourier buffers randomized); a folder with an MSA encoder loads without it and folds as the reference given no
MSA; half precision keeps the reference's fp32 tensors; a bad config or a missing tensor is refused by name.

Bound: atol 1e-4 + rtol 1e-4 on coordinates and pTM, as tests/test_esmfold2_model.py (the whole fold's fp32 rounding).
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from esmfold2_reference import FEATURE_OVERRIDES, randomized_reference, tiny_reference_config
from safetensors.torch import load_file, save_file

from esmfold_lite.esmfold2.load import load_esmfold2
from esmfold_lite.weights.cast import _file_mappings
from esmfold_lite.weights.esmfold2_format import is_transformers_esmfold2
from esmfold_lite.weights.safe_pickle import CheckpointError

modeling = pytest.importorskip("transformers.models.esmfold2.modeling_esmfold2")
protein_utils = pytest.importorskip("transformers.models.esmfold2.protein_utils")

TOL = dict(atol=1e-4, rtol=1e-4)
MSA_INPUTS = ("msa", "msa_attention_mask", "has_deletion", "deletion_value")
TINY_MSA_ENCODER = dict(
    enabled=True, hidden_size=8, outer_hidden_size=4, num_hidden_layers=2, num_attention_heads=2, head_dim=4,
    intermediate_size=16,
)  # fmt: skip


def _saved(tmp_path, name: str, **overrides) -> tuple[object, object]:
    reference = randomized_reference(tiny_reference_config(**FEATURE_OVERRIDES, **overrides), seed=3)
    folder = tmp_path / name
    reference.save_pretrained(folder, **({"max_shard_size": "100KB"} if name == "sharded" else {}))
    return reference, folder


def _assert_same_fold(reference, ours, reference_features: dict, our_features: dict, seed: int = 7) -> None:
    settings = dict(num_diffusion_samples=2, num_sampling_steps=2)
    with torch.no_grad():
        torch.manual_seed(seed)
        expected = reference.fold(**reference_features, **settings)
        torch.manual_seed(seed)
        got = ours(**our_features, num_samples=2, num_steps=2)
    mask = reference_features["atom_attention_mask"].repeat_interleave(2, 0)
    torch.testing.assert_close(got.sample_atom_coords[mask], expected.sample_atom_coords[mask], **TOL)
    assert expected.sample_atom_coords[mask].abs().max() > 1.0
    torch.testing.assert_close(got.confidence.ptm, expected.ptm, **TOL)


@pytest.mark.parametrize("name", ["single", "sharded"])
def test_folds_as_the_reference(tmp_path, name):
    reference, folder = _saved(tmp_path, name)
    if name == "sharded":
        assert (folder / "model.safetensors.index.json").is_file()
    assert is_transformers_esmfold2(folder)
    ours = load_esmfold2(folder)
    features = protein_utils.prepare_protein_features("MKTAYIAKQRWG")
    ours_features = {k: v for k, v in features.items() if k not in ("has_deletion", "deletion_value")}
    _assert_same_fold(reference, ours, features, ours_features)


def test_tensors_stay_memory_mapped(tmp_path):
    """Every tensor in its stored dtype is the folder's mapped pages, not a copy; only ESM C's fused matrices
    (q, k, v -> qkv; gate, up -> w_in: ``esmc_format``) are built anew."""
    _, folder = _saved(tmp_path, "single")
    state = load_esmfold2(folder).state_dict()
    ranges = _file_mappings()
    copied = {
        key
        for key, value in state.items()
        if not any(start <= value.untyped_storage().data_ptr() < end for start, end in ranges)
    }
    assert copied and all(key.endswith(("attention.qkv.weight", "ffn.w_in.weight")) for key in copied)


def test_an_msa_encoder_is_left_out(tmp_path):
    """The reference skips its MSA encoder when given no MSA; the loaded model (without it) folds the same."""
    reference, folder = _saved(tmp_path, "msa", msa_encoder=TINY_MSA_ENCODER)
    assert any(key.startswith("msa_encoder.") for key in reference.state_dict())
    ours = load_esmfold2(folder)
    assert not any(key.startswith("msa_encoder.") for key in ours.state_dict())
    features = protein_utils.prepare_protein_features("MKTAYIAKQRWG")
    no_msa = {k: v for k, v in features.items() if k not in MSA_INPUTS}
    _assert_same_fold(reference, ours, no_msa, no_msa)


def test_half_precision_keeps_the_reference_fp32_tensors(tmp_path):
    _, folder = _saved(tmp_path, "single")
    expected = modeling.EsmFold2Model.from_pretrained(folder, dtype=torch.bfloat16).state_dict()
    expected_fp32 = {k for k, v in expected.items() if v.dtype == torch.float32 and not k.startswith("esmc.")}
    ours = load_esmfold2(folder, dtype=torch.bfloat16)
    state = ours.state_dict()
    fp32 = {k for k, v in state.items() if v.dtype == torch.float32}
    assert {k for k in fp32 if not k.startswith("esmc.")} == expected_fp32
    assert "esmc.final_norm.weight" in fp32 and "esmc.layers.0.attention.qkv.weight" not in fp32
    assert {v.dtype for k, v in state.items() if k not in fp32 and v.is_floating_point()} == {torch.bfloat16}


def test_an_absurd_config_is_refused_at_once(tmp_path):
    _, folder = _saved(tmp_path, "single")
    config = json.loads((folder / "config.json").read_text())
    config["folding_trunk_num_hidden_layers"] = 10**6
    (folder / "config.json").write_text(json.dumps(config))
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="folding_trunk_num_hidden_layers is 1000000"):
        load_esmfold2(folder)
    assert time.monotonic() - start < 10  # generous: refused before any module is built


def test_a_config_that_does_not_fit_names_the_field(tmp_path):
    _, folder = _saved(tmp_path, "single")
    config = json.loads((folder / "config.json").read_text())
    config["esmc_config"]["num_hidden_layers"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"esmc_config\.num_hidden_layers is 5"):
        load_esmfold2(folder)


def test_a_missing_tensor_is_named(tmp_path):
    _, folder = _saved(tmp_path, "single")
    state = load_file(str(folder / "model.safetensors"))
    del state["parcae.out_proj.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing keys: .*parcae\.out_proj\.weight"):
        load_esmfold2(folder)


def test_not_an_esmfold2_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "esm"}))
    assert not is_transformers_esmfold2(tmp_path)
    with pytest.raises(CheckpointError, match="not the config of a transformers EsmFold2Model"):
        load_esmfold2(tmp_path)
