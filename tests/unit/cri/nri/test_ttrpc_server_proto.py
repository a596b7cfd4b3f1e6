"""The ttrpc server state machine, driven with bytes only: the stream id rules and bad frames."""

from __future__ import annotations

import grpc

from cri.nri.api import ttrpc_pb2
from cri.nri.ttrpc_frames import MAX_MESSAGE_LENGTH, Frame, FrameDecoder, MessageType
from cri.nri.ttrpc_server_proto import RequestReceived, ServerConnection
from cri.nri.ttrpc_status import TtrpcError


def request(stream_id: int) -> bytes:
    """Request{service "s", method "m", payload "p"} on ``stream_id``."""
    return bytes.fromhex("00000009") + stream_id.to_bytes(4, "big") + bytes.fromhex(
        "01 00" "0a0173" "12016d" "1a0170")


def answers(conn: ServerConnection) -> list[tuple[int, grpc.StatusCode, str, bytes]]:
    decoder = FrameDecoder()
    for frame in conn.frames_to_send():
        decoder.feed(frame)
    out = []
    while (frame := decoder.next_frame()) is not None:
        assert isinstance(frame, Frame) and frame.type == MessageType.RESPONSE
        response = ttrpc_pb2.Response.FromString(frame.payload)
        error = TtrpcError.from_status(response.status)
        out.append((frame.stream_id, error.code, error.message, response.payload))
    return out


def test_request_in_response_out() -> None:
    conn = ServerConnection()
    (req,) = conn.receive_data(request(1))
    assert req == RequestReceived(1, "s", "m", b"p", 0, ())
    assert conn.active == {1}
    assert conn.respond(1, b"ok")
    assert conn.frames_to_send() == [bytes.fromhex("00000006 00000001 02 00" "0a00" "12026f6b")]
    assert conn.active == frozenset()
    assert not conn.respond(1, b"again")  # one response per stream
    assert conn.frames_to_send() == []


def test_error_response_bytes() -> None:
    conn = ServerConnection()
    conn.receive_data(request(1))
    assert conn.respond_error(1, TtrpcError(grpc.StatusCode.NOT_FOUND, "nope"))
    # Response{status {code 5, message "nope"}}, no payload.
    assert conn.frames_to_send() == [bytes.fromhex("0000000a 00000001 02 00" "0a08" "0805" "12046e6f7065")]


def test_timeout_and_metadata_are_passed_on() -> None:
    conn = ServerConnection()
    frame = bytes.fromhex("00000017 00000001 01 00" "0a0173" "12016d" "1a0170" "2080a8d6b907"
                          "2a06 0a016b 120176")
    (req,) = conn.receive_data(frame)
    assert (req.timeout_ns, req.metadata) == (2_000_000_000, (("k", "v"),))


def test_one_byte_at_a_time() -> None:
    conn = ServerConnection()
    stream = request(1) + request(3)
    got = []
    for i in range(len(stream)):
        got += conn.receive_data(stream[i:i + 1])
    assert [r.stream_id for r in got] == [1, 3]


def test_even_stream_ids_are_refused() -> None:
    conn = ServerConnection()
    assert conn.receive_data(request(2) + request(0)) == []
    assert answers(conn) == [
        (2, grpc.StatusCode.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams", b""),
        (0, grpc.StatusCode.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams", b""),
    ]


def test_stream_ids_must_increase() -> None:
    conn = ServerConnection()
    assert [r.stream_id for r in conn.receive_data(request(5))] == [5]
    assert conn.receive_data(request(5) + request(3)) == []
    refused = answers(conn)
    assert [(sid, code) for sid, code, _, _ in refused] == [(5, grpc.StatusCode.INVALID_ARGUMENT),
                                                           (3, grpc.StatusCode.INVALID_ARGUMENT)]
    assert "must increment" in refused[0][2]
    assert [r.stream_id for r in conn.receive_data(request(9))] == [9]  # gaps are fine


def test_data_frames_are_refused_and_end_the_stream() -> None:
    conn = ServerConnection()
    conn.receive_data(request(1))
    assert conn.receive_data(bytes.fromhex("00000001 00000001 03 00 ff")) == []
    assert answers(conn) == [(1, grpc.StatusCode.INVALID_ARGUMENT, "data message on a unary stream", b"")]
    assert not conn.respond(1, b"late")  # the client already has its one answer
    assert conn.frames_to_send() == []


def test_unknown_types_and_responses_from_the_client_are_ignored() -> None:
    conn = ServerConnection()
    assert conn.receive_data(bytes.fromhex("00000001 00000001 09 00 ff" "00000000 00000003 02 00")) == []
    assert conn.frames_to_send() == []
    assert [r.stream_id for r in conn.receive_data(request(5))] == [5]


def test_undecodable_request_is_refused() -> None:
    conn = ServerConnection()
    assert conn.receive_data(bytes.fromhex("00000002 00000001 01 00 0aff")) == []
    ((sid, code, message, _),) = answers(conn)
    assert (sid, code) == (1, grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith("unmarshal request error")


def test_oversized_request_is_refused_and_the_connection_goes_on() -> None:
    conn = ServerConnection()
    big = bytes.fromhex("00400001 00000001 01 00") + b"\0" * (MAX_MESSAGE_LENGTH + 1)
    assert [r.stream_id for r in conn.receive_data(big + request(3))] == [3]
    assert answers(conn) == [(1, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "message length 4194305 exceed maximum message size of 4194304", b"")]


def test_oversized_reply_becomes_resource_exhausted() -> None:
    conn = ServerConnection()
    conn.receive_data(request(1))
    assert conn.respond(1, b"x" * MAX_MESSAGE_LENGTH)
    ((sid, code, _, payload),) = answers(conn)
    assert (sid, code, payload) == (1, grpc.StatusCode.RESOURCE_EXHAUSTED, b"")


def test_connection_lost_says_why() -> None:
    conn = ServerConnection()
    conn.receive_data(request(1) + request(3)[:4])
    assert "inside a frame" in conn.connection_lost()
    assert conn.active == frozenset()
    assert ServerConnection().connection_lost() == "closed by the client"
