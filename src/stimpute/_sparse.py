"""Sparse-matrix helpers on plain numpy/scipy arrays (no AnnData): shared by every layer, the torch one included."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def as_csr(M: np.ndarray | sparse.spmatrix, dtype=None, *, copy: bool = False) -> sparse.csr_matrix:
    """``M`` as a CSR matrix in canonical format (sorted indices, no duplicate entries).

    A user's sparse layer may hold several stored entries for one spot and gene (valid in scipy, summed on
    use). Code that reads ``.data`` entry by entry (``log1p``, gene maxima, the observed entries) needs them
    summed first; this never does that in place on the user's arrays: a non-canonical matrix is always
    copied. With ``copy=False`` a canonical CSR input of the right dtype is returned without copying, so
    callers must not change it in place.
    """
    C = sparse.csr_matrix(M, dtype=dtype, copy=copy)
    if not C.has_canonical_format:
        if not copy:
            C = C.copy()
        C.sum_duplicates()
    return C
