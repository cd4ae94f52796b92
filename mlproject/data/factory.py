"""DatasetFactory: the train / validation / test datasets of a project and their loaders."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mlproject.errors import DataError

SPLITS = ("train", "validation", "test")


class DatasetFactory:
    """Holds a project's datasets and the loaders that batch them.

    A loader is anything that can be iterated more than once and has a ``len`` (a
    ``DataLoader``, a list of batches, the in-memory loaders of ``mlproject.data``). Give
    loaders directly, or datasets plus ``loader_kwargs`` and the loaders are built for you
    (the train loader shuffles, the others do not). Subclass it and override
    ``train_loader()`` / ``validation_loader()`` / ``test_loader()`` for custom data.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(100, 4), torch.randint(0, 2, (100,)))
        >>> factory = DatasetFactory(train_set=data, loader_kwargs={"batch_size": 10})
        >>> len(factory.train_loader()), factory.has_validation_set()
        (10, False)
    """

    def __init__(
        self,
        train_set: Dataset | None = None,
        train_loader: Iterable | None = None,
        test_set: Dataset | None = None,
        test_loader: Iterable | None = None,
        validation_set: Dataset | None = None,
        validation_loader: Iterable | None = None,
        loader_kwargs: dict[str, Any] | None = None,
    ):
        self._sets = dict(zip(SPLITS, (train_set, validation_set, test_set)))
        self._loaders = dict(zip(SPLITS, (train_loader, validation_loader, test_loader)))
        self.loader_kwargs = dict(loader_kwargs or {})

    # --- datasets ---------------------------------------------------------------------------
    def train_set(self) -> Dataset | None:
        return self._sets["train"]

    def validation_set(self) -> Dataset | None:
        return self._sets["validation"]

    def test_set(self) -> Dataset | None:
        return self._sets["test"]

    # --- loaders ----------------------------------------------------------------------------
    def train_loader(self) -> Iterable | None:
        return self._loader("train")

    def validation_loader(self) -> Iterable | None:
        return self._loader("validation")

    def test_loader(self) -> Iterable | None:
        return self._loader("test")

    def _loader(self, split: str) -> Iterable | None:
        if self._loaders[split] is None and self._sets[split] is not None:
            if len(self._sets[split]) == 0:  # type: ignore[arg-type]
                raise DataError(empty_message(split))
            kwargs = {"batch_size": 1, "shuffle": True, **self.loader_kwargs}
            if split != "train":
                kwargs.update(shuffle=False, drop_last=False)
            self._loaders[split] = DataLoader(self._sets[split], **kwargs)
        return self._loaders[split]

    def set_device(self, device: torch.device) -> None:
        """Called once by MLProject with the model's device; in-memory loaders move their data.

        The default does nothing: DataLoader batches are moved by ``Model.to_device``.
        """

    # --- checks -----------------------------------------------------------------------------
    def has_train_set(self) -> bool:
        return self._checked_loader("train") is not None

    def has_validation_set(self) -> bool:
        return self._checked_loader("validation") is not None

    def has_test_set(self) -> bool:
        return self._checked_loader("test") is not None

    def _checked_loader(self, split: str) -> Iterable | None:
        """``<split>_loader()``; torch's error for an empty dataset behind a shuffled
        ``DataLoader`` built there (an overridden method) becomes the usual empty-split error."""
        try:
            return getattr(self, f"{split}_loader")()
        except ValueError as err:
            if "num_samples should be a positive integer" not in str(err):
                raise
            raise DataError(empty_message(split)) from err

    def check(self) -> None:
        """Raise ``DataError`` if there is no training data or a loader yields no batch."""
        if not self.has_train_set():
            raise DataError(
                "the DatasetFactory has no training data: pass train_set= or train_loader=, "
                "or override train_loader()"
            )
        for split in SPLITS:
            loader = self._checked_loader(split)
            if loader is not None:
                check_loader(loader, split)


def check_loader(loader: Iterable, split: str) -> int:
    """Return ``len(loader)``; raise ``DataError`` when it has no length or yields no batch."""
    try:
        n_batches = len(loader)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            f"the {split} loader ({type(loader).__name__}) has no len(); a loader must be a "
            "re-iterable with a length, such as a DataLoader or a list of batches"
        ) from None
    if n_batches == 0:
        detail = ""
        if isinstance(loader, DataLoader):
            try:
                n_samples = len(loader.dataset)  # type: ignore[arg-type]
            except TypeError:
                n_samples = "?"
            if n_samples == 0:
                raise DataError(empty_message(split))
            detail = (
                f": the dataset has {n_samples} samples, batch_size={loader.batch_size}, "
                f"drop_last={loader.drop_last}"
            )
            if loader.drop_last:
                detail += ". Use a smaller batch_size or drop_last=False"
        raise DataError(f"the {split} loader yields no batches{detail}")
    return n_batches


def empty_message(split: str) -> str:
    """The error of an empty split, whichever way it was given."""
    fix = "" if split == "train" else f", or give no {split} split at all (None)"
    return (
        f"the {split} dataset is empty (0 samples); a split needs at least one sample: check "
        f"the files or the filter it was built from{fix}"
    )


def int_problems(**checks: tuple) -> list[str]:
    """``"name=value must be ..."`` for each ``name=(value, low[, high])`` whose value is not an
    int (a bool is not one) in ``low..high``; a bound of None is open. Every argument check of
    the package words its problems with it.

    Example:
        >>> int_problems(batch_size=(0, 1), split_seed=(-3, None), clutter_size=(30, 1, 28))
        ['batch_size=0 must be an int >= 1', 'clutter_size=30 must be an int in 1..28']
    """
    problems = []
    for name, (value, low, *high) in checks.items():
        top = high[0] if high else None
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if not is_int or (low is not None and value < low) or (top is not None and value > top):
            allowed = "" if low is None else f" >= {low}" if top is None else f" in {low}..{top}"
            problems.append(f"{name}={value!r} must be an int{allowed}")
    return problems
