"""The names of what the commands write: structure-output suffixes, the arrays ``embed`` saves, the contact-map PNG.

Plain strings, importing nothing, so that the command line's ``--help`` shows them without importing torch; the
writers (``io.outputs``, ``io.embedding_shards``, ``commands.embed_outputs``) import them from here.
"""

FORMAT_SUFFIXES: dict[str, str] = {
    "pdb": ".pdb", "cif": ".cif", "json": ".json", "pae": "_predicted_aligned_error_v1.json", "npz": ".npz",
    "png": ".png",
}  # fmt: skip
CONTACTS_PNG_SUFFIX = ".contacts.png"  # embed --contacts-png: OUTDIR/<name>.contacts.png
INCLUDES = ("mean", "per_tok", "bos", "contacts")  # fair-esm extract.py's --include choices
DEFAULT_INCLUDE = ("mean", "per_tok", "bos")  # contacts with --contacts
