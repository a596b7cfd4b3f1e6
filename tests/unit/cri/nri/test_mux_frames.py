"""NRI's multiplexer framing: hand-built trunk bytes, interleaved connections, Go's cut of messages."""

from __future__ import annotations

import pytest

from cri.nri.mux_frames import (
    FIRST_CHUNK,
    MAX_PAYLOAD,
    PLUGIN_SERVICE_CONN,
    RUNTIME_SERVICE_CONN,
    Delivery,
    Demultiplexer,
    MuxError,
    encode,
)

# Three frames on the trunk, connections 1 and 2 interleaved.
TRUNK = bytes.fromhex(
    "00000001" "00000003" "616263"  # connection 1, 3 bytes: "abc"
    "00000002" "00000002" "7879"    # connection 2, 2 bytes: "xy"
    "00000001" "00000001" "64"      # connection 1, 1 byte: "d"
)


def test_well_known_connection_ids() -> None:
    assert (PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN) == (1, 2)


def test_interleaved_connections() -> None:
    demux = Demultiplexer()
    demux.open(1)
    demux.open(2)
    assert demux.receive_data(TRUNK) == [Delivery(1, b"abc"), Delivery(2, b"xy"), Delivery(1, b"d")]
    demux.check_eof()


def test_one_byte_at_a_time() -> None:
    demux = Demultiplexer()
    demux.open(1)
    demux.open(2)
    got = []
    for i in range(len(TRUNK)):
        got += demux.receive_data(TRUNK[i:i + 1])
    assert got == [Delivery(1, b"abc"), Delivery(2, b"xy"), Delivery(1, b"d")]


def test_frames_for_connections_not_open_are_dropped() -> None:
    demux = Demultiplexer()
    demux.open(2)
    reserved = bytes.fromhex("00000000 00000001 7a")  # connection 0
    assert demux.receive_data(reserved + TRUNK) == [Delivery(2, b"xy")]
    demux.close(2)
    assert demux.receive_data(TRUNK) == []


def test_reserved_and_out_of_range_ids_cannot_be_used() -> None:
    with pytest.raises(MuxError):
        Demultiplexer().open(0)
    with pytest.raises(MuxError):
        encode(0, b"x")
    with pytest.raises(MuxError):
        encode(1 << 32, b"x")


def test_oversized_frame_ends_the_trunk() -> None:
    demux = Demultiplexer()
    demux.open(1)
    # MAX_PAYLOAD is 10 + 4 MiB = 0x40000a: one more is refused as soon as the header is in.
    assert demux.receive_data(bytes.fromhex("00000001 0040000a")) == []
    with pytest.raises(MuxError, match="exceeds"):
        Demultiplexer().receive_data(bytes.fromhex("00000001 0040000b"))


def test_eof_inside_a_frame_is_an_error() -> None:
    demux = Demultiplexer()
    demux.receive_data(TRUNK[:9])
    with pytest.raises(MuxError, match="inside a frame"):
        demux.check_eof()


def test_small_message_is_one_frame() -> None:
    assert encode(2, b"hello") == bytes.fromhex("00000002 00000005 68656c6c6f")
    assert encode(1, b"") == b""


def test_long_message_is_cut_as_go_ttrpc_cuts_it() -> None:
    # Go's ttrpc writes through a 4 KiB bufio.Writer: the first 4096 bytes, then the rest whole.
    message = bytes(range(256)) * 20  # 5120 bytes
    framed = encode(1, message)
    assert framed[:8] == bytes.fromhex("00000001 00001000")  # 4096
    assert framed[8:8 + FIRST_CHUNK] == message[:FIRST_CHUNK]
    assert framed[8 + FIRST_CHUNK:16 + FIRST_CHUNK] == bytes.fromhex("00000001 00000400")  # 1024
    assert framed[16 + FIRST_CHUNK:] == message[FIRST_CHUNK:]
    exactly = encode(1, message[:FIRST_CHUNK])
    assert exactly[:8] == bytes.fromhex("00000001 00001000") and len(exactly) == 8 + FIRST_CHUNK


def test_largest_ttrpc_message_fits_two_frames() -> None:
    message = b"\1" * MAX_PAYLOAD
    demux = Demultiplexer()
    demux.open(1)
    got = demux.receive_data(encode(1, message))
    assert [len(d.data) for d in got] == [FIRST_CHUNK, MAX_PAYLOAD - FIRST_CHUNK]
    assert b"".join(d.data for d in got) == message
