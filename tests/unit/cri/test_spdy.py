"""SPDY/3.1 codec and connection state machine, driven with bytes only."""

from __future__ import annotations

import struct
import zlib

import pytest

from cri.streaming.spdy import (
    DATA_CHUNK,
    DEFAULT_WINDOW,
    ConnectionFailed,
    DataReceived,
    Event,
    GoAway,
    HeadersReceived,
    Ping,
    PingAcknowledged,
    Replied,
    SettingsReceived,
    SpdyConnection,
    StreamOpened,
    StreamReset,
)
from cri.streaming.spdy_frames import (
    MAX_HEADER_BLOCK,
    SPDY_DICTIONARY,
    BadHeadersFrame,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    FrameType,
    GoAwayFrame,
    GoAwayStatus,
    HeaderBlockError,
    HeaderDecompressor,
    HeadersFrame,
    PingFrame,
    RstStatus,
    RstStreamFrame,
    Setting,
    SettingId,
    SettingsFrame,
    SpdyError,
    SpdyProtocolError,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
    decode_header_block,
    encode_header_block,
)

# Byte vectors produced by Chromium's SPDY/3 framer (net/spdy/spdy_framer_test.cc). The two
# compressed ones carry headers {bar: foo, foo: bar} in a fresh zlib context.
CHROMIUM_SYN_STREAM = bytes.fromhex(
    "80030001 00000027 00000001 00000000 8000"
    "38eae3c6a7c202e50e50c24b4a04e50be6b4fc7c240a2808000000ffff")
CHROMIUM_SYN_REPLY = bytes.fromhex(
    "80030002 00000021 00000001"
    "38eae3c6a7c202e50e50c24b4a04e50be6b4fc7c240a2808000000ffff")
# The uncompressed name/value block of Chromium's "SYN_REPLY frame, no FIN" vector.
CHROMIUM_RAW_BLOCK = bytes.fromhex("00000002 00000003 626172 00000003 666f6f 00000003 666f6f 00000003 626172")
CHROMIUM_FIXED = [
    ("80030003 00000008 00000001 00000001", RstStreamFrame(1, RstStatus.PROTOCOL_ERROR)),
    ("80030003 00000008 7fffffff 00000006", RstStreamFrame(0x7FFFFFFF, RstStatus.INTERNAL_ERROR)),
    ("80030004 0000000c 00000001 04030201 0a0b0c0d",
     SettingsFrame((Setting(0x030201, 0x0A0B0C0D, 4),))),
    ("80030004 00000004 00000000", SettingsFrame()),
    ("80030006 00000004 12345678", PingFrame(0x12345678)),
    ("80030007 00000008 00000000 00000000", GoAwayFrame(0, GoAwayStatus.OK)),
    ("80030007 00000008 7fffffff 00000002", GoAwayFrame(0x7FFFFFFF, GoAwayStatus.INTERNAL_ERROR)),
    ("80030009 00000008 00000001 12345678", WindowUpdateFrame(1, 0x12345678)),
    ("00000001 00000005 68656c6c6f", DataFrame(1, b"hello")),
    ("00000001 01000005 68656c6c6f", DataFrame(1, b"hello", fin=True)),
    ("00000001 00000000", DataFrame(1, b"")),
    ("7fffffff 01000005 68656c6c6f", DataFrame(0x7FFFFFFF, b"hello", fin=True)),
]


def decode_all(data: bytes, decoder: FrameDecoder | None = None) -> list[Frame | BadHeadersFrame]:
    decoder = decoder or FrameDecoder()
    decoder.feed(data)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def control(kind: int, flags: int, payload: bytes, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, kind, flags << 24 | len(payload)) + payload


class Pair:
    """A client and a server connection wired back to back in memory."""

    def __init__(self, flow_control: bool = True) -> None:
        self.client = SpdyConnection(True, flow_control=flow_control)
        self.server = SpdyConnection(False, flow_control=flow_control)

    def to_server(self) -> list[Event]:
        return self.server.receive_data(self.client.data_to_send())

    def to_client(self) -> list[Event]:
        return self.client.receive_data(self.server.data_to_send())

    def open(self, headers: dict[str, str] | None = None) -> int:
        stream_id = self.client.open_stream(headers or {"streamtype": "stdout"})
        self.to_server()
        self.server.reply(stream_id, {})
        self.to_client()
        return stream_id


# --- dictionary and header blocks ------------------------------------------------------------


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(SPDY_DICTIONARY) == 1423
    # The DICTID inside every SPDY/3 header stream, e.g. bytes 20..23 of the Chromium vector.
    assert zlib.adler32(SPDY_DICTIONARY) == 0xE3C6A7C2 == int.from_bytes(CHROMIUM_SYN_STREAM[20:24])
    assert SPDY_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert SPDY_DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_chromium_compressed_vectors_decode() -> None:
    [syn] = decode_all(CHROMIUM_SYN_STREAM)
    assert syn == SynStreamFrame(1, {"bar": ["foo"], "foo": ["bar"]}, associated_id=0, priority=4)
    [reply] = decode_all(CHROMIUM_SYN_REPLY)
    assert reply == SynReplyFrame(1, {"bar": ["foo"], "foo": ["bar"]})


@pytest.mark.skipif("zlib-ng" in zlib.ZLIB_RUNTIME_VERSION, reason="zlib-ng deflates differently")
def test_encoder_reproduces_chromium_bytes() -> None:
    # Same zlib parameters as Chromium, so a fresh context gives identical bytes.
    frame = SynStreamFrame(1, {"bar": ["foo"], "foo": ["bar"]}, priority=4)
    assert FrameEncoder().encode(frame) == CHROMIUM_SYN_STREAM
    assert FrameEncoder().encode(SynReplyFrame(1, {"bar": ["foo"], "foo": ["bar"]})) == CHROMIUM_SYN_REPLY


@pytest.mark.parametrize(("hex_bytes", "frame"), CHROMIUM_FIXED)
def test_chromium_fixed_vectors(hex_bytes: str, frame: Frame) -> None:
    raw = bytes.fromhex(hex_bytes)
    assert decode_all(raw) == [frame]
    assert FrameEncoder().encode(frame) == raw


def test_raw_header_block_layout() -> None:
    assert decode_header_block(CHROMIUM_RAW_BLOCK) == {"bar": ["foo"], "foo": ["bar"]}
    assert encode_header_block({"bar": "foo", "foo": "bar"}) == CHROMIUM_RAW_BLOCK
    raw = encode_header_block({"Port": ["80", "8080"], "empty": ""})
    assert raw == bytes.fromhex("00000002 00000004 706f7274 00000007 3830 00 38303830"
                                "00000005 656d707479 00000000")
    assert decode_header_block(raw) == {"port": ["80", "8080"], "empty": [""]}


@pytest.mark.parametrize("headers", [
    {"": "x"}, {"a": "x\0y"}, {"a": ["x", ""]}, {"a": []}, {"A": "1", "a": "2"},
])
def test_unencodable_headers_are_refused(headers: dict[str, str | list[str]]) -> None:
    with pytest.raises(SpdyError):
        encode_header_block(headers)


def _block(*pairs: tuple[bytes, bytes]) -> bytes:
    out = struct.pack(">I", len(pairs))
    for name, value in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


@pytest.mark.parametrize("raw", [
    _block((b"", b"x")), _block((b"Host", b"x")), _block((b"a", b"1"), (b"a", b"2")),
    _block((b"a", b"x\0\0y")), _block((b"a", b"\0x")),
])
def test_header_rule_violations_are_stream_errors(raw: bytes) -> None:
    with pytest.raises(HeaderBlockError):
        decode_header_block(raw)


@pytest.mark.parametrize("raw", [
    b"", b"\x00\x00\x00", _block((b"a", b"x"))[:-1], _block((b"a", b"x")) + b"\x00",
    b"\xff\xff\xff\xff" + b"\x00" * 16,
])
def test_broken_header_block_structure_is_a_session_error(raw: bytes) -> None:
    with pytest.raises(SpdyProtocolError):
        decode_header_block(raw)


def test_one_compression_context_per_direction() -> None:
    encoder = FrameEncoder()
    headers = {"streamtype": ["stdout"], "requestid": ["0"], "port": ["8080"]}
    frames = [encoder.encode(SynStreamFrame(n, headers)) for n in (1, 3, 5)]
    blocks = [f[18:] for f in frames]
    # zlib header: 2 KiB window, FDICT set, then the dictionary's Adler-32.
    assert blocks[0][0] == 0x38 and blocks[0][1] & 0x20 and blocks[0][2:6] == bytes.fromhex("e3c6a7c2")
    assert len(blocks[1]) < len(blocks[0])  # the second block refers back into the first
    assert all(b.endswith(b"\x00\x00\xff\xff") for b in blocks)  # Z_SYNC_FLUSH after each block
    fresh = zlib.decompressobj(zdict=SPDY_DICTIONARY)
    assert [decode_header_block(fresh.decompress(b)) for b in blocks] == [headers] * 3
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(blocks[0])  # the dictionary really is required
    # Our own decoder, fed the frames in order, follows the same shared context.
    decoded = decode_all(b"".join(frames))
    assert [f.headers for f in decoded if isinstance(f, SynStreamFrame)] == [headers] * 3


def test_header_block_inflating_past_the_cap_is_a_session_error() -> None:
    bomb = zlib.compressobj(zdict=SPDY_DICTIONARY)
    block = bomb.compress(_block((b"a", b"x" * MAX_HEADER_BLOCK))) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(block) < 2048
    with pytest.raises(SpdyProtocolError, match="beyond"):
        HeaderDecompressor().decompress(block)


# --- frame round trips and malformed input ---------------------------------------------------

ALL_FRAMES: list[Frame] = [
    DataFrame(5, b"payload", fin=True),
    DataFrame(7, b""),
    SynStreamFrame(3, {"streamtype": ["error"], "x-multi": ["a", "b"]}, associated_id=1, priority=7,
                   fin=True, unidirectional=True),
    SynStreamFrame(0x7FFFFFFF, {}),
    SynReplyFrame(3, {"status": ["200"]}, fin=True),
    HeadersFrame(4, {"trailer": [""]}),
    RstStreamFrame(9, RstStatus.FLOW_CONTROL_ERROR),
    SettingsFrame((Setting(SettingId.INITIAL_WINDOW_SIZE, 1 << 20), Setting(4, 100, flags=1)), clear=True),
    PingFrame(0xFFFFFFFF),
    GoAwayFrame(11, GoAwayStatus.PROTOCOL_ERROR),
    WindowUpdateFrame(0, 0x7FFFFFFF),
]


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_type_round_trips(frame: Frame) -> None:
    assert decode_all(FrameEncoder().encode(frame)) == [frame]


def test_frames_round_trip_through_shared_contexts() -> None:
    encoder = FrameEncoder()
    wire = b"".join(encoder.encode(f) for f in ALL_FRAMES * 3)
    assert decode_all(wire) == ALL_FRAMES * 3


def test_unknown_control_frames_are_skipped() -> None:
    wire = control(10, 0, b"\x00" * 12) + control(5, 0, b"") + FrameEncoder().encode(PingFrame(1))
    assert decode_all(wire) == [PingFrame(1)]


@pytest.mark.parametrize(("wire", "message"), [
    (control(FrameType.PING, 0, b"\0\0\0\1", version=2), "version 2"),
    (bytes.fromhex("00000001 00ffffff"), "exceeds"),  # checked before the payload arrives
    (control(FrameType.SYN_STREAM, 0, b"\0\0\0\1\0\0\0\0\0\0" + b"garbage!"), "inflate"),
    (control(FrameType.SYN_STREAM, 0, b"\0\0\0\1"), "too short"),
    (control(FrameType.SYN_REPLY, 0, b"\0\0\0\0"), "stream 0"),
    (control(FrameType.PING, 0, b"\0\0\0\1\0\0\0\0"), "length 8"),
    (control(FrameType.RST_STREAM, 0, b"\0\0\0\1\0\0\0\0"), "status 0"),
    (control(FrameType.WINDOW_UPDATE, 0, b"\0\0\0\1\0\0\0\0"), "zero delta"),
    (control(FrameType.SETTINGS, 0, b"\0\0\0\2" + b"\0" * 8), "claims 2"),
    (bytes.fromhex("00000000 00000001 ff"), "stream 0"),
])
def test_malformed_frames_are_protocol_errors(wire: bytes, message: str) -> None:
    with pytest.raises(SpdyProtocolError, match=message):
        decode_all(wire[:8] if message in ("version 2", "exceeds") else wire)


def test_frame_cap_is_configurable() -> None:
    frame = FrameEncoder().encode(DataFrame(1, b"x" * 100))
    assert decode_all(frame, FrameDecoder(max_frame_length=100)) == [DataFrame(1, b"x" * 100)]
    with pytest.raises(SpdyProtocolError):
        decode_all(frame, FrameDecoder(max_frame_length=99))


def test_encoder_refuses_out_of_range_fields() -> None:
    encoder = FrameEncoder()
    for frame in (DataFrame(0, b""), RstStreamFrame(1, 0), WindowUpdateFrame(1, 0),
                  SynStreamFrame(1, {}, priority=8), DataFrame(1 << 31, b"")):
        with pytest.raises(SpdyError):
            encoder.encode(frame)


# --- the connection --------------------------------------------------------------------------


def _conversation() -> bytes:
    client = SpdyConnection(True)
    one = client.open_stream({"streamtype": "error", "requestid": "0"})
    three = client.open_stream({"streamtype": "data", "requestid": "0", "port": "80"})
    client.send_data(three, b"GET / HTTP/1.0\r\n\r\n")
    client.ping()
    client.send_headers(one, {"x-later": ["a", "b"]})
    client.send_data(three, b"", fin=True)
    client.reset(one)
    return client.data_to_send()


def test_input_split_at_every_byte_boundary() -> None:
    wire = _conversation()
    expected = SpdyConnection(False).receive_data(wire)
    assert [type(e) for e in expected] == [StreamOpened, StreamOpened, DataReceived, Ping,
                                           HeadersReceived, DataReceived, StreamReset]
    for cut in range(len(wire) + 1):
        server = SpdyConnection(False)
        assert server.receive_data(wire[:cut]) + server.receive_data(wire[cut:]) == expected, cut
    server = SpdyConnection(False)
    assert [e for i in range(len(wire)) for e in server.receive_data(wire[i:i + 1])] == expected


def test_streams_open_exchange_data_and_close() -> None:
    pair = Pair()
    stream_id = pair.client.open_stream({"streamType": "stdin", "port": ["80", "81"]})
    assert stream_id == 1
    [opened] = pair.to_server()
    assert opened == StreamOpened(1, 0, {"streamtype": ["stdin"], "port": ["80", "81"]}, fin=False,
                                  unidirectional=False, priority=0)
    pair.server.reply(1, {"status": "ok"})
    pair.server.send_data(1, b"from server")
    assert pair.to_client() == [Replied(1, {"status": ["ok"]}, fin=False),
                                DataReceived(1, b"from server", fin=False)]
    pair.client.send_data(1, b"from client", fin=True)
    assert pair.to_server() == [DataReceived(1, b"from client", fin=True)]
    with pytest.raises(SpdyError):
        pair.client.send_data(1, b"after FIN")
    pair.server.send_data(1, b"", fin=True)
    assert pair.to_client() == [DataReceived(1, b"", fin=True)]
    # Both halves closed: the stream is gone on both sides.
    for conn in (pair.client, pair.server):
        with pytest.raises(SpdyError):
            conn.send_data(1, b"x")
    assert pair.client.open_stream({}) == 3
    assert pair.server.open_stream({}) == 2


def test_server_opened_stream_and_headers() -> None:
    pair = Pair()
    stream_id = pair.server.open_stream({"a": "1"}, priority=3)
    assert pair.to_client() == [StreamOpened(2, 0, {"a": ["1"]}, False, False, 3)]
    with pytest.raises(SpdyError, match="reply"):
        pair.client.send_data(stream_id, b"too early")
    pair.client.reply(stream_id, {})
    pair.client.send_headers(stream_id, {"b": "2"}, fin=True)
    assert pair.to_server() == [Replied(2, {}, False), HeadersReceived(2, {"b": ["2"]}, True)]


def test_reset_by_either_side() -> None:
    pair = Pair()
    stream_id = pair.open()
    pair.client.reset(stream_id)
    pair.client.reset(stream_id)  # already gone: nothing more is sent
    assert pair.to_server() == [StreamReset(stream_id, RstStatus.CANCEL, remote=True)]
    with pytest.raises(SpdyError):
        pair.server.send_data(stream_id, b"x")
    # A frame that was in flight when the RST crossed it is answered with INVALID_STREAM,
    # which does not produce an event for a stream the client already forgot.
    assert pair.client.receive_data(FrameEncoder().encode(DataFrame(stream_id, b"late"))) == []
    assert decode_all(pair.client.data_to_send()) == [RstStreamFrame(stream_id, RstStatus.INVALID_STREAM)]
    # A RST for an unknown stream is never answered with another RST.
    assert pair.client.receive_data(FrameEncoder().encode(RstStreamFrame(99, RstStatus.CANCEL))) == []
    assert pair.client.data_to_send() == b""


def test_data_after_fin_is_stream_already_closed() -> None:
    pair = Pair()
    stream_id = pair.open()
    pair.client.send_data(stream_id, b"last", fin=True)
    pair.to_server()
    late = FrameEncoder().encode(DataFrame(stream_id, b"more"))
    assert pair.server.receive_data(late) == [
        StreamReset(stream_id, RstStatus.STREAM_ALREADY_CLOSED, remote=False)]
    assert decode_all(pair.server.data_to_send()) == [
        RstStreamFrame(stream_id, RstStatus.STREAM_ALREADY_CLOSED)]


def test_ping_is_echoed_and_acknowledged() -> None:
    pair = Pair()
    assert pair.client.ping() == 1
    assert pair.client.ping() == 3
    assert pair.to_server() == [Ping(1), Ping(3)]
    assert pair.to_client() == [PingAcknowledged(1), PingAcknowledged(3)]
    assert pair.server.ping() == 2
    assert pair.to_client() == [Ping(2)]
    assert pair.to_server() == [PingAcknowledged(2)]
    # An echo of a ping we never sent is ignored rather than echoed again.
    assert pair.server.receive_data(FrameEncoder().encode(PingFrame(8))) == []
    assert pair.server.data_to_send() == b""


def test_goaway_refuses_new_streams_and_drops_unprocessed_ones() -> None:
    pair = Pair()
    first = pair.open()
    late = pair.client.open_stream({"streamtype": "data"})
    pair.server.goaway()
    pair.server.goaway()  # idempotent
    assert pair.to_server() == []  # SYN_STREAM after our GOAWAY is ignored
    assert pair.to_client() == [GoAway(first, GoAwayStatus.OK),
                                StreamReset(late, RstStatus.REFUSED_STREAM, remote=True)]
    with pytest.raises(SpdyError, match="GOAWAY"):
        pair.client.open_stream({})
    pair.client.send_data(first, b"still fine", fin=True)  # existing streams carry on
    assert pair.to_server() == [DataReceived(first, b"still fine", fin=True)]


def test_unidirectional_stream() -> None:
    pair = Pair()
    stream_id = pair.client.open_stream({"a": "b"}, unidirectional=True)
    [opened] = pair.to_server()
    assert isinstance(opened, StreamOpened) and opened.unidirectional
    with pytest.raises(SpdyError):
        pair.server.reply(stream_id, {})
    with pytest.raises(SpdyError):
        pair.server.send_data(stream_id, b"x")
    pair.client.send_data(stream_id, b"one way", fin=True)
    assert pair.to_server() == [DataReceived(stream_id, b"one way", True)]
    assert pair.server.data_to_send() == b""


def test_reply_problems_are_stream_errors() -> None:
    pair = Pair()
    stream_id = pair.open()
    pushed = pair.server.open_stream({})
    pair.to_client()
    # An encoder that has compressed the same blocks as the server shares its zlib state, so
    # it can forge further server frames the client can still inflate.
    forger = FrameEncoder()
    forger.encode(SynReplyFrame(stream_id, {}))
    forger.encode(SynStreamFrame(pushed, {}))
    wire = b"".join(forger.encode(SynReplyFrame(n, {})) for n in (stream_id, pushed, 9))
    assert pair.client.receive_data(wire) == [
        StreamReset(stream_id, RstStatus.STREAM_IN_USE, remote=False),  # second reply
        StreamReset(pushed, RstStatus.PROTOCOL_ERROR, remote=False),  # reply to the peer's own stream
    ]
    assert decode_all(pair.client.data_to_send()) == [
        RstStreamFrame(stream_id, RstStatus.STREAM_IN_USE), RstStreamFrame(pushed, RstStatus.PROTOCOL_ERROR),
        RstStreamFrame(9, RstStatus.INVALID_STREAM)]


def test_bad_header_names_reset_only_that_stream() -> None:
    deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)

    def syn(stream_id: int, *pairs: tuple[bytes, bytes]) -> bytes:
        block = deflate.compress(_block(*pairs)) + deflate.flush(zlib.Z_SYNC_FLUSH)
        return control(FrameType.SYN_STREAM, 0, struct.pack(">IIBB", stream_id, 0, 0, 0) + block)

    server = SpdyConnection(False)
    assert server.receive_data(syn(1, (b"Upper", b"x"))) == []
    assert decode_all(server.data_to_send()) == [RstStreamFrame(1, RstStatus.PROTOCOL_ERROR)]
    # The zlib context survived: the next stream, compressed after the bad one, is fine.
    assert server.receive_data(syn(3, (b"upper", b"x"))) == [
        StreamOpened(3, 0, {"upper": ["x"]}, False, False, 0)]


def test_stream_id_rules() -> None:
    client = SpdyConnection(True)
    client.open_stream({})
    client.open_stream({})
    server = SpdyConnection(False)
    server.receive_data(client.data_to_send())
    forger = FrameEncoder()  # same zlib state as the client (see test_reply_problems...)
    forger.encode(SynStreamFrame(1, {}))
    forger.encode(SynStreamFrame(3, {}))
    # A second SYN_STREAM for an open stream costs that stream only...
    assert server.receive_data(forger.encode(SynStreamFrame(3, {}))) == [
        StreamReset(3, RstStatus.PROTOCOL_ERROR, remote=False)]
    assert decode_all(server.data_to_send()) == [RstStreamFrame(3, RstStatus.PROTOCOL_ERROR)]
    # ...but reusing an id that is gone, or taking the other side's parity, ends the session.
    for stream_id, message in ((3, "not above"), (4, "parity")):
        other = SpdyConnection(False)
        opener = FrameEncoder()
        other.receive_data(opener.encode(SynStreamFrame(1, {})) + opener.encode(SynStreamFrame(3, {}))
                           + opener.encode(RstStreamFrame(3, RstStatus.CANCEL)))
        with pytest.raises(ConnectionFailed, match=message):
            other.receive_data(opener.encode(SynStreamFrame(stream_id, {})))


def test_session_error_keeps_earlier_events_and_sends_goaway() -> None:
    opener = FrameEncoder()
    server = SpdyConnection(False)
    server.receive_data(opener.encode(SynStreamFrame(1, {})) + opener.encode(SynStreamFrame(3, {})))
    bad = opener.encode(SynStreamFrame(2, {}))
    with pytest.raises(ConnectionFailed, match="parity") as info:
        server.receive_data(FrameEncoder().encode(PingFrame(5)) + bad)
    assert info.value.events == [Ping(5)]  # what came before the error is not lost
    assert decode_all(server.data_to_send()) == [PingFrame(5), GoAwayFrame(3, GoAwayStatus.PROTOCOL_ERROR)]
    with pytest.raises(SpdyError):
        server.receive_data(b"")
    with pytest.raises(SpdyError):
        server.open_stream({})


def test_peer_stream_limit_refuses_streams() -> None:
    server = SpdyConnection(False, max_peer_streams=1)
    client = SpdyConnection(True)
    client.open_stream({})
    client.open_stream({})
    assert [type(e) for e in server.receive_data(client.data_to_send())] == [StreamOpened]
    assert decode_all(server.data_to_send()) == [RstStreamFrame(3, RstStatus.REFUSED_STREAM)]


# --- flow control ----------------------------------------------------------------------------


def _received(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataReceived))


def test_send_window_blocks_and_window_update_resumes() -> None:
    pair = Pair()
    stream_id = pair.open()
    payload = bytes(range(256)) * 400  # 102400 bytes
    pair.client.send_data(stream_id, payload, fin=True)
    first = pair.to_server()
    assert len(_received(first)) == DEFAULT_WINDOW
    assert all(len(e.data) <= DATA_CHUNK for e in first if isinstance(e, DataReceived))
    assert not any(e.fin for e in first if isinstance(e, DataReceived))
    assert pair.client.buffered_amount(stream_id) == len(payload) - DEFAULT_WINDOW
    assert pair.client.buffered_amount() == len(payload) - DEFAULT_WINDOW
    assert pair.to_server() == []  # nothing more until the receiver acknowledges
    pair.server.acknowledge(stream_id, DEFAULT_WINDOW)
    updates = pair.server.data_to_send()
    assert decode_all(updates) == [WindowUpdateFrame(0, DEFAULT_WINDOW),
                                   WindowUpdateFrame(stream_id, DEFAULT_WINDOW)]
    pair.client.receive_data(updates)
    rest = pair.to_server()
    assert _received(first) + _received(rest) == payload
    assert isinstance(rest[-1], DataReceived) and rest[-1].fin
    assert pair.client.buffered_amount() == 0


def test_acknowledgements_are_batched_to_half_a_window() -> None:
    pair = Pair()
    stream_id = pair.open()
    pair.client.send_data(stream_id, b"x" * 40000)
    pair.to_server()
    pair.server.acknowledge(stream_id, 30000)
    assert pair.server.data_to_send() == b""
    pair.server.acknowledge(stream_id, 3000)
    assert decode_all(pair.server.data_to_send()) == [WindowUpdateFrame(0, 33000),
                                                      WindowUpdateFrame(stream_id, 33000)]
    with pytest.raises(SpdyError):
        pair.server.acknowledge(stream_id, 7001)  # only 7000 are outstanding


def test_only_stream_window_blocks_while_session_has_room() -> None:
    pair = Pair()
    one, three = pair.open(), pair.open()
    pair.client.send_data(one, b"a" * DEFAULT_WINDOW)
    pair.to_server()
    pair.server.acknowledge(one, DEFAULT_WINDOW)
    # Hand only the session update to the client, keep the stream update back.
    updates = pair.server.data_to_send()
    assert decode_all(updates) == [WindowUpdateFrame(0, DEFAULT_WINDOW),
                                   WindowUpdateFrame(one, DEFAULT_WINDOW)]
    pair.client.receive_data(updates[:16])  # each WINDOW_UPDATE is 16 bytes
    pair.client.send_data(one, b"b" * 10)
    pair.client.send_data(three, b"c" * 10)
    assert pair.to_server() == [DataReceived(three, b"c" * 10, False)]
    assert pair.client.buffered_amount(one) == 10


def test_one_mebibyte_each_way_through_the_windows() -> None:
    pair = Pair()
    stream_id = pair.open()
    up, down = bytes(range(256)) * 4096, bytes(reversed(range(256))) * 4096
    pair.client.send_data(stream_id, up, fin=True)
    pair.server.send_data(stream_id, down, fin=True)
    got = {pair.client: bytearray(), pair.server: bytearray()}
    fins = set()
    for _ in range(1000):
        moved = False
        for src, dst in ((pair.client, pair.server), (pair.server, pair.client)):
            wire = src.data_to_send()
            moved |= bool(wire)
            for event in dst.receive_data(wire):
                assert isinstance(event, DataReceived)
                got[dst] += event.data
                dst.acknowledge(event.stream_id, len(event.data))
                if event.fin:
                    fins.add(dst)
        if not moved:
            break
    assert bytes(got[pair.server]) == up and bytes(got[pair.client]) == down
    assert fins == {pair.client, pair.server}
    with pytest.raises(SpdyError):  # both halves closed
        pair.client.send_data(stream_id, b"x")


def test_initial_window_setting_moves_open_streams() -> None:
    pair = Pair()
    stream_id = pair.open()
    small = FrameEncoder().encode(SettingsFrame((Setting(SettingId.INITIAL_WINDOW_SIZE, 1024),)))
    assert pair.client.receive_data(small) == [SettingsReceived({SettingId.INITIAL_WINDOW_SIZE: 1024})]
    pair.client.send_data(stream_id, b"z" * 4096)
    assert len(_received(pair.to_server())) == 1024
    big = FrameEncoder().encode(SettingsFrame((Setting(SettingId.INITIAL_WINDOW_SIZE, 2048),
                                               Setting(SettingId.INITIAL_WINDOW_SIZE, 1))))
    pair.client.receive_data(big)  # the first of duplicate ids counts: +1024 for the stream
    assert len(_received(pair.to_server())) == 1024
    assert pair.client.buffered_amount(stream_id) == 2048


def test_window_update_overflow() -> None:
    pair = Pair()
    stream_id = pair.open()
    too_much = FrameEncoder().encode(WindowUpdateFrame(stream_id, 0x7FFFFFFF))
    assert pair.client.receive_data(too_much) == [
        StreamReset(stream_id, RstStatus.FLOW_CONTROL_ERROR, remote=False)]
    with pytest.raises(ConnectionFailed, match="session"):
        pair.client.receive_data(FrameEncoder().encode(WindowUpdateFrame(0, 0x7FFFFFFF)))


def test_peer_ignoring_windows_is_caught() -> None:
    pair = Pair()
    one, three = pair.open(), pair.open()
    reckless = FrameEncoder()  # plays a sender that does no flow control at all
    # Stream 3 gets 30000 bytes and is then reset by the peer: those bytes go back to the
    # session without reopening stream 1's own window, so only the stream limit is hit below.
    pair.server.receive_data(reckless.encode(DataFrame(one, b"1" * 30000))
                             + reckless.encode(DataFrame(three, b"3" * 30000))
                             + reckless.encode(RstStreamFrame(three, RstStatus.CANCEL)))
    pair.server.acknowledge(one, 2768)  # session pending reaches 32768 -> session update
    pair.server.data_to_send()
    events = pair.server.receive_data(reckless.encode(DataFrame(one, b"1" * (DEFAULT_WINDOW - 29999))))
    assert events == [StreamReset(one, RstStatus.FLOW_CONTROL_ERROR, remote=False)]
    # Overrunning the session window ends the session.
    with pytest.raises(ConnectionFailed, match="session window"):
        pair.server.receive_data(reckless.encode(DataFrame(99, b"x" * (DEFAULT_WINDOW + 1))))
    assert decode_all(pair.server.data_to_send())[-1] == GoAwayFrame(3, GoAwayStatus.PROTOCOL_ERROR)


def test_without_flow_control_nothing_waits_and_no_updates_are_sent() -> None:
    # The behaviour a moby/spdystream peer (kubectl, crictl) needs: it never sends WINDOW_UPDATE.
    pair = Pair(flow_control=False)
    stream_id = pair.open()
    data = b"q" * (1 << 20)
    pair.server.send_data(stream_id, data, fin=True)
    assert pair.server.buffered_amount() == 0
    events = pair.to_client()
    assert _received(events) == data and isinstance(events[-1], DataReceived) and events[-1].fin
    pair.client.send_data(stream_id, data)
    pair.to_server()
    pair.server.acknowledge(stream_id, len(data))  # a no-op here
    assert pair.server.data_to_send() == b""
