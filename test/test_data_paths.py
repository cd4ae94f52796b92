"""Data-directory resolution, the missing-files error and the clean-up after a failed fetch."""

from pathlib import Path
from urllib.error import URLError

import pytest

from mlproject.data.paths import DEFAULT_DATA_DIR, require_files, resolve_data_dir
from mlproject.errors import DataError

FILES = ["Set/raw/a.bin", "Set/raw/b.bin"]


def how():
    return "Copy a.bin and b.bin into Set/raw/."


def test_data_dir_argument_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


def test_data_dir_falls_back_to_the_environment_then_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path / ".cache" / "mlproject" / "data"
    assert resolve_data_dir(None) == DEFAULT_DATA_DIR.expanduser()


def test_data_dir_expands_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("~/sets") == tmp_path / "sets"


def test_present_files_are_returned_without_fetching(tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    def fetch():
        raise AssertionError("must not fetch")

    assert require_files("Set", tmp_path, FILES, how, fetch) == [tmp_path / n for n in FILES]


def test_missing_folder_error_names_dataset_folder_files_and_fix(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        require_files("Set", root, FILES, how)
    message = str(err.value)
    for part in ("Set:", str(root), "does not exist", "MISSING Set/raw/a.bin", "b.bin", how()):
        assert part in message
    assert "download=True" in message


def test_a_single_missing_file_is_marked(tmp_path):
    (tmp_path / "Set/raw").mkdir(parents=True)
    (tmp_path / "Set/raw/a.bin").write_bytes(b"x")
    with pytest.raises(DataError) as err:
        require_files("Set", tmp_path, FILES, how)
    assert "1 of 2 files missing" in str(err.value)
    assert "ok      Set/raw/a.bin" in str(err.value)
    assert "MISSING Set/raw/b.bin" in str(err.value)


def partial_fetch(root, error):
    def fetch():
        (root / "Set/raw").mkdir(parents=True, exist_ok=True)
        (root / "Set/raw/b.bin.gz").write_bytes(b"half a download")
        raise error

    return fetch


def test_a_failed_fetch_leaves_nothing_behind_not_even_the_new_data_dir(tmp_path):
    root = tmp_path / "new" / "data"
    with pytest.raises(DataError) as err:
        require_files(
            "Set", root, FILES, how, partial_fetch(root, URLError("offline")), [root / "Set"]
        )
    assert "downloading them failed" in str(err.value) and "offline" in str(err.value)
    assert isinstance(err.value.__cause__, URLError)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_fetch_keeps_the_files_that_were_there(tmp_path):
    (tmp_path / "Set/raw").mkdir(parents=True)
    (tmp_path / "Set/raw/a.bin").write_bytes(b"mine")
    (tmp_path / "other.txt").write_text("unrelated")
    fetch = partial_fetch(tmp_path, RuntimeError("MD5 mismatch"))
    with pytest.raises(DataError, match="MD5 mismatch"):
        require_files("Set", tmp_path, FILES, how, fetch, [tmp_path / "Set"])
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert remaining == ["Set", "Set/raw", "Set/raw/a.bin", "other.txt"]
    assert (tmp_path / "Set/raw/a.bin").read_bytes() == b"mine"


def test_an_interrupted_fetch_is_cleaned_up_and_the_interrupt_goes_on(tmp_path):
    fetch = partial_fetch(tmp_path, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        require_files("Set", tmp_path, FILES, how, fetch, [tmp_path / "Set"])
    assert list(tmp_path.iterdir()) == []


def test_a_fetch_that_leaves_files_missing_is_an_error(tmp_path):
    def fetch():
        (tmp_path / "Set/raw").mkdir(parents=True)
        (tmp_path / "Set/raw/a.bin").write_bytes(b"x")

    with pytest.raises(DataError, match="MISSING Set/raw/b.bin"):
        require_files("Set", tmp_path, FILES, how, fetch, [tmp_path / "Set"])
    assert not (tmp_path / "Set").exists()


def test_a_successful_fetch_returns_the_files(tmp_path):
    def fetch():
        for name in FILES:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"x")

    paths = require_files("Set", tmp_path, FILES, how, fetch, [tmp_path / "Set"])
    assert all(isinstance(p, Path) and p.is_file() for p in paths)
