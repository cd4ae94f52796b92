"""Start-up cost: what a training program imports against ``import torch, tensorboardX, sacred``.

Each import runs in a fresh interpreter (``python -c``), alternating, and is timed inside that
interpreter, so interpreter start-up is excluded. "mlproject" is what a training program
loads (``from mlproject import Experiment, MLProject, ProxyModel``: torch and sacred; the
package imports everything on first use, so ``import mlproject`` alone, "package", costs next to
nothing and ``python -m mlproject runs`` starts at once). The table gives medians, the
difference (what mlproject adds over the libraries it is built on), and the top-level modules
the program loads beyond the baseline.

"dataset" adds ``torchvision.datasets``, what a run with a ready-made dataset pays: the
factories decode files with torchvision, imported on first use (``torchvision_lazy`` in the
JSON says whether that still holds; ``torchvision_import_s`` is the cost kept out).

    python benchmarks/bench_startup.py            # 5 imports of each
    python benchmarks/bench_startup.py --quick    # 1 import of each
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROGRAM = "from mlproject import Experiment, MLProject, ProxyModel"
STATEMENTS = {
    "baseline": "import torch, tensorboardX, sacred",
    "mlproject": PROGRAM,
    "package": "import mlproject",
    "dataset": f"{PROGRAM}; import torchvision.datasets",
}
# Run in the child: time the import, then report it and the top-level modules now loaded.
PROBE = """
import sys, time, json, warnings
warnings.simplefilter("ignore")
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
modules = sorted({{name.split(".")[0] for name in sys.modules}})
print(json.dumps({{"seconds": seconds, "modules": modules}}))
"""


def time_import(statement: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(statement=statement)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`{statement}` failed in a fresh interpreter:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="fresh imports of each")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 import of each")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
    started = time.perf_counter()
    if not args.quick:  # untimed: fills the OS file cache, so the first run is not special
        time_import("import torch")
    samples: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    modules: dict[str, list[str]] = {}
    for _ in range(args.reps):
        for name, statement in STATEMENTS.items():
            found = time_import(statement)
            samples[name].append(found["seconds"])
            modules[name] = found["modules"]
    median = {name: statistics.median(xs) for name, xs in samples.items()}
    report = {
        "benchmark": "startup",
        "reps": args.reps,
        "baseline_s": round(median["baseline"], 3),
        "mlproject_s": round(median["mlproject"], 3),
        "difference_s": round(median["mlproject"] - median["baseline"], 3),
        "package_s": round(median["package"], 3),
        "dataset_s": round(median["dataset"], 3),
        "torchvision_import_s": round(median["dataset"] - median["mlproject"], 3),
        "torchvision_lazy": "torchvision" not in modules["mlproject"],
        "samples_s": {name: [round(x, 3) for x in xs] for name, xs in samples.items()},
        "extra_modules": sorted(set(modules["mlproject"]) - set(modules["baseline"])),
        "loadavg": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(report)
    print("JSON: " + json.dumps(report))
    return report


def print_table(report: dict) -> None:
    print(
        f"Start-up: median of {report['reps']} fresh interpreters each, alternating "
        f"(load average {report['loadavg']})"
    )
    for name in STATEMENTS:
        samples = " ".join(f"{x:.2f}" for x in report["samples_s"][name])
        print(f"  {name:9s} {STATEMENTS[name]:60.60s} {report[f'{name}_s']:7.3f} s   ({samples})")
    print(f"  {'difference (mlproject - baseline)':70s} {report['difference_s']:+7.3f} s")
    lazy = "not loaded by import mlproject" if report["torchvision_lazy"] else "LOADED EAGERLY"
    added = report["torchvision_import_s"]
    print(f"  {'torchvision (a ready-made dataset)':70s} {added:+7.3f} s   ({lazy})")
    extra = ", ".join(m for m in report["extra_modules"] if not m.startswith("_")) or "none"
    print(f"  top-level modules mlproject loads beyond the baseline: {extra}")
    print(f"\ntotal {report['seconds']} s")


if __name__ == "__main__":
    main()
    sys.exit(0)
