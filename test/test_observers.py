"""The stock sacred observers a user attaches to an mlproject.Experiment keep the whole run.

Each ends with the run's status, its result (one number: the best validation value) and the
summary in its info, read back from the store: the tiny experiment runs as a program with
``-F`` and ``-s`` against SQLite and against a PostgreSQL server these tests start on
127.0.0.1 (skipped, saying why, where PostgreSQL is not installed or cannot start), and in
process with a MongoObserver on mongomock.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from test_experiment import REPO, TINY
from test_experiment import tiny as tiny  # noqa: F401 - a fixture, shared

# The three ways a run ends: (config updates, exit status, sacred status).
CASES = {
    "completed": (["n_epochs=2"], 0, "COMPLETED"),
    "failed": (["stop=fail"], 1, "FAILED"),
    "interrupted": (["stop=signal"], 128 + signal.SIGTERM, "INTERRUPTED"),
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sql_runs(request, start_script, tmp_path_factory):
    """``{case: (CompletedProcess, database url, cwd)}``: each case of CASES run as a program
    with a SqlObserver on its own database, a FileStorageObserver in ``obs_<case>`` and
    ``model_dir=<case>``."""
    sa = pytest.importorskip("sqlalchemy")
    cwd = tmp_path_factory.mktemp(f"sql_{request.param}")
    urls = {}
    for case in CASES:
        if request.param == "sqlite":
            urls[case] = f"sqlite:///{cwd / case}.db"
        else:
            server = request.getfixturevalue("postgres")
            engine = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                connection.execute(sa.text(f"CREATE DATABASE {case}"))
            engine.dispose()
            urls[case] = f"{server}/{case}"
    started = {
        case: start_script(
            TINY, "-F", f"obs_{case}", "-s", urls[case], "with", *args, f"model_dir={case}", cwd=cwd
        )
        for case, (args, _, _) in CASES.items()
    }
    done = {}
    for case, process in started.items():
        out, err = process.communicate(timeout=300)
        done[case] = (subprocess.CompletedProcess(process.args, process.returncode, out, err),)
        done[case] += (urls[case], cwd)
    return done


def rows(url: str, query: str) -> list[dict]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(sa.text(query))]
    finally:
        engine.dispose()


@pytest.mark.parametrize("case", CASES)
def test_sql_observer_row_has_the_status_and_exit_code_of_the_run(sql_runs, case):
    process, url, cwd = sql_runs[case]
    _, exit_code, status = CASES[case]
    assert process.returncode == exit_code, process.stderr[-3000:]
    for complaint in ("An error ocurred in the", "failed at some point"):  # sacred's words
        assert complaint not in process.stderr, process.stderr[-3000:]
    [row] = rows(url, "SELECT status, result, info, fail_trace FROM run")
    assert row["status"] == status
    # SqlObserver goes first (priority) and numbers runs from 0; the FileStorageObserver follows
    file_record = json.loads((cwd / f"obs_{case}" / "0" / "run.json").read_text())
    assert file_record["status"] == status
    if case == "failed":
        assert "RuntimeError: asked to fail" in row["fail_trace"]


def test_sql_observer_stores_the_result_and_the_summary(sql_runs):
    _, url, _ = sql_runs["completed"]
    [row] = rows(url, "SELECT result, info, config FROM run")
    summary = json.loads(row["info"])["summary"]
    assert summary["global_step"] == 6
    assert row["result"] == pytest.approx(summary["best"]["loss"], rel=1e-12)
    assert json.loads(row["config"])["optim"] == {"lr": 0.1, "momentum": 0.0}


def test_sql_observer_stores_the_users_sources_and_the_best_checkpoint(sql_runs):
    _, url, cwd = sql_runs["completed"]
    [experiment] = rows(url, "SELECT name, base_dir FROM experiment")
    assert experiment == {"name": "tiny_experiment", "base_dir": str(REPO / "test" / "scripts")}
    sources = {r["filename"]: r["content"] for r in rows(url, "SELECT * FROM source")}
    assert set(sources) == {"tiny_experiment.py", "tiny_parts.py"}
    assert sources["tiny_experiment.py"] == (REPO / TINY).read_text()
    [artifact] = rows(url, "SELECT filename, content FROM artifact")
    assert artifact["filename"] == "best.pt"
    best = cwd / "completed" / "0_tiny" / "best.pt"  # model_dir, SqlObserver's run id 0
    assert bytes(artifact["content"]) == best.read_bytes()


# --- MongoObserver on mongomock, in process -----------------------------------------------------
@pytest.fixture
def mongo():
    """``(observer, database)``: a MongoObserver writing to a mongomock database."""
    pytest.importorskip("mongomock")
    pytest.importorskip("pymongo", reason="sacred's MongoObserver needs pymongo's gridfs")
    import gridfs
    import mongomock
    import mongomock.gridfs
    from sacred.observers import MongoObserver

    mongomock.gridfs.enable_gridfs_integration()
    db = mongomock.MongoClient().sacred
    observer = MongoObserver.create_from(db.runs, gridfs.GridFS(db), metrics_collection=db.metrics)
    return observer, db


def test_mongo_observer_keeps_status_result_summary_sources_and_metrics(tiny, mongo, tmp_path):
    observer, db = mongo
    tiny.ex.observers.append(observer)
    run = tiny.ex.run(config_updates={"model_dir": str(tmp_path / "models")})
    [document] = db.runs.find()
    assert document["status"] == "COMPLETED"
    assert document["result"] == run.result == document["info"]["summary"]["best"]["loss"]
    assert document["info"]["summary"]["global_step"] == 6
    assert document["experiment"]["name"] == "tiny_experiment"
    sources = {name: file_id for name, file_id in document["experiment"]["sources"]}
    assert set(sources) == {"tiny_experiment.py", "tiny_parts.py"}
    fs = observer.fs
    assert fs.get(sources["tiny_experiment.py"]).read() == (REPO / TINY).read_bytes()
    [artifact] = document["artifacts"]
    assert artifact["name"] == "best.pt"
    best = Path(run.info["summary"]["run_dir"]) / "best.pt"
    assert fs.get(artifact["file_id"]).read() == best.read_bytes()
    metric_names = {m["name"] for m in db.metrics.find()}
    assert {"train/loss", "validation/loss", "test/accuracy"} <= metric_names


def test_mongo_observer_marks_a_failed_run(tiny, mongo, tmp_path):
    observer, db = mongo
    tiny.ex.observers.append(observer)
    with pytest.raises(RuntimeError, match="asked to fail"):
        tiny.ex.run(config_updates={"stop": "fail"})
    [document] = db.runs.find()
    assert document["status"] == "FAILED"
    assert "asked to fail" in "".join(document["fail_trace"])
