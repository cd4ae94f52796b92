"""The runs table: what ``python -m mlproject runs MODEL_DIR`` prints for the folders runs leave.

Real runs (``test/scripts/resumable.py``) pin the on-disk format; hand-written folders cover
what real runs rarely leave: old run.json files, damaged folders, many config shapes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlproject import rundir, runs
from mlproject.__main__ import main
from mlproject.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    LOCK_NAME,
    RECORD_SUFFIX,
    RUN_INFO_NAME,
)
from mlproject.errors import TrainingInterrupted

sys.path.insert(0, str(Path(__file__).parent / "scripts"))
from resumable import Resumable, in_process_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# --- helpers ------------------------------------------------------------------------------------
def write_file(path: Path, data: bytes, step: int | None = None) -> None:
    """A checkpoint-like file and its record, as checkpoint.save leaves them."""
    path.write_bytes(data)
    record = {"sha256": "0" * 64, "size": len(data), "step": step}
    path.with_name(path.name + RECORD_SUFFIX).write_text(json.dumps(record))


def make_run(
    model_dir: Path,
    name: str,
    config: dict,
    *,
    sequence: int | None = None,
    status: str | None = "completed",
    steps: list[int] = (),
    best: tuple[int, float] | None = None,
    test: dict | None = None,
    **fields,
) -> Path:
    """A run folder written by hand: run.json with these fields, checkpoints at ``steps``."""
    folder = model_dir / name
    folder.mkdir(parents=True)
    (folder / LOCK_NAME).touch()
    for step in steps:
        write_file(folder / CHECKPOINT_NAME.format(step=step), b"w" * 50, step)
    if best is not None:
        write_file(folder / BEST_NAME, b"b" * 40, best[0])
    info = {"name": name, "prefix": "", "model": "net", "config": config, "parent": None}
    if sequence is not None:
        info.update(sequence=sequence, created=1.7e9 + sequence)
    if status is not None:
        info["status"] = status
    if status == "completed":
        info["summary"] = {
            "run_dir": str(folder), "global_step": steps[-1] if steps else 0, "epochs": 1,
            "benchmark_metric": "loss",
            "best": {"step": best[0] if best else None, "loss": best[1] if best else None},
            "validation": {}, "test": test or {},
        }  # fmt: skip
    info.update(fields)
    (folder / RUN_INFO_NAME).write_text(json.dumps(info, indent=2))
    return folder


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``python -m mlproject`` in process: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(text: str) -> list[list[str]]:
    """The table's lines split into cells (cells never hold two spaces in these tests)."""
    return [[cell.strip() for cell in line.split("  ") if cell] for line in text.splitlines()]


def as_json(capsys, *args: str) -> list[dict]:
    code, out, err = cli(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Four hand-written runs of a small sweep, created in the order a, c, b, d."""
    models = tmp_path / "models"
    base = {"model_dir": str(models), "seed": 1, "hidden": 8, "optim": {"name": "sgd", "mom": 0.9}}
    make_run(models, "a", {**base, "lr": 0.1}, sequence=1, steps=[4, 5], best=(4, 0.5),
             test={"acc": 0.75, "loss": 0.6})  # fmt: skip
    make_run(models, "c", {**base, "lr": 0.01, "optim": {"name": "sgd", "mom": 0.99}},
             sequence=2, steps=[5], best=(5, 0.25),
             test={"acc": 0.875, "loss": 0.3})  # fmt: skip
    make_run(models, "b", {**base, "lr": 0.001}, sequence=3, status="interrupted", steps=[2, 3])
    make_run(models, "d", {**base, "lr": "0.01", "hidden": 16}, sequence=4, status="failed",
             steps=[1])  # fmt: skip
    return models


# --- the table of real runs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Runs of the resumable script: completed (lr 0.02 and 0.05), interrupted, failed."""
    models = tmp_path_factory.mktemp("real") / "models"
    summaries = [Resumable(in_process_config(models, lr=lr)).train() for lr in (0.02, 0.05)]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FAULT_AT", "3")  # SIGTERM during step 3: saved, then interrupted
        with pytest.raises(TrainingInterrupted):
            Resumable(in_process_config(models, lr=0.03)).train()
        env.setenv("FAULT_SIGNAL", "0")  # an exception during step 3: failed
        with pytest.raises(RuntimeError, match="injected"):
            Resumable(in_process_config(models, lr=0.04)).train()
    return models, summaries


def test_real_runs_give_status_steps_the_differing_key_best_and_test(real_runs, capsys):
    models, (first, second) = real_runs
    code, out, err = cli(capsys, "runs", models)
    assert code == 0, err
    header, *rows = table_rows(out)
    assert header == [
        "run", "status", "steps", "lr", "best_loss", "best_step", "test_accuracy", "test_loss"
    ]  # fmt: skip
    assert [row[1:4] for row in rows] == [
        ["completed", "5", "0.02"], ["completed", "5", "0.05"],
        ["interrupted", "3", "0.03"], ["failed", "2", "0.04"],
    ]  # fmt: skip
    (failed,) = [p for p in models.iterdir() if rows[3][0] == p.name]
    assert sorted(failed.glob("checkpoint-*.pt"))[-1].name == CHECKPOINT_NAME.format(step=2)
    for row, summary in zip(rows, (first, second)):
        assert row[0] == Path(summary["run_dir"]).name
        best, test = summary["best"], summary["test"]
        assert row[4:] == [f"{best['loss']:.4g}", str(best["step"]),
                           f"{test['accuracy']:.4g}", f"{test['loss']:.4g}"]  # fmt: skip
    assert [row[4:] for row in rows[2:]] == [["-"] * 4] * 2  # only a completed run has a summary

    data = as_json(capsys, "runs", models)
    assert data[0]["best_loss"] == first["best"]["loss"]  # json keeps every digit
    assert data[1]["test_accuracy"] == second["test"]["accuracy"]
    assert data[2]["best_loss"] is None and data[2]["status"] == "interrupted"


def test_the_cli_runs_as_a_command(real_runs, tmp_path):
    models, (first, _) = real_runs
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def command(*args):
        return subprocess.run(
            [sys.executable, "-m", "mlproject", *map(str, args)],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip

    done = command("runs", models, "--where", "status=completed", "--sort", "lr", "--reverse")
    assert done.returncode == 0, done.stderr
    header, *rows = table_rows(done.stdout)
    assert header[:4] == ["run", "status", "steps", "lr"]
    assert [row[3] for row in rows] == ["0.05", "0.02"]
    assert rows[1][0] == Path(first["run_dir"]).name
    missing = command("runs", tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stdout == ""
    assert f"model_dir '{tmp_path / 'nowhere'}' is not a folder (it does not exist)" in (
        missing.stderr
    )


# --- columns, alignment and formats -------------------------------------------------------------
def test_table_is_aligned_and_shows_only_the_config_keys_that_differ(sweep, capsys):
    code, out, _ = cli(capsys, "runs", sweep)
    assert code == 0
    # Numbers right-aligned; lr left-aligned as it holds text (d's "0.01").
    assert out == textwrap.dedent("""\
        run  status       steps  hidden  lr     optim.mom  best_loss  best_step  test_acc  test_loss
        a    completed        5       8  0.1          0.9        0.5          4      0.75        0.6
        c    completed        5       8  0.01        0.99       0.25          5     0.875        0.3
        b    interrupted      3       8  0.001        0.9          -          -         -          -
        d    failed           1      16  0.01         0.9          -          -         -          -
        """)  # creation order (sequence), not by name; model_dir, seed, optim.name agree


def test_csv_and_json_hold_the_same_rows_in_full(sweep, capsys):
    code, out, _ = cli(capsys, "runs", sweep, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run"] for r in rows] == ["a", "c", "b", "d"]
    assert rows[0] == {
        "run": "a", "status": "completed", "steps": "5", "hidden": "8", "lr": "0.1",
        "optim.mom": "0.9", "best_loss": "0.5", "best_step": "4", "test_acc": "0.75",
        "test_loss": "0.6",
    }  # fmt: skip
    assert rows[2]["best_loss"] == "" and rows[3]["lr"] == "0.01"
    data = as_json(capsys, "runs", sweep)
    assert list(data[0]) == list(rows[0])
    assert data[3] == {
        "run": "d", "status": "failed", "steps": 1, "hidden": 16, "lr": "0.01", "optim.mom": 0.9,
        "best_loss": None, "best_step": None, "test_acc": None, "test_loss": None,
    }  # fmt: skip
    assert data[0]["lr"] == 0.1 and data[0]["steps"] == 5  # numbers stay numbers


def test_a_key_some_runs_lack_differs_and_a_column_name_keeps_config_apart(tmp_path, capsys):
    models = tmp_path / "m"
    make_run(models, "old", {"steps": 100, "lr": 0.1}, sequence=1, steps=[3])
    make_run(models, "new", {"steps": 200, "lr": 0.1, "warmup": 5}, sequence=2, steps=[4])
    header, *rows = table_rows(cli(capsys, "runs", models)[1])
    assert header[:5] == ["run", "status", "steps", "config.steps", "warmup"]
    assert rows == [["old", "completed", "3", "100", "-"], ["new", "completed", "4", "200", "5"]]


def test_one_run_shows_no_config_columns(tmp_path, capsys):
    make_run(tmp_path / "m", "only", {"lr": 0.1}, sequence=1, steps=[7], best=(7, 0.5))
    assert table_rows(cli(capsys, "runs", tmp_path / "m")[1]) == [
        ["run", "status", "steps", "best_loss", "best_step"], ["only", "completed", "7", "0.5", "7"]
    ]  # fmt: skip


# --- --where ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where, expected",
    [
        (["lr=0.01"], ["c", "d"]),  # the number 0.01 and the text "0.01"
        (["config.lr=1e-2"], ["c"]),  # numbers by value; text by its characters
        (["optim.mom=0.99"], ["c"]),  # nested config: dotted keys
        (["lr=0.01", "hidden=16"], ["d"]),  # every condition must hold
        (["hidden=8.0"], ["a", "c", "b"]),
        (["status=completed"], ["a", "c"]),
        (["best_step=5"], ["c"]),
        (["run=[ab]"], ["a", "b"]),  # a shell pattern
        (["lr=0.0*"], ["c", "b", "d"]),
        (["lr=0.02"], []),
    ],
)
def test_where_keeps_the_runs_whose_value_matches(sweep, capsys, where, expected):
    args = [arg for w in where for arg in ("--where", w)]
    assert [row["run"] for row in as_json(capsys, "runs", sweep, *args)] == expected


def test_where_compares_true_false_and_null_as_themselves(tmp_path, capsys):
    models = tmp_path / "m"
    for i, value in enumerate([True, 1, None, "true", 0], start=1):
        make_run(models, f"r{i}", {"flag": value}, sequence=i)
    found = {w: [r["run"] for r in as_json(capsys, "runs", models, "--where", w)]
             for w in ("flag=true", "flag=1", "flag=null", "flag=0", "flag=false")}  # fmt: skip
    assert found == {"flag=true": ["r1", "r4"], "flag=1": ["r2"], "flag=null": ["r3"],
                     "flag=0": ["r5"], "flag=false": []}  # fmt: skip


def test_filtered_rows_show_only_the_keys_that_still_differ(sweep, capsys):
    code, out, _ = cli(capsys, "runs", sweep, "--where", "hidden=8")
    assert table_rows(out)[0][:5] == ["run", "status", "steps", "lr", "optim.mom"]
    code, out, _ = cli(capsys, "runs", sweep, "--where", "lr=0.01", "--where", "hidden=8")
    assert table_rows(out)[0][:4] == ["run", "status", "steps", "best_loss"]  # one run left


def test_no_matching_run_says_so_and_succeeds(sweep, capsys):
    code, out, err = cli(capsys, "runs", sweep, "--where", "lr=5")
    assert (code, out) == (0, "") and f"no run in {sweep} matches --where lr=5" in err
    assert as_json(capsys, "runs", sweep, "--where", "lr=5") == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--where", "lrr=0.1"], "--where lrr=0.1: unknown key 'lrr': it is neither a column nor "
         "a config key of any of the 4 runs. Did you mean lr? The keys are: best_loss, best_step, "
         "hidden, lr, model_dir, optim.mom, optim.name, run, seed, status, steps, "
         "test_acc, test_loss"),
        (["--where", "mom=0.9"], "Did you mean optim.mom?"),
        (["--sort", "test_los"], "--sort: unknown key 'test_los'"),
        (["--sort", "test_los"], "Did you mean test_loss or best_loss or test_acc?"),
        (["--where", "lr"], "--where takes key=value; got 'lr'. Use e.g. --where lr=0.01"),
        (["--where", "=3"], "--where takes key=value; got '=3'"),
        (["--where", "lr=5", "--where", "hiden=8"], "unknown key 'hiden'"),  # after none is kept
        (["--where", "lr=5", "--sort", "hiden"], "--sort: unknown key 'hiden'"),
    ],
)  # fmt: skip
def test_usage_errors_say_what_is_wrong_and_exit_2(sweep, capsys, args, message):
    code, out, err = cli(capsys, "runs", sweep, *args)
    assert code == 2 and out == ""
    assert message in err


# --- --sort -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        ([], ["a", "c", "b", "d"]),  # creation order
        (["--reverse"], ["d", "b", "c", "a"]),
        (["--sort", "run"], ["a", "b", "c", "d"]),
        (["--sort", "test_acc"], ["a", "c", "b", "d"]),  # runs without it last
        (["--sort", "test_acc", "--reverse"], ["c", "a", "b", "d"]),  # still last
        (["--sort", "lr"], ["b", "c", "a", "d"]),  # numbers before text
        (["--sort", "steps", "--reverse"], ["a", "c", "b", "d"]),  # ties keep creation order
        (["--sort", "hidden", "--reverse"], ["d", "a", "c", "b"]),
    ],
)
def test_sort_orders_by_a_column_or_config_key_with_missing_values_last(
    sweep, capsys, args, expected
):
    assert [row["run"] for row in as_json(capsys, "runs", sweep, *args)] == expected


# --- what runs leave when things go wrong ------------------------------------------------------
def test_damaged_folders_are_rows_that_say_why(tmp_path, capsys):
    models = tmp_path / "m"
    make_run(models, "good", {"lr": 0.1}, sequence=1, steps=[5], best=(5, 0.5))
    good = (models / "good" / RUN_INFO_NAME).read_text()
    damaged = {
        "cut": good[: len(good) // 2],  # a partial write (no atomic rename on that disk)
        "empty": "",
        "list": "[1, 2]",
        "badconfig": json.dumps({"config": [1, 2], "status": "completed"}),
        "binary": b"\x80\x81\x82",
    }
    for name, content in damaged.items():
        folder = models / name
        folder.mkdir()
        write_file(folder / CHECKPOINT_NAME.format(step=4), b"x" * 10, 4)
        data = content if isinstance(content, bytes) else content.encode()
        (folder / RUN_INFO_NAME).write_bytes(data)
    (models / "norecord").mkdir()  # checkpoints but no run.json
    write_file(models / "norecord" / CHECKPOINT_NAME.format(step=9), b"x", 9)
    (models / "dirinfo" / RUN_INFO_NAME).mkdir(parents=True)  # run.json is a folder
    (models / "tb" / "events").mkdir(parents=True)  # no run's names: not a run, left out
    truncated = make_run(models, "truncated", {"lr": 0.2}, sequence=2, steps=[3, 4],
                         best=(3, 0.4))  # fmt: skip
    (truncated / BEST_NAME).write_bytes(b"b" * 10)  # the record says 40 bytes
    lost = make_run(models, "lost", {"lr": 0.3}, sequence=3, status="interrupted", steps=[6],
                    best=(6, 0.3))  # fmt: skip
    (lost / BEST_NAME).unlink()  # best.pt is never pruned: its record alone means it is lost
    cut = make_run(models, "cutckpt", {"lr": 0.4}, sequence=4, status="failed", steps=[7, 8])
    with open(cut / CHECKPOINT_NAME.format(step=8), "r+b") as f:
        f.truncate(20)  # the record says 50 bytes
    pruned = make_run(models, "pruned", {"lr": 0.5}, sequence=5, status="interrupted", steps=[2])
    (pruned / CHECKPOINT_NAME.format(step=2)).unlink()  # a prune killed between its deletions

    code, out, err = cli(capsys, "runs", models)
    assert code == 0, err
    rows = {r["run"]: r for r in as_json(capsys, "runs", models)}
    assert {name: (r["status"], r["steps"], r["problem"]) for name, r in rows.items()} == {
        "good": ("completed", 5, None),
        "truncated": ("completed", 4, "best.pt is 10 bytes, its record says 40 (truncated?)"),
        "lost": ("interrupted", 6, "best.pt missing (its record is there)"),
        "cutckpt": (
            "failed",
            8,
            "checkpoint-000000008.pt is 20 bytes, its record says 50 (truncated?)",
        ),
        "pruned": ("interrupted", None, None),
        "badconfig": ("damaged", 4, "run.json: config is a list, not an object"),
        "binary": ("damaged", 4, "run.json is not text"),
        "cut": ("damaged", 4, "run.json is not valid JSON (line 13 column 16)"),
        "dirinfo": ("damaged", None, "run.json unreadable (Is a directory)"),
        "empty": ("damaged", 4, "run.json is empty"),
        "list": ("damaged", 4, "run.json holds a list, not an object"),
        "norecord": ("damaged", 9, "no run.json"),
    }
    assert rows["truncated"]["lr"] == 0.2 and rows["cut"]["lr"] is None  # the rest still read
    assert list(rows)[:6] == ["good", "truncated", "lost", "cutckpt", "pruned", "badconfig"]
    lines = out.splitlines()
    assert lines[0].split() == ["run", "status", "steps", "lr", "best_loss", "best_step",
                                "problem"]  # fmt: skip
    assert lines[6].split(maxsplit=6) == ["badconfig", "damaged", "4", "-", "-", "-",
                                          "run.json: config is a list, not an object"]  # fmt: skip


def test_old_run_json_without_status_sequence_or_summary(tmp_path, capsys):
    models = tmp_path / "m"
    make_run(models, "zz-old", {"lr": 0.1}, status=None, steps=[2, 8])
    make_run(models, "new", {"lr": 0.2}, sequence=1, steps=[3])
    rows = as_json(capsys, "runs", models)
    assert [(r["run"], r["status"], r["steps"]) for r in rows] == [
        ("new", "completed", 3), ("zz-old", "unknown", 8)
    ]  # fmt: skip


def test_newest_checkpoint_without_its_record_does_not_count(sweep, capsys):
    (sweep / "b" / CHECKPOINT_NAME.format(step=4)).write_bytes(b"half")  # killed while saving
    rows = {r["run"]: r for r in as_json(capsys, "runs", sweep)}
    assert rows["b"]["steps"] == 3 and "problem" not in rows["b"]  # no run has a problem


# Takes the run's lock as a trainer does, records the run as running, says so, then waits.
_HOLD = """
import sys
from pathlib import Path
from mlproject.rundir import RunDir
run = RunDir(Path(sys.argv[1]))
run.lock()
run.update_info(status="running", summary=None)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_running_run_killed_without_a_word_shows_as_died(sweep, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(sweep / "a")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        status = {r["run"]: r["status"] for r in as_json(capsys, "runs", sweep)}
        assert status["a"] == "running"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.wait()
    info = json.loads((sweep / "a" / RUN_INFO_NAME).read_text())
    assert info["status"] == "running" and "pid" in (sweep / "a" / LOCK_NAME).read_text()
    rows = {r["run"]: r for r in as_json(capsys, "runs", sweep)}
    assert (rows["a"]["status"], rows["a"]["steps"]) == ("died", 5)
    assert [r["run"] for r in as_json(capsys, "runs", sweep, "--where", "status=died")] == ["a"]


def test_reading_a_run_this_process_holds_keeps_its_lock(sweep, capsys):
    run = rundir.RunDir(sweep / "b")
    run.lock()
    try:
        run.update_info(status="running")
        assert {r["run"]: r["status"] for r in as_json(capsys, "runs", sweep)}["b"] == "running"
        probe = (
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
            "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('taken')"
        )
        taken = subprocess.run([sys.executable, "-c", probe, str(sweep / "b" / LOCK_NAME)],
                               capture_output=True, text=True)  # fmt: skip
        assert taken.returncode == 1 and "taken" not in taken.stdout, taken.stderr  # still ours
    finally:
        run.unlock()


def test_a_folder_being_created_with_its_lock_held_is_running(tmp_path, capsys):
    run = rundir.create(tmp_path / "m", "starting")
    run.lock()  # a trainer between taking the lock and writing run.json
    try:
        rows = as_json(capsys, "runs", tmp_path / "m")
    finally:
        run.unlock()
    assert [(r["run"], r["status"]) for r in rows] == [("starting", "running")]
    assert [(r["status"], r["problem"]) for r in as_json(capsys, "runs", tmp_path / "m")] == [
        ("damaged", "no run.json")
    ]


# --- the model_dir itself -----------------------------------------------------------------------
def test_an_empty_model_dir_prints_no_rows(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    code, out, err = cli(capsys, "runs", tmp_path / "m")
    assert (code, out) == (0, "") and f"no runs in {tmp_path / 'm'}" in err
    assert cli(capsys, "runs", tmp_path / "m", "--format", "csv")[1] == "run,status,steps\n"
    assert as_json(capsys, "runs", tmp_path / "m") == []
    assert as_json(capsys, "runs", tmp_path / "m", "--where", "lr=1") == []  # nothing to know


def test_a_missing_model_dir_or_a_file_is_a_usage_error(tmp_path, capsys):
    code, out, err = cli(capsys, "runs", tmp_path / "nope")
    assert code == 2 and out == ""
    assert (
        f"python -m mlproject runs: error: model_dir '{tmp_path / 'nope'}' is not a folder (it "
        "does not exist): give the model_dir your runs were trained with" in err
    )
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "runs", tmp_path / "file")
    assert code == 2 and "is not a folder (it is a file)" in err


def test_help_and_argparse_errors(capsys):
    code, out, _ = cli(capsys, "runs", "--help")
    assert code == 0 and "--where KEY=VALUE" in out and "died" in out
    assert cli(capsys)[0] == 2  # no command
    code, _, err = cli(capsys, "runs", "x", "--format", "xml")
    assert code == 2 and "invalid choice: 'xml'" in err


def test_flatten_and_matches_are_what_the_docs_say():
    assert runs.flatten({"optim": {"lr": 0.1, "betas": [0.9]}, "empty": {}, "seed": 3}) == {
        "optim.lr": 0.1, "optim.betas": [0.9], "empty": {}, "seed": 3
    }  # fmt: skip
    assert [runs.matches(v, "0.01") for v in (0.01, "0.01", 0.010, "0.010", 0.011)] == [
        True, True, True, False, False
    ]  # fmt: skip
    assert runs.matches([1, 2], "[1, 2]") and not runs.matches(runs.MISSING, "*")
