"""The strace reader used by the packaged-program test (tests/packaging): it must see writes and
connections, or that test could not fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.syscalls import outside, read_log, strace_works, traced

LOG = """\
101 openat(AT_FDCWD</w/cwd>, "/home/u/.cache/x", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3</home/u/.cache/x>
101 openat(AT_FDCWD</w/cwd>, "/usr/lib/libc.so", O_RDONLY|O_CLOEXEC) = 3</usr/lib/libc.so>
101 openat(AT_FDCWD</w/cwd>, "/home/u/missing", O_WRONLY|O_CREAT, 0666) = -1 EACCES (Permission denied)
[pid   102] mkdir("rel", 0777)                  = 0
102 mkdirat(5</tmp/t>, "sub", 0700) = 0
102 renameat2(AT_FDCWD</w/cwd>, "a.tmp", 7</tmp/t/d>, "b", RENAME_NOREPLACE) = 0
102 unlink("/tmp/t/old") = 0
103 connect(4<socket:[1]>, {sa_family=AF_UNIX, sun_path="/tmp/.X11-unix/X0"}, 110) = 0
103 connect(4<socket:[2]>, {sa_family=AF_INET, sin_port=htons(443), sin_addr=inet_addr("140.82.1.2")}, 16) = -1 ENETUNREACH (Network is unreachable)
"""


def test_reader_finds_writes_and_network_attempts(tmp_path):
    log = tmp_path / "log"
    log.write_text(LOG)
    t = read_log(log, Path("/w/cwd"))
    assert t.written == {
        Path("/home/u/.cache/x"),
        Path("/w/cwd/rel"),
        Path("/tmp/t/sub"),
        Path("/w/cwd/a.tmp"),
        Path("/tmp/t/d/b"),
        Path("/tmp/t/old"),
    }
    assert t.connections == ["AF_INET 140.82.1.2:443"]
    assert outside(t.written, [Path("/tmp/t")], exact=(Path("/w/cwd/rel"),)) == [
        Path("/home/u/.cache/x"),
        Path("/w/cwd/a.tmp"),
    ]


@pytest.mark.skipif(not strace_works(), reason="strace is missing or may not trace here")
def test_reader_on_a_real_trace(tmp_path):
    code = (
        "import os, socket\n"
        "open('made.txt', 'w').write('x'); os.mkdir('d'); os.rename('made.txt', 'd/m.txt')\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(0.2)\n"
        "try:\n    s.connect(('192.0.2.1', 9))\nexcept OSError:\n    pass\n"
    )
    log = tmp_path / "strace.log"
    subprocess.run(traced([sys.executable, "-c", code], log), cwd=tmp_path, check=True)
    t = read_log(log, tmp_path)
    assert {tmp_path / "made.txt", tmp_path / "d", tmp_path / "d" / "m.txt"} <= t.written
    assert "AF_INET 192.0.2.1:9" in t.connections


def test_calls_interrupted_by_other_threads_are_put_back_together(tmp_path):
    log = tmp_path / "log"
    log.write_text(
        '201 openat(AT_FDCWD</w>, "/home/u/.cache/f", O_WRONLY|O_CREAT|O_CLOEXEC, 0666 <unfinished ...>\n'
        "202 connect(5<socket:[9]>, {sa_family=AF_INET, sin_port=htons(80), "
        'sin_addr=inet_addr("10.1.2.3")}, 16 <unfinished ...>\n'
        '203 openat(AT_FDCWD</w>, "/usr/lib/x.so", O_RDONLY|O_CLOEXEC) = 4</usr/lib/x.so>\n'
        "201 <... openat resumed>) = 3</home/u/.cache/f>\n"
    )
    t = read_log(log, Path("/w"))
    assert t.written == {Path("/home/u/.cache/f")}
    assert t.connections == ["AF_INET 10.1.2.3:80"]  # still blocked when the program ended: counted
