"""CIFAR-10 loader over real-format pickle batches: values, both paths, augmentation, errors."""

import itertools
import os
import pickle

import numpy as np
import pytest
import torch
import torchvision
from data_files import CIFAR_CLASSES, write_cifar10
from torchvision.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ToTensor,
)

from mlproject.data import CIFARDatasetLoader, InMemoryLoader
from mlproject.data.in_memory import crop_flip
from mlproject.errors import DataError

MEAN, STD = torch.tensor(CIFARDatasetLoader.MEAN), torch.tensor(CIFARDatasetLoader.STD)
NORM = Normalize(CIFARDatasetLoader.MEAN, CIFARDatasetLoader.STD)


@pytest.fixture
def cifar_dir(tmp_path):
    """(root, the arrays written): 5 x 20 training images, 30 test images."""
    return tmp_path, write_cifar10(tmp_path, n_per_batch=20, n_test=30)


def all_batches(loader):
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


def test_splits_shapes_dtypes_sizes_and_classes(cifar_dir):
    root, _ = cifar_dir
    factory = CIFARDatasetLoader(16, data_dir=root, validation_size=10, download=False)
    sizes = {}
    for split in ("train", "validation", "test"):
        x, y = all_batches(getattr(factory, f"{split}_loader")())
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
        sizes[split] = len(y)
    assert sizes == {"train": 90, "validation": 10, "test": 30}
    assert factory.classes == CIFAR_CLASSES


def test_the_test_split_is_the_test_batch_in_order(cifar_dir):
    root, written = cifar_dir
    factory = CIFARDatasetLoader(16, data_dir=root, validation_size=10, download=False)
    images, labels = written["test"]
    assert torch.equal(factory.test_loader().images, torch.from_numpy(images).view(-1, 3, 32, 32))
    assert torch.equal(factory.test_loader().labels, torch.from_numpy(labels).long())


def test_the_readme_snippet_works_as_written(cifar_dir):
    root, _ = cifar_dir
    factory = CIFARDatasetLoader(
        8,
        train_transform=Compose(
            [RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), NORM]
        ),
        test_transform=Compose([ToTensor(), NORM]),
        data_dir=root,
        validation_size=10,
    )
    assert isinstance(factory.train_loader(), torch.utils.data.DataLoader)
    x, y = next(iter(factory.train_loader()))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64


def test_fast_path_equals_torchvision_cifar10_with_the_same_normalisation(cifar_dir, monkeypatch):
    root, _ = cifar_dir
    # torchvision checks the real files' MD5s on every load; these files are generated.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    reference = torchvision.datasets.CIFAR10(
        root, train=False, transform=Compose([ToTensor(), NORM])
    )
    factory = CIFARDatasetLoader(16, data_dir=root, validation_size=10, download=False)
    x, y = all_batches(factory.test_loader())
    expected = torch.stack([reference[i][0] for i in range(len(reference))])
    assert torch.equal(x, expected)  # bit for bit
    assert y.tolist() == reference.targets
    assert factory.classes == reference.classes


def test_per_sample_path_equals_the_fast_path_for_the_same_images(cifar_dir):
    root, _ = cifar_dir
    fast = CIFARDatasetLoader(16, data_dir=root, validation_size=10, download=False)
    slow = CIFARDatasetLoader(
        16, data_dir=root, validation_size=10, test_transform=Compose([ToTensor(), NORM])
    )
    for split in ("validation", "test"):
        x_fast, y_fast = all_batches(getattr(fast, f"{split}_loader")())
        x_slow, y_slow = all_batches(getattr(slow, f"{split}_loader")())
        assert torch.equal(x_fast, x_slow) and torch.equal(y_fast, y_slow)


def test_the_fast_training_split_is_augmented_unless_turned_off(cifar_dir):
    root, _ = cifar_dir
    plain = CIFARDatasetLoader(100, data_dir=root, validation_size=0, augment=False)
    augmented = CIFARDatasetLoader(100, data_dir=root, validation_size=0)
    assert isinstance(augmented.train_loader(), InMemoryLoader)
    torch.manual_seed(0)
    x_plain, y_plain = next(iter(plain.train_loader()))
    torch.manual_seed(0)
    x_aug, y_aug = next(iter(augmented.train_loader()))
    assert torch.equal(y_plain, y_aug)  # same order: augmentation draws after the permutation
    assert not torch.equal(x_plain, x_aug)
    # every augmented image is one of the 9 x 9 crops x 2 flips of its plain image
    raw_plain, raw_aug = (
        ((x * STD.view(1, 3, 1, 1) + MEAN.view(1, 3, 1, 1)) * 255).round().to(torch.uint8)
        for x in (x_plain, x_aug)
    )
    matched = torch.zeros(100, dtype=torch.bool)
    for dy, dx, flip in itertools.product(range(9), range(9), (False, True)):
        offsets, flips = torch.tensor([[dy, dx]]).expand(100, 2), torch.full((100,), flip)
        matched |= (crop_flip(raw_plain, offsets, flips, 4) == raw_aug).all(dim=(1, 2, 3))
    assert matched.all()
    x_test, _ = next(iter(augmented.test_loader()))
    assert torch.equal(x_test, next(iter(plain.test_loader()))[0])  # only training augments


def test_existing_files_are_not_checksummed_nor_downloaded(cifar_dir, monkeypatch):
    root, _ = cifar_dir

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", no_network)
    assert len(CIFARDatasetLoader(16, data_dir=root, validation_size=10).test_loader()) == 2


# --- errors ---------------------------------------------------------------------------------


def test_missing_directory_names_dataset_directory_files_and_url(tmp_path):
    with pytest.raises(DataError) as err:
        CIFARDatasetLoader(data_dir=tmp_path / "absent", download=False)
    message = str(err.value)
    assert "CIFAR-10" in message and str(tmp_path / "absent") in message
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        assert f"MISSING cifar-10-batches-py/{name}" in message
    assert "cifar-10-python.tar.gz" in message and "tar xzf" in message


def test_missing_file_is_named(cifar_dir):
    root, _ = cifar_dir
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="MISSING cifar-10-batches-py/data_batch_3"):
        CIFARDatasetLoader(data_dir=root, download=False)


def test_truncated_batch_is_named(cifar_dir):
    root, _ = cifar_dir
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError) as err:
        CIFARDatasetLoader(data_dir=root, download=False)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def rewrite(path, **changes):
    with open(path, "rb") as stream:
        entry = pickle.load(stream, encoding="latin1")
    entry.update(changes)
    with open(path, "wb") as stream:
        pickle.dump(entry, stream, protocol=2)


def test_wrong_data_shape_is_named(cifar_dir):
    root, _ = cifar_dir
    path = root / "cifar-10-batches-py" / "test_batch"
    rewrite(path, data=np.zeros((30, 1024), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        CIFARDatasetLoader(data_dir=root, download=False)
    assert str(path) in str(err.value) and "(30, 1024)" in str(err.value)
    assert "(N, 3072)" in str(err.value)


def test_labels_out_of_range_or_miscounted_are_named(cifar_dir):
    root, _ = cifar_dir
    path = root / "cifar-10-batches-py" / "data_batch_1"
    rewrite(path, labels=[10] * 20)
    with pytest.raises(DataError, match="labels in 10..10; CIFAR-10 labels are 0..9"):
        CIFARDatasetLoader(data_dir=root, download=False)
    rewrite(path, labels=[1] * 19)
    with pytest.raises(DataError, match="labels of shape"):
        CIFARDatasetLoader(data_dir=root, download=False)


def test_a_broken_meta_file_is_named(cifar_dir):
    root, _ = cifar_dir
    path = root / "cifar-10-batches-py" / "batches.meta"
    rewrite(path, label_names=["cat", "dog"])
    with pytest.raises(DataError, match="batches.meta"):
        CIFARDatasetLoader(data_dir=root, download=False)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused(cifar_dir):
    root, _ = cifar_dir
    path = root / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "wb") as stream:
        pickle.dump({"data": RunsCode(), "labels": []}, stream)
    with pytest.raises(DataError) as err:
        CIFARDatasetLoader(data_dir=root, download=False)
    assert "system" in str(err.value) and str(path) in str(err.value)


# --- the trainer's exact resume over the augmented fast path ---------------------------------


def test_a_run_resumed_mid_epoch_equals_the_run_that_never_stopped(cifar_dir):
    """Shuffled, cropped and flipped batches: the resumed run must see the very same ones."""
    from torch import nn

    from mlproject import MLProject, ProxyModel

    root, _ = cifar_dir

    class Project(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            return CIFARDatasetLoader(8, data_dir=root, validation_size=10, download=False)

        @staticmethod
        def get_model(config):
            torch.manual_seed(0)
            net = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(3 * 32 * 32, 10))
            return ProxyModel(net, torch.optim.Adam(net.parameters(), 1e-2), nn.CrossEntropyLoss())

    def train(model_dir, steps, **extra):
        config = {
            "model_dir": str(model_dir),
            "n_global_iterations": steps,
            "save_iterations": 1,
            "seed": 7,
            "progress": False,
            **extra,
        }
        Project(config).train()
        (run_dir,) = model_dir.iterdir()
        return torch.load(sorted(run_dir.glob("checkpoint-*.pt"))[-1], weights_only=True)

    straight = train(root / "straight", 16)  # 12 batches per epoch: stops in epoch 2
    for stop in (13,):  # mid-epoch in the second epoch: both RNG restores matter
        train(root / f"stop{stop}", stop)
        resumed = train(root / f"stop{stop}", 16, resume="auto")
        assert resumed["state"]["global_step"] == 16
        for name, value in straight["model"]["weights"].items():
            assert torch.equal(value, resumed["model"]["weights"][name]), f"stop {stop}: {name}"
        assert torch.equal(straight["rng"]["torch"], resumed["rng"]["torch"])
