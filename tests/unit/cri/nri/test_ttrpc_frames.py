"""ttrpc frames: byte vectors written from PROTOCOL.md's layout, fed whole and cut anywhere."""

from __future__ import annotations

import pytest

from cri.nri.api import ttrpc_pb2
from cri.nri.ttrpc_frames import (
    MAX_MESSAGE_LENGTH,
    Frame,
    FrameDecoder,
    FrameError,
    MessageType,
    OversizedFrame,
    encode_frame,
)

# A unary request on stream 1 for service "svc", method "M":
REQUEST_FRAME = bytes.fromhex(
    "00000008"  # payload length 8
    "00000001"  # stream id 1
    "01"        # type: request
    "00"        # flags: none (unary)
    "0a03737663"  # Request.service (field 1, length-delimited) = "svc"
    "12014d"      # Request.method (field 2) = "M"
)
# The OK response on stream 1 as Go ttrpc writes it: an empty Status is still present.
RESPONSE_FRAME = bytes.fromhex(
    "00000006" "00000001" "02" "00"
    "0a00"      # Response.status (field 1) = Status{} (code 0)
    "12026f6b"  # Response.payload (field 2) = "ok"
)
# A data frame on stream 3 with the remote-closed and no-data flags and no payload.
CLOSE_DATA_FRAME = bytes.fromhex("00000000" "00000003" "03" "05")


def _all(decoder: FrameDecoder) -> list[Frame | OversizedFrame]:
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


def test_decodes_hand_built_frames() -> None:
    decoder = FrameDecoder()
    decoder.feed(REQUEST_FRAME + RESPONSE_FRAME + CLOSE_DATA_FRAME)
    request, response, data = _all(decoder)
    assert request == Frame(1, MessageType.REQUEST, 0, REQUEST_FRAME[10:])
    assert response == Frame(1, MessageType.RESPONSE, 0, RESPONSE_FRAME[10:])
    assert data == Frame(3, MessageType.DATA, 0x5, b"")
    assert isinstance(request, Frame)
    parsed = ttrpc_pb2.Request.FromString(request.payload)
    assert (parsed.service, parsed.method) == ("svc", "M")
    decoder.check_eof()


def test_encodes_the_same_bytes() -> None:
    assert encode_frame(1, MessageType.REQUEST, REQUEST_FRAME[10:]) == REQUEST_FRAME
    assert encode_frame(1, MessageType.RESPONSE, RESPONSE_FRAME[10:]) == RESPONSE_FRAME
    assert encode_frame(3, MessageType.DATA, b"", flags=0x5) == CLOSE_DATA_FRAME
    assert encode_frame(0xFFFFFFFF, 2, b"") == bytes.fromhex("00000000 ffffffff 02 00")


def test_one_byte_at_a_time() -> None:
    stream = REQUEST_FRAME + RESPONSE_FRAME + CLOSE_DATA_FRAME
    decoder = FrameDecoder()
    frames: list[Frame | OversizedFrame] = []
    for i in range(len(stream)):
        decoder.feed(stream[i:i + 1])
        frames += _all(decoder)
        if i + 1 < len(REQUEST_FRAME):
            assert not frames
    assert [f.stream_id for f in frames] == [1, 1, 3]
    assert frames[0] == Frame(1, MessageType.REQUEST, 0, REQUEST_FRAME[10:])
    decoder.check_eof()


def test_unknown_message_type_is_passed_up_as_a_number() -> None:
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex("00000001 00000005 07 80 ff"))
    (frame,) = _all(decoder)
    assert frame == Frame(5, 7, 0x80, b"\xff")
    assert not isinstance(frame.type, MessageType)


def test_the_largest_payload_is_accepted() -> None:
    payload = b"x" * MAX_MESSAGE_LENGTH
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex("00400000 00000001 02 00") + payload)  # 0x400000 = 4 MiB
    assert _all(decoder) == [Frame(1, MessageType.RESPONSE, 0, payload)]


def test_oversized_payload_is_skipped_and_the_stream_goes_on() -> None:
    decoder = FrameDecoder()
    length = MAX_MESSAGE_LENGTH + 1
    decoder.feed(bytes.fromhex("00400001 00000007 01 00") + b"\0" * 100)  # 0x400001 = 4 MiB + 1
    assert _all(decoder) == [OversizedFrame(7, MessageType.REQUEST, length)]
    # The rest of its payload arrives in pieces, the next frame right behind the last one.
    left = length - 100
    while left > 65536:
        decoder.feed(b"\0" * 65536)
        left -= 65536
        assert _all(decoder) == []
    decoder.feed(b"\0" * left + REQUEST_FRAME)
    assert _all(decoder) == [Frame(1, MessageType.REQUEST, 0, REQUEST_FRAME[10:])]
    decoder.check_eof()


def test_eof_inside_a_frame_is_an_error() -> None:
    for cut in (3, 10, len(REQUEST_FRAME) - 1):
        decoder = FrameDecoder()
        decoder.feed(REQUEST_FRAME[:cut])
        assert _all(decoder) == []
        with pytest.raises(FrameError, match="inside a frame"):
            decoder.check_eof()
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex("00400001 00000007 01 00"))
    assert len(_all(decoder)) == 1
    with pytest.raises(FrameError, match=f"{MAX_MESSAGE_LENGTH + 1} bytes short"):
        decoder.check_eof()


def test_encoder_refuses_what_does_not_fit() -> None:
    with pytest.raises(FrameError, match="exceed maximum message size of 4194304"):
        encode_frame(1, MessageType.REQUEST, b"x" * (MAX_MESSAGE_LENGTH + 1))
    with pytest.raises(FrameError):
        encode_frame(1 << 32, MessageType.REQUEST, b"")
    with pytest.raises(FrameError):
        encode_frame(1, 256, b"")
