"""Randomize every parameter before a parity test: ESMFold zero-initialises many output layers, and a zero layer
hides a miswired one. The package's own ``randomize_`` (``weights make-random`` uses it), under the name the tests
import."""

from esmfold_lite.fold.random_model import randomize_

__all__ = ["randomize_"]
