"""Routing spilled rows to shard groups: any number of parts, a bounded number of open files."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from oasst_data.shards.buckets import Bucket
from oasst_data.shards.schema import SPILL_SCHEMA
from oasst_data.shards.writer import GroupKey, route_to_groups, write_all_shards

from ..conftest import FIXTURE_TOKENIZER


def _write_spill(path: Path, rows: int, batch_rows: int) -> None:
    """A spill file whose row i has id "r{i}" and length i + 1, in batches of `batch_rows`."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SPILL_SCHEMA) as writer:
        for start in range(0, rows, batch_rows):
            numbers = range(start, min(rows, start + batch_rows))
            batch = pa.Table.from_pylist(
                [
                    {
                        "id": f"r{i}", "tree_id": f"t{i}", "source": "alpaca", "lang": "en", "split": "train",
                        "text": "x", "input_ids": [1] * (i + 1), "loss_mask": [1] * (i + 1), "length": i + 1,
                        "num_turns": 2, "truncated": False, "shuffle_key": i, "arrival": i,
                    }
                    for i in numbers
                ],
                schema=SPILL_SCHEMA,
            )
            writer.write_table(batch)


def _ids_by_group(groups: dict[GroupKey, list[Path]]) -> dict[GroupKey, list[str]]:
    out = {}
    for key, files in groups.items():
        ids = []
        for file in files:
            with pa.OSFile(str(file), "rb") as source:
                ids += pa.ipc.open_stream(source).read_all().column("id").to_pylist()
        out[key] = sorted(ids, key=lambda text: int(text[1:]))
    return out


def test_part_numbers_past_100000_stay_in_their_own_group(tmp_path):
    # Rows used to be grouped by one packed integer (bucket * 100_000 + part): part 100_000 of
    # bucket 0 then landed in part 0 of bucket 1.
    spill = tmp_path / "spill.arrow"
    _write_spill(spill, 4, 4)
    is_validation = np.array([False, False, False, True])
    bucket_of_row = np.array([0, 1, 0, 0], dtype=np.int32)
    parts = np.array([100_000, 0, 250_000, 100_000], dtype=np.int32)
    groups = route_to_groups(spill, tmp_path / "groups", is_validation, bucket_of_row, parts)
    assert _ids_by_group(groups) == {
        GroupKey("train", 0, 100_000): ["r0"],
        GroupKey("train", 0, 250_000): ["r2"],
        GroupKey("train", 1, 0): ["r1"],
        GroupKey("validation", 0, 100_000): ["r3"],
    }


def test_few_open_files_give_the_same_shards_as_many(tmp_path):
    rows, groups_wanted = 60, 12
    spill = tmp_path / "spill.arrow"
    _write_spill(spill, rows, 7)  # every batch touches most groups: files close and reopen
    is_validation = np.arange(rows) % 5 == 0
    bucket_of_row = (np.arange(rows) % 2).astype(np.int32)
    parts = (np.arange(rows) % (groups_wanted // 2)).astype(np.int32)
    buckets = [Bucket(0, 1, 30), Bucket(1, 31, 60)]

    wide = route_to_groups(spill, tmp_path / "wide", is_validation, bucket_of_row, parts, max_open=1000)
    narrow = route_to_groups(spill, tmp_path / "narrow", is_validation, bucket_of_row, parts, max_open=2)
    assert all(len(files) == 1 for files in wide.values())
    assert max(len(files) for files in narrow.values()) > 1  # the cap was reached
    assert list(narrow) == list(wide)
    assert _ids_by_group(narrow) == _ids_by_group(wide)

    written = {}
    for name, groups in (("wide", wide), ("narrow", narrow)):
        entries = write_all_shards(groups, tmp_path / f"out-{name}", buckets)
        written[name] = [(e["path"], e["rows"], e["sha256"]) for e in entries]
        assert not any((tmp_path / name).iterdir())  # every segment file was consumed
    assert written["narrow"] == written["wide"]
    assert sum(rows for _, rows, _ in written["wide"]) == rows


def _limit_open_files(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return apply


def test_a_build_with_more_shards_than_the_open_file_limit(tmp_path):
    records = [{"instruction": f"Question number {i}?", "input": "", "output": f"Answer {i}."} for i in range(400)]
    alpaca = tmp_path / "many.json"
    alpaca.write_text(json.dumps(records))
    out = tmp_path / "shards"
    command = [
        sys.executable, "-m", "oasst_data_cli", "build", "--alpaca", str(alpaca), "--tokenizer", str(FIXTURE_TOKENIZER),
        "--shard-rows", "1", "--out", str(out),
    ]
    # One open file per shard used to fail here with "Too many open files".
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limit_open_files(200), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shards = sorted(out.glob("data/*/*.parquet"))
    assert len(shards) == 400
    assert sum(pq.read_metadata(path).num_rows for path in shards) == 400


def test_an_empty_spill_makes_no_groups(tmp_path):
    spill = tmp_path / "spill.arrow"
    _write_spill(spill, 0, 4)
    empty = np.array([], dtype=np.int32)
    assert route_to_groups(spill, tmp_path / "groups", empty.astype(bool), empty, empty) == {}


def _limit_file_size(limit: int):
    """A file size limit makes write(2) fail with EFBIG, as a full disk fails it with ENOSPC:
    the same unnamed error, without filling a disk."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


_FULL_DISK_WRITERS = textwrap.dedent(
    """
    import random, sys
    from pathlib import Path
    import numpy as np
    import pyarrow as pa
    from oasst_data.shards.buckets import Bucket
    from oasst_data.shards.schema import SPILL_SCHEMA
    from oasst_data.shards.writer import route_to_groups, write_all_shards

    folder, stage = Path(sys.argv[1]), sys.argv[2]
    rng = random.Random(0)
    rows = [
        {"id": f"r{i}", "tree_id": f"t{i}", "source": "alpaca", "lang": "en", "split": "train",
         "text": "".join(rng.choices("abcdefghij klmnop", k=3000)), "input_ids": [1, 2], "loss_mask": [0, 1],
         "length": 2, "num_turns": 2, "truncated": False, "shuffle_key": i, "arrival": i}
        for i in range(40)
    ]
    with pa.OSFile(str(folder / "spill.arrow"), "wb") as sink, pa.ipc.new_file(sink, SPILL_SCHEMA) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=SPILL_SCHEMA))
    flags = np.zeros(40, bool), np.zeros(40, np.int32), np.zeros(40, np.int32)
    if stage == "shards":
        groups = route_to_groups(folder / "spill.arrow", folder / "groups", *flags)
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    try:
        if stage == "groups":
            route_to_groups(folder / "spill.arrow", folder / "groups", *flags)
        else:
            write_all_shards(groups, folder / "out", [Bucket(0, 1, 8)])
    except OSError as error:
        print(error.filename)
        print(error.strerror)
    """
)


@pytest.mark.parametrize(("stage", "named"), [("groups", "groups/train-0-0.0.arrow"), ("shards", "out/data/train/b00008-00000.parquet")])
def test_a_full_disk_names_the_file_being_written(tmp_path, stage, named):
    # write(2) is given no path, so "No space left on device" used to name no file at all.
    done = subprocess.run([sys.executable, "-c", _FULL_DISK_WRITERS, str(tmp_path), stage], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    filename, reason = done.stdout.splitlines()
    assert filename == str(tmp_path / named)
    assert reason == os.strerror(errno.EFBIG)


def test_a_build_that_fills_the_disk_names_the_file_and_leaves_nothing(tmp_path):
    rng = random.Random(1)
    records = [{"instruction": "".join(rng.choices("abcdefgh ", k=400)), "input": "", "output": "".join(rng.choices("ijklmnop ", k=400))} for _ in range(300)]
    alpaca = tmp_path / "many.json"
    alpaca.write_text(json.dumps(records))
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "oasst_data_cli", "build", "--alpaca", str(alpaca), "--tokenizer", str(FIXTURE_TOKENIZER), "--out", str(out)]
    # The tokenizer's files (26 kB) fit under the limit, the spill file does not.
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limit_file_size(60_000), timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    last_line = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: {re.escape(str(tmp_path))}/\.shards\.staging-\w+/_spill\.arrow: {os.strerror(errno.EFBIG)}", last_line), last_line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["many.json"]


def test_a_quarantine_that_fills_the_disk_names_it_and_is_discarded(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text("".join('{"broken": "' + "x" * 1000 + "\n" for _ in range(200)))
    quarantine = tmp_path / "set-aside.jsonl"
    command = [
        sys.executable, "-m", "oasst_data_cli", "build", str(source), "--tokenizer", str(FIXTURE_TOKENIZER), "--out", str(tmp_path / "shards"),
        "--on-bad-record", "skip", "--quarantine", str(quarantine),
    ]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=_limit_file_size(60_000), timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: {quarantine}: {os.strerror(errno.EFBIG)}"
    # Not "a file an earlier run left ... is kept": there is none.
    assert "earlier run" not in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.jsonl"]


def test_a_low_descriptor_limit_opens_fewer_group_files(tmp_path):
    """Found by an audit: under `ulimit -n 64` a build with many shards failed with "Too many open
    files"; the routing now keeps as many group files open as the limit leaves room for."""
    import subprocess
    import sys

    from ..conftest import FIXTURES

    export = tmp_path / "export.jsonl"
    script = FIXTURES.parent / "benchmarks" / "make_scaled_export.py"
    subprocess.run([sys.executable, str(script), "--out", str(export), "--trees", "1500", "--seed", "2"], check=True, capture_output=True)
    limited = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "from oasst_data.shards.writer import group_files_allowed\n"
        "print(group_files_allowed(), file=sys.stderr)\n"
        "sys.argv = ['oasst-data', *sys.argv[1:]]\n"
        "from oasst_data_cli.entry import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", limited, "build", str(export), "--tokenizer", str(FIXTURES / "tokenizer"),
         "--out", str(tmp_path / "b"), "--shard-rows", "10"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert 1 <= int(done.stderr.split()[0]) < 64 - 16
    assert len(list((tmp_path / "b" / "data").rglob("*.parquet"))) > 100
