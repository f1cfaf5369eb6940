"""Prediction → PDB / mmCIF text, read back with biotite: residues, atoms, coordinates, B-factors, chains."""

import io

import biotite.structure as struc
import gemmi
import numpy as np
import pytest
import torch
from biotite.structure.io import pdb, pdbx

from esmfold_lite.fold.chains import encode_batch
from esmfold_lite.geometry.residue_constants import atom_types, resnames, restype_atom37_mask, restypes_with_x
from esmfold_lite.io.modelcif import MODELCIF_DICTIONARY
from esmfold_lite.io.pdbx_polymer import SEQUENCE_LINE, PolymerChain
from esmfold_lite.io.structure import load_structure, to_atom_array, to_mmcif_string, to_pdb_string
from esmfold_lite.prediction import Prediction

SEQUENCES = ["MKTAYIAKQRX", "ACDEFGHIKLMNPQRSTVWY:GGSW:HHC"]  # one chain with an unknown residue; three chains


def _prediction(per_atom_plddt: bool = True, sequences: list[str] = SEQUENCES) -> Prediction:
    g = torch.Generator().manual_seed(0)
    batch = encode_batch(sequences)
    B, L = batch.aatype.shape
    atom_mask = torch.as_tensor(restype_atom37_mask, dtype=torch.float32)[batch.aatype] * batch.linker_mask[..., None]
    atom_plddt = 100 * torch.rand(B, L, 37, generator=g)
    return Prediction(
        positions=50 * torch.randn(B, L, 37, 3, generator=g),
        atom_mask=atom_mask,
        plddt=atom_plddt[..., 1],
        mean_plddt=(atom_plddt * atom_mask).sum((1, 2)) / atom_mask.sum((1, 2)),
        ptm=torch.rand(B, generator=g),
        pae=30 * torch.rand(B, L, L, generator=g),
        aatype=batch.aatype,
        residue_index=batch.residue_index,
        chain_index=batch.chain_index.clamp(min=0),
        mask=batch.linker_mask,
        sequences=sequences,
        atom_plddt=atom_plddt if per_atom_plddt else None,
        distogram_logits=torch.randn(B, L, L, 64, generator=g),
    )


def _read_pdb(text: str) -> struc.AtomArray:
    return pdb.PDBFile.read(io.StringIO(text)).get_structure(model=1, extra_fields=["b_factor", "occupancy"])


def _read_mmcif(text: str) -> struc.AtomArray:
    return pdbx.get_structure(pdbx.CIFFile.read(io.StringIO(text)), model=1, extra_fields=["b_factor", "occupancy"])


def _expected(pred: Prediction, i: int):
    """Per written atom: residue (row in the sequence without padding/linkers), atom37 index, chain letter."""
    one = pred.select(i)
    res, atom = np.nonzero(one.atom_mask[0].numpy() > 0.5)
    chains = np.array(list("ABC"))[one.chain_index[0].numpy()[res]]
    return one, res, atom, chains


@pytest.mark.parametrize("read, write", [(_read_pdb, Prediction.to_pdb), (_read_mmcif, Prediction.to_mmcif)])
@pytest.mark.parametrize("i", [0, 1])
def test_written_structure_reads_back(read, write, i):
    pred = _prediction()
    atoms = read(write(pred, i))
    one, res, atom, chains = _expected(pred, i)
    sequence = SEQUENCES[i].replace(":", "")

    assert atoms.array_length() == int(one.atom_mask.sum()) == len(res)
    np.testing.assert_allclose(atoms.coord, one.positions[0].numpy()[res, atom], atol=1e-3)
    assert list(atoms.atom_name) == [atom_types[a] for a in atom]
    assert list(atoms.element) == [atom_types[a][0] for a in atom]
    np.testing.assert_allclose(atoms.b_factor, one.atom_plddt[0].numpy()[res, atom], atol=5e-3)
    np.testing.assert_array_equal(atoms.occupancy, 1.0)
    assert list(atoms.chain_id) == list(chains)

    # residue names and numbering: every residue with atoms (X has none), numbered from 1 within each chain
    chain_lengths = [len(c) for c in SEQUENCES[i].split(":")]
    numbers = np.concatenate([np.arange(1, n + 1) for n in chain_lengths])
    written = [k for k, aa in enumerate(sequence) if aa != "X"]
    assert struc.get_residue_count(atoms) == len(written)
    _, res_names = struc.get_residues(atoms)
    assert list(res_names) == [resnames["ARNDCQEGHILKMFPSTWYV".index(sequence[k])] for k in written]
    np.testing.assert_array_equal(atoms.res_id, numbers[res])


def test_pdb_records_ter_after_each_chain_and_end():
    text = _prediction().to_pdb(1)
    lines = text.splitlines()
    assert lines[-1] == "END"
    ter = [k for k, line in enumerate(lines) if line.startswith("TER")]
    assert [lines[k][21] for k in ter] == ["A", "B", "C"]
    assert [lines[k][17:20] for k in ter] == ["TYR", "TRP", "CYS"]
    serials = [int(line[6:11]) for line in lines if line.startswith(("ATOM", "TER"))]
    assert serials == list(range(1, len(serials) + 1))  # TER takes its own serial
    assert all(len(line) == 80 for line in lines if line.startswith("ATOM"))


def test_per_residue_b_factors_without_atom_plddt():
    pred = _prediction(per_atom_plddt=False)
    atoms = _read_pdb(pred.to_pdb(0))
    one, res, _, _ = _expected(pred, 0)
    np.testing.assert_allclose(atoms.b_factor, one.plddt[0].numpy()[res], atol=5e-3)


def test_mmcif_has_atom_site_with_b_factor():
    block = pdbx.CIFFile.read(io.StringIO(_prediction().to_mmcif(1, name="my protein"))).block
    assert "B_iso_or_equiv" in block["atom_site"]
    assert "occupancy" in block["atom_site"]


def _cif_rows(block: gemmi.cif.Block, category: str, columns: list[str]) -> list[list[str | None]]:
    """The rows of a category as read by gemmi; "." and "?" become None."""
    return [[None if gemmi.cif.is_null(row[k]) else row.str(k) for k in range(len(columns))]
            for row in block.find(category, columns)]  # fmt: skip


@pytest.mark.parametrize("i", [0, 1])
def test_mmcif_modelcif_scores_read_by_gemmi(tmp_path, i):
    """gemmi finds the ModelCIF QA categories: one local pLDDT per residue equal to its CA atom's B-factor (0-100),
    mean pLDDT and pTM as global scores, every id they refer to declared; gemmi and biotite still read the model."""
    pred = _prediction()
    one = pred.select(i)
    path = tmp_path / "model.cif"
    path.write_text(pred.to_mmcif(i, name="model"))
    block = gemmi.cif.read(str(path)).sole_block()

    metrics = _cif_rows(block, "_ma_qa_metric.", ["id", "name", "description", "type", "mode", "type_other_details",
                                                  "software_group_id"])  # fmt: skip
    ids = {(kind, mode): metric_id for metric_id, _, _, kind, mode, _, _ in metrics}
    assert sorted(ids) == [("pLDDT", "global"), ("pLDDT", "local"), ("pTM", "global")]  # no ipTM: none is computed
    assert all(name and description and other is None for _, name, description, _, _, other, _ in metrics)
    (group,) = {row[-1] for row in metrics}
    assert _cif_rows(block, "_ma_software_group.", ["group_id", "software_id"]) == [[group, "1"]]
    assert _cif_rows(block, "_software.", ["pdbx_ordinal", "name"]) == [["1", "esmfold-lite"]]
    (model,) = {row[0] for row in _cif_rows(block, "_atom_site.", ["pdbx_PDB_model_num"])}
    models = _cif_rows(block, "_ma_model_list.", ["model_id", "data_id", "model_type"])
    assert models == [[model, "1", "Ab initio model"]]
    n_entities = len(set(SEQUENCES[i].split(":")))
    assert _cif_rows(block, "_ma_data.", ["id", "content_type"]) == [["1", "model coordinates"]] + [
        [str(k), "target"] for k in range(2, n_entities + 2)
    ]

    global_rows = _cif_rows(block, "_ma_qa_metric_global.", ["ordinal_id", "model_id", "metric_id", "metric_value"])
    scores = {metric: float(value) for _, model_id, metric, value in global_rows if model_id == model}
    assert scores[ids["pLDDT", "global"]] == pytest.approx(float(one.mean_plddt[0]), abs=0.005)
    assert scores[ids["pTM", "global"]] == pytest.approx(float(one.ptm[0]), abs=5e-5)

    local = _cif_rows(block, "_ma_qa_metric_local.", ["ordinal_id", "model_id", "label_asym_id", "label_seq_id",
                                                      "label_comp_id", "metric_id", "metric_value"])  # fmt: skip
    atom_site = _cif_rows(block, "_atom_site.", ["label_atom_id", "label_asym_id", "label_seq_id", "label_comp_id",
                                                 "B_iso_or_equiv"])  # fmt: skip
    ca = [row[1:] for row in atom_site if row[0] == "CA"]
    assert [row[2:5] + row[6:] for row in local] == ca  # every residue once, same ids and value as its CA
    assert len({tuple(row[2:4]) for row in local}) == len(local) == len(SEQUENCES[i].replace(":", "").replace("X", ""))
    assert [row[0] for row in local] == [str(k) for k in range(1, len(local) + 1)]
    assert {(row[1], row[5]) for row in local} == {(model, ids["pLDDT", "local"])}
    has_atoms = one.atom_mask[0].sum(-1).numpy() > 0
    np.testing.assert_allclose([float(row[-1]) for row in local], one.plddt[0].numpy()[has_atoms], atol=0.005)

    structure = gemmi.read_structure(str(path))
    residues = [residue for chain in structure[0] for residue in chain]
    assert len(residues) == len(local) and sum(len(r) for r in residues) == int(one.atom_mask.sum())
    assert [f"{r['CA'][0].b_iso:.2f}" for r in residues] == [row[-1] for row in local]
    atoms = load_structure(path, extra_fields=("b_factor",))  # our own reader (biotite)
    assert atoms.array_length() == int(one.atom_mask.sum()) and struc.get_residue_count(atoms) == len(local)
    np.testing.assert_allclose(atoms.b_factor, one.atom_plddt[0].numpy()[one.atom_mask[0].numpy() > 0.5], atol=5e-3)


# mmCIF polymer description: a monomer with unknown residues (X; B Z U O fold as X), a heteromer, a homodimer, a
# complex with a repeated chain and one whose first chain has no atoms at all
CIF_CASES = ["MXKTAYBZIAKUOQRX", "ACDEFGHIKLMNPQRSTVWY:GGSW:HHC", "MKTAYX:MKTAYX", "ACDE:GGSW:ACDE", "XXX:MKT"]


def _full_sequence(chain: str) -> str:
    """A chain as the mmCIF's canonical sequence gives it: unknown residues (X B Z U O) are X."""
    return "".join("X" if aa in "XBZUO" else aa for aa in chain)


@pytest.fixture(scope="module")
def cif_files(tmp_path_factory) -> dict[str, str]:
    """The mmCIF file (path) of each of ``CIF_CASES``."""
    pred = _prediction(sequences=CIF_CASES)
    folder = tmp_path_factory.mktemp("cif")
    paths = {}
    for i, sequence in enumerate(CIF_CASES):
        paths[sequence] = str(folder / f"case{i}.cif")
        (folder / f"case{i}.cif").write_text(pred.to_mmcif(i, name=f"case {i}"))
    return paths


@pytest.mark.parametrize("sequence", CIF_CASES)
def test_mmcif_full_sequences_read_by_biotite(cif_files, sequence):
    """biotite's get_sequence (from _entity_poly) gives every chain's full sequence, unknown residues as X, though
    those residues have no atoms; identical chains share an entity, distinct ones do not."""
    file = pdbx.CIFFile.read(cif_files[sequence])
    chains = sequence.split(":")
    sequences = pdbx.get_sequence(file)
    assert {chain: str(seq) for chain, seq in sequences.items()} == {
        "ABC"[k]: _full_sequence(chain) for k, chain in enumerate(chains)
    }
    block = file.block
    asym = block["struct_asym"]
    entity_of = dict(zip(asym["id"].as_array(str), asym["entity_id"].as_array(str), strict=True))
    assert list(entity_of) == list("ABC"[: len(chains)])
    first = {chain: "ABC"[chains.index(chain)] for chain in chains}
    assert [entity_of[first[chain]] == entity_of["ABC"[k]] for k, chain in enumerate(chains)] == [True] * len(chains)
    assert len(set(entity_of.values())) == len(set(chains))
    assert set(block["entity"]["id"].as_array(str)) == set(entity_of.values())
    canonical = block["entity_poly"]["pdbx_seq_one_letter_code_can"].as_array(str)
    assert [c.replace("\n", "") for c in canonical] == [_full_sequence(c) for c in dict.fromkeys(chains)]
    codes = block["entity_poly"]["pdbx_seq_one_letter_code"].as_array(str)
    assert [c.replace("\n", "") for c in codes] == [
        "".join("(UNK)" if aa in "XBZUO" else aa for aa in c) for c in dict.fromkeys(chains)
    ]  # PDBx: the non-standard residue's code in parentheses; X in the canonical sequence
    atoms = pdbx.get_structure(file, model=1)  # the atoms: residues with atoms only
    assert struc.get_residue_count(atoms) == sum(aa not in "XBZUO" for aa in sequence.replace(":", ""))


def _rows(block: gemmi.cif.Block, category: str) -> list[dict[str, str | None]]:
    """All rows of a category as dicts (gemmi); "." and "?" become None."""
    table = block.find_mmcif_category(category + ".")
    assert len(table.tags) > 0, f"no {category}"
    tags = [tag[len(category) + 1 :] for tag in table.tags]
    return [
        {tag: None if gemmi.cif.is_null(row[k]) else gemmi.cif.as_string(row[k]) for k, tag in enumerate(tags)}
        for row in table
    ]


# (child category, child items) → (parent category, parent items): every child key must exist among the parents
LINKS = [
    ("_atom_site", ("label_entity_id",), "_entity", ("id",)),
    ("_atom_site", ("label_asym_id", "label_entity_id"), "_struct_asym", ("id", "entity_id")),
    ("_atom_site", ("label_entity_id", "label_seq_id", "label_comp_id"), "_entity_poly_seq",
     ("entity_id", "num", "mon_id")),
    ("_atom_site", ("label_asym_id", "label_seq_id", "label_comp_id", "auth_seq_id"), "_pdbx_poly_seq_scheme",
     ("asym_id", "seq_id", "mon_id", "auth_seq_num")),
    ("_atom_site", ("label_comp_id",), "_chem_comp", ("id",)),
    ("_atom_site", ("type_symbol",), "_atom_type", ("symbol",)),
    ("_atom_site", ("pdbx_PDB_model_num",), "_ma_model_list", ("ordinal_id",)),
    ("_entity_poly", ("entity_id",), "_entity", ("id",)),
    ("_entity", ("id",), "_entity_poly", ("entity_id",)),
    ("_entity_poly_seq", ("entity_id",), "_entity_poly", ("entity_id",)),
    ("_entity_poly_seq", ("mon_id",), "_chem_comp", ("id",)),
    ("_struct_asym", ("entity_id",), "_entity", ("id",)),
    ("_pdbx_poly_seq_scheme", ("entity_id", "seq_id", "mon_id"), "_entity_poly_seq", ("entity_id", "num", "mon_id")),
    ("_pdbx_poly_seq_scheme", ("asym_id", "entity_id"), "_struct_asym", ("id", "entity_id")),
    ("_struct_asym", ("id", "entity_id"), "_ma_target_entity_instance", ("asym_id", "entity_id")),
    ("_ma_target_entity_instance", ("asym_id", "entity_id"), "_struct_asym", ("id", "entity_id")),
    ("_ma_target_entity_instance", ("entity_id",), "_ma_target_entity", ("entity_id",)),
    ("_entity", ("id",), "_ma_target_entity", ("entity_id",)),
    ("_ma_target_entity", ("entity_id",), "_entity", ("id",)),
    ("_ma_target_entity", ("data_id",), "_ma_data", ("id",)),
    ("_ma_model_list", ("data_id",), "_ma_data", ("id",)),
    ("_ma_data_group", ("data_id",), "_ma_data", ("id",)),
    ("_ma_protocol_step", ("input_data_group_id",), "_ma_data_group", ("group_id",)),
    ("_ma_protocol_step", ("output_data_group_id",), "_ma_data_group", ("group_id",)),
    ("_ma_protocol_step", ("software_group_id",), "_ma_software_group", ("group_id",)),
    ("_ma_software_group", ("software_id",), "_software", ("pdbx_ordinal",)),
    ("_ma_qa_metric", ("software_group_id",), "_ma_software_group", ("group_id",)),
    ("_ma_qa_metric_global", ("model_id",), "_ma_model_list", ("ordinal_id",)),
    ("_ma_qa_metric_global", ("metric_id",), "_ma_qa_metric", ("id",)),
    ("_ma_qa_metric_local", ("model_id",), "_ma_model_list", ("ordinal_id",)),
    ("_ma_qa_metric_local", ("metric_id",), "_ma_qa_metric", ("id",)),
    ("_ma_qa_metric_local", ("label_asym_id", "label_seq_id", "label_comp_id"), "_atom_site",
     ("label_asym_id", "label_seq_id", "label_comp_id")),
]  # fmt: skip


@pytest.mark.parametrize("sequence", CIF_CASES)
def test_mmcif_ids_are_consistent_read_by_gemmi(cif_files, sequence):
    """Every id a category refers to is defined (the ModelCIF dictionary's parent/child links, checked by value):
    atom_site residues are positions of their entity's sequence, each _ma_qa_metric_local row is an atom_site
    residue, and gemmi's model puts every residue at its place in its entity's full sequence."""
    block = gemmi.cif.read(cif_files[sequence]).sole_block()
    assert _rows(block, "_entry") == [{"id": block.name}]
    assert _rows(block, "_audit_conform") == [MODELCIF_DICTIONARY]
    assert MODELCIF_DICTIONARY["dict_name"] == "mmcif_ma.dic"
    for mandatory in ("_ma_model_list", "_ma_data", "_ma_protocol_step"):  # ModelCIF's mandatory categories
        assert _rows(block, mandatory)
    for child, child_items, parent, parent_items in LINKS:
        parents = {tuple(row[k] for k in parent_items) for row in _rows(block, parent)}
        missing = {tuple(row[k] for k in child_items) for row in _rows(block, child)} - parents
        assert not missing, f"{child}.{child_items} not in {parent}.{parent_items}: {sorted(missing)[:3]}"

    chains = sequence.split(":")
    poly_seq = _rows(block, "_entity_poly_seq")
    entity_of = {row["id"]: row["entity_id"] for row in _rows(block, "_struct_asym")}
    for k, chain in enumerate(chains):
        entity_seq = [row for row in poly_seq if row["entity_id"] == entity_of["ABC"[k]]]
        assert [int(row["num"]) for row in entity_seq] == list(range(1, len(chain) + 1))
        assert [row["mon_id"] for row in entity_seq] == [
            resnames[restypes_with_x.index(aa)] for aa in _full_sequence(chain)
        ]
        scheme = [row for row in _rows(block, "_pdbx_poly_seq_scheme") if row["asym_id"] == "ABC"[k]]
        assert [row["auth_seq_num"] is None for row in scheme] == [aa in "XBZUO" for aa in chain]  # no atoms: "?"
    local = _rows(block, "_ma_qa_metric_local")
    atom_residues = {(row["label_asym_id"], row["label_seq_id"]) for row in _rows(block, "_atom_site")}
    assert {(row["label_asym_id"], row["label_seq_id"]) for row in local} == atom_residues
    assert len(local) == len(atom_residues)

    structure = gemmi.read_structure(cif_files[sequence])
    entities = {entity.name: entity for entity in structure.entities}
    assert {name: entity.full_sequence for name, entity in entities.items()} == {
        entity_of["ABC"[k]]: [resnames[restypes_with_x.index(aa)] for aa in _full_sequence(chain)]
        for k, chain in enumerate(chains)
    }
    assert all(entity.entity_type == gemmi.EntityType.Polymer for entity in entities.values())
    assert all(entity.polymer_type == gemmi.PolymerType.PeptideL for entity in entities.values())
    residues = [residue for chain in structure[0] for residue in chain]
    assert len(residues) == sum(aa not in "XBZUO" for aa in sequence.replace(":", ""))
    for residue in residues:
        assert entities[residue.entity_id].full_sequence[residue.label_seq - 1] == residue.name
        assert residue.subchain in entities[residue.entity_id].subchains


def test_mmcif_long_sequences_are_wrapped_and_read_back(tmp_path):
    """A long chain's one-letter sequences are lines of at most SEQUENCE_LINE characters, "(UNK)" never split, and
    readers join them back."""
    sequence = ("ACDEFGHIKLMNPQRSTVWYX" * 10)[:-1]
    path = tmp_path / "long.cif"
    path.write_text(_prediction(sequences=[sequence]).to_mmcif(0, name="long"))
    poly = pdbx.CIFFile.read(path).block["entity_poly"]
    for key in ("pdbx_seq_one_letter_code", "pdbx_seq_one_letter_code_can"):
        lines = poly[key].as_array(str)[0].split("\n")
        assert len(lines) > 1 and all(len(line) <= SEQUENCE_LINE for line in lines)
        assert all(line.count("(") == line.count(")") for line in lines)
    assert str(pdbx.get_sequence(pdbx.CIFFile.read(path))["A"]) == sequence
    (entity,) = gemmi.read_structure(str(path)).entities
    assert len(entity.full_sequence) == len(sequence)


def test_mmcif_without_sequences_describes_the_residues_it_has():
    """Atoms alone (no full sequences given): the entities are the residues present; a residue that is not in the
    sequences given is refused."""
    atoms = _prediction().to_atom_array(1)
    file = pdbx.CIFFile.read(io.StringIO(to_mmcif_string(atoms, name="atoms")))
    assert {c: str(s) for c, s in pdbx.get_sequence(file).items()} == dict(
        zip("ABC", SEQUENCES[1].split(":"), strict=True)
    )
    assert "ma_qa_metric" not in file.block and "audit_conform" not in file.block  # no scores: plain PDBx
    short = [PolymerChain("A", ("ALA",), (1,))]
    with pytest.raises(ValueError, match="not in its sequence"):
        to_mmcif_string(atoms, chains=short)
    with pytest.raises(ValueError, match="unique"):
        PolymerChain("A", ("ALA", "GLY"), (1, 1))


def test_select_cuts_padding_and_linkers():
    pred = _prediction()
    assert len(pred) == 2
    assert pred.lengths.tolist() == [11, 27]
    one = pred.select(1)
    keep = pred.mask[1].bool()
    assert one.positions.shape == (1, 27, 37, 3)
    assert one.pae.shape == (1, 27, 27) and one.distogram_logits.shape == (1, 27, 27, 64)
    assert torch.equal(one.pae[0], pred.pae[1][keep][:, keep])
    assert one.sequences == [SEQUENCES[1]] and torch.equal(one.ptm, pred.ptm[1:])
    assert one.chain_index[0].tolist() == [0] * 20 + [1] * 4 + [2] * 3


def test_to_atom_array_accepts_numpy_and_rejects_bad_input():
    positions = np.zeros((2, 37, 3))
    atom_mask = restype_atom37_mask[[0, 7]]
    atoms = to_atom_array(positions, atom_mask, np.array([0, 7]), np.array([5, 6]), b_factors=np.array([10.0, 90.0]))
    assert list(atoms.res_name[atoms.atom_name == "CA"]) == ["ALA", "GLY"]
    assert list(atoms.chain_id) == ["A"] * atoms.array_length()
    assert atoms.b_factor.tolist() == [10.0] * 5 + [90.0] * 4
    with pytest.raises(ValueError, match="chain_index"):
        to_atom_array(positions, atom_mask, np.array([0, 7]), np.array([5, 6]), chain_index=np.array([0, -1]))
    with pytest.raises(ValueError, match="expected"):
        to_atom_array(positions, atom_mask, np.array([0, 7]), np.array([5, 6]), b_factors=np.zeros(3))
    with pytest.raises(ValueError, match="no atoms"):
        to_pdb_string(to_atom_array(positions, np.zeros((2, 37)), np.array([20, 20]), np.array([1, 2])))
