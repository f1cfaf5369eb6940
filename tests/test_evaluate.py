import gzip
import json

import biotite.structure as struc
import numpy as np
import pytest
from biotite.structure.io import pdb, pdbx

from esmfold_lite.cli import main
from esmfold_lite.evaluate import evaluate_structures, superpose, tm_d0, tm_score
from esmfold_lite.geometry.residue_constants import restype_1to3

UBIQUITIN = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"


def backbone_trace(n: int, seed: int) -> np.ndarray:
    """(n, 3) Cα positions 3.8 Å apart: a persistent random walk, compact enough to have lDDT contacts."""
    rng = np.random.default_rng(seed)
    step = np.array([1.0, 0.0, 0.0])
    xyz = [np.zeros(3)]
    for _ in range(n - 1):
        step = step + 0.9 * rng.normal(size=3)
        step /= np.linalg.norm(step)
        xyz.append(xyz[-1] + 3.8 * step)
    return np.array(xyz)


def make_structure(ca: np.ndarray, sequence: str, chain_id: str = "A", first_number: int = 1) -> struc.AtomArray:
    """Backbone N, CA, C atoms (N and C placed 1.45 / 1.52 Å from Cα) of one chain."""
    atoms = []
    for i, (xyz, letter) in enumerate(zip(ca, sequence, strict=True)):
        for name, element, offset in (("N", "N", [-1.45, 0, 0]), ("CA", "C", [0, 0, 0]), ("C", "C", [0, 1.52, 0])):
            atoms.append(
                struc.Atom(
                    xyz + np.array(offset),
                    chain_id=chain_id,
                    res_id=first_number + i,
                    res_name=restype_1to3.get(letter, "UNK"),
                    atom_name=name,
                    element=element,
                    hetero=False,
                )
            )
    return struc.array(atoms)


def write(path, atoms: struc.AtomArray):
    if path.name.endswith((".cif", ".cif.gz")):
        file = pdbx.CIFFile()
        pdbx.set_structure(file, atoms)
    else:
        file = pdb.PDBFile()
        file.set_structure(atoms)
    file.write(str(path).removesuffix(".gz"))
    if path.name.endswith(".gz"):
        raw = path.with_name(path.name.removesuffix(".gz"))
        path.write_bytes(gzip.compress(raw.read_bytes()))
        raw.unlink()
    return path


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.fixture(scope="module")
def ubiquitin_ca():
    return backbone_trace(len(UBIQUITIN), seed=0)


def test_identical(tmp_path, ubiquitin_ca):
    path = write(tmp_path / "ref.pdb", make_structure(ubiquitin_ca, UBIQUITIN))
    scores = evaluate_structures(path, path)
    assert scores["aligned_residues"] == scores["ref_residues"] == scores["pred_residues"] == 76
    assert scores["rmsd"] == pytest.approx(0.0, abs=1e-5)
    assert scores["tm_score"] == pytest.approx(1.0, abs=1e-9)
    assert scores["lddt"] == pytest.approx(1.0, abs=1e-9)
    assert scores["sequence_identity"] == 1.0


def test_rotated_and_translated_copy(tmp_path, ubiquitin_ca):
    ref = write(tmp_path / "ref.pdb", make_structure(ubiquitin_ca, UBIQUITIN))
    moved = ubiquitin_ca @ random_rotation(1) + np.array([30.0, -12.0, 7.5])
    pred = write(tmp_path / "pred.cif.gz", make_structure(moved, UBIQUITIN))  # also: mmCIF, gzip
    scores = evaluate_structures(pred, ref)
    assert scores["rmsd"] < 5e-3  # files store 3 decimals
    assert scores["tm_score"] == pytest.approx(1.0, abs=1e-5)
    assert scores["lddt"] == pytest.approx(1.0, abs=1e-9)


def test_perturbed_copy(tmp_path, ubiquitin_ca):
    ref_atoms = make_structure(ubiquitin_ca, UBIQUITIN)
    noisy = ubiquitin_ca + np.random.default_rng(2).normal(scale=0.5, size=ubiquitin_ca.shape)
    pred_atoms = make_structure(noisy @ random_rotation(3), UBIQUITIN)
    scores = evaluate_structures(write(tmp_path / "p.pdb", pred_atoms), write(tmp_path / "r.pdb", ref_atoms))
    # 0.5 Å per coordinate: RMSD ~ 0.5 * sqrt(3) minus what the fit absorbs; pair deviations ~ 0.7 Å
    assert 0.7 < scores["rmsd"] < 0.95
    assert 0.75 < scores["lddt"] < 0.92
    assert 0.8 < scores["tm_score"] < 0.95
    # cross-checks with biotite: the same RMSD, and our TM-score search can only beat the RMSD superposition
    ref_ca, pred_ca = ref_atoms[ref_atoms.atom_name == "CA"], pred_atoms[pred_atoms.atom_name == "CA"]
    fitted, _ = struc.superimpose(ref_ca, pred_ca)
    assert scores["rmsd"] == pytest.approx(float(struc.rmsd(ref_ca, fitted)), abs=2e-3)
    index = np.arange(76)
    at_rmsd_fit = struc.tm_score(ref_ca, fitted, index, index, reference_length="reference")
    assert at_rmsd_fit - 1e-3 <= scores["tm_score"] <= 1.0
    much_worse = make_structure(ubiquitin_ca + np.random.default_rng(4).normal(scale=3.0, size=(76, 3)), UBIQUITIN)
    worse = evaluate_structures(write(tmp_path / "w.pdb", much_worse), tmp_path / "r.pdb")
    assert worse["tm_score"] < scores["tm_score"] and worse["lddt"] < scores["lddt"] and worse["rmsd"] > 3


def test_tm_d0():
    assert tm_d0(10) == tm_d0(21) == 0.5
    assert tm_d0(100) == pytest.approx(1.24 * 85 ** (1 / 3) - 1.8)
    assert tm_d0(100) == pytest.approx(3.6521, abs=1e-4)


def test_tm_score_hand_computed():
    # 6 residues, d0 = 0.5 Å: five exact, one 10 Å away -> (5 + 1 / (1 + (10 / 0.5)^2)) / 6
    ref = backbone_trace(6, seed=5)
    pred = ref.copy()
    pred[5] += np.array([0.0, 10.0, 0.0])
    assert tm_score(pred, ref) == pytest.approx((5 + 1 / 401) / 6, abs=1e-6)
    # 30 residues, d0 = 1.24 * 15^(1/3) - 1.8: twenty exact, ten shifted by 50 Å
    ref = backbone_trace(30, seed=6)
    pred = ref.copy()
    pred[20:] += np.array([30.0, 40.0, 0.0])
    d0 = 1.24 * 15 ** (1 / 3) - 1.8
    assert tm_score(pred, ref) == pytest.approx((20 + 10 / (1 + (50 / d0) ** 2)) / 30, abs=1e-6)
    # normalised by a longer reference: the same sum over 40 with that length's d0
    d0 = tm_d0(40)
    assert tm_score(pred, ref, reference_length=40) == pytest.approx((20 + 10 / (1 + (50 / d0) ** 2)) / 40, abs=1e-6)


def test_superpose_never_reflects():
    ref = backbone_trace(20, seed=7)
    mirrored = ref * np.array([1.0, 1.0, -1.0])
    rotation, _ = superpose(mirrored, ref, np.ones((1, 20)))
    assert np.linalg.det(rotation[0]) == pytest.approx(1.0)
    rotation, translation = superpose(ref @ random_rotation(8) + 5.0, ref, np.ones((1, 20)))
    assert np.allclose((ref @ random_rotation(8) + 5.0) @ rotation[0] + translation[0], ref, atol=1e-9)


def test_partial_prediction_normalised_by_reference(tmp_path):
    ca = backbone_trace(40, seed=9)
    sequence = UBIQUITIN[:40]
    ref = write(tmp_path / "ref.pdb", make_structure(ca, sequence))
    pred = write(tmp_path / "pred.pdb", make_structure(ca[5:35], sequence[5:35], first_number=6))
    scores = evaluate_structures(pred, ref)
    assert (scores["aligned_residues"], scores["pred_residues"], scores["ref_residues"]) == (30, 30, 40)
    assert scores["tm_score"] == pytest.approx(30 / 40, abs=1e-6)
    assert scores["rmsd"] == pytest.approx(0.0, abs=1e-5)


def test_renumbered_reference_needs_sequence_matching(tmp_path):
    ca = backbone_trace(50, seed=10)
    sequence = UBIQUITIN[:50]
    pred = write(tmp_path / "pred.pdb", make_structure(ca, sequence))
    shifted = write(tmp_path / "shifted.pdb", make_structure(ca[3:], sequence[3:], first_number=1))
    with pytest.raises(ValueError, match="differ in type"):
        evaluate_structures(pred, shifted)
    scores = evaluate_structures(pred, shifted, match="sequence")
    assert scores["aligned_residues"] == 47 and scores["tm_score"] == pytest.approx(1.0, abs=1e-6)
    far = write(tmp_path / "far.pdb", make_structure(ca, sequence, first_number=1001))
    with pytest.raises(ValueError, match="only 0 residues matched"):
        evaluate_structures(pred, far)
    assert evaluate_structures(pred, far, match="sequence")["aligned_residues"] == 50


def test_chain_pairing(tmp_path):
    ca_a, ca_b = backbone_trace(21, seed=11), backbone_trace(30, seed=12) + 20.0
    a, b = "GIVEQCCTSICSLYQLENYCN", "FVNQHLCGSHLVEALYLVCGERGFFYTPKT"
    pred = write(tmp_path / "pred.pdb", make_structure(ca_a, a, "A") + make_structure(ca_b, b, "B"))
    ref = write(tmp_path / "ref.pdb", make_structure(ca_a, a, "H") + make_structure(ca_b, b, "L"))
    scores = evaluate_structures(pred, ref)
    assert scores["chains"] == {"A": "H", "B": "L"} and scores["aligned_residues"] == 51
    assert scores["tm_score"] == pytest.approx(1.0, abs=1e-6)
    only_b = evaluate_structures(pred, ref, chain_map={"B": "L"})
    assert only_b["aligned_residues"] == only_b["ref_residues"] == 30
    with pytest.raises(ValueError, match="differ in type"):
        evaluate_structures(pred, ref, chain_map={"A": "L", "B": "H"})
    with pytest.raises(ValueError, match="do not exist"):
        evaluate_structures(pred, ref, chain_map={"C": "H"})
    single = write(tmp_path / "single.pdb", make_structure(ca_b, b, "Z"))
    with pytest.raises(ValueError, match="cannot pair"):
        evaluate_structures(pred, single)
    # a reference with a subset of the prediction's chain ids: those pair
    only_b_ref = write(tmp_path / "only_b.pdb", make_structure(ca_b, b, "B"))
    subset = evaluate_structures(pred, only_b_ref)
    assert subset["chains"] == {"B": "B"} and subset["tm_score"] == pytest.approx(1.0, abs=1e-6)
    # chains paired wrongly are found by their sequences, also when matched by sequence
    swapped = write(tmp_path / "swapped.pdb", make_structure(ca_b, b, "A") + make_structure(ca_a, a, "B"))
    with pytest.raises(ValueError, match=r"chain A and reference chain A are \d+% identical where aligned"):
        evaluate_structures(pred, swapped, match="sequence")
    fixed = evaluate_structures(pred, swapped, match="sequence", chain_map={"A": "B", "B": "A"})
    assert fixed["sequence_identity"] == 1.0 and fixed["tm_score"] == pytest.approx(1.0, abs=1e-6)


def test_unreadable_inputs(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="unknown structure format"):
        evaluate_structures(bad, bad)
    water = struc.array(
        [struc.Atom([0.0, 0.0, 0.0], chain_id="A", res_id=1, res_name="HOH", atom_name="O", element="O", hetero=True)]
    )
    empty = write(tmp_path / "water.pdb", water)
    with pytest.raises(ValueError, match="no amino-acid"):
        evaluate_structures(empty, empty)
    garbage = tmp_path / "garbage.cif"
    garbage.write_bytes(b"\x00\xff not a cif")
    with pytest.raises(ValueError, match="cannot read"):
        evaluate_structures(garbage, garbage)


def test_cli(tmp_path, ubiquitin_ca, capsys):
    ref = write(tmp_path / "ref.pdb", make_structure(ubiquitin_ca, UBIQUITIN))
    pred = write(tmp_path / "pred.cif", make_structure(ubiquitin_ca @ random_rotation(13), UBIQUITIN))
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(pred), str(ref), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "TM-score" in printed and "lDDT" in printed and "RMSD" in printed
    scores = json.loads(out.read_text())
    assert scores["aligned_residues"] == 76 and scores["tm_score"] == pytest.approx(1.0, abs=1e-5)
    assert main(["evaluate", str(pred), str(ref), "--match", "sequence", "--chains", "A=A"]) == 0

    assert main(["evaluate", str(tmp_path / "missing.pdb"), str(ref)]) == 1
    assert main(["evaluate", str(pred), str(ref), "--chains", "A"]) == 1
    assert main(["evaluate", str(pred), str(ref), "--chains", "Q=A"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("esmfold-lite evaluate: error:") for line in errors)
