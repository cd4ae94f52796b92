"""Dataset files on disk: the data-directory rule, clean-up after a failed fetch, and the errors.

The data directory is, in order of precedence:

1. the ``data_dir`` argument of a factory (the examples pass the ``data_dir`` config key there),
2. the ``DATA_DIR`` environment variable,
3. ``~/.cache/mlproject/data``.

Fetching and decoding are torchvision's; this module adds what it lacks: a download that fails
leaves nothing behind (``removed_on_failure``), and the ``DataError`` then names the dataset, the
folder, every expected file with its state and how to put it there (``files_message``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# The environment variable read when no data_dir is given.
DATA_DIR_ENV = "DATA_DIR"
# The per-user default when neither data_dir nor $DATA_DIR is set.
DEFAULT_DATA_DIR = Path("~/.cache/mlproject/data")
# The state of an expected file that is not there, in ``files_message``'s problems.
MISSING = "MISSING"


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


@contextmanager
def removed_on_failure(targets: Iterable[Path]) -> Iterator[None]:
    """Run the block; if it raises (Ctrl-C included), delete what it created under ``targets``.

    ``targets`` are the files and folders a download may create. What is there afterwards and
    was not before is removed, and so are the folders above them (the data directory itself)
    that the block created and left empty; what was there before is kept. Then the error goes on.

    Example:
        >>> with removed_on_failure([root / "MNIST"]):
        ...     torchvision.datasets.MNIST(root, download=True)  # offline: nothing is left
    """
    targets = list(targets)
    before = _existing(targets)
    try:
        yield
    except BaseException:
        # A path sorts after the folders above it: in reverse, a folder comes after its content.
        for path in sorted(_existing(targets) - before, reverse=True):
            if not path.is_dir():
                path.unlink()
            elif not any(path.iterdir()):
                path.rmdir()
        raise


def files_message(
    dataset: str, root: Path, files: Iterable[str], problems: Mapping[str, str], why: str, how: str
) -> str:
    """The error text for missing or damaged files: each expected file with its state.

    ``problems`` maps a file (relative to ``root``) to ``MISSING`` or to what is wrong with it;
    ``why`` says what was tried, ``how`` how to put the files there by hand.

    Example:
        >>> problems = {"b": MISSING, "c": "truncated"}
        >>> print(files_message("Set", Path("/d"), ["a", "b", "c"], problems, "offline", "Copy."))
        Set: 2 of 3 files missing or damaged in the data directory /d (offline). Expected:
          ok      a
          MISSING b
          DAMAGED c: truncated
        Copy. Delete a damaged file to have it fetched again. ...
    """
    files = list(dict.fromkeys(files))

    def state(name: str) -> str:
        problem = problems.get(name)
        if problem is None or problem == MISSING:
            return f"  {problem or 'ok':7} {name}"
        return f"  DAMAGED {name}: {problem}"

    if any(problem != MISSING for problem in problems.values()):
        how += " Delete a damaged file to have it fetched again."
    where = "" if root.is_dir() else "the folder does not exist; "
    listed = "\n".join(map(state, files))
    return (
        f"{dataset}: {len(problems)} of {len(files)} files missing or damaged in the data "
        f"directory {root} ({where}{why}). Expected:\n{listed}\n{how}\nThe data directory is "
        f"the factory's data_dir argument (the data_dir config key), else ${DATA_DIR_ENV}, "
        f"else {DEFAULT_DATA_DIR}."
    )


def _existing(targets: Iterable[Path]) -> set[Path]:
    """Every existing path under ``targets``, the targets and the folders above them included."""
    seen: set[Path] = set()
    for target in targets:
        seen.update(folder for folder in (target, *target.parents) if folder.exists())
        for folder, dirs, names in os.walk(target):
            seen.update(Path(folder) / name for name in (*dirs, *names))
    return seen
