"""Pre-encoded replies must be byte-for-byte what protobuf would send, and parse back."""

from __future__ import annotations

from cri.api import api_pb2
from cri.encoded import Encoded, join, passthrough, repeated_entry


def _ctr(i: int, labels: int = 3) -> api_pb2.Container:
    return api_pb2.Container(
        id=f"{i:064x}", pod_sandbox_id="p" * 64, metadata=api_pb2.ContainerMetadata(name=f"c{i}"),
        image=api_pb2.ImageSpec(image="busybox"), state=api_pb2.ContainerState.CONTAINER_RUNNING,
        created_at=1_700_000_000_000_000_000 + i,
        labels={f"k{j}": "v" * (j * 50) for j in range(labels)})


def test_joined_entries_equal_the_serialised_response() -> None:
    # Sizes that need 1-, 2- and 3-byte length varints.
    items = [_ctr(0, 0), _ctr(1, 3), _ctr(2, 60)]
    want = api_pb2.ListContainersResponse(containers=items).SerializeToString()
    got = join(repeated_entry(1, c.SerializeToString()) for c in items)
    # Same size and same message (map entries may come out in another order).
    assert len(got) == len(want)
    assert list(api_pb2.ListContainersResponse.FromString(got).containers) == items
    no_maps = [_ctr(0, 0), _ctr(1, 0)]
    assert join(repeated_entry(1, c.SerializeToString()) for c in no_maps) == \
        api_pb2.ListContainersResponse(containers=no_maps).SerializeToString()
    assert join([]) == b""


def test_passthrough_sends_encoded_bytes_as_they_are_and_serialises_the_rest() -> None:
    ser = passthrough(api_pb2.ListContainersResponse.SerializeToString)
    assert ser is not None
    raw = Encoded(b"\x0a\x00")
    out = ser(raw)
    assert out == b"\x0a\x00" and type(out) is bytes  # grpc refuses bytes subclasses
    msg = api_pb2.ListContainersResponse(containers=[_ctr(5)])
    assert ser(msg) == msg.SerializeToString()
    assert passthrough(None) is None
