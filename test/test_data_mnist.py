"""MNIST and FashionMNIST loaders over real-format idx files: values, splits, paths, errors."""

import gzip

import numpy as np
import pytest
import torch
import torchvision
from data_files import MNIST_NAMES, write_idx, write_mnist
from torchvision.transforms import Compose, Normalize, RandomHorizontalFlip, ToTensor

from mlproject.data import FashionMNISTDatasetLoader, InMemoryLoader, MNISTDatasetLoader
from mlproject.data.mnist import read_idx
from mlproject.errors import DataError

LOADERS = [(MNISTDatasetLoader, "MNIST"), (FashionMNISTDatasetLoader, "FashionMNIST")]


@pytest.fixture(params=LOADERS, ids=lambda p: p[1])
def mnist_dir(request, tmp_path):
    """(loader class, folder name, root, the arrays written) for each MNIST-format dataset."""
    cls, folder = request.param
    written = write_mnist(tmp_path, folder, n_train=120, n_test=40)
    return cls, folder, tmp_path, written


def all_batches(loader):
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


def test_splits_have_the_documented_shapes_dtypes_and_sizes(mnist_dir):
    cls, _, root, _ = mnist_dir
    factory = cls(16, data_dir=root, validation_size=20, download=False)
    sizes = {}
    for split in ("train", "validation", "test"):
        x, y = all_batches(getattr(factory, f"{split}_loader")())
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
        sizes[split] = len(y)
    assert sizes == {"train": 100, "validation": 20, "test": 40}
    assert len(factory.train_loader()) == 7  # ceil(100 / 16)


def test_the_test_split_is_the_test_file_in_order_normalised(mnist_dir):
    cls, _, root, written = mnist_dir
    factory = cls(16, data_dir=root, validation_size=20, download=False)
    x, y = all_batches(factory.test_loader())
    images, labels = written["test"]
    expected = (torch.from_numpy(images).float().div(255) - cls.MEAN[0]) / cls.STD[0]
    assert torch.allclose(x[:, 0], expected, atol=1e-6)
    assert torch.equal(y, torch.from_numpy(labels).long())


def test_validation_is_held_out_of_train_disjoint_and_complete(mnist_dir):
    cls, _, root, written = mnist_dir
    factory = cls(16, data_dir=root, validation_size=20, download=False)
    train = factory.train_loader().images.view(-1, 784)
    validation = factory.validation_loader().images.view(-1, 784)
    original = torch.from_numpy(written["train"][0]).view(-1, 784)
    together = torch.cat([train, validation])
    assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, original.numpy()))


def test_the_validation_split_depends_on_split_seed_only(mnist_dir):
    cls, _, root, _ = mnist_dir

    def validation(seed):
        loader = cls(8, data_dir=root, validation_size=20, split_seed=seed, download=False)
        return loader.validation_loader().images

    torch.manual_seed(1)
    a = validation(0)
    torch.manual_seed(2)  # the global RNG plays no part
    assert torch.equal(a, validation(0))
    assert not torch.equal(a, validation(1))


def test_validation_size_zero_means_no_validation_split(mnist_dir):
    cls, _, root, _ = mnist_dir
    factory = cls(16, data_dir=root, validation_size=0, download=False)
    assert factory.validation_loader() is None and not factory.has_validation_set()
    assert len(factory.train_loader().images) == 120


def test_fast_path_equals_torchvision_dataset_with_to_tensor_and_normalize(mnist_dir):
    cls, folder, root, _ = mnist_dir
    factory = cls(40, data_dir=root, validation_size=20, download=False)
    reference = getattr(torchvision.datasets, folder)(
        root, train=False, transform=Compose([ToTensor(), Normalize(cls.MEAN, cls.STD)])
    )
    x, y = all_batches(factory.test_loader())
    expected = torch.stack([reference[i][0] for i in range(len(reference))])
    assert torch.equal(x, expected)  # bit for bit
    assert torch.equal(y, reference.targets)


def test_transforms_switch_their_split_to_the_per_sample_path(mnist_dir):
    cls, _, root, _ = mnist_dir
    norm = Compose([ToTensor(), Normalize(cls.MEAN, cls.STD)])
    fast = cls(16, data_dir=root, validation_size=20, download=False)
    slow = cls(16, data_dir=root, validation_size=20, test_transform=norm, download=False)
    assert isinstance(slow.train_loader(), InMemoryLoader)
    assert isinstance(slow.test_loader(), torch.utils.data.DataLoader)
    assert isinstance(slow.validation_loader(), torch.utils.data.DataLoader)
    for split in ("validation", "test"):
        x_fast, y_fast = all_batches(getattr(fast, f"{split}_loader")())
        x_slow, y_slow = all_batches(getattr(slow, f"{split}_loader")())
        assert torch.equal(x_fast, x_slow) and torch.equal(y_fast, y_slow)


def test_train_transform_is_applied_per_sample_with_workers(mnist_dir):
    cls, _, root, _ = mnist_dir
    transform = Compose([RandomHorizontalFlip(), ToTensor()])
    factory = cls(16, train_transform=transform, data_dir=root, validation_size=20, num_workers=2)
    loader = factory.train_loader()
    assert loader.num_workers == 2 and len(loader) == 7
    x, y = all_batches(loader)
    assert x.shape == (100, 1, 28, 28) and 0 <= x.min() and x.max() <= 1


def test_files_already_there_load_without_download(mnist_dir, monkeypatch):
    cls, _, root, _ = mnist_dir

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", no_network)
    assert len(cls(16, data_dir=root, validation_size=20).test_loader()) == 3


def test_data_dir_defaults_to_the_environment_variable(mnist_dir, monkeypatch):
    cls, _, root, _ = mnist_dir
    monkeypatch.setenv("DATA_DIR", str(root))
    assert cls(16, validation_size=20, download=False).data_dir == root


# --- errors ---------------------------------------------------------------------------------


def test_missing_directory_names_dataset_directory_and_every_file(tmp_path):
    root = tmp_path / "absent"
    with pytest.raises(DataError) as err:
        MNISTDatasetLoader(data_dir=root, download=False)
    message = str(err.value)
    assert "MNIST" in message and str(root) in message and "does not exist" in message
    for name in (*MNIST_NAMES["train"], *MNIST_NAMES["test"]):
        assert f"MISSING MNIST/raw/{name}" in message
    assert "https://" in message  # where to get them


def test_missing_file_is_named(mnist_dir):
    cls, folder, root, _ = mnist_dir
    (root / folder / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        cls(data_dir=root, download=False)
    assert f"MISSING {folder}/raw/t10k-labels-idx1-ubyte" in str(err.value)
    assert "1 of 4 files missing" in str(err.value)


def test_truncated_file_is_named(mnist_dir):
    cls, folder, root, _ = mnist_dir
    path = root / folder / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        cls(data_dir=root, download=False)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    assert folder in str(err.value)


def test_wrong_image_shape_is_named(mnist_dir):
    cls, folder, root, _ = mnist_dir
    path = root / folder / "raw" / "t10k-images-idx3-ubyte"
    write_idx(path, np.zeros((40, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        cls(data_dir=root, download=False)
    assert str(path) in str(err.value) and "32x32" in str(err.value) and "28x28" in str(err.value)


def test_label_count_and_range_are_checked(mnist_dir):
    cls, folder, root, _ = mnist_dir
    path = root / folder / "raw" / "t10k-labels-idx1-ubyte"
    write_idx(path, np.zeros(39, dtype=np.uint8))
    with pytest.raises(DataError, match="39 labels for the 40 images"):
        cls(data_dir=root, download=False)
    write_idx(path, np.full(40, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="label 10"):
        cls(data_dir=root, download=False)


def test_a_gzipped_or_foreign_file_is_recognised(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(12)))
    with pytest.raises(DataError, match="gunzip"):
        read_idx(path, 3, "MNIST")
    path.write_bytes(b"\x00\x00\x08\x01" + bytes(8))
    with pytest.raises(DataError, match="magic number 0x00000801"):
        read_idx(path, 3, "MNIST")


def test_bad_arguments_fail_before_any_file_is_touched(tmp_path):
    root = tmp_path / "never"
    with pytest.raises(DataError) as err:
        MNISTDatasetLoader(batch_size=0, validation_size=-1, num_workers=-2, data_dir=root)
    for part in ("batch_size=0", "validation_size=-1", "num_workers=-2"):
        assert part in str(err.value)
    assert not root.exists()


def test_validation_size_must_leave_training_data(mnist_dir):
    cls, _, root, _ = mnist_dir
    with pytest.raises(DataError, match="validation_size=120 must leave training data"):
        cls(data_dir=root, validation_size=120, download=False)
