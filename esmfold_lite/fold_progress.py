"""Progress inside one fold: a listener told when each language-model layer and each trunk block ends.

Folding one long protein takes minutes (esmfold_v1 at 384 residues: about 6.5 min on 2 cores, benchmarks/README.md),
nearly all of it in the trunk's passes (1 + recycles) of ``num_blocks`` blocks each, after one run of the language
model. The language model's layer loop calls ``step_done(LM_LAYER, layer, layers)`` after each layer, the trunk
``step_done(TRUNK_BLOCK, block, blocks, pass_number, passes)`` after each block; whoever wants to hear of it (the
``predict`` pipeline's bar and log, ``pipeline.progress``) installs a listener around its ``fold`` calls with
``on_fold_step``. The listener lives in a context variable, so models and their ``fold`` signature know nothing of
it; with no listener a step costs one context-variable lookup and nothing is built or called. This module imports
nothing of the package, so the language models (``lm/``, which never reach ``fold/``) and the trunk both use it.

On a GPU a step "ends" when its kernels are queued, which is close to when they finish only once the queue is full;
the models do not synchronise for the listener's sake (the CPU, where folds take minutes, is what this is for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import NamedTuple

LM_LAYER = "language model layer"
TRUNK_BLOCK = "trunk block"


class FoldStep(NamedTuple):
    """``done`` of ``total`` steps of ``stage`` (``LM_LAYER`` or ``TRUNK_BLOCK``) have ended in pass ``pass_number``
    of ``passes`` (the language model runs once: pass 1 of 1; the trunk runs 1 + recycles passes)."""

    stage: str
    done: int
    total: int
    pass_number: int = 1
    passes: int = 1


StepListener = Callable[[FoldStep], None]
"""``listener(step)``, called as each step ends."""

_LISTENER: ContextVar[StepListener | None] = ContextVar("esmfold_lite_fold_step", default=None)


@contextlib.contextmanager
def on_fold_step(listener: StepListener) -> Iterator[None]:
    """Within this context, every language-model layer and trunk block that ends calls ``listener(FoldStep)``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def step_done(stage: str, done: int, total: int, pass_number: int = 1, passes: int = 1) -> None:
    """Tell the listener, if any, that step ``done`` of ``total`` of ``stage`` (in pass ``pass_number`` of
    ``passes``) has ended."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(FoldStep(stage, done, total, pass_number, passes))
