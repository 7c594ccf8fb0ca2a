"""fedbus.examples.mnist: the MNIST-5k entry points (file read once, every partition can train)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedbus.examples import mnist

DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "mnist_5k.csv.gz"
needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} is absent")


def _all(
    num: int, **kw: object
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(num):
        train, test = mnist.load_partition(i, num, path=str(DATA), **kw)  # type: ignore[arg-type]
        out.append((*train.tensors, *test.tensors))
    return out


def test_top_up_fills_every_small_partition_from_the_largest() -> None:
    # Arrange: a skewed split with empty and tiny partitions
    parts = [np.arange(0, 40), np.array([], dtype=np.int64), np.array([40]), np.arange(41, 50)]
    # Act
    out = mnist.top_up(parts, 3, np.random.default_rng(0))
    # Assert: nobody below 3, nothing lost or duplicated, the donors were the big ones
    assert min(len(p) for p in out) >= 3
    merged = np.concatenate(out)
    assert sorted(merged.tolist()) == list(range(50))
    assert len(out[0]) == 40 - 5 and len(out[3]) == 9


def test_top_up_stops_when_nobody_can_give() -> None:
    out = mnist.top_up(
        [np.array([0, 1]), np.array([], dtype=np.int64)], 3, np.random.default_rng(0)
    )
    assert sorted(np.concatenate(out).tolist()) == [0, 1]


def test_make_model_maps_pixels_to_ten_logits() -> None:
    model = mnist.make_model()
    assert model(torch.zeros(4, 784)).shape == (4, 10)
    assert sum(p.numel() for p in model.parameters()) == 784 * 128 + 128 + 128 * 10 + 10


@needs_data
def test_file_is_read_once_per_process() -> None:
    mnist._load.cache_clear()
    mnist._partitions.cache_clear()
    _all(50)
    info = mnist._load.cache_info()
    assert info.misses == 1 and info.hits >= 49
    assert mnist._partitions.cache_info().misses == 1


@needs_data
def test_samples_are_normalised_pixels_with_labels() -> None:
    train, test = mnist.load_partition(3, 10, path=str(DATA), alpha=None)
    x, y = train.tensors
    assert x.dtype == torch.float32 and x.shape[1] == 784
    assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) <= 9
    # (x / 255 - 0.1307) / 0.3081 spans about [-0.42, 2.82]
    assert float(x.min()) == pytest.approx(-0.4242, abs=1e-3)
    assert float(x.max()) == pytest.approx(2.8215, abs=1e-3)
    assert len(test) == pytest.approx(0.2 * 500, abs=1)


@needs_data
@pytest.mark.parametrize("num", [10, 500, 1000])
def test_partitions_cover_the_file_and_every_one_can_train(num: int) -> None:
    parts = _all(num, alpha=0.5, seed=0)
    # Every agent has training data and a test sample, even at ~5 samples per agent.
    assert min(len(p[1]) for p in parts) >= 1
    assert min(len(p[3]) for p in parts) >= 1
    # Together they are the whole file, each sample once: compare (pixels, label) rows.
    rows = torch.cat([torch.cat([p[0], p[2]]) for p in parts])
    labels = torch.cat([torch.cat([p[1], p[3]]) for p in parts])
    assert rows.shape[0] == 5000
    assert np.bincount(labels.numpy(), minlength=10).tolist() == [500] * 10
    # ~20 % held out overall: one global test set spread over the agents
    held_out = sum(len(p[3]) for p in parts)
    assert 0.18 * 5000 <= held_out <= 0.35 * 5000


@needs_data
def test_partitions_are_deterministic_in_the_seed() -> None:
    a, _ = mnist.load_partition(7, 100, path=str(DATA), seed=1)
    b, _ = mnist.load_partition(7, 100, path=str(DATA), seed=1)
    c, _ = mnist.load_partition(7, 100, path=str(DATA), seed=2)
    assert torch.equal(a.tensors[1], b.tensors[1]) and torch.equal(a.tensors[0], b.tensors[0])
    assert not (len(a) == len(c) and torch.equal(a.tensors[1], c.tensors[1]))


@needs_data
def test_small_alpha_skews_labels_and_none_is_iid() -> None:
    def classes_per_agent(alpha: float | None) -> float:
        return float(
            np.mean([len(torch.unique(torch.cat([p[1], p[3]]))) for p in _all(20, alpha=alpha)])
        )

    assert classes_per_agent(None) == 10.0
    assert classes_per_agent(0.1) < 6.0


@needs_data
def test_bad_partition_index_is_refused() -> None:
    with pytest.raises(ValueError, match="partition"):
        mnist.load_partition(10, 10, path=str(DATA))
    with pytest.raises(ValueError, match="num_partitions"):
        mnist.load_partition(0, 6000, path=str(DATA))


def test_a_file_that_is_not_mnist_is_refused(tmp_path: Path) -> None:
    import gzip

    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match="784"):
        mnist.load_partition(0, 1, path=str(bad))


@needs_data
def test_the_model_learns_mnist_5k_centrally() -> None:
    # A sanity bound for the benchmarks: the MLP can reach the accuracy they target.
    torch.manual_seed(0)
    (train, test) = mnist.load_partition(0, 1, path=str(DATA), alpha=None)
    x, y = train.tensors
    model = mnist.make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(len(y), (32,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    tx, ty = test.tensors
    with torch.no_grad():
        accuracy = float((model(tx).argmax(1) == ty).float().mean())
    assert accuracy > 0.85


def _tiny_csv(path: Path, rows: int = 400) -> Path:
    """A gzipped CSV in MNIST-5k's layout (784 pixels, then the label), classes balanced."""
    import gzip

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(rows, 784))
    labels = np.arange(rows) % 10
    with gzip.open(path, "wt") as f:
        for p, label in zip(pixels, labels, strict=True):
            f.write(",".join(map(str, [*p, label])) + "\n")
    return path


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_load_test_is_every_partitions_test_split(tmp_path: Path, alpha: float | None) -> None:
    path = str(_tiny_csv(tmp_path / "tiny.csv.gz"))
    kw: dict[str, object] = {"alpha": alpha, "seed": 3, "test_frac": 0.25}
    splits = [mnist.load_partition(i, 12, path=path, **kw)[1] for i in range(12)]  # type: ignore[arg-type]
    test = mnist.load_test(path=path, num_partitions=12, **kw)  # type: ignore[arg-type]
    assert torch.equal(test.tensors[0], torch.cat([s.tensors[0] for s in splits]))
    assert torch.equal(test.tensors[1], torch.cat([s.tensors[1] for s in splits]))
    assert test.tensors[0].dtype == torch.float32 and test.tensors[1].dtype == torch.int64


def test_load_test_limit_is_a_fixed_subset_in_order(tmp_path: Path) -> None:
    path = str(_tiny_csv(tmp_path / "tiny.csv.gz"))
    full = mnist.load_test(path=path, num_partitions=8)
    a = mnist.load_test(path=path, num_partitions=8, limit=30)
    b = mnist.load_test(path=path, num_partitions=8, limit=30)
    assert len(a) == 30 and torch.equal(a.tensors[0], b.tensors[0])
    rows = [row.numpy().tobytes() for row in full.tensors[0]]
    positions = [rows.index(row.numpy().tobytes()) for row in a.tensors[0]]
    assert positions == sorted(positions)
    assert len(mnist.load_test(path=path, num_partitions=8, limit=10**6)) == len(full)


@needs_data
def test_load_test_is_the_global_test_set_of_the_study() -> None:
    # 1,000 agents at alpha 0.5: ~20 % of 5,000 held out, disjoint from every training split.
    test = mnist.load_test(path=str(DATA), num_partitions=1000, alpha=0.5)
    parts = _all(1000, alpha=0.5)
    assert len(test) == sum(len(p[3]) for p in parts)
    assert torch.equal(test.tensors[1], torch.cat([p[3] for p in parts]))
    trained = {row.numpy().tobytes() for p in parts for row in p[0]}
    held_out = {row.numpy().tobytes() for row in test.tensors[0]}
    # The file's 5,000 images are distinct, so comparing rows is comparing samples.
    assert len(held_out) == len(test) and not held_out & trained
