"""DeepSpeed's CPU all-reduce buffer (66 MB a rank in /dev/shm) is unlinked once every rank has
mapped it: DeepSpeed never does, and the files filled a test machine's memory."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from oasst_data.train.run import remove_shm_allreduce_buffer, shm_allreduce_buffer  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm (not Linux)")


@pytest.fixture
def rank_env(monkeypatch):
    # A port no real launch uses, so the file is this test's own.
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": f"test{id(monkeypatch)}", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    return monkeypatch


def test_the_buffer_is_named_as_deepspeed_names_it(rank_env):
    import os

    rank_env.setenv("MASTER_PORT", "29511")
    rank_env.setenv("RANK", "3")
    assert shm_allreduce_buffer() == Path(f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_29511_3")


def test_only_a_launch_deepspeed_gave_the_buffer_to_removes_it(rank_env):
    buffer = shm_allreduce_buffer()
    buffer.write_bytes(b"x")
    try:
        assert not remove_shm_allreduce_buffer() and buffer.exists()  # no LOCAL_SIZE: DeepSpeed made none
        rank_env.setenv("LOCAL_SIZE", "2")  # ranks on several machines: none either
        assert not remove_shm_allreduce_buffer() and buffer.exists()
        rank_env.setenv("LOCAL_SIZE", "1")
        assert remove_shm_allreduce_buffer() and not buffer.exists()
        assert not remove_shm_allreduce_buffer()  # already gone: nothing to do, no error
    finally:
        buffer.unlink(missing_ok=True)


def test_the_buffer_is_removed_when_the_initialisation_is_cut_short(rank_env):
    """Found by an audit: a SIGTERM between DeepSpeed's creation of the buffer and its unlink after
    the barrier left 66 MB per rank in /dev/shm."""
    import accelerate.state

    from oasst_data.train.run import _configure_cpu_deepspeed_state

    buffer = shm_allreduce_buffer()

    class Terminated(BaseException):
        pass

    class PartialStateCutShort:
        _reset_state = staticmethod(lambda: None)

        def __init__(self, **kwargs):
            buffer.write_bytes(b"x")  # what DeepSpeed's CPU comm init makes
            raise Terminated

    rank_env.setattr(accelerate.state, "PartialState", PartialStateCutShort)
    try:
        with pytest.raises(Terminated):
            _configure_cpu_deepspeed_state()
        assert not buffer.exists()
    finally:
        buffer.unlink(missing_ok=True)
