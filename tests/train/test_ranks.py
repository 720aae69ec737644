"""on_every_rank (oasst_data/train/ranks.py): a check that fails on one rank stops every rank."""

from __future__ import annotations

import socket

import pytest

torch = pytest.importorskip("torch")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, port: int, scenario: str, results) -> None:
    import torch.distributed as dist

    from oasst_data.errors import OasstDataError
    from oasst_data.train.ranks import on_every_rank

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        if scenario == "one_fails":
            with on_every_rank("opening the shards"):
                if rank == 1:
                    raise OasstDataError("data/train/b1.parquet: cannot read shard: Permission denied")
        elif scenario == "disagree":
            with on_every_rank("checking the checkpoint to resume") as agreed:
                agreed.value = f"out/checkpoint-{4 if rank else 6}"
        else:
            with on_every_rank("opening the shards") as agreed:
                agreed.value = "out/checkpoint-6"
        results[rank] = "ok"
    except OasstDataError as error:
        results[rank] = str(error)
    finally:
        dist.destroy_process_group()


def run_two_ranks(scenario: str) -> dict:
    context = torch.multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        port = _free_port()
        processes = [context.Process(target=_rank_main, args=(rank, port, scenario, results)) for rank in (0, 1)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
            assert process.exitcode == 0, "a rank hung or crashed"
        return dict(results)


def test_a_rank_that_fails_its_check_stops_the_other_rank_too():
    """Found by an audit: rank 1 stopped with its error, rank 0 waited in the next collective for
    the process group's timeout, deaf to SIGTERM, when no launcher killed it."""
    results = run_two_ranks("one_fails")
    assert results[1] == "data/train/b1.parquet: cannot read shard: Permission denied"  # its own error
    assert results[0] == "rank 1 stopped while opening the shards: data/train/b1.parquet: cannot read shard: Permission denied"


def test_ranks_that_would_resume_different_checkpoints_stop():
    results = run_two_ranks("disagree")
    expected = "the ranks disagree while checking the checkpoint to resume (rank 0: 'out/checkpoint-6', rank 1: 'out/checkpoint-4'): do they see the same files?"
    assert results == {0: expected, 1: expected}


def test_ranks_that_agree_go_on():
    assert run_two_ranks("agree") == {0: "ok", 1: "ok"}


def test_without_a_process_group_the_block_just_runs():
    from oasst_data.errors import OasstDataError
    from oasst_data.train.ranks import on_every_rank

    with on_every_rank("x") as agreed:
        agreed.value = "anything"
    with pytest.raises(OasstDataError, match="^own$"), on_every_rank("x"):
        raise OasstDataError("own")
