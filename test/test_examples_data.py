"""The dataset examples run as programs: two steps on generated real-format files, a checkpoint.

All runs start together (a module fixture) and each test waits for its own, so the suite
pays for the slowest run, not for the sum. torchvision checks CIFAR-10's files against the
originals' MD5 sums on every load, so each program runs under LAUNCH, which first makes
torchvision take the generated files for the originals (``data_files.accept_files``).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_files import write_cifar10, write_mnist

REPO = Path(__file__).resolve().parents[1]
# python -c LAUNCH DATA_DIR ./main.py ARGS...: accept the files in DATA_DIR, then run the script.
LAUNCH = f"""
import runpy, sys
sys.path.insert(0, {str(REPO / "test")!r})
from data_files import accept_files
accept_files(sys.argv.pop(1))
sys.argv.pop(0)
runpy.run_path(sys.argv[0], run_name="__main__")
"""
QUICK = ["n_global_iterations=2", "batch_size=8", "progress=False"]
RUNS = {
    "mnist": ("mnist", ["validation_size=20"]),
    "fashion_mnist": ("fashion_mnist", ["validation_size=20"]),
    "cifar10": ("cifar10", ["validation_size=10"]),  # README transforms, 2 DataLoader workers
    "cifar10_fast": ("cifar10", ["validation_size=10", "fast_data=True"]),
    "cluttered_mnist": ("cluttered_mnist", ["validation_size=20"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every example on a data dir of generated files; {run: (process, model_dir)}."""
    data_dir = tmp_path_factory.mktemp("data")
    write_mnist(data_dir, "MNIST", n_train=120, n_test=40)
    write_mnist(data_dir, "FashionMNIST", n_train=120, n_test=40)
    write_cifar10(data_dir, n_per_batch=20, n_test=30)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DATA_DIR", None)
    env["OMP_NUM_THREADS"] = "1"  # five runs share the cores: no thread oversubscription
    started = {}
    for run, (folder, args) in RUNS.items():
        model_dir = tmp_path_factory.mktemp(run)
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(data_dir), "./main.py", "with", *QUICK]
            + [f"data_dir={data_dir}", f"model_dir={model_dir}", *args],
            cwd=REPO / "examples" / folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[run] = (process, model_dir)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("run", sorted(RUNS))
def test_example_trains_two_steps_offline_and_saves_a_checkpoint(runs, run):
    process, model_dir = runs[run]
    _, err = process.communicate(timeout=400)
    assert process.returncode == 0, f"{run} exited with {process.returncode}:\n{err[-4000:]}"
    assert list(model_dir.rglob("*.pt")), f"{run} saved no checkpoint under {model_dir}"


@pytest.mark.parametrize("folder", sorted({folder for folder, _ in RUNS.values()}))
def test_example_is_an_executable_script(folder):
    script = REPO / "examples" / folder / "main.py"
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/env python\n")
