"""The streaming ImageFolder loader: standard transforms, exact resume, and DDP coverage."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from adq_fx.train import streaming
from adq_fx.train.data import load_dataset, shard_range
from adq_fx.train.engine import run_training
from adq_fx.train.streaming import ImageSamples, StreamingImageFolder, eval_transform, train_transform
from tests import ddp_stream_worker
from tests.ddp_stream_worker import red_means
from tests.image_folders import sample_ids, stream_config, write_coloured_folder, write_jpeg_folder


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"))


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    return write_coloured_folder(tmp_path_factory.mktemp("coloured"))


def epoch_batches(
    data: StreamingImageFolder, epoch: int, **options
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    settings = {"batch_size": 8, "seed": 3, "rank": 0, "world_size": 1, **options}
    return list(data.train_epoch(epoch, **settings))


def test_transforms_give_fixed_size_uint8_images_from_any_size(jpegs) -> None:
    samples = StreamingImageFolder(jpegs, image_size=24).train_samples
    for transform in (train_transform(24), eval_transform(24)):
        shapes = {ImageSamples(samples[:4], transform)[i][0].shape for i in range(4)}
        assert shapes == {(3, 24, 24)}
        assert ImageSamples(samples, transform)[0][0].dtype == torch.uint8


def test_augmentation_depends_only_on_seed_epoch_and_sample(jpegs) -> None:
    dataset = ImageSamples(StreamingImageFolder(jpegs).train_samples, train_transform(24), seed=7)
    before = torch.get_rng_state()
    first = dataset[(5, 0)][0]
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    torch.manual_seed(123)  # whatever the global RNG does
    assert torch.equal(dataset[(5, 0)][0], first)
    assert not torch.equal(dataset[(5, 1)][0], first)  # another epoch, another crop


def test_an_epoch_shows_every_sample_once_whatever_the_workers(coloured) -> None:
    data = StreamingImageFolder(coloured, image_size=16)
    straight = epoch_batches(data, 0)
    ids = [i for x, _ in straight for i in sample_ids(red_means(x))]
    assert sorted(ids) == list(range(80))
    data.workers = 2
    with_workers = epoch_batches(data, 0)
    pairs = zip(straight, with_workers, strict=True)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    again = [i for x, _ in epoch_batches(data, 1) for i in sample_ids(red_means(x))]
    assert sorted(again) == list(range(80)) and again != ids  # a new order each epoch


def test_an_epoch_resumed_at_a_step_gives_exactly_the_remaining_batches(coloured) -> None:
    data = StreamingImageFolder(coloured, image_size=16)
    straight = epoch_batches(data, 2)
    resumed = data.train_epoch(2, batch_size=8, seed=3, rank=0, world_size=1, start_step=4)
    assert resumed.steps == len(straight) == 10
    rest = list(resumed)
    assert len(rest) == 6
    assert all(torch.equal(a[0], b[0]) for a, b in zip(straight[4:], rest, strict=True))


def test_hold_out_and_subset_follow_the_in_memory_rules(jpegs) -> None:
    data = StreamingImageFolder(jpegs).hold_out(30)
    assert data.split_size("val") == 30 and data.train_size == 210
    assert torch.bincount(data.labels("val")).tolist() == [10, 10, 10]
    assert not {p for p, _ in data.val_samples} & {p for p, _ in data.train_samples}
    # the last 10 files of each class, as TensorDataset.hold_out takes them
    assert sorted(p.rsplit("/", 1)[1] for p, label in data.val_samples if label == 0) == [
        f"{i:04d}.jpg" for i in range(70, 80)
    ]
    data.subset(50, 12, seed=0)
    assert data.train_size == 50 and data.split_size("test") == 12
    with pytest.raises(ValueError, match="multiple of the 3 classes"):
        StreamingImageFolder(jpegs).hold_out(31)


def test_auto_streams_only_a_large_tree(jpegs, monkeypatch) -> None:
    assert type(load_dataset(f"imagefolder:{jpegs}", loader="auto", image_size=8)).__name__ == "TensorDataset"
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", 1000)
    assert isinstance(load_dataset(f"imagefolder:{jpegs}", loader="auto"), StreamingImageFolder)


def test_streaming_errors_name_the_cause(jpegs, tmp_path) -> None:
    with pytest.raises(ValueError, match="reads an ImageFolder tree"):
        load_dataset("digits", loader="stream")
    with pytest.raises(ValueError, match="must divide among the 3 ranks"):
        StreamingImageFolder(jpegs).train_epoch(0, batch_size=8, seed=0, rank=0, world_size=3)
    with pytest.raises(FileNotFoundError, match="needs train/ and test/"):
        StreamingImageFolder(tmp_path)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "test" / "b").mkdir(parents=True)
    for split, name in (("train", "a"), ("test", "b")):
        (tmp_path / split / name / "x.jpg").hardlink_to(jpegs / "train" / "class0" / "0000.jpg")
    with pytest.raises(ValueError, match="same class folders"):
        StreamingImageFolder(tmp_path)


def test_streamed_training_resumes_mid_epoch_bit_identically(jpegs, tmp_path) -> None:
    straight = run_training(stream_config(jpegs, tmp_path / "straight"))
    first = run_training(stream_config(jpegs, tmp_path / "pieces", stop_after_steps=2))
    assert first["stopped"] and "step 2 of 3" in first["reason"]
    second = run_training(stream_config(jpegs, tmp_path / "pieces", resume=True, stop_after_steps=2))
    assert second["stopped"] and "phase 'qat'" in second["reason"]  # the last float step, one QAT step
    resumed = run_training(stream_config(jpegs, tmp_path / "pieces", resume=True))

    def trace(results):
        return [
            (h["train_loss"], h["train_acc"], h["test_acc"])
            for p in ("float", "qat")
            for h in results["history"][p]
        ], results["converted_accuracy"]

    assert trace(resumed) == trace(straight)
    assert straight["data"]["loader"] == "StreamingImageFolder"


def test_two_ranks_see_every_sample_once_per_epoch_and_train_in_step(coloured, jpegs, tmp_path) -> None:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    args = (2, str(tmp_path / "init"), str(coloured), str(jpegs), str(tmp_path))
    mp.spawn(ddp_stream_worker.run, args=args, nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for epoch in (0, 1):
        shares = [set(r["seen"][epoch]) for r in ranks]
        assert not shares[0] & shares[1]
        assert sorted(ranks[0]["seen"][epoch] + ranks[1]["seen"][epoch]) == list(range(80))
    assert ranks[0]["seen"][0] != ranks[0]["seen"][1]
    assert ranks[0]["converted"] == ranks[1]["converted"]
    assert ranks[0]["history"]["qat"][0]["test_acc"] == ranks[1]["history"]["qat"][0]["test_acc"]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=500), st.integers(min_value=1, max_value=9))
def test_evaluation_parts_of_the_ranks_concatenate_to_the_whole_split_in_order(size, world) -> None:
    parts = [shard_range(size, (rank, world)) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(size))
    assert max(len(p) for p in parts) == -(-size // world)  # the padded length every rank gathers


def test_a_sharded_evaluation_reads_only_its_part(jpegs) -> None:
    data = StreamingImageFolder(jpegs, image_size=8)
    whole = torch.cat([y for _, y in data.test_batches(7)])
    parts = [torch.cat([y for _, y in data.test_batches(7, shard=(r, 4))]) for r in range(4)]
    assert torch.equal(torch.cat(parts), whole) and torch.equal(whole, data.labels())
