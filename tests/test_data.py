"""Data: bundled digits, arrays, image folders, IDX files, split, dequantisation, clear errors."""

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from probdiff import data


def test_digits_bundled():
    ds = data.digits()
    assert len(ds) == 1797 and tuple(ds.event_shape) == (1, 8, 8) and ds.levels == 17
    assert int(ds.counts.min()) == 0 and int(ds.counts.max()) == 16
    from sklearn.datasets import load_digits
    np.testing.assert_array_equal(ds.counts[:, 0].numpy(), load_digits().images)


def test_split_is_deterministic_and_disjoint():
    ds = data.Dataset(torch.arange(100).reshape(100, 1), levels=100)
    a, b = ds.split(0.2, seed=3), ds.split(0.2, seed=3)
    assert torch.equal(a.train.counts, b.train.counts) and torch.equal(a.test.counts, b.test.counts)
    train, test = set(a.train.counts[:, 0].tolist()), set(a.test.counts[:, 0].tolist())
    assert len(test) == 20 and len(train) == 80 and not train & test
    assert not torch.equal(ds.split(0.2, seed=4).test.counts, a.test.counts)


def test_dequantize_stays_in_bins():
    deq = data.Dequantize(17)
    n = torch.randint(0, 17, (1000, 4), generator=torch.Generator().manual_seed(0))
    x = deq(n, torch.Generator().manual_seed(1))
    assert float(x.min()) >= -1 and float(x.max()) < 1
    lo = -1 + 2 * n / 17
    assert bool(((x >= lo) & (x < lo + 2 / 17)).all())
    torch.testing.assert_close(deq(n, noise=False), lo + 1 / 17)
    assert torch.equal(deq.quantize(x), n)
    # u ~ U[0, 1): the within-bin offsets have mean 1/2 and variance 1/12
    u = (x - lo) * 17 / 2
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005


def test_load_npy_and_npz(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 6, 7)).astype(np.uint8)
    np.save(tmp_path / "a.npy", arr)
    ds = data.load(tmp_path / "a.npy")
    assert tuple(ds.counts.shape) == (5, 1, 6, 7) and ds.levels == 256
    np.testing.assert_array_equal(ds.counts[:, 0].numpy(), arr)
    np.savez(tmp_path / "b.npz", images=arr.astype(np.int32) % 10)
    ds = data.load(tmp_path / "b.npz")
    assert ds.levels == int((arr % 10).max()) + 1


def test_load_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (6, 5)).astype(np.uint8) for _ in range(3)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    ds = data.load(tmp_path)
    assert tuple(ds.counts.shape) == (3, 1, 6, 5)
    np.testing.assert_array_equal(ds.counts[:, 0].numpy(), np.stack(arrays))


def write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", n) for n in arr.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"])
def test_load_idx(tmp_path, name):
    arr = np.random.default_rng(1).integers(0, 256, (4, 28, 28))
    write_idx(tmp_path / name, arr)
    ds = data.load(tmp_path / name)
    assert tuple(ds.counts.shape) == (4, 1, 28, 28)
    np.testing.assert_array_equal(ds.counts[:, 0].numpy(), arr)


def test_options_a_loader_does_not_take_are_value_errors(tmp_path):
    write_idx(tmp_path / "images-idx", np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"options \['key'\] do not apply to .*images-idx \(load_idx takes \['levels'\]\)"):
        data.load(tmp_path / "images-idx", key="x")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "0.png")
    with pytest.raises(ValueError, match=r"options \['key'\] do not apply"):
        data.load(tmp_path, key="x")
    assert data.load(tmp_path / "images-idx", levels=2).counts.shape == (2, 1, 3, 3)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="nope.npz: no such file"):
        data.load(tmp_path / "nope.npz")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="bad.npy: could not read"):
        data.load(tmp_path / "bad.npy")
    (tmp_path / "bad-idx").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="bad-idx: expected an IDX file"):
        data.load(tmp_path / "bad-idx")
    write_idx(tmp_path / "short-idx", np.zeros((2, 3, 3)))
    raw = (tmp_path / "short-idx").read_bytes()
    (tmp_path / "short-idx").write_bytes(raw[:-2])
    with pytest.raises(ValueError, match="short-idx: expected 18 data bytes"):
        data.load(tmp_path / "short-idx")
    np.save(tmp_path / "float.npy", np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="float.npy: expected integer levels"):
        data.load(tmp_path / "float.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: expected PNG/JPEG"):
        data.load(tmp_path / "empty")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.png: expected a PNG"):
        data.load(tmp_path / "imgs")
    with pytest.raises(ValueError, match="levels"):
        data.Dataset(torch.tensor([[3]]), levels=3)
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits().split(1.5)
