"""InMemoryLoader: batches, normalisation and augmentation equal to torchvision's, RNG use."""

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import Compose, Normalize, ToTensor

from mlproject.data.images import to_pil
from mlproject.data.in_memory import InMemoryLoader, crop_flip, normalize
from mlproject.errors import DataError

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def images(n=50, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


def epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


@pytest.mark.parametrize(
    ("n", "batch", "drop_last", "expected"),
    [(50, 16, False, 4), (50, 16, True, 3), (48, 16, True, 3), (5, 16, False, 1), (5, 16, True, 0)],
)
def test_len_is_the_number_of_batches(n, batch, drop_last, expected):
    loader = InMemoryLoader(images(n), torch.zeros(n), batch, drop_last=drop_last)
    assert len(loader) == expected
    assert len(epoch(loader)) == expected


def test_batches_are_float_images_and_int64_labels_in_order_without_shuffle():
    x, labels = images(50), torch.arange(50)
    batches = epoch(InMemoryLoader(x, labels, 16))
    assert [len(b[0]) for b in batches] == [16, 16, 16, 2]
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert xs.shape == (50, 3, 32, 32)
    assert torch.equal(ys, labels)
    assert torch.equal(xs, x.float() / 255)


def test_grey_images_get_a_channel_axis():
    x, _ = next(iter(InMemoryLoader(images(8, c=1)[:, 0], torch.zeros(8), 4)))
    assert x.shape == (4, 1, 32, 32)


def test_shuffle_serves_every_sample_once_per_epoch_in_a_new_order():
    loader = InMemoryLoader(images(100, c=1), torch.arange(100), 32, shuffle=True)
    first, second = (torch.cat([y for _, y in epoch(loader)]) for _ in range(2))
    assert sorted(first.tolist()) == list(range(100)) == sorted(second.tolist())
    assert not torch.equal(first, second)


def test_images_follow_their_labels_through_shuffle_and_drop_last():
    x = images(40, c=1)
    loader = InMemoryLoader(x, torch.arange(40), 16, shuffle=True, drop_last=True)
    for xb, yb in loader:
        assert torch.equal(xb, x[yb].float() / 255)


def test_normalize_equals_torchvision_to_tensor_then_normalize():
    x = images(20)
    reference = Compose([ToTensor(), Normalize(MEAN, STD)])
    expected = torch.stack([reference(to_pil(img)) for img in x])
    got = normalize(x, torch.tensor(MEAN), torch.tensor(STD))
    assert torch.equal(got, expected)  # bit for bit, not approximately


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_crop_flip_equals_torchvision_crop_and_flip_with_the_same_parameters(padding):
    x = images(30, size=32)
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 2 * padding + 1, (30, 2), generator=g)
    flips = torch.randint(0, 2, (30,), generator=g).bool()
    got = crop_flip(x, offsets, flips, padding)
    for i in range(30):
        img = TF.crop(TF.pad(to_pil(x[i]), padding), int(offsets[i, 0]), int(offsets[i, 1]), 32, 32)
        if flips[i]:
            img = TF.hflip(img)
        assert torch.equal(TF.pil_to_tensor(img), got[i]), f"sample {i}"


def test_augmentation_crops_and_flips_and_keeps_the_labels():
    x = images(64)
    loader = InMemoryLoader(x, torch.arange(64), 64, shuffle=True, crop_padding=4, flip=True)
    xb, yb = next(iter(loader))
    assert xb.shape == (64, 3, 32, 32)
    assert not torch.equal(xb, x[yb].float() / 255)  # some sample got moved or flipped
    # zero padding shows up as exact zeros on the borders of shifted samples
    assert (xb == 0).any()


def test_the_same_global_seed_gives_the_same_epoch():
    loader = InMemoryLoader(
        images(50), torch.arange(50), 16, shuffle=True, crop_padding=4, flip=True
    )
    torch.manual_seed(3)
    first = epoch(loader)
    torch.manual_seed(3)
    second = epoch(loader)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_randomness_is_drawn_at_iter_time_and_never_per_batch():
    loader = InMemoryLoader(
        images(50), torch.arange(50), 8, shuffle=True, crop_padding=4, flip=True
    )
    batches = iter(loader)
    state = torch.get_rng_state()
    for _ in batches:
        assert torch.equal(torch.get_rng_state(), state)


def test_trainer_resume_protocol_replays_the_interrupted_epoch_exactly():
    """Restore the RNG of the epoch's start, iter(), skip k batches, restore step k's RNG."""
    loader = InMemoryLoader(
        images(80), torch.arange(80), 8, shuffle=True, crop_padding=4, flip=True
    )
    torch.manual_seed(0)
    epoch_start = torch.get_rng_state()
    original, states = [], []
    for x, y in loader:
        original.append((x, y, torch.rand(3)))  # the model draws too (dropout...)
        states.append(torch.get_rng_state())
    k = 4
    torch.manual_seed(123)  # a new process
    torch.set_rng_state(epoch_start)
    batches = iter(loader)
    for _ in range(k):
        next(batches)
    torch.set_rng_state(states[k - 1])
    for (x, y), (x0, y0, noise) in zip(batches, original[k:]):
        assert torch.equal(x, x0) and torch.equal(y, y0)
        assert torch.equal(torch.rand(3), noise)


def test_bad_arguments_are_one_data_error_naming_each():
    with pytest.raises(DataError) as err:
        InMemoryLoader(images(4).float(), torch.zeros(3), 0, mean=(0.5,))
    message = str(err.value)
    for part in ("uint8", "one label per image (4)", "batch_size", "both mean and std"):
        assert part in message


@CUDA
def test_on_a_gpu_batches_are_made_there_and_equal_the_cpu_ones():
    x = images(70)
    kwargs = dict(shuffle=True, crop_padding=4, flip=True, mean=MEAN, std=STD)
    cpu = InMemoryLoader(x, torch.arange(70), 16, **kwargs)
    gpu = InMemoryLoader(x, torch.arange(70), 16, **kwargs).to("cuda")
    torch.manual_seed(5)
    expected = epoch(cpu)
    torch.manual_seed(5)
    got = epoch(gpu)
    for (xg, yg), (xc, yc) in zip(got, expected):
        assert xg.device.type == "cuda" and yg.device.type == "cuda"
        assert torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)


@pytest.mark.parametrize(("world_size", "n"), [(2, 23), (3, 14)])
def test_sharded_batches_join_into_the_global_batches_of_one_process(world_size, n):
    # (2, 23): global batches 8, 8, 7 (the last split 4 + 3); (3, 14): 12 and 2, so ranks 1
    # and 2 have no sample in the last one and serve a stand-in (of loss weight 0)
    from mlproject.distributed import World

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)

    def loader(batch_size, rank, size):
        plain = InMemoryLoader(images, torch.arange(n), batch_size, shuffle=True, crop_padding=2,
                               flip=True, mean=[0.5] * 3, std=[0.25] * 3)  # fmt: skip
        return plain.sharded(World(rank, size, rank, launched=True), seed=5)

    one = loader(4 * world_size, 0, 1)
    parts = [loader(4, rank, world_size) for rank in range(world_size)]
    orders = []
    for epoch in (0, 1):
        for each in (one, *parts):
            each.set_epoch(epoch)
        shares = [list(part) for part in parts]
        whole = list(one)
        assert [len(s) for s in shares] == [len(whole)] * world_size
        for k, (x, y) in enumerate(whole):
            real = [s[k] for s, part in zip(shares, parts) if part.plan.positions(k)]
            assert torch.equal(torch.cat([xs for xs, _ in real]), x)  # crops and flips too
            assert torch.equal(torch.cat([ys for _, ys in real]), y)
        labels = torch.cat([y for _, y in whole])
        assert sorted(labels.tolist()) == list(range(n))  # the epoch covers the set once
        orders.append(labels)
    assert not torch.equal(*orders)  # each epoch its own order, drawn from (seed, epoch)
