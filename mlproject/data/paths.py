"""Where dataset files live: the data-directory rule, the check that files exist, and their errors.

The data directory is, in order of precedence:

1. the ``data_dir`` argument of a loader (the examples pass the ``data_dir`` config key there),
2. the ``DATA_DIR`` environment variable,
3. ``~/.cache/mlproject/data``.

``require_files`` is the one gate every loader crosses before reading: it returns the files
when they are all there, otherwise fetches them (when a fetch is given) and, if that fails,
removes whatever the attempt left and raises a ``DataError`` that names the dataset, the folder,
every file expected and how to put it there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from mlproject.errors import DataError

# The environment variable read when no data_dir is given.
DATA_DIR_ENV = "DATA_DIR"
# The per-user default when neither data_dir nor $DATA_DIR is set.
DEFAULT_DATA_DIR = Path("~/.cache/mlproject/data")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder datasets live in: ``data_dir``, else ``$DATA_DIR``, else the default.

    ``~`` is expanded; the folder is not created here (a download creates it).

    Example:
        >>> resolve_data_dir("/data/sets")
        PosixPath('/data/sets')
        >>> os.environ["DATA_DIR"] = "/mnt/datasets"
        >>> resolve_data_dir(None)
        PosixPath('/mnt/datasets')
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def require_files(
    dataset: str,
    root: Path,
    files: Sequence[str],
    how: Callable[[], str],
    fetch: Callable[[], None] | None = None,
    fetch_creates: Iterable[Path] = (),
) -> list[Path]:
    """Return ``root / f`` for each of ``files``, fetching them first if some are missing.

    Args:
        dataset: the dataset's name, for messages ("MNIST").
        root: the data directory.
        files: the paths, relative to ``root``, that must exist.
        how: returns one or two sentences telling the user how to put the files there by hand
            (called only for an error message).
        fetch: downloads the missing files into ``root``; None when downloading is off.
        fetch_creates: the files and folders ``fetch`` may create; what it leaves there after
            a failure, and was not there before, is removed, and so are folders above them
            (``root`` itself) that the fetch created and left empty.

    Raises:
        DataError: files are missing and there is no fetch, or the fetch failed.

    Example:
        >>> root = resolve_data_dir("/data")
        >>> train_images, = require_files("MNIST", root, ["MNIST/raw/train-images-idx3-ubyte"],
        ...                               how=lambda: "Copy the file there.")
    """
    paths = [root / name for name in files]
    missing = [name for name, path in zip(files, paths) if not path.is_file()]
    if not missing:
        return paths
    if fetch is None:
        where = "the folder does not exist; " if not root.is_dir() else ""
        why = f"({where}download=False: pass download=True to fetch them, with network)"
        raise DataError(_missing_message(dataset, root, files, missing, why, how))
    fetch_creates = list(fetch_creates)
    before = _snapshot(fetch_creates)
    try:
        fetch()
    except Exception as err:  # any failure of the download: clean up, then say what to do
        _remove_new(before, fetch_creates)
        raise DataError(
            _missing_message(
                dataset, root, files, missing, f"and downloading them failed ({err})", how
            )
        ) from err
    except BaseException:  # Ctrl-C during a download still leaves no partial files
        _remove_new(before, fetch_creates)
        raise
    still = [name for name, path in zip(files, paths) if not path.is_file()]
    if still:
        _remove_new(before, fetch_creates)
        raise DataError(_missing_message(dataset, root, files, still, "after the download", how))
    return paths


def file_error(dataset: str, path: Path, problem: str) -> DataError:
    """A ``DataError`` for one broken dataset file: which file, what is wrong, the fix."""
    return DataError(
        f"{dataset} file {path} {problem}. The file is damaged or not the {dataset} file: "
        f"delete it and download it again (download=True), or replace it with the original"
    )


def _missing_message(
    dataset: str,
    root: Path,
    files: Sequence[str],
    missing: Sequence[str],
    why: str,
    how: Callable[[], str],
) -> str:
    listed = "\n".join(f"  {'MISSING ' if name in missing else 'ok      '}{name}" for name in files)
    return (
        f"{dataset}: {len(missing)} of {len(files)} files missing in the data directory "
        f"{root} {why}. Expected:\n{listed}\n{how()}\nThe data directory is the loader's "
        f"data_dir argument (the data_dir config key), else ${DATA_DIR_ENV}, "
        f"else {DEFAULT_DATA_DIR}."
    )


def _snapshot(targets: Iterable[Path]) -> set[Path]:
    """Every existing path under ``targets`` (the targets themselves included)."""
    seen: set[Path] = set()
    for target in targets:
        for parent in (target, *target.parents):
            if parent.exists():
                seen.add(parent)
        if target.is_dir():
            for folder, dirs, names in os.walk(target):
                seen.update(Path(folder) / name for name in (*dirs, *names))
    return seen


def _remove_new(before: set[Path], targets: Iterable[Path]) -> None:
    """Delete what is under ``targets`` but not in ``before``, and the new empty folders above."""
    for target in targets:
        if target.is_dir():
            for folder, dirs, names in os.walk(target, topdown=False):
                for name in names:
                    if Path(folder) / name not in before:
                        (Path(folder) / name).unlink()
                for name in dirs:
                    path = Path(folder) / name
                    if path not in before and not any(path.iterdir()):
                        path.rmdir()
        elif target.exists() and target not in before:
            target.unlink()
        for folder in (target, *target.parents):
            if not folder.exists():
                continue
            if folder in before or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
