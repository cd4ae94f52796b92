"""DigitsFactory: scikit-learn's bundled 8x8 handwritten digits, offline real data."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from mlproject.data.factory import DatasetFactory
from mlproject.errors import DataError


class DigitsFactory(DatasetFactory):
    """The 1,797 8x8 digit images shipped with scikit-learn, split into train/validation/test.

    The split is a deterministic shuffle by ``split_seed`` (the same in every process), so the
    test set is always the same images and is never used for model selection. Images are
    flattened to 64 floats scaled to [0, 1]; labels are int64 in 0..9.

    Example:
        >>> factory = DigitsFactory(batch_size=64)
        >>> x, y = next(iter(factory.train_loader()))
        >>> tuple(x.shape), y.dtype
        ((64, 64), torch.int64)
    """

    def __init__(
        self,
        batch_size: int = 64,
        validation_size: int = 180,
        test_size: int = 360,
        split_seed: int = 0,
        num_workers: int = 0,
    ):
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise DataError(
                "DigitsFactory needs scikit-learn: pip install 'mlproject[examples]'"
            ) from err
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
        y = torch.tensor(digits.target, dtype=torch.int64)
        if validation_size < 0 or test_size < 1 or validation_size + test_size >= len(x):
            raise DataError(
                f"validation_size={validation_size} and test_size={test_size} must be >= 0 and "
                f">= 1 and leave training data out of {len(x)} samples"
            )
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
        test, val, train = torch.split(
            order, [test_size, validation_size, len(x) - test_size - validation_size]
        )
        super().__init__(
            train_set=TensorDataset(x[train], y[train]),
            validation_set=TensorDataset(x[val], y[val]) if validation_size else None,
            test_set=TensorDataset(x[test], y[test]),
            loader_kwargs={"batch_size": batch_size, "num_workers": num_workers},
        )


# The name of the first release.
DigitsDatasetLoader = DigitsFactory
