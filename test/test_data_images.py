"""ImageDatasetFactory, the template: hold-out, array checks, path per split, set_device."""

import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from torchvision.transforms import ToTensor

from mlproject.data.images import ImageDatasetFactory, TensorImages, hold_out
from mlproject.data.in_memory import InMemoryLoader
from mlproject.errors import DataError


def images(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return TensorImages(x, torch.arange(n) % 10)


class InMemory(ImageDatasetFactory):
    """A declaration whose images come from memory: ``load`` overridden, no files."""

    NAME = "InMemory"
    MEAN, STD, SHAPE, CLASSES = (0.5,), (0.25,), (1, 28, 28), tuple("0123456789")

    def load(self, download):
        return images(60), images(20, seed=1)


class Arrays(ImageDatasetFactory):
    """A declaration over a stand-in for a torchvision dataset holding ``ARRAYS``."""

    NAME = "Arrays"
    MEAN, STD, SHAPE, CLASSES = (0.5,), (0.25,), (1, 28, 28), tuple("0123456789")
    ARRAYS = {}

    def files(self):
        return {"train": {"a/train.bin": None}, "test": {"a/test.bin": None}}

    def source(self, split, download):
        return types.SimpleNamespace(data=self.ARRAYS[split][0], targets=self.ARRAYS[split][1])


def arrays(**changes):
    good = {
        split: (np.zeros((n, 28, 28), np.uint8), [i % 10 for i in range(n)])
        for split, n in (("train", 30), ("test", 10))
    }
    return type("Changed", (Arrays,), {"ARRAYS": {**good, **changes}})


def test_decoded_arrays_become_uint8_nchw_images_and_int64_labels():
    factory = arrays()(8, validation_size=5)
    test = factory.splits["test"]
    assert test.images.shape == (10, 1, 28, 28) and test.images.dtype == torch.uint8
    assert test.labels.dtype == torch.int64 and test.labels.tolist() == list(range(10))


@pytest.mark.parametrize(
    ("split", "data", "match"),
    [
        (
            "test",
            (np.zeros((10, 32, 32), np.uint8), [0] * 10),
            "images of 1x32x32; Arrays images are uint8 1x28x28",
        ),
        ("test", (np.zeros((10, 28, 28), np.float32), [0] * 10), "torch.float32 images"),
        ("train", (np.zeros((0, 28, 28), np.uint8), []), "hold no images"),
        ("test", (np.zeros((10, 28, 28), np.uint8), [0] * 9), "9 labels for the 10 images"),
        (
            "test",
            (np.zeros((10, 28, 28), np.uint8), [10] * 10),
            "labels 10..10; Arrays labels are 0..9",
        ),
        ("test", (np.zeros((10, 28, 28), np.uint8), [-1] * 10), "labels -1..-1"),
    ],
)
def test_arrays_unlike_the_declaration_are_a_data_error_naming_the_split_files(split, data, match):
    with pytest.raises(DataError, match=match) as err:
        arrays(**{split: data})(8, validation_size=0, data_dir="/d")
    assert f"Arrays's {split} files (a/{split}.bin) in /d" in str(err.value)


def test_hold_out_is_a_disjoint_cover_of_the_requested_sizes():
    train, validation = hold_out(100, 30, split_seed=0)
    assert len(train) == 70 and len(validation) == 30
    assert sorted(torch.cat([train, validation]).tolist()) == list(range(100))
    assert torch.equal(train, train.sort().values)


def test_hold_out_ignores_the_global_rng_and_follows_split_seed():
    torch.manual_seed(0)
    a = hold_out(1000, 100, split_seed=7)[1]
    torch.manual_seed(1)
    assert torch.equal(a, hold_out(1000, 100, split_seed=7)[1])
    assert not torch.equal(a, hold_out(1000, 100, split_seed=8)[1])


def test_hold_out_is_the_same_in_another_process():
    code = (
        "import torch; from mlproject.data.images import hold_out; torch.manual_seed(99); "
        "print(hold_out(1000, 100, split_seed=7)[1].tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == str(hold_out(1000, 100, split_seed=7)[1].tolist())


@pytest.mark.parametrize(("size", "match"), [(60, "must leave training data"), (-1, ">= 0")])
def test_hold_out_rejects_impossible_sizes(size, match):
    with pytest.raises(DataError, match=match):
        hold_out(60, size, split_seed=0)


def test_bad_arguments_are_one_error_naming_each_before_loading():
    class Unloadable(InMemory):
        def load(self, download):
            raise AssertionError("loaded before the arguments were checked")

    with pytest.raises(DataError) as err:
        Unloadable(batch_size=True, validation_size=1.5, num_workers=-1, split_seed="a")
    for part in ("batch_size=True", "validation_size=1.5", "num_workers=-1", "split_seed='a'"):
        assert part in str(err.value)
    InMemory(batch_size=1, validation_size=0, num_workers=0, split_seed=-3)


def test_the_validation_split_is_held_out_of_train_and_the_test_split_never_touched():
    splits = InMemory(8, validation_size=10).splits
    assert list(splits) == ["train", "validation", "test"]
    assert len(splits["train"]) == 50 and len(splits["validation"]) == 10
    assert torch.equal(splits["test"].images, images(20, seed=1).images)
    assert list(InMemory(8, validation_size=0).splits) == ["train", "test"]


def test_each_split_takes_the_fast_path_unless_it_has_a_transform():
    factory = InMemory(8, train_transform=ToTensor(), validation_size=10, drop_last=True)
    assert isinstance(factory.train_loader(), torch.utils.data.DataLoader)
    assert factory.train_loader().drop_last and len(factory.train_loader()) == 50 // 8
    assert isinstance(factory.validation_loader(), InMemoryLoader)
    assert isinstance(factory.test_loader(), InMemoryLoader)
    factory.check()


def test_the_fast_paths_dataset_items_equal_its_batches():
    factory = InMemory(20, validation_size=10)
    x, y = next(iter(factory.test_loader()))
    items = [factory.test_set()[i] for i in range(20)]
    assert torch.equal(torch.stack([item[0] for item in items]), x)
    assert [item[1] for item in items] == y.tolist()


def test_set_device_on_the_cpu_moves_nothing():
    factory = InMemory(8, validation_size=10)
    factory.set_device(torch.device("cpu"))
    assert factory.train_loader().device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_set_device_moves_the_in_memory_splits_to_the_gpu():
    factory = InMemory(8, validation_size=10)
    factory.set_device(torch.device("cuda", 0))
    for loader in (factory.train_loader(), factory.validation_loader(), factory.test_loader()):
        x, y = next(iter(loader))
        assert x.device.type == "cuda" and y.device.type == "cuda"
