"""The log writer with real processes and pipes: whole lines, batched, and nothing lost at exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zlib

import pytest

from devkit.process import REPO_ROOT
from service.log_writer import PIPE_BUF, LineWriter

WRITERS = 3
LINES_PER_WRITER = 1500


def _line(writer: int, number: int) -> bytes:
    # Lengths from ~30 bytes to well past a third of PIPE_BUF, so batches fill up unevenly.
    body = f"{writer}:{number}:" + "x" * ((number * 97) % (PIPE_BUF // 2))
    return f"{body}:{zlib.crc32(body.encode())}\n".encode()


def _render(values: tuple[int, int]) -> bytes:
    return _line(*values)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_lines_in_a_loop(fd: int, writer_number: int) -> None:
    writer = LineWriter(fd)

    async def requests() -> None:
        for number in range(LINES_PER_WRITER):
            if number % 2:  # queued as its values, rendered at the flush (as the access lines are)
                writer.add_later(_render, (writer_number, number))
            else:
                writer.add(_line(writer_number, number))
            if number % 25 == 0:
                await asyncio.sleep(0)  # an event-loop iteration ends: its lines are written

    asyncio.run(requests())
    writer.flush()


def test_lines_of_several_processes_on_one_pipe_are_never_torn() -> None:
    read, write = os.pipe()
    children = []
    for number in range(WRITERS):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read)
            try:
                _write_lines_in_a_loop(write, number)
            finally:
                os._exit(0)
        children.append(pid)
    os.close(write)
    try:
        output = _read_all(read)
    finally:
        os.close(read)
        for pid in children:
            os.waitpid(pid, 0)
    lines = output.decode().splitlines()
    assert len(lines) == WRITERS * LINES_PER_WRITER
    seen: dict[int, list[int]] = {number: [] for number in range(WRITERS)}
    for line in lines:
        body, _, checksum = line.rpartition(":")
        assert zlib.crc32(body.encode()) == int(checksum), line[:80]
        writer, number, _ = body.split(":", 2)
        seen[int(writer)].append(int(number))
    # Each process's lines arrive whole, each once, in its order.
    assert all(numbers == list(range(LINES_PER_WRITER)) for numbers in seen.values())


def test_one_iteration_is_written_in_batches_of_whole_lines_within_pipe_buf() -> None:
    read, write = os.pipe()
    writer = LineWriter(write)
    lines = [b"%d:" % number + b"x" * 300 + b"\n" for number in range(40)]  # access-line sized
    sizes: list[int] = []
    write_all = writer._write_all

    def recording(data: bytes) -> None:
        sizes.append(len(data))
        write_all(data)

    writer._write_all = recording  # type: ignore[method-assign]  # observed, still written

    rendered: list[bytes] = []

    def render(line: bytes) -> bytes:
        rendered.append(line)
        return line

    async def one_iteration() -> None:
        for number, line in enumerate(lines):
            if number % 2:
                writer.add_later(render, line)
            else:
                writer.add(line)
        assert sizes == []  # nothing written before the iteration ends
        assert rendered == []  # nor rendered
        await asyncio.sleep(0)
        assert sizes
        assert rendered == lines[1::2]

    asyncio.run(one_iteration())
    os.close(write)
    assert _read_all(read) == b"".join(lines)
    os.close(read)
    assert all(size <= PIPE_BUF for size in sizes)
    assert len(sizes) < len(lines) / 4


# The last request's line is queued, and the process ends in that same event-loop iteration,
# before the flush it scheduled can run: by sys.exit (atexit runs), and in a multiprocessing
# child, which ends with os._exit as granian's workers do (atexit does not run there).
LAST_REQUEST = """
import asyncio, sys
from service.log_writer import writer_for

async def last_request():
    writer_for(1).add(b"the last request\\n")
    writer_for(1).add_later(str.encode, "and its neighbour, rendered at the flush\\n")
    sys.exit(0)

def serve():
    asyncio.new_event_loop().run_until_complete(last_request())
"""
ENDINGS = {
    "sys.exit": LAST_REQUEST + "serve()\n",
    "multiprocessing child": LAST_REQUEST
    + "import multiprocessing\n"
    + "child = multiprocessing.get_context('fork').Process(target=serve)\n"
    + "child.start(); child.join(20); sys.exit(child.exitcode)\n",
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_line_queued_as_the_process_ends_is_written(ending: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ENDINGS[ending]],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"the last request\nand its neighbour, rendered at the flush\n"


def test_a_line_written_now_follows_the_queued_ones() -> None:
    read, write = os.pipe()
    writer = LineWriter(write)

    async def request_then_message() -> None:
        writer.add(b"access 1\n")
        writer.add_later(str.encode, "access 2\n")
        writer.write_now(b"a server message\n")  # an app or server line, mid-iteration

    asyncio.run(request_then_message())
    os.close(write)
    assert _read_all(read) == b"access 1\naccess 2\na server message\n"
