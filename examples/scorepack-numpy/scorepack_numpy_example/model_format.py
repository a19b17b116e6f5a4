"""The model format: a NumPy ``.npz`` archive holding a small MLP classifier.

Arrays in the archive::

    W0, b0, W1, b1, ... Wn, bn   float arrays; layer k maps x -> x @ Wk + bk, with ReLU
                                 between layers and softmax after the last one
    input_shape (optional)       int array: the shape of one input row, e.g. [8, 8, 3];
                                 its product must equal W0.shape[0] (default: [W0.shape[0]])

Detection looks at the archive's table of contents only: no array is read, and the
framework is not imported, so ``scorepack inspect`` stays cheap for every other backend.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

__all__ = ["FORMAT", "REQUIRED_MEMBERS", "is_npz_model"]

FORMAT = "NumPy .npz MLP classifier (arrays W0, b0, ...)"

#: the members every model archive has (np.savez stores array "x" as "x.npy")
REQUIRED_MEMBERS = frozenset({"W0.npy", "b0.npy"})


def is_npz_model(path: Path) -> bool:
    """True when ``path`` is an ``.npz`` archive with the arrays of this format.

    Judged by content, not by the file name: ``model.bin`` is recognised too.
    """
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        return False
    return REQUIRED_MEMBERS <= names
