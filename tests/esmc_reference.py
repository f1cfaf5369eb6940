"""Run the ``esm`` package's own ESM C (EvolutionaryScale) on given weights; a script for a subprocess.

``python esmc_reference.py REQUEST.json`` with ``PYTHONPATH`` naming a folder where ``esm==3.2.1.post1`` is installed
(``.ci/esm``): that ``esm`` is EvolutionaryScale's, not fair-esm's, which the test environment also has under the same
name, so it runs in its own process. The request is ``{"vocab": PATH, "jobs": [...]}``, each job
``{"d_model", "n_heads", "n_layers", "state": PATH, "out": DIR, "batch": [sequences], "singles": [sequences]}``:

* ``state``: a state dict in the official key names (``torch.save``); it is loaded strictly into
  ``esm.models.esmc.ESMC``, which then writes ``DIR/esmc.pth`` exactly as an official weight file is made
  (``torch.save(model.state_dict())``);
* ``DIR/reference.pt``: for the padded ``batch`` (tokenized by the package's ``EsmSequenceTokenizer``): ``tokens``,
  ``embedded`` (the token embeddings), ``hidden_states`` (every block's output), ``embeddings`` (after the final
  norm) and ``logits``; for each of ``singles``, run alone: ``single_tokens`` and ``single_logits`` (lists).

``vocab``: the tokenizer's tokens in id order (json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def run_job(job: dict, tokenizer) -> None:
    from esm.models.esmc import ESMC

    model = ESMC(job["d_model"], job["n_heads"], job["n_layers"], tokenizer=tokenizer, use_flash_attn=False)
    model.load_state_dict(torch.load(job["state"], weights_only=True), strict=True)
    model.eval()
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "esmc.pth")

    embedded = []
    hook = model.embed.register_forward_hook(lambda module, args, output: embedded.append(output))
    with torch.no_grad():
        tokens = model._tokenize(job["batch"])
        result = model(sequence_tokens=tokens)
        singles = [model._tokenize([sequence]) for sequence in job["singles"]]
        single_logits = [model(sequence_tokens=t).sequence_logits[0] for t in singles]
    hook.remove()
    torch.save(
        {
            "tokens": tokens,
            "embedded": embedded[0],
            "hidden_states": result.hidden_states,
            "embeddings": result.embeddings,
            "logits": result.sequence_logits,
            "single_tokens": [t[0] for t in singles],
            "single_logits": single_logits,
        },
        out / "reference.pt",
    )


def main(request_path: str) -> None:
    import esm
    from esm.tokenization import EsmSequenceTokenizer

    if getattr(esm, "__version__", None) != "3.2.1":  # 3.2.1.post1 reports 3.2.1; fair-esm says 2.0.0
        raise SystemExit(f"expected EvolutionaryScale's esm 3.2.1 on PYTHONPATH, got {esm.__file__}")
    request = json.loads(Path(request_path).read_text())
    torch.manual_seed(0)
    tokenizer = EsmSequenceTokenizer()
    vocab = tokenizer.get_vocab()
    Path(request["vocab"]).write_text(json.dumps(sorted(vocab, key=vocab.get)))
    for job in request["jobs"]:
        run_job(job, tokenizer)


if __name__ == "__main__":
    main(sys.argv[1])
