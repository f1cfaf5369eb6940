"""``esmfold-lite embed``: the command line of ``pipeline.embedding.embed_fasta`` (language-model embeddings of FASTA
records or MSAs, one file per input or resumable safetensors shards, plus a manifest): its flags, and their values
handed to that function.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esmfold_lite.alphabet import ALL_TOKENS
from esmfold_lite.cli import (
    add_logging_options,
    add_nogpu_option,
    device_after_nogpu,
    dtype_name,
    exit_status_help,
    records_exit_code,
    torch_device,
)
from esmfold_lite.io.msa import DEFAULT_MAX_DEPTH, SELECTIONS
from esmfold_lite.io.output_names import CONTACTS_PNG_SUFFIX, DEFAULT_INCLUDE, INCLUDES
from esmfold_lite.pipeline.names import DEFAULT_EMBED_TOKENS_PER_BATCH, DEFAULT_SHARD_MIB, EMBED_FORMATS

DTYPE_CHOICES = ("float32", "float16", "bfloat16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed sequences (or MSAs) with an ESM language model",
        description=(
            "Embed every sequence of the FASTA file(s) with an ESM language model (ESM-2, ESM-1b, ESM-1v), or, for "
            "the MSA Transformer, the query (first row) of every MSA file (a3m, a2m or aligned FASTA, one MSA per "
            "file: lower-case letters and '.' in a3m/a2m are insertions and removed, '-' is a gap, columns where the "
            "query has a gap are dropped). Writes one file per record/MSA into OUTDIR, named after its FASTA id "
            "(the query's id for an MSA) made filesystem-safe (duplicates get _2, _3, ...), and OUTDIR/manifest.tsv "
            "listing id, file, length and status per input. Inputs that cannot be embedded (not one chain of "
            "amino-acid letters, longer than the model allows (ESM-1b/1v: 1022 residues), a misaligned MSA) are "
            "skipped with a warning (status 'skipped: reason'). Each file holds 'label' (the id), 'sequence', "
            "'representations' (per residue, L x D, without <cls>/<eos>), 'mean_representations' (D), "
            "'bos_representations' (the <cls> vector, D) per layer (--include chooses which of these three), keyed "
            "by absolute layer number (-1 is saved under the model's last layer), 'contacts' (L x L) with --contacts, "
            "'logits' (L x 33; "
            "ESM C: L x 64) with --logits and, for an MSA, 'msa_depth' (rows used). npz files flatten these to keys "
            "like 'representations_33'. Values are saved as float32. With --format safetensors the same arrays go into "
            "shards (see --format; a repeated id is skipped, and manifest.tsv's file column names the shard). The "
            "FASTA is streamed; progress shows sequences/s, residues/s and the time left. fair-esm extract.py's "
            "spellings are accepted: --repr_layers (= --layers), --toks_per_batch (= --max-tokens-per-batch), "
            "--nogpu (= --device cpu), --include (contacts = --contacts)."
        ),
        epilog=exit_status_help(
            ok="every record embedded",
            some_failed="some records skipped (their reason is in manifest.tsv and the log)",
            failed="nothing could run or the run had to stop (unreadable FASTA, no valid record, model not loadable, "
            "an output that cannot be written: a full or failing disk)",
            interrupted="interrupted (SIGINT/SIGTERM; the files and shards written are kept)",
        ),
    )
    parser.add_argument(
        "input",
        metavar="IN",
        type=Path,
        nargs="+",
        help="FASTA file(s) of protein sequences; for the MSA Transformer, one MSA file (a3m/a2m/aligned FASTA, "
        "query first) per MSA",
    )
    parser.add_argument(
        "-o", "--output-dir", metavar="OUTDIR", type=Path, required=True, help="output directory (created if missing)"
    )
    parser.add_argument(
        "--model",
        metavar="SOURCE",
        required=True,
        help="language model: a registry name (esm2_t33_650M_UR50D, esm1b_t33_650M_UR50S, esm1v_t33_650M_UR90S_1, "
        "esm_msa1b_t12_100M_UR50S, ...), a fair-esm .pt checkpoint, a transformers model folder, or a model file "
        "written by esmfold-lite",
    )
    parser.add_argument(
        "--layers",
        "--repr_layers",
        metavar="N",
        type=int,
        nargs="+",
        default=[-1],
        help="layers to save: 0 = token embeddings, 1..num_layers = after that block (the last one after the final "
        "LayerNorm); negative values count from the end, -1 = last; put the inputs before this flag; --repr_layers "
        "is fair-esm extract.py's name for it (default: -1)",
    )
    parser.add_argument(
        "--include",
        choices=INCLUDES,
        nargs="+",
        default=None,
        help="what to save per input, several allowed (fair-esm extract.py's --include): mean = "
        "'mean_representations', per_tok = 'representations' (per residue: by far the largest; leave it out to "
        "keep only means of a million sequences), bos = 'bos_representations', contacts = 'contacts' (the same "
        f"as --contacts); put the inputs before this flag (default: {' '.join(DEFAULT_INCLUDE)}, plus contacts "
        "with --contacts)",
    )
    parser.add_argument(
        "--format",
        choices=EMBED_FORMATS,
        default="pt",
        help="pt: one torch.save dict per input (fair-esm extract.py's layout); npz: the same as numpy .npz; "
        "safetensors: shards OUTDIR/shards/shard-NNNNNN.safetensors with an index OUTDIR/index.sqlite (id -> shard, "
        "row, residue offset), for millions of sequences: the same command resumes a killed run without embedding "
        "again what is done, and repeated ids are reported, not overwritten; read them with "
        "esmfold_lite.open_embeddings(OUTDIR)[id] (default: pt)",
    )
    parser.add_argument(
        "--shard-size",
        metavar="MIB",
        type=float,
        default=DEFAULT_SHARD_MIB,
        help="safetensors: a shard is written once the sequences waiting for it hold this many MiB of arrays "
        f"(also the memory they take); a killed run loses at most that much work (default: {DEFAULT_SHARD_MIB})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="safetensors: delete OUTDIR's index and shards and embed everything again (needed when the model, "
        "layers, dtype or saved arrays differ from the run that made them, or the index is damaged)",
    )
    parser.add_argument(
        "--contacts",
        action="store_true",
        help="also save predicted contact probabilities (L x L); ESM-2, ESM-1b and the MSA Transformer (ESM-1v was "
        "released without contact regression weights)",
    )
    parser.add_argument(
        "--contacts-png",
        action="store_true",
        help=f"also draw each contact map as OUTDIR/<name>{CONTACTS_PNG_SUFFIX} (saved in the file too only with "
        "--contacts)",
    )
    parser.add_argument(
        "--logits",
        action="store_true",
        help="also save the masked-LM logits at every residue (L x 33 for the fair-esm models, columns in the order "
        f"of the ESM vocabulary: {' '.join(ALL_TOKENS)}; L x 64 for ESM C, whose first 33 columns are the same "
        "tokens with its chain break '|' in place of <null_1>)",
    )
    parser.add_argument(
        "--max-tokens-per-batch",
        "--toks_per_batch",
        metavar="N",
        type=int,
        default=DEFAULT_EMBED_TOKENS_PER_BATCH,
        help="token budget of one forward pass: sequences are sorted by length and packed while "
        "count x (longest + 2) <= N; a longer sequence runs alone; MSAs always run one at a time; --toks_per_batch "
        f"is fair-esm extract.py's name for it (default: {DEFAULT_EMBED_TOKENS_PER_BATCH})",
    )
    parser.add_argument(
        "--max-depth",
        metavar="N",
        type=int,
        default=DEFAULT_MAX_DEPTH,
        help="MSA Transformer: rows kept per MSA, the query included; 0 keeps all (the model takes at most 1024) "
        f"(default: {DEFAULT_MAX_DEPTH})",
    )
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="diverse",
        help="MSA Transformer: how rows are kept when an MSA is deeper than --max-depth: 'diverse' adds, after the "
        "query, the row with the largest mean Hamming distance to those kept, one at a time; 'first' keeps the "
        "first rows of the file (default: diverse)",
    )
    parser.add_argument(
        "--device", metavar="D", type=torch_device, default=None,
        help="torch device: cpu, cuda, cuda:1 (default: the loader's choice)",
    )  # fmt: skip
    add_nogpu_option(parser, "extract.py")
    parser.add_argument(
        "--dtype", type=dtype_name, choices=DTYPE_CHOICES, default=None,
        help="model precision; bf16, fp16 and half are accepted too (default: as the loader chooses)",
    )  # fmt: skip
    add_logging_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esmfold_lite.pipeline import embed_fasta

    args.interrupted = (
        "interrupted; the committed shards are kept, run the same command again to resume"
        if args.format == "safetensors"
        else "interrupted; the files written are kept (a run with --format safetensors resumes; this one starts over)"
    )
    counts = embed_fasta(
        args.input,
        args.output_dir,
        model=args.model,
        layers=args.layers,
        format=args.format,
        include=args.include,
        contacts=args.contacts,
        contacts_png=args.contacts_png,
        logits=args.logits,
        max_tokens_per_batch=args.max_tokens_per_batch,
        max_depth=args.max_depth,
        selection=args.selection,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        device=device_after_nogpu(args),
        dtype=args.dtype,
        progress=not getattr(args, "quiet", False),
    )
    return records_exit_code(counts.skipped)
