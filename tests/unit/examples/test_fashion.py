"""fedbus.examples.fashion: the IDX reader, its refusals, partitioning and the global test set.

Every test but the last writes tiny IDX files into tmp_path, so CI needs no data package;
the last reads Debian's ``dataset-fashion-mnist`` where it is installed.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fedbus.examples import fashion

REAL = Path(fashion.DEFAULT_PATH)
TRAIN_N, TEST_N = 300, 50
Tiny = tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]
"""A directory of tiny IDX files and, per split, the (images, labels) written there."""


def _idx(magic: int, array: np.ndarray) -> bytes:
    """``array`` in the real IDX layout: big-endian magic and dims, then the uint8 data."""
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def _make(directory: Path, split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)  # balanced: n / 10 of every class
    _write(directory / f"{split}-images-idx3-ubyte.gz", _idx(2051, images))
    _write(directory / f"{split}-labels-idx1-ubyte.gz", _idx(2049, labels))
    return images, labels


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    # tmp_path directories can reuse a name across tests; a cached read must not leak.
    fashion._load.cache_clear()
    fashion._partitions.cache_clear()
    yield
    fashion._load.cache_clear()
    fashion._partitions.cache_clear()


@pytest.fixture
def tiny(tmp_path: Path) -> Tiny:
    raw = {
        "train": _make(tmp_path, "train", TRAIN_N, 1),
        "t10k": _make(tmp_path, "t10k", TEST_N, 2),
    }
    return tmp_path, raw


def _normalised(images: np.ndarray) -> np.ndarray:
    return ((images.reshape(len(images), 784).astype(np.float32) / 255 - 0.2860) / 0.3530).astype(
        np.float32
    )


def _rows(ds: torch.utils.data.TensorDataset) -> set[bytes]:
    return {row.numpy().tobytes() for row in ds.tensors[0]}


# -- the IDX reader ---------------------------------------------------------------------


def test_read_idx_returns_exactly_the_written_array(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    path = _write(tmp_path / "x-idx3-ubyte.gz", _idx(2051, images))
    np.testing.assert_array_equal(fashion.read_idx(path, 2051), images)
    # An unpacked file reads the same.
    plain = tmp_path / "plain-idx3-ubyte"
    plain.write_bytes(_idx(2051, images))
    np.testing.assert_array_equal(fashion.read_idx(plain, 2051), images)


def test_unpacked_files_are_found_when_no_gz_is_there(tmp_path: Path) -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(2051, images))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(2049, np.arange(4)))
    assert fashion.load_test(path=str(tmp_path)).tensors[1].tolist() == [0, 1, 2, 3]


def test_bad_magic_is_refused_naming_the_file(tmp_path: Path) -> None:
    # A label file where an image file should be: magic 2049, not 2051.
    path = _write(tmp_path / "swapped.gz", _idx(2049, np.zeros(5)))
    with pytest.raises(ValueError, match=r"swapped\.gz.*magic number 2049, expected 2051"):
        fashion.read_idx(path, 2051)


def test_truncated_data_is_refused_naming_the_file(tmp_path: Path) -> None:
    payload = _idx(2051, np.zeros((3, 28, 28)))
    path = _write(tmp_path / "short.gz", payload[:-10])
    with pytest.raises(ValueError, match=r"short\.gz.*2352 data bytes, the file holds 2342"):
        fashion.read_idx(path, 2051)
    with pytest.raises(ValueError, match=r"header\.gz.*shorter than an IDX header"):
        fashion.read_idx(_write(tmp_path / "header.gz", payload[:9]), 2051)


def test_a_cut_off_gzip_stream_is_refused_naming_the_file(tmp_path: Path) -> None:
    whole = _write(tmp_path / "whole.gz", _idx(2051, np.zeros((3, 28, 28)))).read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.gz.*cannot read"):
        fashion.read_idx(cut, 2051)


def test_label_and_image_counts_must_match(tiny: Tiny) -> None:
    directory, _ = tiny
    _write(directory / "t10k-labels-idx1-ubyte.gz", _idx(2049, np.zeros(TEST_N - 1)))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: 49 labels for 50 images"):
        fashion.load_test(path=str(directory))


def test_images_must_be_28_by_28(tmp_path: Path) -> None:
    _write(tmp_path / "t10k-images-idx3-ubyte.gz", _idx(2051, np.zeros((2, 27, 28))))
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx(2049, np.zeros(2)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: images are \(27, 28\)"):
        fashion.load_test(path=str(tmp_path))


def test_labels_must_be_classes_0_to_9(tmp_path: Path) -> None:
    _write(tmp_path / "t10k-images-idx3-ubyte.gz", _idx(2051, np.zeros((2, 28, 28))))
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", _idx(2049, np.array([3, 10])))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: label 10"):
        fashion.load_test(path=str(tmp_path))


def test_a_missing_directory_names_the_file_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere/t10k-images-idx3-ubyte\.gz.*install"):
        fashion.load_test(path=str(tmp_path / "nowhere"))


# -- the entry points -------------------------------------------------------------------


def test_make_model_maps_pixels_to_ten_logits() -> None:
    model = fashion.make_model()
    assert model(torch.zeros(4, 784)).shape == (4, 10)
    assert sum(p.numel() for p in model.parameters()) == 784 * 128 + 128 + 128 * 10 + 10


def test_load_test_is_the_whole_t10k_set_normalised(tiny: Tiny) -> None:
    directory, raw = tiny
    test = fashion.load_test(path=str(directory))
    x, y = test.tensors
    assert isinstance(test, torch.utils.data.TensorDataset)
    assert x.dtype == torch.float32 and x.shape == (TEST_N, 784)
    assert y.dtype == torch.int64
    np.testing.assert_allclose(x.numpy(), _normalised(raw["t10k"][0]), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(y.numpy(), raw["t10k"][1])


def test_load_test_ignores_the_partitioning_arguments(tiny: Tiny) -> None:
    # A coordinator may pass the job's data_args unchanged.
    directory, _ = tiny
    plain = fashion.load_test(path=str(directory))
    with_args = fashion.load_test(
        path=str(directory), num_partitions=7, alpha=0.1, seed=5, test_frac=0.3, max_samples=9
    )
    assert all(torch.equal(a, b) for a, b in zip(plain.tensors, with_args.tensors, strict=True))


def test_load_test_limit_is_a_fixed_subset_in_file_order(tiny: Tiny) -> None:
    directory, _ = tiny
    a = fashion.load_test(path=str(directory), limit=20, seed=1)
    b = fashion.load_test(path=str(directory), limit=20, seed=2)
    assert len(a) == 20 and torch.equal(a.tensors[0], b.tensors[0])
    # Rows of the full set, in the order they have there.
    full = [row.numpy().tobytes() for row in fashion.load_test(path=str(directory)).tensors[0]]
    positions = [full.index(row.numpy().tobytes()) for row in a.tensors[0]]
    assert positions == sorted(positions)
    assert len(fashion.load_test(path=str(directory), limit=10_000)) == TEST_N


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_partitions_cover_the_training_set_once(tiny: Tiny, alpha: float | None) -> None:
    directory, raw = tiny
    parts = [fashion.load_partition(i, 6, path=str(directory), alpha=alpha) for i in range(6)]
    labels = torch.cat([torch.cat([tr.tensors[1], te.tensors[1]]) for tr, te in parts])
    assert len(labels) == TRAIN_N
    assert np.bincount(labels.numpy(), minlength=10).tolist() == [TRAIN_N // 10] * 10
    rows = [_rows(tr) | _rows(te) for tr, te in parts]
    assert set().union(*rows) == {r.tobytes() for r in _normalised(raw["train"][0])}
    # No test image is in any partition, and every client has train and test samples.
    assert not set().union(*rows) & _rows(fashion.load_test(path=str(directory)))
    assert min(len(tr) for tr, _ in parts) >= 1 and min(len(te) for _, te in parts) >= 1


def test_each_client_holds_out_test_frac(tiny: Tiny) -> None:
    directory, _ = tiny
    train, test = fashion.load_partition(0, 3, path=str(directory), alpha=None, test_frac=0.2)
    assert (len(train), len(test)) == (80, 20)
    assert not _rows(train) & _rows(test)


def test_partitions_are_deterministic_in_the_seed(tiny: Tiny) -> None:
    directory, _ = tiny

    def labels(seed: int) -> list[list[int]]:
        fashion._partitions.cache_clear()  # recompute, not a cached table
        out = []
        for i in range(5):
            train, test = fashion.load_partition(i, 5, path=str(directory), seed=seed)
            out.append(train.tensors[1].tolist() + test.tensors[1].tolist())
        return out

    assert labels(3) == labels(3)
    assert labels(3) != labels(4)


def test_small_alpha_skews_labels(tiny: Tiny) -> None:
    directory, _ = tiny
    counts = [
        len(
            torch.unique(
                fashion.load_partition(i, 5, path=str(directory), alpha=0.05)[0].tensors[1]
            )
        )
        for i in range(5)
    ]
    assert np.mean(counts) < 8


def test_max_samples_partitions_a_seeded_subset(tiny: Tiny) -> None:
    directory, _ = tiny

    def rows(seed: int, num: int) -> set[bytes]:
        out: set[bytes] = set()
        for i in range(num):
            train, test = fashion.load_partition(
                i, num, path=str(directory), seed=seed, max_samples=100, alpha=None
            )
            out |= _rows(train) | _rows(test)
        return out

    assert len(rows(0, 4)) == 100
    # The same subset for every client count, another for another seed.
    assert rows(0, 4) == rows(0, 10)
    assert rows(0, 4) != rows(1, 4)


def test_files_are_read_once_per_process(tiny: Tiny) -> None:
    directory, _ = tiny
    for i in range(30):
        fashion.load_partition(i, 30, path=str(directory))
    fashion.load_test(path=str(directory) + "/")  # another spelling of the same directory
    assert fashion._load.cache_info().misses == 2  # train once, t10k once
    assert fashion._partitions.cache_info().misses == 1


def test_bad_arguments_are_refused(tiny: Tiny) -> None:
    directory = str(tiny[0])
    with pytest.raises(ValueError, match=r"partition must be in 0\.\.9"):
        fashion.load_partition(10, 10, path=directory)
    with pytest.raises(ValueError, match=rf"num_partitions must be in 1\.\.{TRAIN_N}"):
        fashion.load_partition(0, TRAIN_N + 1, path=directory)
    with pytest.raises(ValueError, match=r"num_partitions must be in 1\.\.20"):
        fashion.load_partition(0, 21, path=directory, max_samples=20)
    with pytest.raises(ValueError, match="test_frac"):
        fashion.load_partition(0, 10, path=directory, test_frac=1.0)


# -- the real package -------------------------------------------------------------------


@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} is absent (dataset-fashion-mnist)")
def test_the_debian_package_reads_and_partitions() -> None:
    test = fashion.load_test()
    assert len(test) == 10_000
    assert np.bincount(test.tensors[1].numpy()).tolist() == [1000] * 10
    parts = [fashion.load_partition(i, 1000, alpha=0.5) for i in range(1000)]
    sizes = np.array([len(tr) + len(te) for tr, te in parts])
    assert sizes.sum() == 60_000 and sizes.min() >= 10
    assert min(len(te) for _, te in parts) >= 1
    # The normalisation constants are the training pixels' statistics (of x / 255).
    pixels, _ = fashion._load(fashion._key(REAL), "train")
    assert pixels.mean(dtype=np.float64) / 255 == pytest.approx(0.2860, abs=1e-4)
    assert pixels.std(dtype=np.float64) / 255 == pytest.approx(0.3530, abs=1e-4)
