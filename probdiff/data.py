r"""Data sets of quantised data (images), their deterministic split, and their scaling.

A :class:`Dataset` holds integer levels ``0 .. levels-1`` of shape ``(N, *event)`` (images are
``(N, C, H, W)``). Sources, none of which needs a download:

* :func:`digits` — scikit-learn's bundled 8×8 handwritten digits (1797 images, levels 0..16, so K = 17);
* :func:`load_array` — a local ``.npy``/``.npz`` array of integer levels;
* :func:`load_image_folder` — a folder of PNG/JPEG images (Pillow), 256 levels;
* :func:`load_idx` — IDX files, the MNIST format (optionally gzipped), parsed from the magic number.

:func:`load` picks the loader from the path (a table of suffixes, not a chain of ifs). A missing or
malformed file raises ``ValueError`` naming the file and what was expected. scikit-learn (the digits) and
Pillow (image folders) come with the ``cli`` extra and are imported only by the loaders that need them.

Continuous processes see :class:`Dequantize`\ d data: :math:`x = lo + (hi-lo)(n + u)/K`, :math:`u \sim U[0,1)^D`
(Theis, van den Oord, Bethge, "A note on the evaluation of generative models", ICLR 2016, §3.1), which
makes :math:`-E_u \log p(x)` an upper bound on the discrete code length (THEORY.md §4); discrete processes
see the integer counts themselves (:class:`Counts`).
"""

from __future__ import annotations

import gzip
import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .lattice import Quantization

__all__ = [
    "Dataset",
    "Split",
    "Dequantize",
    "Counts",
    "digits",
    "load",
    "load_array",
    "load_image_folder",
    "load_idx",
]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ==================================================================== the data set
class Dataset:
    """Quantised data: integer levels in ``[0, levels)``, shape ``(N, *event)``.

    Args:
        counts: integer tensor or array of shape ``(N, *event)``.
        levels: number of levels K (e.g. 17 for the digits, 256 for 8-bit images).
        name: where the data came from (for messages and summaries).
    """

    def __init__(self, counts, levels: int, name: str = "data"):
        counts = torch.as_tensor(np.asarray(counts) if not isinstance(counts, torch.Tensor) else counts)
        if isinstance(levels, bool) or int(levels) != levels or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        if counts.dim() < 2 or counts.shape[0] < 1:
            raise ValueError(f"{name}: expected an array of shape (N, *event) with N >= 1, got shape "
                             f"{tuple(counts.shape)}")
        if counts.is_floating_point():
            if not bool(torch.isfinite(counts).all()) or not bool((counts == counts.round()).all()):
                raise ValueError(f"{name}: expected integer levels 0..{int(levels) - 1}, got non-integer values")
        counts = counts.to(torch.int64)
        lo, hi = int(counts.min()), int(counts.max())
        if lo < 0 or hi >= levels:
            raise ValueError(f"{name}: expected integer levels in [0, {int(levels) - 1}], got values in [{lo}, {hi}]")
        self.counts = counts
        self.levels = int(levels)
        self.name = name

    def __len__(self) -> int:
        return self.counts.shape[0]

    @property
    def event_shape(self) -> torch.Size:
        return self.counts.shape[1:]

    @property
    def dim(self) -> int:
        """Number of dimensions D of one data point."""
        return math.prod(self.event_shape)

    def subset(self, index) -> "Dataset":
        """The data points at ``index`` (a tensor or array of indices)."""
        return Dataset(self.counts[torch.as_tensor(index)], self.levels, self.name)

    def split(self, test_fraction: float = 0.2, *, seed: int = 0) -> "Split":
        """A deterministic train/test split: the same ``seed`` gives the same split on every machine.

        The permutation comes from NumPy's PCG64 generator seeded with ``seed`` (its output is
        platform-independent), so held-out numbers are comparable across runs and peers.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        n = len(self)
        n_test = int(round(test_fraction * n))
        if n_test < 1 or n_test >= n:
            raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {n} data points")
        perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
        return Split(self.subset(np.sort(perm[n_test:])), self.subset(np.sort(perm[:n_test])))

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, n={len(self)}, event_shape={tuple(self.event_shape)}, levels={self.levels})"


@dataclass(frozen=True)
class Split:
    """A train/test split of a :class:`Dataset`."""

    train: Dataset
    test: Dataset


# ==================================================================== scaling
class Dequantize:
    r"""Integer levels -> continuous data in ``[lo, hi]`` with uniform dequantisation.

    :math:`x = lo + (hi - lo)(n + u)/K`, :math:`u \sim U[0, 1)^D` fresh on every call (or ``u = 1/2``, the
    bin centres, with ``noise=False`` — for pictures, never for likelihoods). The lattice is
    :class:`probdiff.Quantization`, the one :func:`probdiff.bits_per_dim` scores against.

    Args:
        levels: K.
        data_range: ``(lo, hi)``, default ``(-1, 1)``.
    """

    def __init__(self, levels: int, data_range=(-1.0, 1.0)):
        self.lattice = Quantization(levels, data_range)
        self.levels, self.data_range = self.lattice.levels, (self.lattice.lo, self.lattice.hi)

    def __call__(self, counts: torch.Tensor, generator: torch.Generator | None = None, *, noise: bool = True,
                 dtype=None) -> torch.Tensor:
        if noise:
            return self.lattice.dequantize(counts, generator=generator, dtype=dtype)
        return self.lattice.centers(counts, dtype=dtype)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous ``x`` (e.g. samples) -> the level of the bin it falls in (clamped to ``[0, K-1]``)."""
        lo, hi = self.data_range
        return torch.clamp(torch.floor((x - lo) / (hi - lo) * self.levels), 0, self.levels - 1).to(torch.int64)

    def bits_options(self) -> dict:
        """Arguments of :func:`probdiff.bits_per_dim` for log-densities of these data."""
        return {"levels": self.levels, "data_range": self.data_range}

    def __repr__(self) -> str:
        return f"Dequantize(levels={self.levels}, data_range={self.data_range})"


class Counts:
    """Integer levels as they are (for discrete-state processes: Markov chains, Blackout)."""

    def __call__(self, counts: torch.Tensor, generator: torch.Generator | None = None, **_) -> torch.Tensor:
        return counts

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return x.round().to(torch.int64) if x.is_floating_point() else x.to(torch.int64)

    def bits_options(self) -> dict:
        """Log-probabilities of counts are code lengths: :func:`probdiff.bits_per_dim` adds no constant."""
        return {}

    def __repr__(self) -> str:
        return "Counts()"


# ==================================================================== sources
def digits() -> Dataset:
    """scikit-learn's 8×8 digits (bundled with scikit-learn): 1797 images ``(1, 8, 8)``, levels 0..16."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.int64)
    return Dataset(images[:, None], 17, "digits")


def _missing(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: no such file or folder (expected {what})")


def _add_channel(arr: np.ndarray) -> np.ndarray:
    """Grey images ``(N, H, W)`` become ``(N, 1, H, W)``; anything else is left as it is."""
    return arr[:, None] if arr.ndim == 3 else arr


def load_array(path, *, key: str | None = None, levels: int | None = None) -> Dataset:
    """A ``.npy`` array or an array in a ``.npz`` archive of integer levels, shape ``(N, *event)``.

    Args:
        path: the file.
        key: the array's name inside a ``.npz`` (default: ``x``, ``images`` or ``data``, or its only array).
        levels: K (default 256 for ``uint8`` data, else ``max + 1``).
    """
    path = Path(path)
    what = "a .npy/.npz array of integer levels, shape (N, *event)"
    if not path.is_file():
        raise _missing(path, what)
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a malformed file
        raise ValueError(f"{path}: could not read it as {what} ({exc})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None:
                key = next((k for k in ("x", "images", "data") if k in names), names[0] if len(names) == 1 else None)
            if key not in names:
                raise ValueError(f"{path}: expected an array named {key or 'x, images or data'} in the archive, "
                                 f"found {names}")
            arr = loaded[key]
    else:
        arr = loaded
    if arr.dtype.kind not in "uif":
        raise ValueError(f"{path}: expected {what}, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{path}: expected {what}, got NaN or infinite values")
    if levels is None:
        levels = 256 if arr.dtype == np.uint8 else int(arr.max()) + 1 if arr.size else 2
    try:
        return Dataset(_add_channel(arr), max(int(levels), 2), str(path))
    except ValueError as exc:
        raise ValueError(f"{exc} (from {what})") from None


def load_image_folder(path, *, levels: int = 256) -> Dataset:
    """All PNG/JPEG images in a folder (sorted by name, sub-folders included), 8-bit grey or RGB.

    All images must have the same size; they become ``(N, C, H, W)`` with C = 1 when every image is
    grey, else 3.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_dir():
        raise _missing(path, "a folder of PNG/JPEG images")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"{path}: expected PNG/JPEG images in the folder, found none")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                images.append(im.convert("L") if im.mode in ("1", "L", "LA", "I;16", "I") else im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{f}: expected a PNG or JPEG image ({exc})") from None
    grey = all(im.mode == "L" for im in images)
    arrays = [np.asarray(im if grey else im.convert("RGB")) for im in images]
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"{path}: expected images of one size, found sizes {sorted(sizes)}")
    arr = np.stack(arrays)
    arr = arr[:, None] if grey else arr.transpose(0, 3, 1, 2)
    return Dataset(arr, levels, str(path))


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path, *, levels: int = 256) -> Dataset:
    """An IDX file (the MNIST format, e.g. ``train-images-idx3-ubyte[.gz]``).

    The header is two zero bytes, a type code (0x08 = unsigned byte, ...), the number of dimensions
    ``d`` and ``d`` big-endian 32-bit sizes; the data follow in C order (LeCun et al., the MNIST page).
    """
    path = Path(path)
    what = "an IDX file (MNIST format: magic 0x0000 type ndim, big-endian sizes, data)"
    if not path.is_file():
        raise _missing(path, what)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ValueError(f"{path}: could not read {what} ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] < 1:
        raise ValueError(f"{path}: expected {what}, got magic bytes {raw[:4].hex() or 'none'}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: expected {what}, the header is truncated")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: expected {expected} data bytes for dimensions {dims}, got {len(raw) - header}")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    if arr.ndim == 1:
        arr = arr[:, None]  # a label file: one value per item
    return Dataset(_add_channel(arr.astype(np.int64)), levels, str(path))


#: How :func:`load` reads a path, by suffix; anything else is tried as IDX (which checks its magic).
LOADERS = {".npy": load_array, ".npz": load_array}


def load(source=None, **options) -> Dataset:
    """Load a data set: ``None`` or ``"digits"`` -> :func:`digits`; a folder -> :func:`load_image_folder`;
    ``.npy``/``.npz`` -> :func:`load_array`; any other file -> :func:`load_idx`.

    ``options`` go to the loader (``levels``, ``key``).
    """
    if source is None or str(source) == "digits":
        if options:
            raise ValueError(f"the bundled digits take no options, got {sorted(options)}")
        return digits()
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return _call_loader(load_image_folder, path, options)
    if not path.exists():
        raise _missing(path, "'digits', a folder of images, a .npy/.npz array or an IDX file")
    return _call_loader(LOADERS.get(path.suffix.lower(), load_idx), path, options)


def _call_loader(loader, path: Path, options: dict) -> Dataset:
    """Call ``loader(path, **options)``, rejecting options the loader does not take with a ValueError."""
    allowed = sorted(n for n, p in inspect.signature(loader).parameters.items() if p.kind is p.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"options {unknown} do not apply to {path} ({loader.__name__} takes {allowed})")
    return loader(path, **options)
