"""Downloads through torchvision's code: its URLs and MD5s, mirrors, clean-up after failures."""

import gzip
import shutil
import socket
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torchvision
from data_files import write_cifar10, write_idx

from mlproject.data import CIFARDatasetLoader, MNISTDatasetLoader
from mlproject.data.download import cifar10_fetch, mnist_fetch
from mlproject.errors import DataError


def online(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def fake_mnist_server(calls, fail_urls=()):
    """A stand-in for download_and_extract_archive serving MNIST-format files."""

    def download(url, download_root, filename, md5):
        calls.append((url, md5))
        raw = Path(download_root)
        (raw / filename).write_bytes(b"partial")  # torchvision writes the archive first
        if any(url.startswith(bad) for bad in fail_urls):
            raise URLError("no route to host")
        name = filename.removesuffix(".gz")
        n = 30 if name.startswith("train") else 10
        shape = (n, 28, 28) if "images" in name else (n,)
        write_idx(raw / name, np.zeros(shape, dtype=np.uint8))

    return download


def test_mnist_download_uses_torchvisions_urls_and_md5s(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "torchvision.datasets.utils.download_and_extract_archive", fake_mnist_server(calls)
    )
    factory = MNISTDatasetLoader(8, data_dir=tmp_path, validation_size=5)
    assert len(factory.test_loader().images) == 10
    mirror = torchvision.datasets.MNIST.mirrors[0]
    assert calls == [(mirror + name, md5) for name, md5 in torchvision.datasets.MNIST.resources]


def test_mnist_download_tries_the_next_mirror(tmp_path, monkeypatch):
    calls = []
    first, second = torchvision.datasets.MNIST.mirrors[:2]
    server = fake_mnist_server(calls, fail_urls=[first])
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", server)
    fetch, _ = mnist_fetch(tmp_path, "MNIST")
    fetch()
    assert [url.startswith(second) for url, _ in calls] == [False, True] * 4


def test_mnist_download_fetches_only_the_missing_files(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "train-images-idx3-ubyte", np.zeros((30, 28, 28), dtype=np.uint8))
    calls = []
    monkeypatch.setattr(
        "torchvision.datasets.utils.download_and_extract_archive", fake_mnist_server(calls)
    )
    mnist_fetch(tmp_path, "FashionMNIST")[0]()
    assert len(calls) == 3 and not any("train-images" in url for url, _ in calls)
    assert all(url.startswith(torchvision.datasets.FashionMNIST.mirrors[0]) for url, _ in calls)


def test_a_failed_mnist_download_says_what_to_do_and_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    server = fake_mnist_server(calls, fail_urls=["http"])
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", server)
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        MNISTDatasetLoader(data_dir=root)
    message = str(err.value)
    assert "MNIST" in message and str(root) in message and "no route to host" in message
    assert "MISSING MNIST/raw/train-images-idx3-ubyte" in message and "gunzip" in message
    assert not root.exists()


def test_a_failed_cifar_extraction_leaves_nothing(tmp_path, monkeypatch):
    def download(url, download_root, filename, md5):
        assert (url, filename, md5) == (
            torchvision.datasets.CIFAR10.url,
            "cifar-10-python.tar.gz",
            torchvision.datasets.CIFAR10.tgz_md5,
        )
        Path(download_root, filename).write_bytes(b"x")
        (Path(download_root) / "cifar-10-batches-py").mkdir()
        (Path(download_root) / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"half")
        raise tarfile.ReadError("unexpected end of data")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", download)
    (tmp_path / "keep.txt").write_text("the user's")
    with pytest.raises(DataError, match="unexpected end of data"):
        CIFARDatasetLoader(data_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_cifar_download_unpacks_into_the_standard_layout(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_cifar10(source, n_per_batch=4, n_test=6)

    def download(url, download_root, filename, md5):
        archive = Path(download_root) / filename
        archive.parent.mkdir(parents=True, exist_ok=True)  # as torchvision's download_url
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        with tarfile.open(archive) as tar:
            tar.extractall(download_root, filter="data")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", download)
    fetch, creates = cifar10_fetch(tmp_path / "data")
    assert creates == [
        tmp_path / "data" / "cifar-10-python.tar.gz",
        tmp_path / "data" / "cifar-10-batches-py",
    ]
    factory = CIFARDatasetLoader(2, data_dir=tmp_path / "data", validation_size=2)
    assert len(factory.test_loader().images) == 6


@pytest.mark.network
@pytest.mark.skipif(
    not online("ossci-datasets.s3.amazonaws.com"), reason="offline: MNIST's mirror unreachable"
)
def test_real_mnist_download_checksums_and_loads(tmp_path):
    factory = MNISTDatasetLoader(256, data_dir=tmp_path)
    assert len(factory.train_loader().images) == 55_000
    assert len(factory.test_loader().images) == 10_000
    raw = tmp_path / "MNIST" / "raw"
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz") as stream:
        assert stream.read() == (raw / "t10k-labels-idx1-ubyte").read_bytes()
    shutil.rmtree(tmp_path / "MNIST")
