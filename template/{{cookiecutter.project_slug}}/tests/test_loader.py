"""The shared data pipeline: ordinary Datasets, augmentation in workers, sharded streams, exact resume."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from utils.dataset import EpochDataset, ShardStream, TensorSamples, make_loader, sample_generator, split


class Squares(Dataset):
    """An ordinary map-style Dataset: one sample per index, nothing else."""

    def __len__(self) -> int:
        return 90

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index), float(index) ** 2]), index


def batches(loader, epoch: int, stop_after: int | None = None) -> list[list[int]]:
    loader.set_epoch(epoch)
    seen = []
    for _, indices in loader:
        seen.append(indices.tolist())
        if len(seen) == stop_after:
            break
    return seen


def test_a_per_sample_dataset_with_workers_resumes_mid_epoch_exactly() -> None:
    def loader():
        return make_loader(Squares(), batch_size=8, shuffle=True, seed=3, num_workers=2)

    uninterrupted = loader()
    expected = [batches(uninterrupted, epoch) for epoch in range(3)]

    stopped = loader()
    first = batches(stopped, 0)
    partial = batches(stopped, 1, stop_after=4)
    state = stopped.state_dict()  # what a checkpoint holds

    resumed = loader()
    resumed.load_state_dict(state)
    rest = batches(resumed, 1)
    assert [first, partial + rest, batches(resumed, 2)] == expected
    assert expected[0] != expected[1]  # each epoch its own order
    assert sorted(i for batch in expected[0] for i in batch) == list(range(90))


def test_in_memory_samples_batch_like_an_ordinary_dataset() -> None:
    features, labels = torch.randn(50, 3), torch.arange(50)
    dataset = TensorSamples(features, labels)
    one = dataset[7]
    assert torch.equal(one[0], features[7]) and int(one[1]) == 7
    batch_features, batch_labels = next(iter(make_loader(dataset, 16, shuffle=True, seed=0)))
    assert batch_features.shape == (16, 3)
    assert torch.equal(batch_features, features[batch_labels])


def test_ranks_read_disjoint_shards() -> None:
    shards = [
        {
            int(i)
            for _, indices in make_loader(Squares(), 8, shuffle=True, seed=1, rank=rank, world_size=2)
            for i in indices
        }
        for rank in (0, 1)
    ]
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(90))


class Jittered(EpochDataset):
    """Augmentation: each sample moved by noise drawn for its (seed, epoch, index)."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        noise = torch.randn(2, generator=sample_generator(7, epoch, index))
        return torch.tensor([float(index), 0.0]) + noise, index


def samples(loader, epoch: int, stop_after: int | None = None) -> dict[int, torch.Tensor]:
    """The sample each index got in (part of) an epoch."""
    loader.set_epoch(epoch)
    seen = {}
    for count, (points, indices) in enumerate(loader, 1):
        seen.update(zip(indices.tolist(), points))
        if count == stop_after:
            break
    return seen


def test_augmentation_drawn_in_two_workers_changes_each_epoch_and_resumes_exactly() -> None:
    def loader():
        return make_loader(Jittered(), batch_size=8, shuffle=True, seed=3, num_workers=2)

    uninterrupted = loader()
    expected = [samples(uninterrupted, epoch) for epoch in range(3)]
    assert all(not torch.equal(expected[0][i], expected[1][i]) for i in range(64))  # workers saw the epoch

    stopped = loader()
    first = samples(stopped, 0)
    partial = samples(stopped, 1, stop_after=3)
    state = stopped.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    got = [first, {**partial, **samples(resumed, 1)}, samples(resumed, 2)]
    for epoch in range(3):
        assert got[epoch].keys() == expected[epoch].keys()
        assert all(torch.equal(got[epoch][i], expected[epoch][i]) for i in expected[epoch])


def write_shards(directory: Path, shards: int, per_shard: int) -> list[Path]:
    """Shards of JSON lines, each sample an id: ``shards * per_shard`` samples in all."""
    paths = []
    for shard in range(shards):
        path = directory / f"shard-{shard:04d}.jsonl"
        lines = (json.dumps({"id": shard * per_shard + i}) for i in range(per_shard))
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


def read_ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def stream_ids(loader, epoch: int, stop_after: int | None = None) -> list[list[int]]:
    loader.set_epoch(epoch)
    seen = []
    for ids in loader:
        seen.append(ids.tolist())
        if len(seen) == stop_after:
            break
    return seen


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop_after", [5, None], ids=["mid-epoch", "at-epoch-end"])
def test_a_sharded_stream_resumes_on_the_next_sample(
    tmp_path: Path, num_workers: int, stop_after: int | None
) -> None:
    shards = write_shards(tmp_path, shards=8, per_shard=10)

    def loader():
        stream = ShardStream(shards, read_ids, samples_per_shard=10, seed=0)
        return make_loader(stream, batch_size=4, shuffle=True, seed=0, num_workers=num_workers)

    uninterrupted = loader()
    expected = [stream_ids(uninterrupted, epoch) for epoch in range(3)]
    for epoch in expected:  # every sample exactly once an epoch
        assert sorted(i for batch in epoch for i in batch) == list(range(80))
    assert expected[0] != expected[1]

    stopped = loader()
    first = stream_ids(stopped, 0)
    partial = stream_ids(stopped, 1, stop_after) if stop_after else []
    state = stopped.state_dict()  # what a checkpoint holds
    resumed = loader()
    resumed.load_state_dict(state)
    if stop_after:
        assert [first, partial + stream_ids(resumed, 1), stream_ids(resumed, 2)] == expected
    else:  # stopped after epoch 0's last batch
        assert [first, stream_ids(resumed, 1), stream_ids(resumed, 2)] == expected


def read_share(rank: int, shards: list[Path], address: str, out: Path) -> None:
    """One of two DDP processes: read this rank's share of the stream, gather both on rank 0."""
    torch.distributed.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
    stream = ShardStream(shards, read_ids, samples_per_shard=5, seed=0)
    world = torch.distributed.get_world_size()
    loader = make_loader(stream, 5, shuffle=True, seed=0, num_workers=2, rank=rank, world_size=world)
    shares: list[list[int] | None] = [None] * world
    torch.distributed.all_gather_object(shares, [i for batch in stream_ids(loader, 0) for i in batch])
    if rank == 0:
        out.write_text(json.dumps(shares))
    torch.distributed.destroy_process_group()


def test_two_ddp_processes_and_their_workers_read_disjoint_shares_of_a_stream(tmp_path: Path) -> None:
    shards = write_shards(tmp_path, shards=8, per_shard=5)
    with socket.socket() as free:  # a port for the two processes to meet on
        free.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    torch.multiprocessing.spawn(read_share, args=(shards, address, tmp_path / "shares.json"), nprocs=2)
    first, second = json.loads((tmp_path / "shares.json").read_text())
    assert len(first) == len(second) == 20  # the same number of steps on each rank
    assert not set(first) & set(second)
    assert set(first) | set(second) == set(range(40))


def test_shards_that_ranks_cannot_share_evenly_are_refused(tmp_path: Path) -> None:
    shards = write_shards(tmp_path, shards=3, per_shard=5)
    stream = ShardStream(shards, read_ids, samples_per_shard=5, seed=0)
    with pytest.raises(ValueError, match="3 shards cannot be dealt out evenly to 2 ranks"):
        make_loader(stream, 5, shuffle=True, seed=0, rank=0, world_size=2)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_stream_loader_knows_how_many_batches_its_workers_yield(tmp_path: Path, num_workers: int) -> None:
    shards = write_shards(tmp_path, shards=5, per_shard=3)  # 2 workers: 9 and 6 samples, 5 batches
    stream = ShardStream(shards, read_ids, samples_per_shard=3, seed=0)
    loader = make_loader(stream, 4, shuffle=True, seed=0, num_workers=num_workers)
    assert len(loader) == len(stream_ids(loader, 0))  # workers' last batches may each be short


def test_a_shard_of_another_size_is_refused_by_name(tmp_path: Path) -> None:
    shards = write_shards(tmp_path, shards=2, per_shard=5)
    shards[1].write_text('{"id": 99}\n')
    loader = make_loader(ShardStream(shards, read_ids, samples_per_shard=5, seed=0), 5, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="shard-0001.jsonl holds 1 samples, not 5"):
        stream_ids(loader, 0)


def test_a_script_whose_loader_lives_until_exit_still_exits() -> None:
    """Workers ignore SIGTERM (the run stops them), so Python's exit must end them otherwise."""
    script = (
        "import torch\n"
        "from utils.dataset import TensorSamples, make_loader\n"
        "loader = make_loader(TensorSamples(torch.randn(64, 2)), 8, shuffle=True, seed=0, num_workers=2)\n"
        "batches = sum(1 for _ in loader)\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("kind", ["map-style", "stream"])
def test_an_epoch_left_early_resumes_the_next_epoch_from_its_start(
    tmp_path: Path, kind: str, num_workers: int
) -> None:
    shards = write_shards(tmp_path, shards=4, per_shard=10)

    def loader():
        if kind == "stream":
            dataset = ShardStream(shards, read_ids, samples_per_shard=10, seed=0)
        else:
            dataset = list(range(40))  # a list is a map-style dataset too
        return make_loader(dataset, 4, shuffle=True, seed=0, num_workers=num_workers)

    expected = stream_ids(loader(), 1)
    left = loader()
    stream_ids(left, 0, stop_after=3)  # a loop that caps its steps per epoch
    resumed = loader()
    resumed.load_state_dict(left.state_dict())  # saved at the end of the epoch left early
    assert stream_ids(resumed, 1) == expected


def test_two_loaders_over_one_stream_keep_their_own_shuffle(tmp_path: Path) -> None:
    stream = ShardStream(
        write_shards(tmp_path, shards=4, per_shard=10), read_ids, samples_per_shard=10, seed=0
    )
    shuffled = make_loader(stream, 40, shuffle=True, seed=0)
    make_loader(stream, 40, shuffle=False, seed=0)  # an eval loader over the same shards
    assert stream_ids(shuffled, 0) != [list(range(40))]


def test_an_epoch_dataset_inside_a_subset_is_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match="wrap the Subset in it instead"):
        make_loader(split(Jittered(), {"train": 0.5, "val": 0.5})["train"], 8, shuffle=True, seed=0)
