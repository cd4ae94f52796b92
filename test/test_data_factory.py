"""Tests of mlproject.data.factory (DatasetFactory) and mlproject.data.digits."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset

from mlproject import DataError, DatasetFactory
from mlproject.data import DigitsFactory
from mlproject.data.factory import int_problems


def dataset(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.zeros(n))


def test_original_constructor_keywords():
    train, test, val = dataset(8), dataset(4), dataset(2)
    train_loader, test_loader = DataLoader(train), DataLoader(test)
    val_loader = DataLoader(val)
    factory = DatasetFactory(
        train_set=train,
        train_loader=train_loader,
        test_set=test,
        test_loader=test_loader,
        validation_set=val,
        validation_loader=val_loader,
    )
    assert factory.train_set() is train
    assert factory.test_set() is test
    assert factory.validation_set() is val
    assert factory.train_loader() is train_loader
    assert factory.test_loader() is test_loader
    assert factory.validation_loader() is val_loader


def test_original_constructor_positional_order():
    train, test, val = dataset(8), dataset(4), dataset(2)
    loaders = [[1], [2], [3]]
    factory = DatasetFactory(train, loaders[0], test, loaders[1], val, loaders[2])
    assert factory.train_loader() is loaders[0]
    assert factory.test_loader() is loaders[1]
    assert factory.validation_loader() is loaders[2]
    assert (factory.train_set(), factory.test_set(), factory.validation_set()) == (train, test, val)


def test_loaders_are_built_from_sets_with_loader_kwargs():
    factory = DatasetFactory(
        train_set=dataset(10),
        validation_set=dataset(10),
        test_set=dataset(10),
        loader_kwargs={"batch_size": 4, "drop_last": True, "shuffle": True},
    )
    train = factory.train_loader()
    assert isinstance(train.sampler, RandomSampler)
    assert (train.batch_size, train.drop_last, len(train)) == (4, True, 2)
    for loader in (factory.validation_loader(), factory.test_loader()):
        assert isinstance(loader.sampler, SequentialSampler)
        assert (loader.batch_size, loader.drop_last, len(loader)) == (4, False, 3)
        assert [len(x) for x, _ in loader] == [4, 4, 2]
    assert factory.train_loader() is train  # built once


def test_train_loader_shuffles_by_default():
    factory = DatasetFactory(train_set=dataset(10), loader_kwargs={"batch_size": 10})
    assert isinstance(factory.train_loader().sampler, RandomSampler)


def test_a_list_of_batches_is_a_loader():
    batches = [(torch.ones(2, 1), torch.zeros(2)), (torch.ones(1, 1), torch.zeros(1))]
    factory = DatasetFactory(train_loader=batches, test_loader=batches[:1])
    factory.check()
    assert list(factory.train_loader()) == batches
    assert list(factory.train_loader()) == batches  # re-iterable


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"train_set": dataset(2)}, (True, False, False)),
        ({"train_loader": [1], "test_set": dataset(2)}, (True, False, True)),
        ({"validation_loader": [1]}, (False, True, False)),
        ({}, (False, False, False)),
    ],
)
def test_has_checks(kwargs, expected):
    factory = DatasetFactory(**kwargs)
    assert (factory.has_train_set(), factory.has_validation_set(), factory.has_test_set()) == (
        expected
    )


def test_check_without_training_data_is_a_data_error():
    with pytest.raises(DataError, match="no training data"):
        DatasetFactory(test_set=dataset(4)).check()


def test_check_batch_larger_than_the_data_with_drop_last_is_a_data_error():
    factory = DatasetFactory(
        train_set=dataset(5), loader_kwargs={"batch_size": 8, "drop_last": True}
    )
    with pytest.raises(DataError) as info:
        factory.check()
    message = str(info.value)
    for part in ("train", "5 samples", "batch_size=8", "drop_last=True"):
        assert part in message


def test_check_empty_validation_set_is_a_data_error():
    factory = DatasetFactory(train_set=dataset(5), validation_set=dataset(0))
    with pytest.raises(DataError, match=r"validation .*(empty|no batches)"):
        factory.check()


class LazyEmptyFactory(DatasetFactory):
    """Builds its shuffled DataLoader when asked, as an overridden ``train_loader`` does."""

    def train_loader(self):
        return DataLoader(dataset(0), batch_size=4, shuffle=True)


def test_an_empty_dataset_behind_a_shuffled_dataloader_is_the_usual_data_error():
    with pytest.raises(DataError, match=r"the train dataset is empty \(0 samples\)") as info:
        LazyEmptyFactory().check()
    assert "num_samples" in str(info.value.__cause__)  # torch's error, kept as the cause


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_an_empty_unshuffled_dataloader_is_the_same_data_error(split):
    kwargs = {"train_loader": [torch.ones(1)], f"{split}_loader": DataLoader(dataset(0))}
    with pytest.raises(DataError, match=rf"the {split} dataset is empty \(0 samples\)"):
        DatasetFactory(**kwargs).check()


def test_a_run_over_an_empty_shuffled_training_set_is_refused_before_writing(
    project_class, base_config, tmp_path
):
    project = project_class(data=lambda config: LazyEmptyFactory())
    with pytest.raises(DataError, match="the train dataset is empty"):
        project(base_config).train()
    assert list(tmp_path.iterdir()) == []  # no model_dir, no run folder


class NoLength:
    def __iter__(self):
        yield torch.ones(1)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_check_loader_without_len_is_a_data_error(split):
    kwargs = {"train_loader": [torch.ones(1)], f"{split}_loader": NoLength()}
    with pytest.raises(DataError, match=rf"{split} loader \(NoLength\) has no len\(\)"):
        DatasetFactory(**kwargs).check()


def test_int_problems_words_each_value_that_is_not_an_int_in_range():
    problems = int_problems(
        a=(True, 0), b=(1.5, None), c=(-1, 0), d=(29, 1, 28), e=(-3, None), f=(28, 1, 28)
    )
    assert problems == [
        "a=True must be an int >= 0",
        "b=1.5 must be an int",
        "c=-1 must be an int >= 0",
        "d=29 must be an int in 1..28",
    ]


@pytest.fixture(scope="module")
def digits():
    return DigitsFactory(batch_size=64)


def test_digits_split_sizes(digits):
    sizes = [len(digits.train_set()), len(digits.validation_set()), len(digits.test_set())]
    assert sizes == [1797 - 180 - 360, 180, 360]


def test_digits_splits_hold_every_sample_once(digits):
    xs = [digits.train_set().tensors[0], digits.validation_set().tensors[0]]
    xs.append(digits.test_set().tensors[0])
    total = torch.tensor(load_digits().data, dtype=torch.float32).sum() / 16.0
    assert float(sum(x.sum() for x in xs)) == pytest.approx(float(total), rel=1e-6)


def test_digits_dtypes_and_ranges(digits):
    x, y = next(iter(digits.train_loader()))
    assert (tuple(x.shape), x.dtype, y.dtype) == ((64, 64), torch.float32, torch.int64)
    all_x, all_y = digits.train_set().tensors
    assert 0.0 <= float(all_x.min()) and float(all_x.max()) == 1.0
    assert set(all_y.tolist()) == set(range(10))


def test_digits_split_is_deterministic(digits):
    again = DigitsFactory(batch_size=32)
    other = DigitsFactory(split_seed=1)
    for split in ("train_set", "validation_set", "test_set"):
        for a, b in zip(getattr(digits, split)().tensors, getattr(again, split)().tensors):
            assert torch.equal(a, b)
    assert not torch.equal(digits.test_set().tensors[0], other.test_set().tensors[0])


def test_digits_without_validation_set():
    factory = DigitsFactory(validation_size=0)
    assert not factory.has_validation_set()
    assert len(factory.train_set()) == 1797 - 360


@pytest.mark.parametrize("sizes", [(-1, 360), (180, 0), (900, 900)])
def test_digits_bad_split_sizes_are_a_data_error(sizes):
    with pytest.raises(DataError, match="validation_size"):
        DigitsFactory(validation_size=sizes[0], test_size=sizes[1])
