"""The ready-made factories over real-format files: MNIST, FashionMNIST, CIFAR-10 and SVHN.

Every dataset runs the same tests (values, splits, both paths against torchvision, the errors
that name files); then what is particular to one: idx damage, CIFAR-10's augmentation, its
pickles, the README's snippets, exact resume over the augmented fast path.
"""

import inspect
import itertools
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import accept_files, write_cifar10, write_idx, write_mnist, write_svhn
from torchvision.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ToTensor,
)

from mlproject.data import (
    CIFAR10Factory,
    CIFARDatasetLoader,
    ClutteredMNISTDatasetLoader,
    ClutteredMNISTFactory,
    DigitsDatasetLoader,
    DigitsFactory,
    FashionMNISTDatasetLoader,
    FashionMNISTFactory,
    InMemoryLoader,
    MNISTDatasetLoader,
    MNISTFactory,
    SVHNFactory,
)
from mlproject.data.datasets import idx_damage
from mlproject.data.in_memory import crop_flip
from mlproject.errors import DataError

N_TRAIN, N_TEST = 120, 40
WRITERS = {
    MNISTFactory: lambda root: write_mnist(root, "MNIST", N_TRAIN, N_TEST),
    FashionMNISTFactory: lambda root: write_mnist(root, "FashionMNIST", N_TRAIN, N_TEST),
    CIFAR10Factory: lambda root: write_cifar10(root, N_TRAIN // 5, N_TEST),
    SVHNFactory: lambda root: write_svhn(root, N_TRAIN, N_TEST),
}


@pytest.fixture
def offline(monkeypatch):
    """No network: every URL torchvision opens fails, and the attempts are recorded."""
    attempts = []

    def urlopen(request, *args, **kwargs):
        attempts.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return attempts


@pytest.fixture(params=list(WRITERS), ids=lambda cls: cls.NAME)
def dataset(request, tmp_path, monkeypatch, offline):
    """(factory class, data dir, {split: (uint8 N x C x H x W images, labels)}) of files in
    the real format, which torchvision takes for the originals (``accept_files``)."""
    cls = request.param
    written = WRITERS[cls](tmp_path)
    accept_files(tmp_path, monkeypatch.setattr)
    arrays = {
        split: (torch.from_numpy(x.reshape(len(x), *cls.SHAPE)), torch.as_tensor(y).long())
        for split, (x, y) in written.items()
    }
    return cls, tmp_path, arrays


def make(cls, root, **kwargs):
    return cls(
        **{"batch_size": 16, "data_dir": root, "validation_size": 20, "download": False, **kwargs}
    )


def all_batches(loader):
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


def first_file(cls, root):
    return next(iter(make(cls, root).files()["train"]))


def test_splits_have_the_documented_shapes_dtypes_and_sizes(dataset):
    cls, root, _ = dataset
    factory = make(cls, root)
    sizes = {}
    for split in ("train", "validation", "test"):
        x, y = all_batches(getattr(factory, f"{split}_loader")())
        assert x.dtype == torch.float32 and x.shape[1:] == cls.SHAPE
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
        sizes[split] = len(y)
    assert sizes == {"train": 100, "validation": 20, "test": 40}
    assert len(factory.train_loader()) == 7  # ceil(100 / 16)
    assert factory.classes == list(cls.CLASSES) and len(cls.CLASSES) == 10


def test_the_test_split_is_the_test_file_in_order_normalised(dataset):
    cls, root, written = dataset
    x, y = all_batches(make(cls, root).test_loader())
    images, labels = written["test"]
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (cls.MEAN, cls.STD))
    assert torch.allclose(x, (images.float() / 255 - mean) / std, atol=1e-6)
    assert torch.equal(y, labels)


def test_validation_is_held_out_of_train_disjoint_and_complete(dataset):
    cls, root, written = dataset
    factory = make(cls, root)
    train = factory.train_loader().images.flatten(1)
    validation = factory.validation_loader().images.flatten(1)
    together = torch.cat([train, validation])
    original = written["train"][0].flatten(1)
    assert sorted(map(bytes, together.numpy())) == sorted(map(bytes, original.numpy()))


def test_the_validation_split_depends_on_split_seed_only(dataset):
    cls, root, _ = dataset
    torch.manual_seed(1)
    first = make(cls, root, split_seed=0).validation_loader().images
    torch.manual_seed(2)  # the global RNG plays no part
    assert torch.equal(first, make(cls, root, split_seed=0).validation_loader().images)
    assert not torch.equal(first, make(cls, root, split_seed=1).validation_loader().images)


def test_validation_size_zero_means_no_validation_split(dataset):
    cls, root, _ = dataset
    factory = make(cls, root, validation_size=0)
    assert factory.validation_loader() is None and not factory.has_validation_set()
    assert len(factory.train_loader().images) == N_TRAIN


def test_fast_path_equals_torchvision_dataset_with_to_tensor_and_normalize(dataset):
    cls, root, _ = dataset
    factory = make(cls, root, batch_size=N_TEST)
    reference = factory.source("test", download=False)  # torchvision's own dataset
    reference.transform = Compose([ToTensor(), Normalize(cls.MEAN, cls.STD)])
    x, y = all_batches(factory.test_loader())
    assert torch.equal(x, torch.stack([reference[i][0] for i in range(N_TEST)]))  # bit for bit
    assert y.tolist() == [reference[i][1] for i in range(N_TEST)]


def test_transforms_switch_their_split_to_the_per_sample_path(dataset):
    cls, root, _ = dataset
    norm = Compose([ToTensor(), Normalize(cls.MEAN, cls.STD)])
    fast = make(cls, root)
    slow = make(cls, root, test_transform=norm)
    assert isinstance(slow.train_loader(), InMemoryLoader)
    assert isinstance(slow.test_loader(), torch.utils.data.DataLoader)
    assert isinstance(slow.validation_loader(), torch.utils.data.DataLoader)
    for split in ("validation", "test"):
        x_fast, y_fast = all_batches(getattr(fast, f"{split}_loader")())
        x_slow, y_slow = all_batches(getattr(slow, f"{split}_loader")())
        assert torch.equal(x_fast, x_slow) and torch.equal(y_fast, y_slow)


def test_train_transform_is_applied_per_sample_with_workers(dataset):
    cls, root, _ = dataset
    factory = make(
        cls, root, train_transform=Compose([RandomHorizontalFlip(), ToTensor()]), num_workers=2
    )
    loader = factory.train_loader()
    assert loader.num_workers == 2 and len(loader) == 7
    x, y = all_batches(loader)
    assert x.shape == (100, *cls.SHAPE) and 0 <= x.min() and x.max() <= 1


def test_files_already_there_load_with_download_on_without_the_network(dataset, offline):
    cls, root, _ = dataset
    assert len(make(cls, root, download=True).test_loader()) == 3
    assert offline == []


def test_data_dir_defaults_to_the_environment_variable(dataset, monkeypatch):
    cls, root, _ = dataset
    monkeypatch.setenv("DATA_DIR", str(root))
    assert make(cls, None).data_dir == root


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", list(WRITERS), ids=lambda cls: cls.NAME)
def test_missing_directory_names_dataset_directory_every_file_and_where_to_get_them(tmp_path, cls):
    root = tmp_path / "absent"
    with pytest.raises(DataError) as err:
        cls(data_dir=root, download=False)
    message = str(err.value)
    assert message.startswith(f"{cls.NAME}: ") and str(root) in message
    assert "does not exist" in message and "download=True" in message
    assert "http" in message  # where to get them
    assert not root.exists()


def test_missing_directory_lists_every_expected_file(dataset):
    cls, root, _ = dataset
    expected = [name for split in make(cls, root).files().values() for name in split]
    with pytest.raises(DataError) as err:
        make(cls, root / "absent")
    for name in expected:
        assert f"  MISSING {name}" in str(err.value)


def test_a_missing_file_is_named(dataset):
    cls, root, _ = dataset
    name = first_file(cls, root)
    (root / name).unlink()
    with pytest.raises(DataError) as err:
        make(cls, root)
    assert f"  MISSING {name}" in str(err.value).splitlines()
    assert f"{cls.NAME}: 1 of " in str(err.value)


def test_a_damaged_file_is_named_with_what_is_wrong(dataset):
    cls, root, _ = dataset
    name = first_file(cls, root)
    (root / name).write_bytes((root / name).read_bytes()[:-100])
    with pytest.raises(DataError) as err:
        make(cls, root)
    (line,) = [line for line in str(err.value).splitlines() if line.startswith("  DAMAGED")]
    assert line.startswith(f"  DAMAGED {name}: ")
    assert (
        "truncated" if issubclass(cls, MNISTFactory) else "its MD5 is not torchvision's"
    ) in line


def test_a_damaged_file_with_download_on_and_offline_stays_and_is_named(dataset, offline):
    cls, root, _ = dataset
    name = first_file(cls, root)
    (root / name).write_bytes(b"damaged")
    before = sorted(root.rglob("*"))
    with pytest.raises(DataError) as err:
        make(cls, root, download=True)
    assert f"  DAMAGED {name}: " in str(err.value) and "download=True could not fetch them" in str(
        err.value
    )
    assert sorted(root.rglob("*")) == before  # nothing added, nothing taken


def test_bad_arguments_fail_before_any_file_is_touched(tmp_path):
    root = tmp_path / "never"
    with pytest.raises(DataError) as err:
        MNISTFactory(batch_size=0, validation_size=-1, num_workers=-2, data_dir=root)
    for part in ("batch_size=0", "validation_size=-1", "num_workers=-2"):
        assert part in str(err.value)
    assert not root.exists()


def test_validation_size_must_leave_training_data(dataset):
    cls, root, _ = dataset
    with pytest.raises(DataError, match="validation_size=120 must leave training data"):
        make(cls, root, validation_size=120)


def test_torchvision_is_imported_only_when_a_dataset_is_loaded(tmp_path):
    import subprocess
    import sys

    write_mnist(tmp_path, n_train=8, n_test=4)
    code = (
        "import sys\n"
        "from mlproject import DatasetFactory, InMemoryLoader, MLProject\n"
        "from mlproject.data import CIFAR10Factory, ClutteredMNISTFactory, MNISTFactory\n"
        "before = 'torchvision' in sys.modules\n"
        f"MNISTFactory(4, data_dir={str(tmp_path)!r}, validation_size=2).train_loader()\n"
        "print(before, 'torchvision' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "True"]


def test_the_old_names_are_the_factories():
    assert MNISTDatasetLoader is MNISTFactory and FashionMNISTDatasetLoader is FashionMNISTFactory
    assert CIFARDatasetLoader is CIFAR10Factory and DigitsDatasetLoader is DigitsFactory
    assert ClutteredMNISTDatasetLoader is ClutteredMNISTFactory


# --- MNIST's idx files ----------------------------------------------------------------------


@pytest.fixture
def mnist_dir(tmp_path):
    write_mnist(tmp_path, "MNIST", N_TRAIN, N_TEST)
    return tmp_path, tmp_path / "MNIST" / "raw"


def test_wrong_image_shape_is_named(mnist_dir):
    root, raw = mnist_dir
    write_idx(raw / "t10k-images-idx3-ubyte", np.zeros((40, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        make(MNISTFactory, root)
    message = str(err.value)
    assert "MNIST's test files (MNIST/raw/t10k-images-idx3-ubyte, MNIST/raw/t10k-labels" in message
    assert "1x32x32" in message and "1x28x28" in message and str(root) in message


def test_label_count_and_range_are_checked(mnist_dir):
    root, raw = mnist_dir
    write_idx(raw / "t10k-labels-idx1-ubyte", np.zeros(39, dtype=np.uint8))
    with pytest.raises(DataError, match="39 labels for the 40 images"):
        make(MNISTFactory, root)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.full(40, 10, dtype=np.uint8))
    with pytest.raises(DataError, match="labels 10..10; MNIST labels are 0..9"):
        make(MNISTFactory, root)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x1f\x8b\x08\x00" + bytes(12), "magic number 0x1f8b0800 (it looks gzipped: gunzip it)"),
        (
            b"\x00\x00\x08\x01" + bytes(12),
            "magic number 0x00000801; an idx file of 3-d unsigned bytes starts with 0x00000803",
        ),
        (b"\x00\x00\x08\x03" + bytes(4), "is 8 bytes long, shorter than an idx header (16)"),
        (
            b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") * 2 + bytes(9),
            "longer than announced: its header announces shape (2, 2, 2), 24 bytes in all, "
            "but the file has 25 bytes",
        ),
    ],
)
def test_a_broken_idx_file_is_told_apart_from_a_whole_one(mnist_dir, content, problem):
    root, raw = mnist_dir
    assert idx_damage(raw / "train-images-idx3-ubyte", ndim=3) is None
    (raw / "train-images-idx3-ubyte").write_bytes(content)
    assert problem in idx_damage(raw / "train-images-idx3-ubyte", ndim=3)
    with pytest.raises(DataError, match="DAMAGED MNIST/raw/train-images-idx3-ubyte: "):
        make(MNISTFactory, root)


# --- CIFAR-10 -------------------------------------------------------------------------------


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    write_cifar10(tmp_path, N_TRAIN // 5, N_TEST)
    accept_files(tmp_path, monkeypatch.setattr)
    return tmp_path


NORM = Normalize(CIFAR10Factory.MEAN, CIFAR10Factory.STD)


def test_the_readme_snippet_works_as_written(cifar_dir):
    factory = CIFARDatasetLoader(
        8,
        train_transform=Compose(
            [RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), NORM]
        ),
        test_transform=Compose([ToTensor(), NORM]),
        data_dir=cifar_dir,
        validation_size=10,
    )
    assert isinstance(factory.train_loader(), torch.utils.data.DataLoader)
    x, y = next(iter(factory.train_loader()))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64


def test_the_fast_training_split_is_augmented_unless_turned_off(cifar_dir):
    plain = CIFAR10Factory(100, data_dir=cifar_dir, validation_size=0, augment=False)
    augmented = CIFAR10Factory(100, data_dir=cifar_dir, validation_size=0)
    assert isinstance(augmented.train_loader(), InMemoryLoader)
    torch.manual_seed(0)
    x_plain, y_plain = next(iter(plain.train_loader()))
    torch.manual_seed(0)
    x_aug, y_aug = next(iter(augmented.train_loader()))
    assert torch.equal(y_plain, y_aug)  # same order: augmentation draws after the permutation
    assert not torch.equal(x_plain, x_aug)
    # every augmented image is one of the 9 x 9 crops x 2 flips of its plain image
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) for v in (CIFAR10Factory.MEAN, CIFAR10Factory.STD)
    )
    raw_plain, raw_aug = (
        ((x * std + mean) * 255).round().to(torch.uint8) for x in (x_plain, x_aug)
    )
    matched = torch.zeros(100, dtype=torch.bool)
    for dy, dx, flip in itertools.product(range(9), range(9), (False, True)):
        offsets, flips = torch.tensor([[dy, dx]]).expand(100, 2), torch.full((100,), flip)
        matched |= (crop_flip(raw_plain, offsets, flips, 4) == raw_aug).all(dim=(1, 2, 3))
    assert matched.all()
    x_test, _ = next(iter(augmented.test_loader()))
    assert torch.equal(x_test, next(iter(plain.test_loader()))[0])  # only training augments


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_that_would_run_code_is_never_unpickled(cifar_dir):
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_1"
    marker = cifar_dir / "the-pickle-ran"
    with open(path, "wb") as stream:
        pickle.dump({"data": RunsCode(marker), "labels": []}, stream)
    with pytest.raises(DataError, match="DAMAGED cifar-10-batches-py/data_batch_1: its MD5"):
        CIFAR10Factory(data_dir=cifar_dir, download=False)
    assert not marker.exists()  # torchvision checks the MD5 before it unpickles


def test_a_run_resumed_mid_epoch_equals_the_run_that_never_stopped(cifar_dir):
    """Shuffled, cropped and flipped batches: the resumed run must see the very same ones."""
    from torch import nn

    from mlproject import MLProject, ProxyModel

    class Project(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            return CIFAR10Factory(8, data_dir=cifar_dir, validation_size=10, download=False)

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

    straight = train(cifar_dir / "straight", 16)  # 14 batches per epoch: stops in epoch 2
    train(cifar_dir / "stopped", 15)  # mid-epoch in the second epoch: both RNG restores matter
    resumed = train(cifar_dir / "stopped", 16, resume="auto")
    assert resumed["state"]["global_step"] == 16
    for name, value in straight["model"]["weights"].items():
        assert torch.equal(value, resumed["model"]["weights"][name]), name
    assert torch.equal(straight["rng"]["torch"], resumed["rng"]["torch"])


# --- SVHN: the README's worked example ------------------------------------------------------


def readme_example() -> str:
    """The code block of the README's "Adding a dataset" paragraph."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("```python\n", text.index("**Adding a dataset**")) + len("```python\n")
    return text[start : text.index("\n```", start) + 1]


def test_the_readme_example_is_the_svhn_factory_and_runs_on_svhn_files(tmp_path, monkeypatch):
    code = readme_example()
    assert inspect.getsource(SVHNFactory) in code  # the README shows the shipped class
    assert len(inspect.getsource(SVHNFactory).splitlines()) <= 30  # "about 20 lines"
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # self-contained, imports included
    written = write_svhn(tmp_path, 30, 20)
    accept_files(tmp_path, monkeypatch.setattr)
    factory = namespace["SVHNFactory"](8, data_dir=tmp_path, validation_size=5, download=False)
    assert isinstance(factory.train_loader(), InMemoryLoader)  # the fast path
    x, y = all_batches(factory.test_loader())
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (SVHNFactory.MEAN, SVHNFactory.STD))
    expected = (torch.from_numpy(written["test"][0]).float() / 255 - mean) / std
    assert torch.allclose(x, expected, atol=1e-6)
    assert torch.equal(y, torch.from_numpy(written["test"][1]))


def test_svhn_reads_the_matlab_label_10_as_the_digit_0(tmp_path, monkeypatch):
    written = write_svhn(tmp_path, 30, 20)
    accept_files(tmp_path, monkeypatch.setattr)
    factory = SVHNFactory(8, data_dir=tmp_path, validation_size=0, download=False)
    assert torch.equal(factory.splits["test"].labels, torch.from_numpy(written["test"][1]))
    assert 0 in factory.splits["test"].labels.tolist()
