"""ClutteredMNIST: the construction, its determinism everywhere, the PNG export."""

import hashlib
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from data_files import MNIST_NAMES, write_idx
from torchvision.transforms import PILToTensor

from mlproject.data import ClutteredMNIST, ClutteredMNISTFactory, InMemoryLoader
from mlproject.data.images import TensorImages
from mlproject.errors import DataError

N_TRAIN, N_TEST = 120, 40


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    """MNIST files whose digits are flat squares of distinct grey values: training digit j is
    all ``1 + j``, test digit j all ``200 + j``, so a pixel tells which digit it came from."""
    root = tmp_path_factory.mktemp("cluttered")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, values in (("train", 1 + np.arange(N_TRAIN)), ("test", 200 + np.arange(N_TEST))):
        images = np.broadcast_to(values[:, None, None], (len(values), 28, 28)).astype(np.uint8)
        image_name, label_name = MNIST_NAMES[split]
        write_idx(raw / image_name, images)
        write_idx(raw / label_name, (np.arange(len(values)) * 7 % 10).astype(np.uint8))
    return root


def make(root, **kwargs):
    kwargs = {
        "batch_size": 16,
        "data_dir": root,
        "validation_size": 20,
        "download": False,
        **kwargs,
    }
    return ClutteredMNISTFactory(**kwargs)


def digest(factory):
    """SHA-256 of each split's canvases and labels (also sent to the other process)."""
    parts = {}
    for name, split in factory.splits.items():
        images, labels = split.tensors()
        data = images.numpy().tobytes() + labels.numpy().tobytes()
        parts[name] = hashlib.sha256(data).hexdigest()
    return parts


def test_batches_shapes_and_split_sizes(mnist_root):
    factory = make(mnist_root)
    assert {n: len(s) for n, s in factory.splits.items()} == {
        "train": 100,
        "validation": 20,
        "test": 40,
    }
    x, y = next(iter(factory.train_loader()))
    assert x.shape == (16, 1, 100, 100) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert isinstance(factory.train_loader(), InMemoryLoader)


def test_parameters_set_canvas_patches_and_sample_counts(mnist_root):
    factory = make(
        mnist_root,
        shape=(40, 60),
        n_clutters=2,
        clutter_size=4,
        n_train=7,
        n_validation=5,
        n_test=3,
    )
    assert {n: len(s) for n, s in factory.splits.items()} == {
        "train": 7,
        "validation": 5,
        "test": 3,
    }
    images, _ = factory.splits["train"].tensors()
    assert images.shape == (7, 1, 40, 60)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_each_canvas_is_its_digit_whole_over_patches_of_its_own_split(mnist_root, split):
    factory = make(mnist_root, shape=(64, 64), n_clutters=6, clutter_size=8)
    data = factory.splits[split]
    images, labels = data.tensors()
    own_values = set(np.unique(data.digits).tolist())
    for i in range(len(data)):
        canvas = images[i, 0].numpy()
        digit_value = int(data.digits[i % len(data.digits)][0, 0])
        # the digit, pasted last, is a whole 28x28 square of its value
        windows = np.lib.stride_tricks.sliding_window_view(canvas, (28, 28))
        assert (windows == digit_value).all(axis=(2, 3)).any(), f"sample {i}: no whole digit"
        # everything else is 8x8 patches cut from digits of the same split (or background)
        values = set(np.unique(canvas).tolist()) - {0}
        assert values <= own_values and len(values) <= 1 + 6
        assert labels[i] == data.labels[i % len(data.digits)]


def test_the_vectorised_renderer_equals_a_plain_loop(mnist_root):
    rng = np.random.default_rng(0)
    digits = TensorImages(
        torch.from_numpy(rng.integers(0, 256, (50, 1, 28, 28), dtype=np.uint8)), torch.arange(50)
    )
    data = ClutteredMNIST(digits, "train", n_samples=60, seed=3, shape=(50, 70), clutter_size=5)
    got = data.tensors()[0].numpy()[:, 0]
    k, size, draws = data.n_clutters, data.clutter_size, data._draws
    for i in range(60):
        canvas = np.zeros((50, 70), np.uint8)
        for j in range(k):
            source = data.digits[draws[i, j]]
            row, col = draws[i, k + 2 * j : k + 2 * j + 2]
            to_row, to_col = draws[i, 3 * k + 2 * j : 3 * k + 2 * j + 2]
            canvas[to_row : to_row + size, to_col : to_col + size] = source[
                row : row + size, col : col + size
            ]
        top, left = draws[i, -2:]
        canvas[top : top + 28, left : left + 28] = data.digits[i % 50]
        assert np.array_equal(got[i], canvas), f"sample {i}"


def test_the_same_seed_gives_the_same_canvases_and_other_seeds_others(mnist_root):
    torch.manual_seed(0)
    np.random.seed(0)
    first = digest(make(mnist_root, seed=4))
    torch.manual_seed(1)
    np.random.seed(1)
    assert digest(make(mnist_root, seed=4)) == first
    other = digest(make(mnist_root, seed=5))
    assert all(other[name] != first[name] for name in first)


def test_the_same_seed_gives_the_same_canvases_in_another_process(mnist_root):
    # Only mlproject in the child: the same code path, without this module's imports.
    code = f"""
import hashlib, json
from mlproject.data.cluttered import ClutteredMNISTFactory
factory = ClutteredMNISTFactory(
    16, data_dir={str(mnist_root)!r}, validation_size=20, download=False, seed=4
)
{inspect.getsource(digest)}
print(json.dumps(digest(factory)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == digest(make(mnist_root, seed=4))


def test_dataloader_workers_render_the_fast_paths_canvases(mnist_root):
    fast = make(mnist_root)
    slow = make(mnist_root, test_transform=PILToTensor(), num_workers=2)
    loader = slow.test_loader()
    assert isinstance(loader, torch.utils.data.DataLoader) and loader.num_workers == 2
    x_slow = torch.cat([x for x, _ in loader])
    assert torch.equal(x_slow, fast.splits["test"].tensors()[0])


def test_a_split_extends_with_more_samples_and_splits_differ(mnist_root):
    digits = make(mnist_root).splits["train"]
    source = TensorImages(torch.from_numpy(digits.digits[:, None]), digits.labels)
    small = ClutteredMNIST(source, "train", n_samples=10, seed=1).tensors()[0]
    large = ClutteredMNIST(source, "train", n_samples=30, seed=1).tensors()[0]
    assert torch.equal(small, large[:10])
    other = ClutteredMNIST(source, "validation", n_samples=10, seed=1).tensors()[0]
    assert not any(torch.equal(small[i], other[i]) for i in range(10))


def test_fast_path_normalises_with_the_training_statistics(mnist_root):
    factory = make(mnist_root, validation_size=0)
    images = factory.splits["train"].tensors()[0].float() / 255
    assert factory.mean[0] == pytest.approx(images.mean().item(), abs=1e-4)
    assert factory.std[0] == pytest.approx(images.std().item(), abs=1e-3)


def test_export_writes_an_image_folder_and_its_parameters(mnist_root, tmp_path):
    factory = make(mnist_root)
    target = factory.export(tmp_path / "png")
    params = json.loads((target / "params.json").read_text())
    assert params["seed"] == 0 and params["n_samples"] == {
        "train": 100,
        "validation": 20,
        "test": 40,
    }
    assert len(params["mnist_sha256"]) == 64
    folder = torchvision.datasets.ImageFolder(target / "test", transform=PILToTensor())
    assert len(folder) == 40
    images, labels = factory.splits["test"].tensors()
    index = {bytes(img.numpy()): int(lab) for img, lab in zip(images, labels)}
    for img, class_index in folder:
        assert index[bytes(img[:1].numpy())] == int(folder.classes[class_index])
    assert [p.name for p in tmp_path.iterdir()] == ["png"]  # no staging folder left


def test_export_again_with_the_same_parameters_keeps_the_folder(mnist_root, tmp_path):
    factory = make(mnist_root, n_train=5, n_validation=5, n_test=5)
    target = factory.export(tmp_path / "png")
    stamp = (target / "params.json").stat().st_mtime_ns
    assert make(mnist_root, n_train=5, n_validation=5, n_test=5).export(target) == target
    assert (target / "params.json").stat().st_mtime_ns == stamp


def test_export_refuses_a_folder_made_with_other_parameters(mnist_root, tmp_path):
    make(mnist_root, n_train=5, n_validation=5, n_test=5).export(tmp_path / "png")
    with pytest.raises(DataError) as err:
        make(mnist_root, n_train=5, n_validation=5, n_test=5, seed=1).export(tmp_path / "png")
    assert "other parameters" in str(err.value) and "seed: 0 there, 1 now" in str(err.value)


def test_export_refuses_a_folder_holding_other_files(mnist_root, tmp_path):
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a ClutteredMNIST export"):
        make(mnist_root, n_train=5, n_validation=5, n_test=5).export(tmp_path / "png")
    assert [p.name for p in (tmp_path / "png").iterdir()] == ["notes.txt"]


def test_bad_parameters_are_one_error_before_any_file_is_read(tmp_path):
    with pytest.raises(DataError) as err:
        ClutteredMNISTFactory(
            data_dir=tmp_path / "absent",
            shape=(20, 100),
            n_clutters=-1,
            clutter_size=30,
            n_train=0,
            seed=-1,
        )
    for part in ("shape=(20, 100)", "n_clutters=-1", "clutter_size=30", "n_train=0", "seed=-1"):
        assert part in str(err.value)
