"""What the fixture generators under scripts/ share: a safetensors writer whose
bytes depend only on the data, and the version pins they record.

safetensors' own writer orders ``__metadata__`` by hash, so two runs differ in
their header bytes and a regenerated fixture would show as changed. This writer
sorts the metadata keys and tensor names and pads the header with spaces to a
multiple of 8, as the format allows. ``save_numpy`` reads every file back with
the safetensors package to check it.

A generator imports it after putting this folder on ``sys.path``::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fixture_io import save_numpy  # noqa: E402
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import sys
from pathlib import Path

import numpy as np

NUMPY_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8"}


def write_safetensors(path: Path | str, entries: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str]) -> None:
    """Writes ``entries`` (name -> safetensors dtype, shape, little-endian bytes)
    with a reproducible header: sorted metadata and names, space padding."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs = []
    offset = 0
    for name in sorted(entries):
        dtype, shape, data = entries[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for data in blobs:
            f.write(data)


def as_stored(arr) -> np.ndarray:
    """The array as it is stored: U8 stays U8, any other number becomes float32
    (the fixtures' data is f32; the generators compute some of it in f64)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"unsupported dtype {arr.dtype}")
    return arr.astype(np.float32)


def save_numpy(tensors: dict[str, np.ndarray], path: Path | str, metadata: dict[str, str]) -> None:
    """Writes F32 and U8 numpy arrays (see ``as_stored``), then reads the file
    back with the safetensors package and checks every name, dtype, shape and bit."""
    from safetensors.numpy import load_file

    stored = {name: as_stored(arr) for name, arr in tensors.items()}
    write_safetensors(
        path,
        {
            name: (NUMPY_DTYPES[arr.dtype], list(arr.shape), arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            for name, arr in stored.items()
        },
        metadata,
    )
    back = load_file(str(path))
    if sorted(back) != sorted(stored):
        raise RuntimeError(f"{path}: tensors did not read back")
    for name, arr in stored.items():
        if back[name].dtype != arr.dtype or back[name].shape != arr.shape or back[name].tobytes() != arr.tobytes():
            raise RuntimeError(f"{path}: {name} did not read back")


def version(package: str, local: bool = True) -> str:
    """The installed version of ``package`` ("python" for the interpreter);
    without the local part (torch's "+cpu") when ``local`` is false.

    A module's own ``__version__`` comes first: torch's carries its build
    ("+cu132") where its distribution metadata does not, and the fixtures
    record the former. A distribution whose name is no module (lion-pytorch)
    is looked up in the metadata."""
    if package == "python":
        v = sys.version.split()[0]
    else:
        try:
            v = importlib.import_module(package).__version__
        except (ImportError, AttributeError):
            v = importlib.metadata.version(package)
    return v if local else v.split("+")[0]


def pins(*packages: str, local: bool = True) -> str:
    """``name==version`` of each package, space-separated, as the fixtures record them."""
    return " ".join(f"{p}=={version(p, local)}" for p in packages)


def warmup_cosine(steps: int, peak: float, floor: float, warmup: int) -> list[float]:
    """The learning rate of steps 1..=steps: linear warmup over ``warmup`` steps
    to ``peak``, then cosine decay to ``floor``, so that every step has its own."""
    lrs = []
    for s in range(1, steps + 1):
        if s <= warmup:
            lrs.append(peak * s / warmup)
        else:
            progress = (s - warmup) / (steps - warmup)
            lrs.append(floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress)))
    return lrs
