"""PCA whitening of embeddings, fitted on the catalogue, applied to catalogue and queries alike.

An ImageNet backbone spends most of its variance on a few directions (lighting, background,
"product photo-ness") that say little about the category. Whitening rescales the principal
directions so that cosine similarity weighs them evenly, which lifts nearest-neighbour category
votes by several points (see ``docs/evaluation.md``)::

    y = normalise(((x - mean) @ components[:, :dim]) * (eigval' ** -power/2))
    eigval' = (1 - shrinkage) * eigval + shrinkage * mean(eigval)

``shrinkage`` pulls the small eigenvalues towards the average so that noise directions are not
blown up; ``power`` 1 is full whitening, 0.5 a softer version, 0 plain PCA rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stygig.encoders.base import l2_normalize
from stygig.errors import ArtifactError, InvalidOptionsError
from stygig.npzfile import load_npz

__all__ = ["DEFAULT_DIM", "DEFAULT_POWER", "DEFAULT_SHRINKAGE", "Whitening"]

#: Defaults chosen on the Kaggle catalogue split only, by an inner 80/20 split of it (never the
#: evaluation queries; ``stygig eval --tune-whitening``, see ``docs/evaluation.md``): all
#: directions, mild shrinkage, partial whitening. Within noise of the best grid point and the
#: more regularised choice, which matters for small catalogues (few rows per dimension).
DEFAULT_DIM: int | None = None
DEFAULT_SHRINKAGE = 0.1
DEFAULT_POWER = 0.75


@dataclass(frozen=True)
class Whitening:
    """A fitted whitening transform (mean, projection, per-direction scale)."""

    mean: np.ndarray  # (d_in,)
    projection: np.ndarray  # (d_in, dim): principal directions, largest variance first
    scale: np.ndarray  # (dim,)
    eigenvalues: np.ndarray  # (dim,) raw variances along the kept directions
    shrinkage: float
    power: float
    n_fit: int

    @property
    def dim(self) -> int:
        """Width of the whitened vectors."""
        return int(self.projection.shape[1])

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        *,
        dim: int | None = DEFAULT_DIM,
        shrinkage: float = DEFAULT_SHRINKAGE,
        power: float = DEFAULT_POWER,
    ) -> Whitening:
        """Fit on rows of ``x`` (the catalogue's embeddings; never the evaluation queries).

        Args:
            x: ``(n, d)`` embeddings, ``n >= 2``.
            dim: directions kept (``None``: all); always capped at ``min(n - 1, d)``.
            shrinkage: in ``[0, 1]``; 0 is plain whitening.
            power: in ``[0, 1]``; exponent of the inverse standard deviation.
        """
        data = np.asarray(x, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 2:
            raise InvalidOptionsError("whitening needs a 2-d array with at least 2 rows")
        if not 0.0 <= shrinkage <= 1.0 or not 0.0 <= power <= 1.0:
            raise InvalidOptionsError("whitening shrinkage and power must be within [0, 1]")
        n, d = data.shape
        if dim is not None and dim < 1:
            raise InvalidOptionsError(f"whitening dim must be at least 1, not {dim}")
        keep = min(n - 1, d, d if dim is None else dim)
        mean = data.mean(axis=0)
        centred = data - mean
        cov = centred.T @ centred / (n - 1)
        eigval, eigvec = np.linalg.eigh(cov)  # ascending
        order = np.argsort(eigval)[::-1]
        eigval = np.clip(eigval[order], 0.0, None)
        eigvec = eigvec[:, order]
        shrunk = (1.0 - shrinkage) * eigval + shrinkage * eigval.mean()
        scale = np.maximum(shrunk[:keep], 1e-12) ** (-power / 2.0)
        return cls(
            mean=mean.astype(np.float32),
            projection=eigvec[:, :keep].astype(np.float32),
            scale=scale.astype(np.float32),
            eigenvalues=eigval[:keep].astype(np.float32),
            shrinkage=float(shrinkage),
            power=float(power),
            n_fit=n,
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Whitened rows before L2 normalisation (what the covariance tests look at)."""
        data = np.asarray(x, dtype=np.float32)
        if data.ndim == 1:
            data = data[None, :]
        if data.shape[1] != self.mean.shape[0]:
            raise InvalidOptionsError(
                f"whitening expects {self.mean.shape[0]}-d vectors, not {data.shape[1]}-d"
            )
        out: np.ndarray = ((data - self.mean) @ self.projection) * self.scale
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Whitened, L2-normalised ``float32`` rows, ready for inner-product search."""
        return l2_normalize(self.transform(x))

    def save(self, path: Path) -> Path:
        """Write one ``.npz`` file (plain arrays, no pickle) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez(
                handle,
                mean=self.mean,
                projection=self.projection,
                scale=self.scale,
                eigenvalues=self.eigenvalues,
                settings=np.array([self.shrinkage, self.power, float(self.n_fit)], np.float64),
            )
        return path

    @classmethod
    def load(cls, path: Path) -> Whitening:
        """Read a file written by :meth:`save`."""
        try:
            with load_npz(Path(path)) as data:  # no member unpacks beyond the file's size
                settings = data["settings"]
                white = cls(
                    mean=data["mean"],
                    projection=data["projection"],
                    scale=data["scale"],
                    eigenvalues=data["eigenvalues"],
                    shrinkage=float(settings[0]),
                    power=float(settings[1]),
                    n_fit=int(settings[2]),
                )
            white.check()
            return white
        except (OSError, KeyError, ValueError, OverflowError) as e:
            raise ArtifactError(f"cannot read whitening file {Path(path).name}: {e}") from e

    def check(self) -> None:
        """Refuse (:class:`ValueError`) arrays that do not make a whitening: every photo query
        failed on them (review, session 51: NaN scales, a narrow projection, a short scale)."""
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        keep = self.projection.shape[1] if self.projection.ndim == 2 else -1
        if (
            d < 1
            or keep < 1
            or self.projection.shape != (d, keep)
            or self.scale.shape != (keep,)
            or self.eigenvalues.shape != (keep,)
        ):
            raise ValueError("inconsistent whitening arrays")
        arrays = (self.mean, self.projection, self.scale, self.eigenvalues)
        if any(a.dtype.kind != "f" or not np.isfinite(a).all() for a in arrays):
            raise ValueError("whitening arrays that are not all finite numbers")

    def describe(self) -> dict[str, Any]:
        """Settings and size, for a manifest entry or a metrics file."""
        total = float(self.eigenvalues.sum())
        return {
            "method": "pca-whitening",
            "input_dim": int(self.mean.shape[0]),
            "dim": self.dim,
            "shrinkage": self.shrinkage,
            "power": self.power,
            "n_fit": self.n_fit,
            "kept_variance": round(total, 6),
        }
