"""Classical face-verification baselines, fitted on the training people only (numpy).

- raw pixels: the flattened image itself;
- Eigenfaces (Turk & Pentland 1991): the top principal components of the training images;
- Fisherfaces (Belhumeur, Hespanha & Kriegman 1997): PCA to N - c dimensions (N training
  images, c people; so the within-class scatter is not singular), then Fisher's linear
  discriminant to c - 1 dimensions: W_opt = W_pca W_fld.

Each is a `Projection` (mean, basis): x -> (x - mean) @ basis, compared by squared L2 like the
model's embeddings.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg

BASELINES = ("pixels", "eigenfaces", "fisherfaces")


@dataclasses.dataclass(frozen=True)
class Projection:
    """x (N, D) -> (x - mean) @ basis (N, K); basis None is the identity (raw pixels)."""

    mean: np.ndarray  # (D,)
    basis: np.ndarray | None  # (D, K)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = flatten(x)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"x must have {self.mean.shape[0]} values per image (the fitted "
                             f"images'); got {x.shape[1]}")
        return x if self.basis is None else (x - self.mean) @ self.basis


def flatten(images: np.ndarray) -> np.ndarray:
    """(N, ...) images -> (N, D) float64 rows."""
    images = np.asarray(images, np.float64)
    return images.reshape(len(images), -1)


def pca(x: np.ndarray, components: int) -> Projection:
    """The top `components` principal axes of the rows of x (N, D): orthonormal (D, K) basis,
    largest variance first, each axis's sign fixed so its largest-magnitude entry is positive."""
    x = flatten(x)
    if not 1 <= components <= min(x.shape[0] - 1, x.shape[1]):
        raise ValueError(f"components must be in [1, min(N - 1, D)] = [1, "
                         f"{min(x.shape[0] - 1, x.shape[1])}] for x of shape {x.shape}; "
                         f"received {components}")
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return Projection(mean, _fix_signs(vt[:components].T))


def fisher_lda(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(D, c - 1) generalised eigenvectors of S_b w = lambda S_w w (largest lambda first) for
    rows x (N, D) with c classes, each of unit length (as scikit-learn's 'eigen' solver;
    scaled to w' S_w w = 1 instead, verification on the people-folds fell from 89 to 76 %)."""
    x, labels = flatten(x), np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"labels must hold at least 2 classes; got {len(classes)}")
    mean = x.mean(axis=0)
    within = np.zeros((x.shape[1], x.shape[1]))
    between = np.zeros_like(within)
    for c in classes:
        rows = x[labels == c]
        centred = rows - rows.mean(axis=0)
        within += centred.T @ centred
        offset = (rows.mean(axis=0) - mean)[:, None]
        between += len(rows) * offset @ offset.T
    values, vectors = scipy.linalg.eigh(between, within)  # ascending
    vectors = vectors[:, np.argsort(values)[::-1][: len(classes) - 1]]
    return _fix_signs(vectors / np.linalg.norm(vectors, axis=0))


def fisherfaces(x: np.ndarray, labels: np.ndarray) -> Projection:
    """Belhumeur et al. 1997: PCA to N - c dimensions, then LDA to c - 1: basis W_pca W_fld."""
    x, labels = flatten(x), np.asarray(labels)
    n, c = len(x), len(np.unique(labels))
    if n - c < c - 1:
        raise ValueError(f"Fisherfaces need N - c >= c - 1 (N images, c people); got N = {n}, "
                         f"c = {c}")
    reduced = pca(x, n - c)
    fld = fisher_lda(reduced(x), labels)
    return Projection(reduced.mean, reduced.basis @ fld)


def fit_baselines(images: np.ndarray, labels: np.ndarray,
                  eigenfaces: int) -> dict[str, Projection]:
    """The three baselines fitted on training images (N, ...) of people `labels`."""
    x = flatten(images)
    return {"pixels": Projection(x.mean(axis=0), None),
            "eigenfaces": pca(x, min(eigenfaces, len(x) - 1, x.shape[1])),
            "fisherfaces": fisherfaces(x, labels)}


def _fix_signs(basis: np.ndarray) -> np.ndarray:
    """Each column multiplied by the sign of its largest-magnitude entry (a unique sign)."""
    rows = np.argmax(np.abs(basis), axis=0)
    return basis * np.sign(basis[rows, np.arange(basis.shape[1])])
