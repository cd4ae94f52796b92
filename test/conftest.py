"""Shared fixtures: a tiny project over in-memory data, a script runner, a TensorBoard reader,
a throw-away PostgreSQL server."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
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


def _postgres_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    except OSError:
        return None
    folder = Path(out.stdout.strip())
    return folder if out.returncode == 0 and (folder / "initdb").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """``postgresql+psycopg2://...`` of a throw-away PostgreSQL server on 127.0.0.1, stopped after.

    The server refuses to run as root: as root it runs as the ``postgres`` user, in a folder
    made for it (pytest's tmp folders are root's alone).
    """
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e '.[dev]')")
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb; apt-get install postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="mlproject-postgres-"))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    steps = [
        [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-N"],
        [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options]
        + ["-w", "-t", "60", "start"],
    ]
    for step in steps:
        done = subprocess.run(as_user + step, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"PostgreSQL did not start: {Path(step[0]).name}: {done.stderr}{log}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(as_user + stop, capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
