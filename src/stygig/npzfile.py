"""``.npz`` files read with the work bounded by their size.

Every ``.npz`` StyGig writes (``np.savez``: the compatibility model, category heads, whitening,
a Ray build's parts) stores its arrays uncompressed, each a ``.npy`` whose header says its
shape. NumPy's reader trusts both: a deflated member unpacks to whatever it claims (a 5 MB
``compat.npz`` claiming 300M co-occurrence rows took 3.9 GB; review, session 51), and a
header may claim far more rows than its member holds (NumPy allocates them before reading).
:func:`load_npz` refuses both before any array is read, so reading a file costs at most its
size; pickled members stay refused (``allow_pickle=False``).
"""

from __future__ import annotations

import io
import tokenize
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["load_npz", "npy_header"]


@contextmanager
def load_npz(source: str | Path | bytes) -> Iterator[Any]:
    """``np.load(source, allow_pickle=False)`` of an ``.npz`` (a path, or its bytes) once every
    member is checked: stored uncompressed, a ``.npy`` whose header describes exactly the bytes
    that follow, of no object dtype. A context manager, closing the file at its end.

    Raises:
        ValueError: a member is compressed, malformed, or claims more than it holds (the
            message names the member, never the data). A file that is no zip archive
            (cut short) is one too.
    """
    with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as handle:
        _check(handle)
        handle.seek(0)
        with np.load(handle, allow_pickle=False) as data:
            yield data


def npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """A ``.npy`` stream's shape, dtype and header length, read from its header alone."""
    version = np.lib.format.read_magic(handle)
    read = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, _, dtype = read(handle)
    return tuple(shape), dtype, handle.tell()


def _check(handle: IO[bytes]) -> None:
    try:
        archive = zipfile.ZipFile(handle)
    except zipfile.BadZipFile as e:  # e.g. cut short
        raise ValueError(f"not an .npz archive ({e})") from None
    with archive:
        for info in archive.infolist():
            name = info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"member {name[:60]!r} is compressed: StyGig's .npz files store their "
                    "arrays uncompressed (a compressed member may unpack far beyond the file)"
                )
            with archive.open(info) as member:
                try:
                    shape, dtype, header = npy_header(member)
                except (ValueError, SyntaxError, tokenize.TokenError) as e:
                    raise ValueError(f"member {name[:60]!r} is not a .npy array ({e})") from None
            if dtype.hasobject:
                raise ValueError(f"member {name[:60]!r} holds Python objects")
            data = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if header + data != info.file_size:
                raise ValueError(
                    f"member {name[:60]!r} holds {info.file_size - header} bytes of data but "
                    f"its header says {tuple(shape)} {dtype} ({data} bytes)"
                )
