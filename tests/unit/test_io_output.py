"""Output files are overwritten in place and cut to length when closed (hyperplane/io/output.py):
whatever the old file held, a closed output holds exactly what was written."""
from __future__ import annotations

import os
import stat

import pytest

from hyperplane.flowlogs import FlowLogWriter
from hyperplane.io import PcapWriter, open_capture
from hyperplane.io.output import OutputFile, open_output

OLD = b"\xff" * 100_000  # an old output, longer than anything written here


def test_a_longer_old_file_is_cut_to_what_was_written(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    with OutputFile(path) as out:
        out.write(b"new contents")
    assert path.read_bytes() == b"new contents"


def test_a_missing_file_is_created_and_an_empty_write_empties_an_old_one(tmp_path):
    fresh = tmp_path / "fresh.bin"
    with OutputFile(fresh) as out:
        out.write(b"x" * 10)
    assert fresh.read_bytes() == b"x" * 10
    with OutputFile(fresh):
        pass
    assert fresh.read_bytes() == b""


def test_an_exception_still_cuts_the_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    with pytest.raises(RuntimeError):
        with OutputFile(path) as out:
            out.write(b"partial")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"partial"


def test_a_forgotten_file_is_cut_when_collected(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    out = OutputFile(path)
    out.write(b"abc")
    del out  # IOBase's finalizer closes it
    assert path.read_bytes() == b"abc"


def test_text_outputs_are_utf8_with_unix_newlines(tmp_path):
    path = tmp_path / "drops.jsonl"
    path.write_bytes(OLD)
    with open_output(path, text=True) as fh:
        fh.write('{"reason": "nacl_deny", "note": "é"}\n')
    assert path.read_bytes() == '{"reason": "nacl_deny", "note": "é"}\n'.encode()


def test_the_file_keeps_its_inode_mode_and_links(tmp_path):
    # written through, as truncating did: a symlink's target, every hard link, the mode
    target = tmp_path / "real.pcap"
    target.write_bytes(OLD)
    os.chmod(target, 0o640)
    link = tmp_path / "link.pcap"
    link.symlink_to(target)
    hard = tmp_path / "hard.pcap"
    os.link(target, hard)
    inode = os.stat(target).st_ino
    with OutputFile(link) as out:
        out.write(b"via the link")
    assert link.is_symlink()
    assert target.read_bytes() == hard.read_bytes() == b"via the link"
    assert os.stat(target).st_ino == inode
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640


def test_a_device_that_cannot_be_cut_is_written_as_it_is():
    # ftruncate on a device fails: closing must not try (an OSError here would fail the replay)
    with OutputFile(os.devnull) as out:
        out.write(b"discarded")
    assert out.closed and stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_missing_folder_is_an_oserror_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-dir" / "out.pcap"
    with pytest.raises(FileNotFoundError) as err:
        OutputFile(missing)
    assert err.value.filename == str(missing)


def test_writers_rewrite_a_longer_old_output_exactly(tmp_path):
    # a second replay to the same paths: the pcap reads back with this run's packets only
    pcap, logs = tmp_path / "eni.pcap", tmp_path / "flow-logs.log"
    pcap.write_bytes(OLD)
    logs.write_bytes(OLD)
    with PcapWriter(pcap) as writer:
        writer.write(b"\x45" + bytes(39), ts_ns=1_000_000_000)
    with FlowLogWriter(logs, ("version", "action")) as writer:
        writer.write_lines(["2 ACCEPT"])
    with open_capture(pcap) as reader:
        assert sum(len(batch) for batch in reader) == 1
        assert not reader.truncated
    assert logs.read_text() == "version action\n2 ACCEPT\n"
