"""An airbench-style CIFAR-10 run: mlproject's step against the same code as a hand-written loop.

Both train the same small convolutional network (from the same seed) on the same uint8 images
held on the device, batched by index with a random crop and flip, in bf16 autocast with
channels_last memory and torch.compile (as airbench does):

  (a) a hand-written loop: zero_grad, autocast forward, backward, step, logging the loss with
      a device tensor (no host sync) and reading it once at the end;
  (c) mlproject: a ``ProxyModel`` over ``InMemoryLoader`` with ``precision='bf16'`` and
      ``compile=True``, logging the loss every step.

Runs are interleaved (a c a c ...) after one untimed warm-up each (compilation), and the table
gives medians of the training time and the test accuracy after the last epoch. The data is
CIFAR-10 from ``$DATA_DIR`` when it is there (through mlproject's CIFAR10Factory), else random
images (accuracy then means nothing; the time ratio still does).

    python benchmarks/bench_step.py                 # on a GPU: 8 epochs, 3 repetitions
    python benchmarks/bench_step.py --quick         # smoke run (CPU: no compile, tiny sizes)
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
from torch import nn

from mlproject import DatasetFactory, InMemoryLoader, MLProject, ProxyModel

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def build_net(width: int, seed: int) -> nn.Module:
    """airbench's shape in miniature: conv-BN-GELU blocks with pooling, then a linear head."""
    torch.manual_seed(seed)

    def block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out), nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU(),
        )  # fmt: skip

    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU(),
        block(width, 2 * width), block(2 * width, 4 * width), block(4 * width, 4 * width),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * width, 10, bias=False),
    )  # fmt: skip


def load_data(n_train: int, n_test: int) -> tuple[torch.Tensor, ...]:
    """uint8 images and labels: real CIFAR-10 when $DATA_DIR has it, else random ones."""
    try:
        from mlproject import CIFAR10Factory

        factory = CIFAR10Factory(batch_size=1, validation_size=0, download=False)
        x, y = factory.splits["train"].tensors()
        xt, yt = factory.splits["test"].tensors()
        return x[:n_train], y[:n_train], xt[:n_test], yt[:n_test], "CIFAR-10"
    except Exception:  # no files here: random images of the same shape
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (n_train + n_test,), generator=g)
        return x[:n_train], y[:n_train], x[n_train:], y[n_train:], "random images"


def loaders(data: tuple, batch_size: int, device: torch.device) -> tuple:
    x, y, xt, yt, _ = data
    train = InMemoryLoader(x, y, batch_size, shuffle=True, mean=MEAN, std=STD,
                           crop_padding=2, flip=True).to(device)  # fmt: skip
    test = InMemoryLoader(xt, yt, 1000, mean=MEAN, std=STD).to(device)
    return train, test


def accuracy(net: nn.Module, test: InMemoryLoader, bf16: bool) -> float:
    net.eval()
    correct = total = 0
    with torch.no_grad(), torch.autocast(test.images.device.type, torch.bfloat16, enabled=bf16):
        for x, y in test:
            correct += (net(x.contiguous(memory_format=torch.channels_last)).argmax(1) == y).sum()
            total += len(y)
    net.train()
    return float(correct) / total


def run_hand(data, args, device: torch.device, compile_: bool) -> tuple[float, float]:
    net = build_net(args.width, 1).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2)
    if compile_:
        net.compile()
    train, test = loaders(data, args.batch_size, device)
    bf16 = device.type == "cuda"
    torch.manual_seed(2)
    _sync(device)
    start = time.perf_counter()
    losses = []
    for _ in range(args.epochs):
        for x, y in train:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss = loss_fn(net(x.contiguous(memory_format=torch.channels_last)), y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())  # logged without a host sync, like mlproject
    torch.stack(losses).tolist()
    _sync(device)
    return time.perf_counter() - start, accuracy(net, test, bf16)


def run_mlproject(data, args, device: torch.device, compile_: bool, root: Path):
    class Timed(ProxyModel):
        def on_train_begin(self) -> None:
            _sync(device)
            self.started = time.perf_counter()

        def on_train_end(self) -> None:
            _sync(device)
            self.seconds = time.perf_counter() - self.started

        def train_batch(self, batch):
            x, y = batch
            return super().train_batch((x.contiguous(memory_format=torch.channels_last), y))

    class Airbench(MLProject):
        @staticmethod
        def get_dataset_factory(config):
            train, test = loaders(data, args.batch_size, device)
            return DatasetFactory(train_loader=train, test_loader=test)

        @staticmethod
        def get_model(config):
            net = build_net(args.width, 1).to(device).to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True)
            loss = nn.CrossEntropyLoss(label_smoothing=0.2)
            return Timed(net, opt, loss=loss, name="airbench", train_accuracy=False)

    project = Airbench({
        "model_dir": str(root), "n_epochs": args.epochs, "device": str(device), "seed": 2,
        "precision": "bf16" if device.type == "cuda" else "32", "compile": compile_,
        "progress": False, "save_iterations": 10**9, "validate_iterations": 10**9,
    })  # fmt: skip
    project.train()
    return project.model.seconds, accuracy(project.model.net, project.datasets.test_loader(),
                                           device.type == "cuda")  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_train, n_test = 50_000, 10_000
    if args.quick:
        args.epochs, args.reps, args.width, args.batch_size = 1, 1, 8, 64
        n_train, n_test = 512, 256
    elif device.type == "cpu":  # a GPU benchmark: on a CPU, a size that ends in minutes
        args.epochs, args.width, args.batch_size = 2, 16, 256
        n_train, n_test = 4096, 1024
        print("no GPU: a CPU-sized run (2 epochs of 4096 images, width 16, no bf16/compile)")
    compile_ = device.type == "cuda" and not args.no_compile and not args.quick
    data = load_data(n_train, n_test)
    times: dict[str, list[float]] = {"hand": [], "mlproject": []}
    accs: dict[str, list[float]] = {"hand": [], "mlproject": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps + 1):  # the first round compiles: not counted
            for name in ("hand", "mlproject"):
                if name == "hand":
                    seconds, acc = run_hand(data, args, device, compile_)
                else:
                    seconds, acc = run_mlproject(data, args, device, compile_, Path(tmp) / str(rep))
                if rep:
                    times[name].append(seconds)
                    accs[name].append(acc)
    hand, ours = statistics.median(times["hand"]), statistics.median(times["mlproject"])
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{os.cpu_count()} cores"
    print(f"airbench-style run on {device} ({where}), {data[4]}, {args.epochs} epochs, "
          f"batch {args.batch_size}, compile={compile_}")  # fmt: skip
    print(f"{'':24}{'seconds':>10}{'accuracy':>10}")
    print(f"{'(a) hand-written':24}{hand:10.2f}{statistics.median(accs['hand']):10.4f}")
    print(f"{'(c) mlproject':24}{ours:10.2f}{statistics.median(accs['mlproject']):10.4f}")
    print(f"ratio c/a: {ours / hand:.3f}")
    report = {
        "benchmark": "step", "device": str(device), "data": data[4], "compile": compile_,
        "epochs": args.epochs, "seconds": {"hand": hand, "mlproject": ours},
        "accuracy": {k: statistics.median(v) for k, v in accs.items()}, "ratio": ours / hand,
        "load": os.getloadavg()[0],
    }  # fmt: skip
    print("JSON: " + json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
