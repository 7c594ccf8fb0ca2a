"""Fashion-MNIST: a small MLP on the 60,000 + 10,000 Zalando clothing images.

``make_model``, ``load_partition`` and ``load_test`` are a job's entry points:

    model: fedbus.examples.fashion:make_model
    data: fedbus.examples.fashion:load_partition
    data_args: {num_partitions: 1000, alpha: 0.5, seed: 0}
    test_data: fedbus.examples.fashion:load_test
    test_data_args: {limit: 2000}

``path`` (a data argument) is a directory holding the four IDX files
``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (gzipped ``.gz`` or not); it defaults to
where Debian's ``dataset-fashion-mnist`` package puts them, ``/usr/share/datasets/fashion-mnist``.
Each file is read once per process and the partition table once per (directory,
num_partitions, alpha, seed, max_samples): an emulator runs up to 1,000 agents in one
process and every one of them calls ``load_partition``.

Sizes: the 60,000 training images (6,000 per class) are partitioned over the clients, IID
(``alpha`` None) or Dirichlet(alpha) label skew
(:func:`fedbus.examples.partition.dirichlet_partition`, which redraws until every client holds
at least 10 samples; any still short are topped up from the largest, seeded). At 500
clients that is ~120 samples each, at 1,000 ~60. Every client holds out ``test_frac`` of
its own partition as its local validation split. ``max_samples`` first draws a seeded
uniform subset of the training set, for quick runs.

``load_test`` is the official 10,000-image test set (1,000 per class), never part of any
partition: a fixed global test set on which a coordinator can evaluate the global model.
It accepts (and ignores) the partitioning arguments, so ``test_data_args`` may also be a
copy of ``data_args``; ``limit`` evaluates on a fixed uniform subset instead (seed 0,
whatever the job's seed: the same samples in every run).

Pixels are scaled like :mod:`fedbus.examples.mnist`: ``(x / 255 - 0.2860) / 0.3530``, the
Fashion-MNIST training-set statistics.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from fedbus.examples.mnist import top_up
from fedbus.examples.partition import (
    dirichlet_partition,
    iid_partition,
    sample_indices,
    split_train_test,
)

DEFAULT_PATH = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` installs the IDX files."""
NUM_FEATURES = 784
NUM_CLASSES = 10
MIN_PARTITION = 10
"""Smallest partition: the floor :func:`dirichlet_partition` redraws for, enforced by top-up."""
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_SIDE = 28
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # 0x0803: ubyte, 3 dims; 0x0801: ubyte, 1 dim
_MEAN, _STD = 0.2860, 0.3530  # Fashion-MNIST training pixels (of x / 255)
_SUBSET_STREAM = 7
"""Tags the ``max_samples`` draw's generator, ``[seed, _SUBSET_STREAM]``."""
_LIMIT_SEED = 0
"""``load_test(limit=...)``'s subset ignores the job's seed: one fixed set across seeds."""


def make_model() -> nn.Module:
    """784-128-10 MLP (~102k parameters), the same shape as :func:`fedbus.examples.mnist.make_model`."""
    return nn.Sequential(nn.Linear(NUM_FEATURES, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES))


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array in one IDX file (gzipped when the name ends in ``.gz``).

    The format is a big-endian header, ``magic`` (0, 0, type 0x08 = ubyte, number of
    dimensions) then one uint32 per dimension, followed by exactly prod(dims) bytes.
    Anything else, including a truncated download, is a ValueError naming the file.
    """
    path = Path(path)
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
        try:
            raw = f.read()
        except (OSError, EOFError) as exc:  # a corrupt or cut-off gzip stream
            raise ValueError(f"{path}: cannot read: {exc}") from exc
    # Magic first: a wrong kind of file is named as such, not as a short header.
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise ValueError(f"{path}: magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes is shorter than an IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise ValueError(
            f"{path}: dims {dims} need {size} data bytes, the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _file(directory: str, name: str) -> Path:
    """``name.gz`` in ``directory``, or ``name`` when only the unpacked file is there."""
    packed = Path(directory) / f"{name}.gz"
    plain = Path(directory) / name
    if packed.exists() or not plain.exists():
        return packed  # when neither exists, the error names the packaged file
    return plain


@functools.lru_cache(maxsize=4)
def _load(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 784], labels int64 [n]) of ``split`` ("train" or "t10k"); read once.

    Kept as uint8 (47 MB for the training set, not 188 MB as float32) and normalised per
    partition: the partitions together already hold one float32 copy of the data.
    """
    images_path = _file(directory, f"{split}-images-idx3-ubyte")
    labels_path = _file(directory, f"{split}-labels-idx1-ubyte")
    for needed in (images_path, labels_path):
        if not needed.exists():
            raise FileNotFoundError(
                f"{needed}: no such file; install dataset-fashion-mnist (Debian) or pass "
                "path, the directory holding the four IDX files"
            )
    images = read_idx(images_path, _IMAGES_MAGIC)
    labels = read_idx(labels_path, _LABELS_MAGIC)
    if images.shape[1:] != (_SIDE, _SIDE):
        raise ValueError(f"{images_path}: images are {images.shape[1:]}, expected 28 x 28")
    if len(images) != len(labels):
        raise ValueError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise ValueError(f"{labels_path}: label {int(labels.max())} is not a class 0-9")
    x = images.reshape(len(images), NUM_FEATURES)
    y = labels.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _key(path: str | Path) -> str:
    """One cache key per directory however it is spelled (relative, ~, trailing slash)."""
    return str(Path(path).expanduser().resolve())


def _dataset(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> TensorDataset:
    pixels = (x[idx].astype(np.float32) / 255.0 - _MEAN) / _STD
    return TensorDataset(torch.from_numpy(pixels.astype(np.float32)), torch.from_numpy(y[idx]))


@functools.lru_cache(maxsize=16)
def _partitions(
    directory: str, num_partitions: int, alpha: float | None, seed: int, max_samples: int | None
) -> tuple[np.ndarray, ...]:
    """Each partition's indices into the training set (not into the ``max_samples`` subset)."""
    _, y = _load(directory, "train")
    # A stream of its own, apart from the partitioner's (seeded by ``seed`` alone), and
    # independent of num_partitions: every client count partitions the same subset.
    pool = sample_indices(len(y), max_samples, [seed, _SUBSET_STREAM])
    if num_partitions < 1 or num_partitions > len(pool):
        raise ValueError(f"num_partitions must be in 1..{len(pool)}, got {num_partitions}")
    if alpha is None or alpha <= 0:
        parts = iid_partition(len(pool), num_partitions, seed)
    else:
        parts = dirichlet_partition(y[pool], num_partitions, alpha, seed, MIN_PARTITION)
    floor = min(MIN_PARTITION, len(pool) // num_partitions)
    parts = top_up(parts, floor, np.random.default_rng([seed, num_partitions]))
    return tuple(pool[p] for p in parts)


def load_partition(
    partition: int,
    num_partitions: int,
    *,
    path: str = DEFAULT_PATH,
    alpha: float | None = 0.5,
    seed: int = 0,
    test_frac: float = 0.2,
    max_samples: int | None = None,
) -> tuple[TensorDataset, TensorDataset]:
    """Agent ``partition``'s (train, test) split of the Fashion-MNIST training set.

    ``alpha`` None means IID; ``max_samples`` partitions a seeded subset of that many.
    """
    if not 0 <= partition < num_partitions:
        raise ValueError(f"partition must be in 0..{num_partitions - 1}, got {partition}")
    if not 0 <= test_frac < 1:
        raise ValueError(f"test_frac must be in [0, 1), got {test_frac}")
    key = _key(path)
    x, y = _load(key, "train")
    parts = _partitions(key, num_partitions, alpha, seed, max_samples)
    train_idx, test_idx = split_train_test(parts[partition], test_frac, seed + partition)
    return _dataset(x, y, train_idx), _dataset(x, y, test_idx)


def load_test(
    *,
    path: str = DEFAULT_PATH,
    limit: int | None = None,
    num_partitions: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
    test_frac: float = 0.2,
    max_samples: int | None = None,
) -> TensorDataset:
    """The official 10,000-image test set (or a fixed uniform ``limit`` of it), in file order.

    The partitioning arguments are accepted so a coordinator can pass the job's
    ``data_args`` as they are; the test set does not depend on them.
    """
    del num_partitions, alpha, seed, test_frac, max_samples
    x, y = _load(_key(path), "t10k")
    return _dataset(x, y, sample_indices(len(y), limit, _LIMIT_SEED))
