"""Kubernetes stream sub-protocols: negotiation, SPDY stream roles, status payloads, resize
decoding, WebSocket channel framing and port-forward pairing, fed bytes and headers."""

from __future__ import annotations

import json
import struct

import pytest

from cri.streaming import channels as ch
from cri.streaming import portforward_proto as pf
from cri.streaming.channels import (
    Channel,
    ChannelClose,
    ChannelCodec,
    ChannelData,
    ExecOptions,
    ExecStreams,
    HandshakeError,
    ProtocolError,
    ResizeDecoder,
    ResizeError,
    StreamRole,
    TerminalSize,
)

# What client-go's SPDY executor sends (kubectl exec, crictl exec), best first.
CLIENT_GO_SPDY_OFFER = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io",
                        "v2.channel.k8s.io", "channel.k8s.io"]


# --- negotiation --------------------------------------------------------------------------------


def test_header_values_split_on_commas_across_repeated_headers() -> None:
    assert ch.split_header_values(["v4.channel.k8s.io, v3.channel.k8s.io", " ,channel.k8s.io,,"]) == \
        ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]
    assert ch.split_header_values([]) == []
    assert ch.split_header_values([" , "]) == []


def test_negotiate_takes_the_clients_first_supported_offer_by_default() -> None:
    supported = ["a", "b", "c"]
    assert ch.negotiate(["x", "c", "a"], supported) == "c"
    assert ch.negotiate(["x", "c", "a"], supported, prefer="server") == "a"
    assert ch.negotiate(["x", "y"], supported) is None
    assert ch.negotiate([], supported) is None


def test_spdy_handshake_settles_client_go_on_v4() -> None:
    assert ch.spdy_handshake(CLIENT_GO_SPDY_OFFER, ch.SPDY_REMOTECOMMAND_PROTOCOLS) == "v4.channel.k8s.io"
    # An old client that only knows v2 gets v2; one header per protocol works as well as a list.
    assert ch.spdy_handshake(["v2.channel.k8s.io", "channel.k8s.io"],
                             ch.SPDY_REMOTECOMMAND_PROTOCOLS) == "v2.channel.k8s.io"
    assert ch.spdy_handshake(["portforward.k8s.io"], pf.SPDY_PORT_FORWARD_PROTOCOLS) == "portforward.k8s.io"


def test_spdy_handshake_without_the_header_is_a_400() -> None:
    for values in ([], [""], [" , "]):
        with pytest.raises(HandshakeError) as err:
            ch.spdy_handshake(values, ch.SPDY_REMOTECOMMAND_PROTOCOLS)
        assert err.value.status == 400
        assert err.value.headers == []


def test_spdy_handshake_with_no_common_protocol_is_a_403_listing_what_we_accept() -> None:
    with pytest.raises(HandshakeError) as err:
        ch.spdy_handshake(["v5.channel.k8s.io", "portforward.k8s.io"], ch.SPDY_REMOTECOMMAND_PROTOCOLS)
    assert err.value.status == 403
    assert err.value.headers == [("X-Accepted-Stream-Protocol-Versions", p)
                                 for p in ("v4.channel.k8s.io", "v3.channel.k8s.io",
                                           "v2.channel.k8s.io", "channel.k8s.io")]
    assert isinstance(err.value, ProtocolError)


def test_websocket_handshake() -> None:
    supported = ch.WEBSOCKET_REMOTECOMMAND_PROTOCOLS
    # client-go's WebSocket executor (crictl/critest --websocket-exec) offers v5 alone.
    assert ch.websocket_handshake(["v5.channel.k8s.io"], supported) == "v5.channel.k8s.io"
    assert ch.websocket_handshake(["base64.channel.k8s.io, v4.channel.k8s.io"], supported) == \
        "base64.channel.k8s.io"
    assert ch.websocket_handshake(["v4.base64.channel.k8s.io"], supported) == "v4.base64.channel.k8s.io"
    # No offer at all: the kubelet speaks binary framing without a sub-protocol header.
    assert ch.websocket_handshake([], supported) == ch.NO_SUBPROTOCOL == ""
    assert ch.websocket_handshake([" "], pf.WEBSOCKET_PORT_FORWARD_PROTOCOLS) == ""
    # The server's generic path: no offers means offering "" to negotiate().
    assert ch.negotiate([""], supported) == ""
    with pytest.raises(HandshakeError) as err:
        ch.websocket_handshake([], [pf.TUNNELED_PORT_FORWARD_V1])
    assert err.value.status == 400
    # The kubelet's WebSocket server never spoke v2/v3.
    with pytest.raises(HandshakeError) as err:
        ch.websocket_handshake(["v3.channel.k8s.io", "v2.channel.k8s.io"], supported)
    assert err.value.status == 403


def test_port_forward_over_websocket_negotiates_the_spdy_tunnel() -> None:
    chosen = ch.websocket_handshake(["SPDY/3.1+portforward.k8s.io"], pf.WEBSOCKET_PORT_FORWARD_PROTOCOLS)
    assert chosen == pf.TUNNELED_PORT_FORWARD_V1 == "SPDY/3.1+portforward.k8s.io"
    assert ch.untunnel(chosen) == "portforward.k8s.io"
    assert ch.websocket_handshake(["v4.channel.k8s.io"], pf.WEBSOCKET_PORT_FORWARD_PROTOCOLS) == \
        "v4.channel.k8s.io"
    assert ch.untunnel("v4.channel.k8s.io") is None
    assert ch.untunnel("SPDY/3.1+example.com") is None
    assert ch.untunnel("SPDY/3+portforward.k8s.io") is None


def test_tunnel_messages_must_be_binary() -> None:
    assert ch.unwrap_tunnel_message(b"\x80\x03\x00\x01") == b"\x80\x03\x00\x01"
    with pytest.raises(ProtocolError):
        ch.unwrap_tunnel_message("\x80\x03")


def test_protocol_descriptions() -> None:
    by_name = {n: ch.remotecommand_protocol(n) for n in
               ["", "channel.k8s.io", "v2.channel.k8s.io", "v3.channel.k8s.io", "v4.channel.k8s.io",
                "v5.channel.k8s.io", "base64.channel.k8s.io", "v4.base64.channel.k8s.io"]}
    assert [p.version for p in by_name.values()] == [1, 1, 2, 3, 4, 5, 1, 4]
    assert [n for n, p in by_name.items() if p.status_json] == \
        ["v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io"]
    assert [n for n, p in by_name.items() if p.base64] == \
        ["base64.channel.k8s.io", "v4.base64.channel.k8s.io"]
    assert [n for n, p in by_name.items() if p.close_signal] == ["v5.channel.k8s.io"]
    assert not by_name["v2.channel.k8s.io"].resize and by_name["v3.channel.k8s.io"].resize
    with pytest.raises(ProtocolError):
        ch.remotecommand_protocol("v6.channel.k8s.io")
    # Every name we offer has a description.
    for name in (*ch.SPDY_REMOTECOMMAND_PROTOCOLS, *ch.WEBSOCKET_REMOTECOMMAND_PROTOCOLS,
                 *(p for p in pf.WEBSOCKET_PORT_FORWARD_PROTOCOLS if not ch.untunnel(p))):
        assert ch.remotecommand_protocol(name).name == name


# --- exec options -----------------------------------------------------------------------------


def test_exec_query_in_the_kubelets_spelling() -> None:
    opts = ch.parse_exec_query("command=sh&command=-c&command=echo+a%26b%3D1&input=1&output=1&error=1")
    assert opts == ExecOptions(stdin=True, stdout=True, stderr=True, tty=False,
                               command=("sh", "-c", "echo a&b=1"))


def test_exec_query_in_the_api_servers_spelling() -> None:
    opts = ch.parse_exec_query("?stdout=true&stderr=false&command=ls&command=&command=%2F")
    assert opts == ExecOptions(stdout=True, command=("ls", "", "/"))


def test_exec_query_tty_drops_stderr_and_a_streamless_session_is_refused() -> None:
    assert ch.parse_exec_query("tty=1&output=1&error=1") == ExecOptions(stdout=True, tty=True)
    with pytest.raises(ValueError, match="at least 1 of stdin, stdout, stderr"):
        ch.parse_exec_query("command=true&tty=1")
    with pytest.raises(ValueError, match="at least 1"):
        ch.parse_exec_query("")
    with pytest.raises(ValueError, match="not a boolean"):
        ch.parse_exec_query("stdin=yes")
    # Unknown parameters (container=, pretty=) are none of our business.
    assert ch.parse_exec_query("container=c&output=1") == ExecOptions(stdout=True)


def test_exec_options_validate_like_the_cri_server() -> None:
    ExecOptions(stdin=True, stdout=True, tty=True).validate()
    with pytest.raises(ValueError, match="tty and stderr cannot both be true"):
        ExecOptions(stdout=True, stderr=True, tty=True).validate()
    with pytest.raises(ValueError, match="one of stdin, stdout, or stderr must be set"):
        ExecOptions(tty=True).validate()


# --- SPDY stream roles --------------------------------------------------------------------------


def test_header_lookup_ignores_case_and_takes_the_first_value() -> None:
    assert ch.header_value({"StreamType": "stdin"}, "streamtype") == "stdin"
    assert ch.header_value([("streamtype", "error\0stdin")], "streamType") == "error"
    # The SPDY codec's form: every name maps to its list of values.
    assert ch.header_value({"streamtype": ["stdout", "stderr"]}, "streamType") == "stdout"
    assert ch.header_value({"streamtype": [], "StreamType": ["resize"]}, "streamtype") == "resize"
    assert ch.header_value([("port", "80")], "streamtype") is None
    assert ch.header_value([], "streamtype") is None


def test_classify_stream() -> None:
    for kind, role in [("error", StreamRole.ERROR), ("stdin", StreamRole.STDIN),
                       ("stdout", StreamRole.STDOUT), ("stderr", StreamRole.STDERR),
                       ("resize", StreamRole.RESIZE)]:
        assert ch.classify_stream([("streamtype", kind)]) is role
    for headers in ([], [("streamtype", "")], [("streamtype", "data")], [("streamtype", "STDIN")]):
        with pytest.raises(ProtocolError):
            ch.classify_stream(headers)


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("channel.k8s.io", ExecOptions(stdout=True), {"error", "stdout"}),
    ("v4.channel.k8s.io", ExecOptions(stdin=True, stdout=True, stderr=True),
     {"error", "stdin", "stdout", "stderr"}),
    # A tty merges stderr into stdout: no stderr stream even if asked for.
    ("v4.channel.k8s.io", ExecOptions(stdin=True, stdout=True, stderr=True, tty=True),
     {"error", "stdin", "stdout", "resize"}),
    ("v3.channel.k8s.io", ExecOptions(stdout=True, tty=True), {"error", "stdout", "resize"}),
    # Resizing arrived with v3.
    ("v2.channel.k8s.io", ExecOptions(stdin=True, stdout=True, tty=True), {"error", "stdin", "stdout"}),
    ("channel.k8s.io", ExecOptions(stdin=True, tty=True), {"error", "stdin"}),
])
def test_expected_streams(name: str, options: ExecOptions, expected: set[str]) -> None:
    got = ch.expected_streams(ch.remotecommand_protocol(name), options)
    assert {r.value for r in got} == expected


def _h(kind: str) -> list[tuple[str, str]]:
    return [("streamtype", kind)]


def test_exec_streams_take_the_spdy_codecs_header_dicts() -> None:
    streams = ExecStreams(ch.remotecommand_protocol("v4.channel.k8s.io"), ExecOptions(stdout=True))
    streams.add(1, {"streamtype": ["error"]})
    streams.add(3, {"streamtype": ["stdout"]})
    assert streams.complete


def test_exec_streams_complete_once_every_expected_stream_is_open() -> None:
    streams = ExecStreams(ch.remotecommand_protocol("v4.channel.k8s.io"),
                          ExecOptions(stdin=True, stdout=True, tty=True))
    assert streams.missing == {StreamRole.ERROR, StreamRole.STDIN, StreamRole.STDOUT, StreamRole.RESIZE}
    # client-go's order: error, stdin, stdout, (stderr), resize; odd client stream ids.
    for sid, kind in [(1, "error"), (3, "stdin"), (5, "stdout")]:
        assert streams.add(sid, _h(kind)).value == kind
        assert not streams.complete
    assert streams.missing == {StreamRole.RESIZE}
    assert streams.add(7, {"StreamType": "resize"}) is StreamRole.RESIZE
    assert streams.complete and not streams.missing
    assert streams.stream_id(StreamRole.RESIZE) == 7
    assert streams.stream_id(StreamRole.STDERR) is None
    assert streams.role_of(3) is StreamRole.STDIN
    assert streams.role_of(9) is None


def test_exec_streams_refuse_duplicate_unknown_and_unrequested_streams() -> None:
    streams = ExecStreams(ch.remotecommand_protocol("v2.channel.k8s.io"),
                          ExecOptions(stdout=True, tty=True))
    streams.add(1, _h("error"))
    with pytest.raises(ProtocolError, match="duplicate error stream 3"):
        streams.add(3, _h("error"))
    with pytest.raises(ProtocolError, match="unexpected stream type"):
        streams.add(5, _h("data"))
    with pytest.raises(ProtocolError, match="not requested"):
        streams.add(7, _h("resize"))  # v2 has no resize stream
    with pytest.raises(ProtocolError, match="not requested"):
        streams.add(9, _h("stdin"))
    assert not streams.complete
    assert streams.stream_id(StreamRole.ERROR) == 1  # the refused duplicate did not replace it
    streams.add(11, _h("stdout"))
    assert streams.complete


# --- status on the error stream --------------------------------------------------------------


def test_success_status_is_the_kubelets_bytes() -> None:
    assert ch.exit_status_json(0, ["true"]) == b'{"metadata":{},"status":"Success"}'


def test_non_zero_exit_status_is_the_kubelets_bytes() -> None:
    assert ch.exit_status_json(3, ["sh", "-c", "exit 3"]) == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
        b'error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}')


def _client_go_exit_code(payload: bytes) -> int | str:
    """What client-go's v4 error decoder makes of a payload: an exit code or an error text."""
    status = json.loads(payload)
    if status["status"] == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in status["details"]["causes"]:
            if cause.get("reason") == "ExitCode":
                code = int(cause["message"])
                assert 0 <= code <= 255  # strconv.ParseUint(msg, 10, 8)
                return code
        raise AssertionError("no ExitCode cause")
    return str(status["message"])


@pytest.mark.parametrize(("code", "want"), [(0, 0), (1, 1), (255, 255), (-9, 137), (-15, 143)])
def test_exit_codes_reach_the_client(code: int, want: int) -> None:
    assert _client_go_exit_code(ch.exit_status_json(code, ["x"])) == want


def test_exit_codes_that_do_not_fit_a_byte_are_refused() -> None:
    with pytest.raises(ValueError):
        ch.exit_status_json(256, ["x"])
    with pytest.raises(ValueError):
        ch.exit_status_json(-200, ["x"])


def test_error_status_is_an_internal_error_with_go_escaping() -> None:
    payload = ch.error_status_json("no such container <c> & co")
    assert payload == (
        b'{"metadata":{},"status":"Failure","message":"Internal error occurred: no such container '
        b'\\u003cc\\u003e \\u0026 co","reason":"InternalError","details":{"causes":[{"message":'
        b'"no such container \\u003cc\\u003e \\u0026 co"}]},"code":500}')
    assert _client_go_exit_code(payload) == "Internal error occurred: no such container <c> & co"
    # Non-ASCII goes out as UTF-8, lone surrogates cannot and are replaced.
    assert "é" in json.loads(ch.error_status_json("é"))["message"]
    json.loads(ch.error_status_json("bad \udcff byte"))


def test_exit_message_formats_the_command_like_go() -> None:
    assert ch.exit_message(2, []) == \
        "command terminated with non-zero exit code: error executing command [], exit code 2"
    assert ch.exit_message(1, ["echo", "a b"]).endswith("command [echo a b], exit code 1")


def test_payloads_before_v4_are_plain_text_and_success_writes_nothing() -> None:
    for name in ("channel.k8s.io", "v2.channel.k8s.io", "v3.channel.k8s.io", "base64.channel.k8s.io"):
        proto = ch.remotecommand_protocol(name)
        assert ch.exit_payload(proto, 0, ["true"]) == b""
        assert ch.exit_payload(proto, 1, ["false"]) == \
            b"command terminated with non-zero exit code: error executing command [false], exit code 1"
        assert ch.error_payload(proto, "boom") == b"Internal error occurred: boom"
    for name in ("v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io"):
        proto = ch.remotecommand_protocol(name)
        assert ch.exit_payload(proto, 0, ["true"]) == ch.SUCCESS_STATUS_JSON
        assert ch.exit_payload(proto, 7, ["x"]) == ch.exit_status_json(7, ["x"])
        assert ch.error_payload(proto, "boom") == ch.error_status_json("boom")


# --- resize ---------------------------------------------------------------------------------------


def test_encode_resize_is_client_gos_encoder_output() -> None:
    assert ch.encode_resize(80, 24) == b'{"Width":80,"Height":24}\n'


def test_parse_resize_several_messages() -> None:
    data = ch.encode_resize(80, 24) + b'{"Width":100,"Height":50}' + b' \r\n\t{"Height":1,"Width":2}'
    assert ch.parse_resize(data) == [(80, 24), (100, 50), (2, 1)]
    assert ch.parse_resize(b"") == []
    assert ch.parse_resize(b"  \n") == []


def test_resize_split_at_every_byte_decodes_the_same() -> None:
    data = ch.encode_resize(80, 24) + ch.encode_resize(132, 43)
    for cut in range(len(data) + 1):
        dec = ResizeDecoder()
        got = dec.feed(data[:cut]) + dec.feed(data[cut:])
        assert got == [TerminalSize(80, 24), TerminalSize(132, 43)], cut
        assert dec.pending == 0


def test_resize_decoder_byte_by_byte_reports_each_size_when_its_object_closes() -> None:
    dec = ResizeDecoder()
    data = ch.encode_resize(10, 20)
    out = [dec.feed(data[i:i + 1]) for i in range(len(data))]
    closing = data.index(b"}")
    assert [i for i, sizes in enumerate(out) if sizes] == [closing]
    assert out[closing] == [TerminalSize(10, 20)]


def test_resize_braces_and_quotes_inside_strings_do_not_end_the_object() -> None:
    data = b'{"note":"}{\\"}","Width":5,"Height":6}'
    dec = ResizeDecoder()
    assert dec.feed(data[:12]) == []
    assert dec.feed(data[12:]) == [(5, 6)]


def test_resize_fields_match_go_decoding() -> None:
    # Case-insensitive names, unknown fields ignored, missing or null fields are 0.
    assert ch.parse_resize(b'{"width":1,"HEIGHT":2,"extra":[1,{"a":"b"}]}') == [(1, 2)]
    assert ch.parse_resize(b'{"Width":7}{}{"Width":null,"Height":3}') == [(7, 0), (0, 0), (0, 3)]
    assert ch.parse_resize(b'{"Width":65535,"Height":0}') == [(65535, 0)]


@pytest.mark.parametrize("bad", [
    b'{"Width":65536,"Height":1}', b'{"Width":-1}', b'{"Width":80.0}', b'{"Width":"80"}',
    b'{"Width":true}', b'{"Width":1,}', b'{Width:1}', b'[1,2]', b'42', b'null', b'x{}',
    b'{"Width":1]', b'{"Width":\xff}',
])
def test_bad_resize_data_is_an_error(bad: bytes) -> None:
    with pytest.raises(ResizeError):
        ch.parse_resize(bad)


def test_resize_error_keeps_earlier_sizes_and_is_sticky() -> None:
    dec = ResizeDecoder()
    with pytest.raises(ResizeError) as err:
        dec.feed(ch.encode_resize(1, 2) + b'{"Width":"wide"}' + ch.encode_resize(3, 4))
    assert err.value.sizes == [TerminalSize(1, 2)]
    # The kubelet stops handling resizes after a bad message; so does the decoder.
    with pytest.raises(ResizeError):
        dec.feed(ch.encode_resize(5, 6))


def test_truncated_and_endless_resize_objects() -> None:
    with pytest.raises(ResizeError, match="truncated") as err:
        ch.parse_resize(ch.encode_resize(1, 1) + b'{"Width":2')
    assert err.value.sizes == [TerminalSize(1, 1)]
    dec = ResizeDecoder()
    dec.feed(b'{"pad":"' + b"a" * (ResizeDecoder.MAX_OBJECT - 20))
    with pytest.raises(ResizeError, match="longer than"):
        dec.feed(b"a" * 100)


# --- WebSocket channel framing --------------------------------------------------------------


def test_binary_channel_frames() -> None:
    codec = ChannelCodec.for_protocol("channel.k8s.io")
    # The wsstream documentation's example session.
    assert codec.decode(bytes([0, 102, 111, 111, 10])) == ChannelData(0, b"foo\n")
    assert codec.encode(1, b"\n") == bytes([1, 10])
    assert codec.encode(Channel.ERROR, b"") == b"\x03"
    assert codec.decode(b"\x04" + ch.encode_resize(80, 24)) == ChannelData(4, ch.encode_resize(80, 24))
    # A text frame is read as its UTF-8 bytes (x/net/websocket does the same).
    assert codec.decode("\x01hi") == ChannelData(1, b"hi")
    assert codec.decode(b"") is None
    assert codec.decode(b"\x02") == ChannelData(2, b"")
    with pytest.raises(ValueError):
        codec.encode(255, b"x")
    with pytest.raises(ValueError):
        codec.encode(-1, b"x")


def test_base64_channel_frames() -> None:
    codec = ChannelCodec.for_protocol("base64.channel.k8s.io")
    assert codec.encode(1, b"\n") == "1Cg=="
    assert codec.encode(0, b"foo\n") == "0Zm9vCg=="
    assert codec.encode(3, b"") == "3"
    assert codec.decode("0Zm9vCg==") == ChannelData(0, b"foo\n")
    assert codec.decode(bytes([48, 90, 109, 57, 118, 67, 103, 61, 61])) == ChannelData(0, b"foo\n")
    assert codec.decode("4") == ChannelData(4, b"")
    # Go's decoder skips CR and LF inside the payload.
    assert codec.decode("1Zm9v\r\nCg==") == ChannelData(1, b"foo\n")
    # The channel is byte arithmetic on the first character; the caller drops unknown channels.
    assert codec.decode("/Cg==") == ChannelData(255, b"\n")
    assert codec.decode(":Cg==") == ChannelData(10, b"\n")
    assert ChannelCodec.for_protocol("v4.base64.channel.k8s.io").base64
    with pytest.raises(ValueError):
        codec.encode(80, b"")


@pytest.mark.parametrize("bad", ["1Cg=", "1Cg", "1C*==", "1Zm9v Cg==", "1Cg==="])
def test_bad_base64_is_a_protocol_error(bad: str) -> None:
    with pytest.raises(ProtocolError, match="bad base64 on channel 1"):
        ChannelCodec(base64=True).decode(bad)


def test_v5_close_signal() -> None:
    v5 = ChannelCodec.for_protocol("v5.channel.k8s.io")
    assert v5.close_signal and not v5.base64
    assert v5.encode_close(Channel.STDIN) == b"\xff\x00"
    assert v5.decode(b"\xff\x00") == ChannelClose(0)
    assert v5.decode(b"\xff\x07") == ChannelClose(7)  # range is the caller's to check
    for bad in (b"\xff", b"\xff\x00\x00"):
        with pytest.raises(ProtocolError, match="exactly one channel"):
            v5.decode(bad)
    assert v5.decode(b"\x00abc") == ChannelData(0, b"abc")
    with pytest.raises(ValueError):
        v5.encode_close(255)


def test_before_v5_byte_255_is_just_a_channel_number() -> None:
    v4 = ChannelCodec.for_protocol("v4.channel.k8s.io")
    assert v4.decode(b"\xff\x00") == ChannelData(255, b"\x00")
    with pytest.raises(ValueError):
        v4.encode_close(0)


def test_ready_message_goes_to_the_lowest_channel_the_server_writes() -> None:
    assert ch.websocket_ready_channel(ExecOptions(stdin=True, stdout=True, stderr=True)) is Channel.STDOUT
    assert ch.websocket_ready_channel(ExecOptions(stdin=True, stderr=True)) is Channel.STDERR
    assert ch.websocket_ready_channel(ExecOptions(stdin=True)) is Channel.ERROR
    assert ChannelCodec().encode(ch.websocket_ready_channel(ExecOptions(stdout=True)), b"") == b"\x01"


# --- port-forward ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "port"), [("1", 1), ("80", 80), ("080", 80), ("65535", 65535)])
def test_parse_port(text: str, port: int) -> None:
    assert pf.parse_port(text) == port


@pytest.mark.parametrize("bad", ["", "0", "00", "65536", "99999999999", "-1", "+80", " 80", "80 ",
                                 "8a", "0x50", "\uff18\uff10", "\u0668\u0660", "1_000"])
def test_invalid_ports(bad: str) -> None:
    with pytest.raises(ValueError):
        pf.parse_port(bad)


def _pfh(kind: str, port: str = "8080", request_id: str | None = "0") -> list[tuple[str, str]]:
    headers = [("streamtype", kind), ("port", port)]
    if request_id is not None:
        headers.append(("requestid", request_id))
    return headers


def test_classify_port_forward_stream() -> None:
    got = pf.classify_port_forward_stream(1, {"StreamType": "error", "Port": "80", "RequestID": "7"})
    assert got == pf.PortForwardStream(1, pf.PortStreamRole.ERROR, 80, "7")
    # Without a requestID header: error stream id, data stream id - 2.
    assert pf.classify_port_forward_stream(5, _pfh("error", request_id=None)).request_id == "5"
    assert pf.classify_port_forward_stream(7, _pfh("data", request_id=None)).request_id == "5"
    assert pf.classify_port_forward_stream(7, _pfh("data", request_id="")).request_id == "5"


@pytest.mark.parametrize(("headers", "match"), [
    ([("streamtype", "data")], "'port' header is required"),
    (_pfh("data", port=""), "'port' header is required"),
    (_pfh("data", port="0"), "must be > 0"),
    (_pfh("data", port="70000"), "out of range"),
    (_pfh("data", port="http"), "unable to parse"),
    ([("port", "80")], "'streamType' header is required"),
    (_pfh("stdin"), "invalid stream type"),
])
def test_bad_port_forward_streams(headers: list[tuple[str, str]], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        pf.classify_port_forward_stream(1, headers)


def test_pairs_complete_in_either_order_and_interleaved() -> None:
    pairs = pf.PortForwardPairs()
    assert pairs.add(1, _pfh("error", "80", "0")) is None
    assert pairs.add(3, _pfh("data", "443", "1")) is None
    assert len(pairs) == 2
    done = pairs.add(5, _pfh("data", "80", "0"))
    assert done is not None and done.complete
    assert (done.request_id, done.port, done.error_stream, done.data_stream) == ("0", 80, 1, 5)
    done = pairs.add(7, _pfh("error", "443", "1"))
    assert done is not None and (done.data_stream, done.error_stream, done.port) == (3, 7, 443)
    assert len(pairs) == 0


def test_pairs_of_a_client_without_request_ids() -> None:
    pairs = pf.PortForwardPairs()
    assert pairs.add(1, _pfh("error", request_id=None)) is None
    done = pairs.add(3, _pfh("data", request_id=None))
    assert done is not None and done.request_id == "1"


def test_duplicate_streams_in_a_pair() -> None:
    pairs = pf.PortForwardPairs()
    pairs.add(1, _pfh("error"))
    with pytest.raises(pf.PairError) as err:
        pairs.add(3, _pfh("error"))
    assert str(err.value) == "error processing stream for request 0: error stream already assigned"
    assert err.value.error_stream == 1 and err.value.request_id == "0"
    # The pair survives the refused stream and still completes.
    done = pairs.add(5, _pfh("data"))
    assert done is not None and done.error_stream == 1

    pairs.add(7, _pfh("data", request_id="9"))
    with pytest.raises(pf.PairError, match="data stream already assigned") as err:
        pairs.add(9, _pfh("data", request_id="9"))
    assert err.value.error_stream is None  # nowhere to write the message yet


def test_pair_streams_must_name_the_same_port() -> None:
    pairs = pf.PortForwardPairs()
    pairs.add(1, _pfh("error", "80"))
    with pytest.raises(pf.PairError, match="does not match"):
        pairs.add(3, _pfh("data", "81"))


def test_a_request_id_can_be_reused_after_its_pair_completed() -> None:
    pairs = pf.PortForwardPairs()
    pairs.add(1, _pfh("error"))
    assert pairs.add(3, _pfh("data")) is not None
    assert pairs.add(5, _pfh("error")) is None  # a fresh pair, not a duplicate
    assert len(pairs) == 1


def test_incomplete_pairs_expire() -> None:
    pairs = pf.PortForwardPairs()
    pairs.add(1, _pfh("error", request_id="a"), now=100.0)
    pairs.add(3, _pfh("error", request_id="b"), now=120.0)
    assert pairs.expire(now=129.0, timeout=30.0) == []
    stale = pairs.expire(now=130.0, timeout=30.0)
    assert [(p.request_id, p.error_stream) for p in stale] == [("a", 1)]
    assert len(pairs) == 1
    assert pairs.add(5, _pfh("data", request_id="b"), now=131.0) is not None
    assert pairs.expire(now=1000.0, timeout=30.0) == []


def test_port_forward_messages() -> None:
    assert pf.forward_error_message(8080, "abc123", "connection refused") == \
        "error forwarding port 8080 to pod abc123, uid : connection refused"
    assert pf.forward_error_message(1, "p", "e", uid="u") == "error forwarding port 1 to pod p, uid u: e"
    assert "request=4" in pf.pair_timeout_message("4")


def test_parse_port_query() -> None:
    assert pf.parse_port_query("port=80&port=443,8080&other=1") == [80, 443, 8080]
    assert pf.parse_port_query("?port=5") == [5]
    with pytest.raises(ValueError, match="is required"):
        pf.parse_port_query("ports=80")
    with pytest.raises(ValueError, match="cannot be empty"):
        pf.parse_port_query("port=80&port=")
    with pytest.raises(ValueError):
        pf.parse_port_query("port=80,,81")
    with pytest.raises(ValueError):
        pf.parse_port_query("port=0")


def test_websocket_port_channels() -> None:
    assert [(pf.data_channel(i), pf.error_channel(i)) for i in range(3)] == [(0, 1), (2, 3), (4, 5)]
    assert pf.channel_target(0, 2) == (0, pf.PortStreamRole.DATA)
    assert pf.channel_target(3, 2) == (1, pf.PortStreamRole.ERROR)
    assert pf.channel_target(4, 2) is None
    assert pf.channel_target(-1, 2) is None


def test_port_prefix_is_little_endian_and_goes_first_on_each_channel() -> None:
    assert pf.port_prefix(8080) == b"\x90\x1f"
    assert pf.port_prefix(1) == b"\x01\x00"
    codec = ChannelCodec.for_protocol("v4.channel.k8s.io")
    assert codec.encode(pf.error_channel(0), pf.port_prefix(8080)) == b"\x01\x90\x1f"
    assert ChannelCodec(base64=True).encode(pf.data_channel(1), pf.port_prefix(80)) == "2UAA="
    assert pf.split_port_prefix(b"\x90\x1fHTTP/1.1") == (8080, b"HTTP/1.1")
    assert pf.split_port_prefix(b"\x50\x00") == (80, b"")
    with pytest.raises(ProtocolError):
        pf.split_port_prefix(b"\x50")
    with pytest.raises(struct.error):
        pf.port_prefix(65536)
