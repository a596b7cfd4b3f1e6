"""The ttrpc client state machine, driven with bytes only."""

from __future__ import annotations

import grpc
import pytest

from cri.nri.ttrpc_client_proto import ClientConnection, Failed, Replied
from cri.nri.ttrpc_frames import MAX_MESSAGE_LENGTH
from cri.nri.ttrpc_status import ConnectionClosed, TtrpcError

# Request{service "s", method "m", payload "p", timeout_nano 2 s, metadata [k=v]} on stream 1.
REQUEST_1 = bytes.fromhex(
    "00000017" "00000001" "01" "00"  # 23 bytes, stream 1, request, unary
    "0a0173"          # service (1) = "s"
    "12016d"          # method (2) = "m"
    "1a0170"          # payload (3) = "p"
    "2080a8d6b907"    # timeout_nano (4, varint) = 2000000000
    "2a06" "0a016b" "120176"  # metadata (5) = KeyValue{key (1) "k", value (2) "v"}
)
# Response{status {}, payload "ok"} on stream 1, as Go ttrpc answers a successful call.
OK_1 = bytes.fromhex("00000006 00000001 02 00" "0a00" "12026f6b")
# Response{status {code 5 (NOT_FOUND), message "nope"}} on stream 3.
NOT_FOUND_3 = bytes.fromhex("0000000a 00000003 02 00" "0a08" "0805" "12046e6f7065")


def test_request_bytes_and_odd_increasing_ids() -> None:
    conn = ClientConnection()
    sid, frame = conn.request("s", "m", b"p", timeout_ns=2_000_000_000, metadata=[("k", "v")])
    assert (sid, frame) == (1, REQUEST_1)
    assert [conn.request("s", "m", b"")[0] for _ in range(3)] == [3, 5, 7]
    assert conn.pending == {1, 3, 5, 7}


def test_answers_settle_their_own_streams() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    conn.request("s", "m", b"")
    outcomes = conn.receive_data(NOT_FOUND_3 + OK_1)  # out of order
    assert outcomes[1] == Replied(1, b"ok")
    failed = outcomes[0]
    assert isinstance(failed, Failed) and failed.stream_id == 3
    assert (failed.error.code, failed.error.message) == (grpc.StatusCode.NOT_FOUND, "nope")
    assert conn.pending == frozenset()


def test_response_without_status_is_ok() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    # Response{payload "ok"}: no status field at all.
    assert conn.receive_data(bytes.fromhex("00000004 00000001 02 00 12026f6b")) == [Replied(1, b"ok")]


def test_one_byte_at_a_time() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    outcomes = []
    for i in range(len(OK_1)):
        outcomes += conn.receive_data(OK_1[i:i + 1])
    assert outcomes == [Replied(1, b"ok")]


def test_unknown_status_code_is_unknown() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    # Response{status {code 99, message "x"}}
    (outcome,) = conn.receive_data(bytes.fromhex("00000007 00000001 02 00 0a05 0863 120178"))
    assert isinstance(outcome, Failed)
    assert outcome.error.code == grpc.StatusCode.UNKNOWN
    assert "99" in outcome.error.message


def test_frames_for_streams_not_pending_are_dropped() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    assert conn.receive_data(NOT_FOUND_3) == []  # stream 3 was never opened
    conn.forget(1)  # the caller timed out
    assert conn.receive_data(OK_1) == []


def test_non_response_on_a_unary_call_fails_it() -> None:
    for type_byte in ("03", "01", "09"):  # data, request, unknown
        conn = ClientConnection()
        conn.request("s", "m", b"")
        (outcome,) = conn.receive_data(bytes.fromhex(f"00000000 00000001 {type_byte} 00"))
        assert isinstance(outcome, Failed)
        assert outcome.error.code == grpc.StatusCode.INTERNAL
        assert "protocol error" in outcome.error.message
        assert conn.pending == frozenset()


def test_garbage_response_fails_the_call() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    (outcome,) = conn.receive_data(bytes.fromhex("00000002 00000001 02 00 0aff"))  # truncated status
    assert isinstance(outcome, Failed) and outcome.error.code == grpc.StatusCode.INTERNAL


def test_oversized_answer_fails_the_call_and_the_connection_goes_on() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    conn.request("s", "m", b"")
    length = MAX_MESSAGE_LENGTH + 1
    outcomes = conn.receive_data(bytes.fromhex("00400001 00000001 02 00") + b"\0" * length + NOT_FOUND_3)
    assert isinstance(outcomes[0], Failed)
    assert outcomes[0].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert isinstance(outcomes[1], Failed) and outcomes[1].error.code == grpc.StatusCode.NOT_FOUND


def test_oversized_request_is_refused_before_sending() -> None:
    conn = ClientConnection()
    with pytest.raises(TtrpcError) as err:
        conn.request("s", "m", b"x" * MAX_MESSAGE_LENGTH)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert conn.pending == frozenset()
    assert conn.request("s", "m", b"")[0] == 1  # no id was used up


def test_connection_lost_fails_everything_pending() -> None:
    conn = ClientConnection()
    conn.request("s", "m", b"")
    conn.request("s", "m", b"")
    conn.receive_data(OK_1[:5])
    failed = conn.connection_lost()
    assert [f.stream_id for f in failed] == [1, 3]
    assert all(isinstance(f.error, ConnectionClosed) for f in failed)
    assert failed[0].error.code == grpc.StatusCode.UNAVAILABLE
    assert "inside a frame" in failed[0].error.message
    assert conn.pending == frozenset()
