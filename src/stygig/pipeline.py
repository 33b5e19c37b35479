"""The one query pipeline: ``prepare -> embed (injected) -> answer``.

Every caller (library, CLI, real-time server, async jobs, batch runs, evaluation) goes the same
way; only the embed step differs, and it is the caller's to choose::

    prepared = recommender.prepare(query, options)          # decode, validate, colour
    vectors = recommender.embed(prepared.tensors)           # in-line, micro-batched, per group
    answer = recommender.answer(prepared, vectors)          # search, vote, score, rank
    answer.to_json()                                        # serialise (timed)

Colour needs only the decoded pixels and the embedding only the encoder input, so ``prepare``
can hand the colour step to a worker (``color_pool``) to run beside the encoder; ``answer``
collects it. Evaluation, whose queries are catalogue rows already embedded and coloured at build
time, makes a :meth:`PreparedQuery.precomputed` and skips the encoder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stygig.answer import Timings
from stygig.errors import StygigError
from stygig.features import DecodedPhoto, color_summary, decode_photo
from stygig.images import PreprocessSpec, check_photos, image_bytes, which_photo
from stygig.recommendation import Options, Query

__all__ = ["ColorResult", "PreparedQuery", "decode_query"]

#: A photo's colour summary and the milliseconds it took (measured where it ran).
ColorResult = tuple[dict[str, Any], float]


@dataclass(frozen=True)
class PreparedQuery:
    """A query ready for its embedding.

    Attributes:
        item_ids: catalogue items of the query.
        options: the caller's options, already checked against the catalogue.
        tensors: the encoder input of each photo (empty when ``vectors`` is given).
        colors: each photo's colour summary, being measured or done.
        timings: the stages so far; the embed step's caller fills ``queue`` and ``embed``.
        started: ``perf_counter()`` when preparation began (``total`` counts from here).
        vectors: precomputed embeddings of the photos (evaluation), instead of ``tensors``.
    """

    item_ids: tuple[str, ...]
    options: Options
    tensors: tuple[np.ndarray, ...]
    colors: tuple[Future[ColorResult], ...]
    timings: Timings
    started: float
    vectors: np.ndarray | None = None

    @property
    def photos(self) -> int:
        return len(self.colors)

    @classmethod
    def precomputed(
        cls,
        vectors: np.ndarray,
        colors: Sequence[dict[str, Any]],
        options: Options,
        item_ids: Sequence[str] = (),
    ) -> PreparedQuery:
        """Photos already embedded and coloured (e.g. catalogue rows standing in for photos)."""
        return cls(
            tuple(item_ids),
            options,
            (),
            tuple(_done((dict(c), 0.0)) for c in colors),
            Timings(),
            time.perf_counter(),
            np.asarray(vectors, np.float32),
        )


def decode_query(
    query: Query,
    options: Options,
    spec: PreprocessSpec,
    *,
    color_pool: Executor | None = None,
    load: Callable[[str | Path | bytes], str | Path | bytes] | None = None,
) -> PreparedQuery:
    """Decode and validate ``query``'s photos; measure their colours in ``color_pool`` (beside
    whatever runs next) or here. ``load`` turns a location into bytes first (batch inputs)."""
    started = time.perf_counter()
    tensors: list[np.ndarray] = []
    colors: list[Future[ColorResult]] = []
    decode_ms = 0.0
    sources = [load(s) if load is not None else s for s in query.images]
    if len(sources) > 1:  # several photos: their decoding together is bounded too
        t0 = time.perf_counter()
        sources = [image_bytes(s) for s in sources]  # a path read once, for both steps
        check_photos(sources)
        decode_ms += (time.perf_counter() - t0) * 1e3
    for n, source in enumerate(sources):
        t0 = time.perf_counter()
        try:
            photo = decode_photo(source, spec)
        except StygigError as e:
            raise which_photo(e, n, len(sources)) from None
        decode_ms += (time.perf_counter() - t0) * 1e3
        tensors.append(photo.tensor)
        if color_pool is not None:
            colors.append(color_pool.submit(_measure_color, photo))
        else:
            colors.append(_done(_measure_color(photo)))
    timings = Timings(decode=decode_ms if query.images else None)
    return PreparedQuery(query.item_ids, options, tuple(tensors), tuple(colors), timings, started)


def _measure_color(photo: DecodedPhoto) -> ColorResult:
    t0 = time.perf_counter()
    summary = color_summary(photo.color_pixels)
    return summary, (time.perf_counter() - t0) * 1e3


def _done(result: ColorResult) -> Future[ColorResult]:
    future: Future[ColorResult] = Future()
    future.set_result(result)
    return future
