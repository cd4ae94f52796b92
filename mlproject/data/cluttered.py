"""ClutteredMNIST: seeded canvases of one MNIST digit among patches cut from other digits.

Each sample is a black canvas (100x100 by default) on which ``n_clutters`` patches of
``clutter_size`` x ``clutter_size`` pixels, cut at random places from random digits of the same
split, are pasted at random places, and then the sample's own digit is pasted, whole, at a
random place; the label is that digit's. Later pastes overwrite earlier ones.

Determinism: the random choices of sample ``i`` of a split are row ``i`` of a table drawn from
``numpy.random.default_rng([seed, split])``: a function of ``(seed, split, i)`` only, never of
the global RNG, the process or the DataLoader worker, and the same for any ``n_samples`` (a
larger split extends a smaller one). Splits draw from different streams and cut clutter only
from their own digits (MNIST's test digits for test, the held-out digits for validation), so
no two splits share clutter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor
from torch.utils.data import Dataset

from mlproject.data.datasets import MNISTFactory
from mlproject.data.factory import int_problems
from mlproject.data.images import TensorImages, Transform, to_pil
from mlproject.errors import DataError

# The stream of each split: numpy.random.default_rng([seed, SPLIT_STREAMS[split]]).
SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}
# Written last into an export folder: the parameters that made it (its presence = complete).
EXPORT_PARAMS_FILE = "params.json"
# Training canvases the fast path's mean and std are measured on.
STATS_SAMPLES = 2000
# Canvases rendered at once (bounds the memory of the index arrays).
_CHUNK = 2048


class ClutteredMNIST(Dataset):
    """The cluttered canvases built from one split of digits; ``(image, label)`` per index.

    ``image`` is ``transform(PIL image)``, or the uint8 ``1 x H x W`` canvas when
    ``transform`` is None. ``tensors()`` renders the whole split at once (vectorised).

    Args:
        digits: the split's source digits (uint8 ``N x 1 x h x w``) and labels.
        split: "train", "validation" or "test": selects the random stream.
        n_samples: canvases in the split (None = one per source digit); sample ``i`` shows
            digit ``i % len(digits)``.
        seed: the seed shared by all splits.
        shape: canvas height and width.
        n_clutters: clutter patches per canvas.
        clutter_size: side of a square clutter patch, at most the digits' size.
        transform: PIL transform of ``__getitem__``.

    Example:
        >>> digits = MNISTFactory(validation_size=0).splits["test"]
        >>> data = ClutteredMNIST(digits, "test", n_samples=100, seed=0)
        >>> canvas, label = data[0]
        >>> tuple(canvas.shape)
        (1, 100, 100)
    """

    def __init__(
        self,
        digits: TensorImages,
        split: str,
        n_samples: int | None = None,
        seed: int = 0,
        shape: Sequence[int] = (100, 100),
        n_clutters: int = 6,
        clutter_size: int = 8,
        transform: Transform | None = None,
    ):
        if split not in SPLIT_STREAMS:
            raise DataError(f"split must be one of {sorted(SPLIT_STREAMS)}; got {split!r}")
        self.digits, self.labels = digits.images[:, 0].numpy(), digits.labels
        digit_h, digit_w = self.digits.shape[1:]
        self.shape = (int(shape[0]), int(shape[1]))
        self.n_samples = len(self.digits) if n_samples is None else n_samples
        self.n_clutters, self.clutter_size = n_clutters, clutter_size
        self.transform = transform
        size = clutter_size
        # Upper bounds (exclusive) of each sample's draws, in table order.
        highs = (
            [len(self.digits)] * n_clutters  # which digit each patch is cut from
            + [digit_h - size + 1, digit_w - size + 1] * n_clutters  # where in that digit
            + [self.shape[0] - size + 1, self.shape[1] - size + 1] * n_clutters  # where pasted
            + [self.shape[0] - digit_h + 1, self.shape[1] - digit_w + 1]  # where the digit goes
        )
        # Uniform floats consume a fixed number of draws per sample (bounded integers do not),
        # so row i depends on (seed, split, i) alone.
        uniform = np.random.default_rng([seed, SPLIT_STREAMS[split]]).random(
            (self.n_samples, len(highs))
        )
        self._draws = (uniform * np.array(highs)).astype(np.int64)

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, index: int) -> tuple[Any, int]:
        index = range(self.n_samples)[index]  # IndexError out of range, negatives counted back
        canvas = torch.from_numpy(self.render(np.array([index]))[0])
        label = int(self.labels[index % len(self.digits)])
        if self.transform is None:
            return canvas, label
        return self.transform(to_pil(canvas)), label

    def render(self, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The canvases of samples ``indices``: uint8 ``len(indices) x 1 x H x W``.

        Vectorised over samples: every paste is one block copy per sample through a window
        view, written into ``out`` when given.
        """
        n, k, size = len(indices), self.n_clutters, self.clutter_size
        digit_h, digit_w = self.digits.shape[1:]
        draws = self._draws[indices]
        if out is None:
            out = np.empty((n, 1, *self.shape), dtype=np.uint8)
        canvas = out[:, 0]
        canvas.fill(0)
        sample = np.arange(n)
        patches = sliding_window_view(self.digits, (size, size), axis=(1, 2))
        patch_spots = sliding_window_view(canvas, (size, size), axis=(1, 2), writeable=True)
        for j in range(k):
            source, (row, col) = draws[:, j], draws[:, k + 2 * j : k + 2 * j + 2].T
            to_row, to_col = draws[:, 3 * k + 2 * j : 3 * k + 2 * j + 2].T
            patch_spots[sample, to_row, to_col] = patches[source, row, col]
        digit_spots = sliding_window_view(canvas, (digit_h, digit_w), axis=(1, 2), writeable=True)
        digit_spots[sample, draws[:, -2], draws[:, -1]] = self.digits[indices % len(self.digits)]
        return out

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Every canvas of the split (uint8 ``N x 1 x H x W``) and its labels (int64)."""
        images = torch.empty((self.n_samples, 1, *self.shape), dtype=torch.uint8)
        pixels = images.numpy()
        for start in range(0, self.n_samples, _CHUNK):
            stop = min(start + _CHUNK, self.n_samples)
            self.render(np.arange(start, stop), out=pixels[start:stop])
        labels = self.labels[torch.arange(self.n_samples) % len(self.digits)]
        return images, labels

    def statistics(self) -> tuple[float, float]:
        """Mean and standard deviation (4 decimals) of the pixels, scaled to [0, 1], of the
        first ``STATS_SAMPLES`` canvases: the fast path's normalisation."""
        canvases = self.render(np.arange(min(STATS_SAMPLES, self.n_samples)))
        total = canvases.sum(dtype=np.int64) / 255
        squares = np.square(canvases, dtype=np.uint32).sum(dtype=np.int64) / 255**2
        mean = total / canvases.size
        std = max(squares / canvases.size - mean**2, 0.0) ** 0.5
        return round(float(mean), 4), round(float(std), 4) or 1.0


class ClutteredMNISTFactory(MNISTFactory):
    """ClutteredMNIST splits built from the MNIST files (read as ``MNISTFactory`` reads them):
    train and validation canvases from MNIST's training digits (split by ``validation_size`` /
    ``split_seed``), test canvases from MNIST's test digits.

    Batches are ``(x, y)``: x float32 ``N x 1 x H x W``, y int64. The fast path renders each
    split once into memory (100x100 canvases: 10 kB each, ~700 MB for the default 70,000) and
    normalises with ``mean`` / ``std``, measured on the first 2,000 training canvases. With
    transforms, canvases are rendered one by one in the ``DataLoader`` workers, identical to
    the fast path's.

    Args:
        *args, **kwargs: ``MNISTFactory``'s arguments (``batch_size``, ``train_transform``,
            ``test_transform``, ``data_dir``, ``validation_size``, ``split_seed``, ...).
        shape: canvas (height, width), at least 28x28.
        n_clutters: clutter patches per canvas.
        clutter_size: side of the square clutter patches, 1..28.
        n_train, n_validation, n_test: canvases per split; None = one per source digit.
        seed: the canvases' seed (the same seed gives the same canvases everywhere).

    Example:
        >>> factory = ClutteredMNISTFactory(64, n_train=10_000, seed=1)
        >>> x, y = next(iter(factory.train_loader()))
        >>> tuple(x.shape)
        (64, 1, 100, 100)
        >>> factory.export("~/data/cluttered")  # PNGs for torchvision's ImageFolder
    """

    def __init__(
        self,
        *args: Any,
        shape: Sequence[int] = (100, 100),
        n_clutters: int = 6,
        clutter_size: int = 8,
        n_train: int | None = None,
        n_validation: int | None = None,
        n_test: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ):
        self.counts = {"train": n_train, "validation": n_validation, "test": n_test}
        self.canvas = dict(seed=seed, shape=shape, n_clutters=n_clutters, clutter_size=clutter_size)
        super().__init__(*args, **kwargs)

    def load(self, download: bool) -> tuple[TensorImages, TensorImages]:
        """MNIST's digits, once the canvas parameters are checked (before any file is read)."""
        shape, counts = self.canvas["shape"], self.counts
        problems = []
        if not (
            isinstance(shape, Sequence)
            and len(shape) == 2
            and not int_problems(height=(shape[0], 28), width=(shape[1], 28))
        ):
            problems.append(f"shape={shape!r} must be (height, width), each >= 28 (a digit's size)")
        problems += int_problems(
            n_clutters=(self.canvas["n_clutters"], 0),
            clutter_size=(self.canvas["clutter_size"], 1, 28),
            **{f"n_{name}": (n, 1) for name, n in counts.items() if n is not None},
            seed=(self.canvas["seed"], 0),
        )
        if self.validation_size == 0 and counts["validation"]:
            problems.append("n_validation is set but validation_size=0 holds out no digits")
        if problems:
            raise DataError("bad ClutteredMNIST parameters: " + "; ".join(problems))
        return super().load(download)

    def split(self, train: TensorImages, test: TensorImages) -> dict[str, ClutteredMNIST]:
        """The canvases of each split, from the digits ``MNISTFactory`` splits them into; the
        fast path's ``mean`` / ``std`` are those of the training canvases' pixels."""
        digits = super().split(train, test)
        splits = {
            name: ClutteredMNIST(d, name, self.counts[name], **self.canvas)
            for name, d in digits.items()
        }
        mean, std = splits["train"].statistics()
        self.mean, self.std = (mean,), (std,)
        return splits

    @property
    def params(self) -> dict[str, Any]:
        """The parameters that make the canvases (what an export records)."""
        return {
            **self.canvas,
            "shape": list(self.splits["train"].shape),  # type: ignore[attr-defined]
            "n_samples": {name: len(split) for name, split in self.splits.items()},
            "validation_size": self.validation_size,
            "split_seed": self.split_seed,
        }

    def export(self, directory: str | os.PathLike) -> Path:
        """Write every canvas as a PNG, ``<directory>/<split>/<label>/<index>.png``, for
        ``torchvision.datasets.ImageFolder(<directory>/<split>)``; returns the folder.

        The parameters go to ``<directory>/params.json``. A folder that already holds an
        export with the same parameters is left as it is; one with other parameters, or with
        other files, is refused with a ``DataError``. The export is written next to the folder
        and renamed into place at the end, so an interrupted export leaves no half folder.
        """
        target = Path(directory).expanduser()
        digest = hashlib.sha256()  # of the source digits: an export is tied to its MNIST
        for split in self.splits.values():
            digest.update(split.digits.tobytes())
            digest.update(split.labels.numpy().tobytes())
        params = {**self.params, "mnist_sha256": digest.hexdigest()}
        params_path = target / EXPORT_PARAMS_FILE
        if params_path.is_file():
            existing = json.loads(params_path.read_text())
            if existing == params:
                return target
            changed = [
                f"{key}: {existing.get(key)!r} there, {params.get(key)!r} now"
                for key in sorted({*existing, *params})
                if existing.get(key) != params.get(key)
            ]
            raise DataError(
                f"{target} holds a ClutteredMNIST export made with other parameters "
                f"({'; '.join(changed)}). Export to another folder, or delete that one first"
            )
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise DataError(
                f"{target} exists and is not an empty folder, but holds no {EXPORT_PARAMS_FILE}: "
                "it is not a ClutteredMNIST export. Export to a new or empty folder"
            )
        staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for name, split in self.splits.items():
                images, labels = split.tensors()
                for index, (image, label) in enumerate(zip(images, labels.tolist())):
                    (staging / name / str(label)).mkdir(parents=True, exist_ok=True)
                    to_pil(image).save(staging / name / str(label) / f"{index:06d}.png")
            (staging / EXPORT_PARAMS_FILE).write_text(json.dumps(params, indent=2))
            if target.exists():
                target.rmdir()
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


# The name of the first release.
ClutteredMNISTDatasetLoader = ClutteredMNISTFactory
