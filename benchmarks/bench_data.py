"""Data loading: mlproject's in-memory fast path against the per-sample torchvision pipeline.

For MNIST shapes (60,000 x 28x28, batch 128) and CIFAR-10 shapes (50,000 x 3x32x32, batch
128, random crop with padding 4 + horizontal flip), images per second of:

  (a) torchvision pipeline: ``torchvision.datasets.MNIST`` / ``CIFAR10`` decoding one PIL
      image per sample, torchvision transforms (``ToTensor``, ``Normalize``, for CIFAR
      ``RandomCrop`` and ``RandomHorizontalFlip``), a ``DataLoader`` with 2 workers and
      shuffling;
  (b) the fast path: ``MNISTFactory`` / ``CIFAR10Factory`` without transforms, one uint8
      tensor indexed per batch, normalised (and augmented) per batch;
  (c) the fast path on the GPU (after ``set_device``), when CUDA is available.

Works offline: it writes files of random pixels in the real formats (idx, CIFAR pickles) to a
temporary folder, has torchvision take them for the originals (it checks CIFAR-10's MD5 sums
on every load) and loads them through torchvision and the real factories. Measurements are
interleaved (a b c a b c ...) and the table gives medians, so the ratios hold on a noisy
machine. (a) is timed over a fixed number of batches after the first (worker start-up
excluded); (b) and (c) over whole epochs. Prints a table, then one line ``JSON: {...}``.

    python benchmarks/bench_data.py             # about a minute on 2 cores
    python benchmarks/bench_data.py --quick     # smoke run
    python benchmarks/bench_data.py --threads 1 # steadier when other work shares the cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, ToTensor

from mlproject.data import CIFAR10Factory, MNISTFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
from data_files import accept_files, write_cifar10, write_mnist  # noqa: E402 - the tests' writers

BATCH_SIZE = 128
WORKERS = 2
DATASETS = ("mnist", "cifar10")
LABELS = {
    "torchvision": "(a) torchvision, PIL + 2 workers",
    "fast": "(b) fast path, CPU",
    "fast_gpu": "(c) fast path, GPU",
}


def torchvision_loader(name: str, root: Path) -> DataLoader:
    """The per-sample pipeline (a) over the training images."""
    if name == "mnist":
        norm = Normalize(MNISTFactory.MEAN, MNISTFactory.STD)
        transform = Compose([ToTensor(), norm])
        dataset = torchvision.datasets.MNIST(root, train=True, transform=transform)
    else:
        norm = Normalize(CIFAR10Factory.MEAN, CIFAR10Factory.STD)
        transform = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), norm])
        dataset = torchvision.datasets.CIFAR10(root, train=True, transform=transform)
    return DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=WORKERS)


def fast_loader(name: str, root: Path, device: str):
    """The fast path (b, c) over the training images, on ``device``."""
    cls = MNISTFactory if name == "mnist" else CIFAR10Factory
    factory = cls(BATCH_SIZE, data_dir=root, validation_size=0, download=False)
    factory.set_device(torch.device(device))
    return factory.train_loader()


def images_per_second(loader, max_batches: int | None, device: str) -> float:
    """Draw batches (all of an epoch, or ``max_batches`` after the first) and time them."""
    batches = iter(loader)
    if max_batches is not None:
        next(batches)  # workers started and warm
    n, start = 0, time.perf_counter()
    for k, (x, _) in enumerate(batches):
        n += len(x)
        if max_batches is not None and k + 1 >= max_batches:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, few batches")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions")
    parser.add_argument("--slow-batches", type=int, default=100, help="batches timed for (a)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's, one a core)"
    )
    args = parser.parse_args()
    if args.threads is not None:  # 1 is far steadier on a shared machine (see README)
        torch.set_num_threads(args.threads)
    repeats, slow_batches = (1, 20) if args.quick else (args.repeats, args.slow_batches)
    variants = ["torchvision", "fast"] + (["fast_gpu"] if torch.cuda.is_available() else [])

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_mnist(root, "MNIST", n_train=60_000, n_test=10_000)
        write_cifar10(root, n_per_batch=10_000, n_test=10_000)
        accept_files(root)  # the generated files pass torchvision's MD5 checks
        for name in DATASETS:
            loaders = {
                "torchvision": torchvision_loader(name, root),
                "fast": fast_loader(name, root, "cpu"),
            }
            if "fast_gpu" in variants:
                loaders["fast_gpu"] = fast_loader(name, root, "cuda")
                images_per_second(loaders["fast_gpu"], 5, "cuda")  # CUDA context, kernels
            rates: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(repeats):
                for variant in variants:
                    limit = slow_batches if variant == "torchvision" else None
                    device = "cuda" if variant == "fast_gpu" else "cpu"
                    rates[variant].append(images_per_second(loaders[variant], limit, device))
            results[name] = {v: statistics.median(r) for v, r in rates.items()}
            del loaders

    print(f"{'dataset':<9} {'pipeline':<34} {'images/s':>12} {'vs (a)':>8}")
    for name, rates in results.items():
        for variant, rate in rates.items():
            ratio = rate / rates["torchvision"]
            print(f"{name:<9} {LABELS[variant]:<34} {rate:>12,.0f} {ratio:>7.1f}x")
    summary = {
        "benchmark": "data",
        "batch_size": BATCH_SIZE,
        "workers": WORKERS,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "loadavg": round(os.getloadavg()[0], 2),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "images_per_s": {
            n: {v: round(r) for v, r in rates.items()} for n, rates in results.items()
        },
        "ratio_vs_torchvision": {
            n: {
                v: round(r / rates["torchvision"], 1)
                for v, r in rates.items()
                if v != "torchvision"
            }
            for n, rates in results.items()
        },
    }
    print("JSON: " + json.dumps(summary))


if __name__ == "__main__":
    main()
