"""Progress inside one fold: a listener told when each trunk pass ends.

Folding one protein with the full-size model on a CPU takes minutes (esmfold_v1 at 384 residues: about 6.5 min on
2 cores, benchmarks/README.md), nearly all of it in the trunk's passes (1 + recycles). The trunk calls
``trunk_pass_done(done, passes)`` after each pass; whoever wants to hear of it (the ``predict`` pipeline's bar and
log) installs a listener around its ``fold`` calls with ``on_trunk_pass``. No listener: nothing happens. The
listener lives in a context variable, so models and their ``fold`` signature know nothing of it.

On a GPU a pass "ends" when its kernels are queued, which is close to when they finish only once the queue is full;
the trunk does not synchronise for the listener's sake (the CPU, where folds take minutes, is what this is for).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

PassListener = Callable[[int, int], None]
"""``listener(done, passes)``: ``done`` of ``passes`` trunk passes of the current fold have ended."""

_LISTENER: ContextVar[PassListener | None] = ContextVar("esmfold_lite_trunk_pass", default=None)


@contextlib.contextmanager
def on_trunk_pass(listener: PassListener) -> Iterator[None]:
    """Within this context, every trunk pass that ends calls ``listener(done, passes)``."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def trunk_pass_done(done: int, passes: int) -> None:
    """Tell the listener, if any, that pass ``done`` of ``passes`` has ended."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(done, passes)
