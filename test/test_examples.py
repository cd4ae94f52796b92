"""The examples are programs: each runs with a tiny config; the default one reaches its accuracy."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIGITS = "examples/digits/main.py"


def test_digits_example_is_an_executable_script():
    path = REPO / DIGITS
    assert os.access(path, os.X_OK)
    assert path.read_text().startswith("#!/usr/bin/env python")


def test_digits_example_runs_with_a_tiny_config(start_script, tmp_path):
    process = start_script(
        DIGITS, "with", "n_global_iterations=5", "model_dir=models", "progress=False", cwd=tmp_path
    )
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    assert re.search(r"^test accuracy: [01]\.\d{4}$", out, flags=re.MULTILINE), out
    [run_dir] = (tmp_path / "models").iterdir()
    assert re.fullmatch(r"\d{8}-\d{6}_digits_mlp", run_dir.name), run_dir.name
    assert (run_dir / "checkpoint-000000005.pt").is_file()
    assert (run_dir / "best.pt").is_file()


@pytest.mark.slow
def test_digits_default_training_reaches_95_percent(start_script, tmp_path, record_property):
    started = time.perf_counter()
    process = start_script(
        DIGITS, "with", "n_epochs=20", "model_dir=models", "progress=False", cwd=tmp_path
    )
    out, err = process.communicate(timeout=600)
    wall = time.perf_counter() - started
    record_property("wall_s", round(wall, 1))
    print(f"digits, n_epochs=20: {out.strip()} in {wall:.1f} s wall")
    assert process.returncode == 0, err[-3000:]
    accuracy = float(re.search(r"^test accuracy: ([\d.]+)$", out, flags=re.MULTILINE).group(1))
    assert accuracy >= 0.95


EXAMPLES = sorted(str(p.relative_to(REPO)) for p in REPO.glob("examples/*/main.py"))


def test_every_example_is_executable_and_prints_its_config(start_script, tmp_path):
    """``./main.py print_config`` works for each example and lists the framework's keys."""
    assert len(EXAMPLES) >= 5
    started = {}
    for script in EXAMPLES:
        assert os.access(REPO / script, os.X_OK), script
        started[script] = start_script(script, "print_config", cwd=tmp_path)
    for script, process in started.items():
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, (script, err[-2000:])
        for key in ("n_epochs", "n_global_iterations", "tensorboard_dir", "resume", "seed"):
            assert key in out, (script, key)
    assert not any(tmp_path.iterdir()), "print_config must not write anything"
