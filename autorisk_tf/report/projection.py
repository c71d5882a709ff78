"""2-D maps of embeddings (UMAP, PCA) and how much of a label the map itself keeps."""

from __future__ import annotations

import numpy as np

from autorisk_tf import evaluate

UMAP_MISSING = ("umap-learn is not installed, so the UMAP map is left out; install the "
                "report extra (pip install -e '.[report]').")


def umap_available() -> bool:
    """Whether umap-learn can be imported."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def umap_coordinates(x: np.ndarray, seed: int = 0, n_neighbors: int = 15,
                     min_dist: float = 0.1, metric: str = "cosine") -> np.ndarray:
    """A 2-D UMAP of the rows of x, deterministic for a seed.

    Args:
        x: float [N, E]. Embeddings.
        seed: int. UMAP's random_state (which also makes it single-threaded, hence
            repeatable).
        n_neighbors: int. Size of the local neighbourhood (capped at N - 1).
        min_dist: float. How tightly points may be packed.
        metric: str. Distance between embeddings.

    Returns:
        float [N, 2].
    """
    import umap

    model = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1),
                      min_dist=min_dist, metric=metric, random_state=seed, n_jobs=1)
    return np.asarray(model.fit_transform(np.asarray(x, np.float64)), np.float64)


def pca_coordinates(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first two principal components of the standardised rows of x: float [N, 2]."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(np.asarray(x, np.float64))
    return PCA(2, random_state=seed).fit_transform(scaled)


def map_auc(coordinates: np.ndarray, y: np.ndarray) -> float:
    """5-fold AUC of logistic regression on the 2-D coordinates alone (NaN labels left out).

    A map that separates a label only to the eye scores near 0.5 here.
    """
    y = np.asarray(y, np.float64)
    keep = ~np.isnan(y)
    if len(np.unique(y[keep])) < 2 or min(np.bincount(y[keep].astype(int))) < 5:
        return float("nan")
    aucs, _ = evaluate.cv_auc(coordinates[keep], y[keep].astype(int),
                              lambda: evaluate.logistic_regression(1.0))
    return float(np.mean(aucs))
