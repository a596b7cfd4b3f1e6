"""NRI protocol facts the runtime side needs beyond the messages: service names, the version
pycri speaks, how plugins are named and indexed, and the event subscription bits
(github.com/containerd/nri v0.12.2, pkg/api plugin.go and event.go)."""

from __future__ import annotations

import re

from google.protobuf.message import Message

from cri.nri.api import api_pb2 as nri

NRI_VERSION = "v0.12.2"  # the API of proto/nri/api.proto, sent in Configure
PLUGIN_SERVICE = nri.DESCRIPTOR.services_by_name["Plugin"].full_name
RUNTIME_SERVICE = nri.DESCRIPTOR.services_by_name["Runtime"].full_name

# What a pre-installed plugin finds in its environment: its connected socket's fd, its name
# and index (taken from its file name, "NN-name").
SOCKET_ENV = "NRI_PLUGIN_SOCKET"
NAME_ENV = "NRI_PLUGIN_NAME"
IDX_ENV = "NRI_PLUGIN_IDX"

# Event value e is bit 1 << (e - 1) of a subscription; a plugin that subscribes to nothing
# (0) gets every event.
VALID_EVENTS = (1 << (nri.LAST - 1)) - 1

_INDEX = re.compile(r"[0-9]{2}")
_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def bit(event: int) -> int:
    return 1 << (event - 1)


def event_names(mask: int) -> str:
    return ",".join(nri.Event.Name(nri.Event.ValueType(e)) for e in range(1, nri.LAST)
                    if mask & bit(e)) or "none"


def check_index(idx: str) -> None:
    """Two digits: the index orders plugins (00 first)."""
    if not _INDEX.fullmatch(idx):
        raise ValueError(f"invalid plugin index {idx!r}: two digits expected")


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid plugin name {name!r}: letters, digits, - _ . + expected")


def parse_file_name(file_name: str) -> tuple[str, str]:
    """(index, name) of a pre-installed plugin file "NN-name"."""
    idx, sep, name = file_name.partition("-")
    if not sep:
        raise ValueError(f"invalid plugin file name {file_name!r}: NN-name expected")
    check_index(idx)
    check_name(name)
    return idx, name


def method(event: int) -> str:
    """The Plugin service method that delivers ``event``: RUN_POD_SANDBOX -> RunPodSandbox."""
    name = nri.Event.Name(nri.Event.ValueType(event))
    return "".join(word.capitalize() for word in name.split("_"))


def response_type(method_name: str) -> type[Message]:
    """The reply message class of a Plugin service method."""
    out = nri.DESCRIPTOR.services_by_name["Plugin"].methods_by_name[method_name].output_type
    cls: type[Message] = getattr(nri, out.name)
    return cls
