"""Downloads through torchvision's own code, against a fake internet: its URLs, MD5 checks and
archives, archives already in place unpacked offline, and nothing left after a failure.

The fake internet replaces ``urllib.request.urlopen``, the one call torchvision's downloads go
through, so everything above it (mirrors, redirects, MD5 checks, unpacking) is torchvision's.
"""

import gzip
import hashlib
import io
import shutil
import socket
import urllib.request
from urllib.error import URLError

import pytest
import torch
import torchvision
from data_files import accept_files, md5, write_cifar10, write_mnist, write_svhn

from mlproject.data import CIFAR10Factory, FashionMNISTFactory, MNISTFactory, SVHNFactory
from mlproject.errors import DataError


class FakeInternet:
    """Serves ``files`` (URL -> bytes); any other URL, or one of ``down``, is unreachable.
    ``interrupt`` raises KeyboardInterrupt on that URL, as Ctrl-C during a download would."""

    def __init__(self, files, down=(), interrupt=None):
        self.files, self.down, self.interrupt = files, down, interrupt
        self.opened = []

    def __call__(self, request, *args, **kwargs):
        url = request.full_url
        self.opened.append(url)
        if url == self.interrupt:
            raise KeyboardInterrupt
        if url not in self.files or any(url.startswith(prefix) for prefix in self.down):
            raise URLError("no route to host")
        response = io.BytesIO(self.files[url])
        response.url, response.length = url, len(self.files[url])
        return response


@pytest.fixture
def internet(monkeypatch):
    """``internet(files, **options)`` installs a FakeInternet (no files: offline) and returns it."""

    def install(files=None, **options):
        fake = FakeInternet(files or {}, **options)
        monkeypatch.setattr(urllib.request, "urlopen", fake)
        return fake

    install()
    return install


def mnist_server(tmp_path, monkeypatch, source=torchvision.datasets.MNIST):
    """The .gz files of a generated MNIST-format dataset at ``source``'s first mirror, with
    torchvision's MD5 sums set to theirs; returns ({url: bytes}, the arrays written)."""
    origin = tmp_path / "origin"
    written = write_mnist(origin, source.__name__, n_train=30, n_test=10, gz=True)
    accept_files(origin, monkeypatch.setattr)
    raw = origin / source.__name__ / "raw"
    files = {
        f"{source.mirrors[0]}{name}": (raw / name).read_bytes() for name, _ in source.resources
    }
    return files, written


@pytest.mark.parametrize("cls", [MNISTFactory, FashionMNISTFactory], ids=lambda c: c.NAME)
def test_mnist_downloads_from_torchvisions_mirror_and_loads(tmp_path, monkeypatch, internet, cls):
    files, written = mnist_server(tmp_path, monkeypatch, getattr(torchvision.datasets, cls.SOURCE))
    fake = internet(files)
    root = tmp_path / "data"
    factory = cls(8, data_dir=root, validation_size=5)
    assert set(fake.opened) == set(files)  # each of torchvision's URLs, nothing else
    assert torch.equal(factory.splits["test"].images[:, 0], torch.from_numpy(written["test"][0]))
    assert (root / cls.SOURCE / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_mnist_archives_already_in_place_are_checked_and_unpacked_offline(
    tmp_path, monkeypatch, internet
):
    written = write_mnist(tmp_path, "MNIST", n_train=30, n_test=10, gz=True)
    accept_files(tmp_path, monkeypatch.setattr)
    fake = internet()  # offline
    factory = MNISTFactory(8, data_dir=tmp_path, validation_size=5)
    assert fake.opened == []
    assert torch.equal(factory.splits["test"].images[:, 0], torch.from_numpy(written["test"][0]))
    with pytest.raises(DataError, match="4 of 4 files missing"):  # the same without download
        MNISTFactory(8, data_dir=tmp_path / "copy", validation_size=5, download=False)


def test_an_archive_whose_md5_is_not_torchvisions_is_fetched_again(tmp_path, monkeypatch, internet):
    write_mnist(tmp_path, "MNIST", n_train=30, n_test=10, gz=True)  # sums left as the originals'
    fake = internet()
    with pytest.raises(DataError, match="download=True could not fetch them"):
        MNISTFactory(8, data_dir=tmp_path, validation_size=5)
    assert fake.opened  # the archive in place did not pass: torchvision went to the network
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(
        name for name, _ in torchvision.datasets.MNIST.resources
    )  # the user's archives are kept, nothing is added


def test_a_failed_mnist_download_says_what_to_do_and_leaves_nothing(
    tmp_path, monkeypatch, internet
):
    files, _ = mnist_server(tmp_path, monkeypatch)
    last = list(files)[-1]
    internet({url: data for url, data in files.items() if url != last})  # 3 of 4 come through
    root = tmp_path / "data"
    with pytest.raises(DataError) as err:
        MNISTFactory(data_dir=root)
    message = str(err.value)
    assert message.startswith(
        f"MNIST: 4 of 4 files missing or damaged in the data directory {root}"
    )
    assert "no route to host" in message and "MISSING MNIST/raw/train-images-idx3-ubyte" in message
    assert torchvision.datasets.MNIST.mirrors[0] in message
    assert not root.exists()


def test_a_download_with_another_md5_is_refused_and_leaves_nothing(tmp_path, monkeypatch, internet):
    files, _ = mnist_server(tmp_path, monkeypatch)
    internet({url: data + b"tampered" for url, data in files.items()})
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="could not fetch them"):
        MNISTFactory(data_dir=tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # the data dir was there: it stays


def test_ctrl_c_during_a_download_leaves_nothing_and_goes_on(tmp_path, monkeypatch, internet):
    files, _ = mnist_server(tmp_path, monkeypatch)
    internet(files, interrupt=list(files)[2])
    with pytest.raises(KeyboardInterrupt):
        MNISTFactory(data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def cifar_archive(tmp_path, monkeypatch):
    origin = tmp_path / "origin"
    written = write_cifar10(origin, n_per_batch=4, n_test=6, tar=True)
    accept_files(origin, monkeypatch.setattr)
    return (origin / "cifar-10-python.tar.gz").read_bytes(), written


def test_a_cifar_download_unpacks_into_torchvisions_layout(tmp_path, monkeypatch, internet):
    archive, written = cifar_archive(tmp_path, monkeypatch)
    internet({torchvision.datasets.CIFAR10.url: archive})
    root = tmp_path / "data"
    factory = CIFAR10Factory(2, data_dir=root, validation_size=2)
    assert torch.equal(
        factory.splits["test"].images.flatten(1), torch.from_numpy(written["test"][0])
    )
    assert sorted(p.name for p in root.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]


def test_a_cifar_archive_in_place_is_checked_and_unpacked_offline(tmp_path, monkeypatch, internet):
    archive, _ = cifar_archive(tmp_path, monkeypatch)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar-10-python.tar.gz").write_bytes(archive)
    fake = internet()
    assert len(CIFAR10Factory(2, data_dir=tmp_path / "data", validation_size=2).test_loader()) == 3
    assert fake.opened == []


def test_a_failed_cifar_extraction_leaves_nothing_but_the_users_files(
    tmp_path, monkeypatch, internet
):
    archive, _ = cifar_archive(tmp_path, monkeypatch)
    cut = archive[: len(archive) // 2]  # a truncated archive: unpacking fails half way
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", hashlib.md5(cut).hexdigest())
    internet({torchvision.datasets.CIFAR10.url: cut})
    (tmp_path / "keep.txt").write_text("the user's")
    with pytest.raises(DataError, match="could not fetch them"):
        CIFAR10Factory(data_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "origin"]


def test_svhn_downloads_both_files_md5_checked(tmp_path, monkeypatch, internet):
    origin = tmp_path / "origin"
    written = write_svhn(origin, n_train=20, n_test=10)
    accept_files(origin, monkeypatch.setattr)
    split_list = torchvision.datasets.SVHN.split_list
    internet(
        {split_list[s][0]: (origin / split_list[s][1]).read_bytes() for s in ("train", "test")}
    )
    factory = SVHNFactory(4, data_dir=tmp_path / "data", validation_size=0)
    assert torch.equal(factory.splits["test"].images, torch.from_numpy(written["test"][0]))
    assert md5(tmp_path / "data" / "test_32x32.mat") == split_list["test"][2]


def online(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.network
@pytest.mark.skipif(
    not online("ossci-datasets.s3.amazonaws.com"), reason="offline: MNIST's mirror unreachable"
)
def test_real_mnist_download_checksums_and_loads(tmp_path):
    factory = MNISTFactory(256, data_dir=tmp_path)
    assert len(factory.train_loader().images) == 55_000
    assert len(factory.test_loader().images) == 10_000
    raw = tmp_path / "MNIST" / "raw"
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz") as stream:
        assert stream.read() == (raw / "t10k-labels-idx1-ubyte").read_bytes()
    shutil.rmtree(tmp_path / "MNIST")
