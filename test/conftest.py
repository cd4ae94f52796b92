"""Shared fixtures: a tiny project over in-memory data, a script runner, a TensorBoard reader."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import (
    STORE_EVERYTHING_SIZE_GUIDANCE,
    EventAccumulator,
)
from torch import nn
from torch.utils.data import TensorDataset

from mlproject import DatasetFactory, MLProject, Model, ProxyModel

REPO = Path(__file__).resolve().parents[1]


def make_tiny_data(
    n_train: int = 12, n_val: int = 6, n_test: int = 6, batch_size: int = 4
) -> DatasetFactory:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> TensorDataset | None:
        if n == 0:
            return None
        return TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g))

    return DatasetFactory(
        train_set=split(n_train),
        validation_set=split(n_val),
        test_set=split(n_test),
        loader_kwargs={"batch_size": batch_size},
    )


def make_tiny_model(config: dict[str, Any] | None = None) -> Model:
    net = nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    return ProxyModel(net, opt, loss=nn.CrossEntropyLoss(), name="tiny")


@pytest.fixture
def tiny_data() -> Callable[..., DatasetFactory]:
    """``tiny_data(n_train=12, n_val=6, n_test=6, batch_size=4)``: 3 classes, 4 features; a
    split of size 0 is left out."""
    return make_tiny_data


@pytest.fixture
def tiny_model() -> Callable[..., Model]:
    """``tiny_model()``: a linear ProxyModel named 'tiny' with Adam and cross-entropy."""
    return make_tiny_model


@pytest.fixture
def project_class() -> Callable[..., type[MLProject]]:
    """``project_class(model=fn(config) -> Model, data=fn(config) -> DatasetFactory)``: an
    MLProject subclass named TinyProject (defaults: ``tiny_model`` over ``tiny_data()``)."""

    def make(model=make_tiny_model, data=None) -> type[MLProject]:
        data = data or (lambda config: make_tiny_data())

        class TinyProject(MLProject):
            get_model = staticmethod(model)
            get_dataset_factory = staticmethod(data)

        return TinyProject

    return make


@pytest.fixture
def base_config(tmp_path) -> dict[str, Any]:
    """A quiet, seeded config writing under ``tmp_path`` (no TensorBoard unless a test adds it)."""
    return {"model_dir": str(tmp_path / "models"), "progress": False, "seed": 0, "n_epochs": 1}


@pytest.fixture(scope="session")
def start_script() -> Callable[..., subprocess.Popen]:
    """Start a repository script with the venv's python, its output piped as text.

    ``start_script("examples/digits/main.py", "with", "n_epochs=1", cwd=tmp)``; collect it
    with ``.communicate(timeout=...)``. Several can run at once.
    """

    def start(script: str, *args: str, cwd: Path) -> subprocess.Popen:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.Popen(
            [sys.executable, str(REPO / script), *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    return start


@pytest.fixture
def tb_scalars() -> Callable[[Path], dict[str, list[tuple[int, float]]]]:
    """Read a TensorBoard run folder with TensorBoard's own reader: ``{tag: [(step, value)]}``."""

    def read(logdir: Path) -> dict[str, list[tuple[int, float]]]:
        acc = accumulate(logdir)
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}

    return read


def accumulate(logdir: Path) -> EventAccumulator:
    """TensorBoard's EventAccumulator over ``logdir``, keeping every event."""
    acc = EventAccumulator(str(logdir), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


@pytest.fixture
def tb_images() -> Callable[[Path], dict[str, list[int]]]:
    """``{tag: [step, ...]}`` of the images in a TensorBoard run folder."""

    def read(logdir: Path) -> dict[str, list[int]]:
        acc = accumulate(logdir)
        return {tag: [e.step for e in acc.Images(tag)] for tag in acc.Tags()["images"]}

    return read


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[int], Path | None]]:
    """``small_disk(kib)``: a folder on a real tmpfs of that size (unmounted afterwards), or
    None where tmpfs cannot be mounted (not root): then a test injects ENOSPC instead."""
    mounted = []

    def make(kib: int) -> Path | None:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0:
            return None
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
            capture_output=True,
        )
        if done.returncode != 0:
            return None
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)
