"""Data-directory resolution, the missing-or-damaged files error, the clean-up of a failed fetch."""

from pathlib import Path
from urllib.error import URLError

import pytest

from mlproject.data.files import (
    DEFAULT_DATA_DIR,
    MISSING,
    files_message,
    removed_on_failure,
    resolve_data_dir,
)

FILES = ["Set/raw/a.bin", "Set/raw/b.bin"]


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


def test_the_message_names_dataset_folder_each_file_with_its_state_and_the_fix(tmp_path):
    problems = {"Set/raw/b.bin": MISSING, "Set/raw/c.bin": "is truncated"}
    message = files_message(
        "Set", tmp_path, [*FILES, "Set/raw/c.bin"], problems, "offline", "Copy them there."
    )
    assert message.startswith(
        f"Set: 2 of 3 files missing or damaged in the data directory {tmp_path} (offline)"
    )
    lines = message.splitlines()
    assert "  ok      Set/raw/a.bin" in lines
    assert "  MISSING Set/raw/b.bin" in lines
    assert "  DAMAGED Set/raw/c.bin: is truncated" in lines
    assert "Copy them there. Delete a damaged file to have it fetched again." in lines
    assert "$DATA_DIR" in message and str(DEFAULT_DATA_DIR) in message


def test_the_message_says_when_the_folder_does_not_exist_and_lists_each_file_once(tmp_path):
    message = files_message(
        "Set", tmp_path / "no", FILES * 2, dict.fromkeys(FILES, MISSING), "x", ""
    )
    assert "(the folder does not exist; x)" in message and "2 of 2 files" in message
    assert message.count("MISSING Set/raw/a.bin") == 1
    assert "damaged file" not in message  # nothing damaged: no advice about it


def partial_fetch(root, error):
    def fetch():
        (root / "Set/raw").mkdir(parents=True, exist_ok=True)
        (root / "Set/raw/b.bin.gz").write_bytes(b"half a download")
        raise error

    return fetch


def test_a_failed_fetch_leaves_nothing_behind_not_even_the_new_data_dir(tmp_path):
    root = tmp_path / "new" / "data"
    with pytest.raises(URLError), removed_on_failure([root / "Set"]):
        partial_fetch(root, URLError("offline"))()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_fetch_keeps_the_files_that_were_there(tmp_path):
    (tmp_path / "Set/raw").mkdir(parents=True)
    (tmp_path / "Set/raw/a.bin").write_bytes(b"mine")
    (tmp_path / "other.txt").write_text("unrelated")
    with pytest.raises(RuntimeError, match="MD5"), removed_on_failure([tmp_path / "Set"]):
        partial_fetch(tmp_path, RuntimeError("MD5 mismatch"))()
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert remaining == ["Set", "Set/raw", "Set/raw/a.bin", "other.txt"]
    assert (tmp_path / "Set/raw/a.bin").read_bytes() == b"mine"


def test_a_failed_fetch_removes_a_new_top_level_file_and_keeps_an_old_one(tmp_path):
    (tmp_path / "old.tar.gz").write_bytes(b"the user's")
    targets = [tmp_path / "old.tar.gz", tmp_path / "new.tar.gz"]
    with pytest.raises(OSError), removed_on_failure(targets):
        (tmp_path / "new.tar.gz").write_bytes(b"half")
        raise OSError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["old.tar.gz"]


def test_an_interrupted_fetch_is_cleaned_up_and_the_interrupt_goes_on(tmp_path):
    with pytest.raises(KeyboardInterrupt), removed_on_failure([tmp_path / "Set"]):
        partial_fetch(tmp_path, KeyboardInterrupt())()
    assert list(tmp_path.iterdir()) == []


def test_a_successful_fetch_keeps_what_it_made(tmp_path):
    with removed_on_failure([tmp_path / "Set"]):
        for name in FILES:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"x")
    assert all(Path(tmp_path / name).is_file() for name in FILES)
