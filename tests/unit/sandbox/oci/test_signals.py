"""Signal names from images ("SIGTERM", "term", "15", "SIGRTMIN+3") and the CRI's Signal enum
("SIGRTMINPLUS3") to Linux numbers, checked against Python's own signal module."""

from __future__ import annotations

import signal

import pytest

from cri.api import api_pb2
from sandbox.oci.signals import DEFAULT_STOP_SIGNAL, SIGRTMAX, SIGRTMIN, parse_signal


def test_realtime_range_is_the_kernels() -> None:
    # Python reports the C library's SIGRTMIN; on glibc Linux both are the raw kernel numbers.
    assert (SIGRTMIN, SIGRTMAX) == (34, 64)
    assert (int(signal.SIGRTMIN), int(signal.SIGRTMAX)) == (SIGRTMIN, SIGRTMAX)


@pytest.mark.parametrize("text", ["SIGTERM", "TERM", "term", "SigTerm", "sigterm", " SIGTERM\n", "15"])
def test_spellings_of_sigterm(text: str) -> None:
    assert parse_signal(text) == 15


@pytest.mark.parametrize("sig", list(signal.Signals), ids=lambda s: s.name)
def test_every_python_signal_name_with_and_without_prefix(sig: signal.Signals) -> None:
    assert parse_signal(sig.name) == sig.value
    assert parse_signal(sig.name.removeprefix("SIG").lower()) == sig.value
    assert parse_signal(str(sig.value)) == sig.value


@pytest.mark.parametrize(("alias", "number"), [("SIGCLD", 17), ("SIGIOT", 6), ("SIGPOLL", 29),
                                               ("IO", 29), ("SIGSTKFLT", 16), ("PWR", 30)])
def test_aliases(alias: str, number: int) -> None:
    assert parse_signal(alias) == number


@pytest.mark.parametrize(("text", "number"), [
    ("SIGRTMIN", 34), ("RTMIN", 34), ("SIGRTMIN+0", 34), ("SIGRTMIN+3", 37), ("rtmin+3", 37),
    ("SIGRTMIN+30", 64), ("SIGRTMAX", 64), ("RTMAX-1", 63), ("SIGRTMAX-30", 34),
    ("SIGRTMINPLUS3", 37), ("SIGRTMAXMINUS1", 63), ("34", 34), ("64", 64), ("1", 1),
])
def test_realtime_and_numbers(text: str, number: int) -> None:
    assert parse_signal(text) == number


def _expected_for_cri_name(name: str) -> int:
    """The number a CRI Signal enum name means, from Python's signal module alone."""
    if name.startswith("SIGRTMINPLUS"):
        return int(signal.SIGRTMIN) + int(name.removeprefix("SIGRTMINPLUS"))
    if name.startswith("SIGRTMAXMINUS"):
        return int(signal.SIGRTMAX) - int(name.removeprefix("SIGRTMAXMINUS"))
    return int(getattr(signal, name))


CRI_NAMES = [v.name for v in api_pb2.Signal.DESCRIPTOR.values if v.name != "RUNTIME_DEFAULT"]


def test_cri_enum_is_the_full_list() -> None:
    # Guards the parametrisation below: 34 classic names plus 31 real-time ones.
    assert len(CRI_NAMES) == 65
    assert "SIGRTMINPLUS15" in CRI_NAMES and "SIGRTMAXMINUS14" in CRI_NAMES


@pytest.mark.parametrize("name", CRI_NAMES)
def test_every_cri_enum_name_parses(name: str) -> None:
    assert parse_signal(name) == _expected_for_cri_name(name)


def test_cri_realtime_names_cover_the_range_once() -> None:
    rt = sorted(parse_signal(n) for n in CRI_NAMES if n.startswith("SIGRT"))
    assert rt == list(range(34, 65))


def test_runtime_default_is_not_a_signal() -> None:
    with pytest.raises(ValueError):
        parse_signal("RUNTIME_DEFAULT")


@pytest.mark.parametrize("text", [
    "0", "65", "100", "-1", "+15", "", "   ", "SIG", "FOO", "SIGFOO", "SIG15", "SIGRTMIN+31",
    "SIGRTMIN-1", "SIGRTMAX+1", "SIGRTMAX-31", "SIGRTMIN+", "SIGRTMINPLUS", "RTMIN3", "RTMINX",
    "SIGRTMIN+3x", "SIGRTMIN+-3", "SIGTERM+1", "²",
])
def test_invalid(text: str) -> None:
    with pytest.raises(ValueError):
        parse_signal(text)


def test_default_stop_signal() -> None:
    assert DEFAULT_STOP_SIGNAL == signal.SIGTERM == parse_signal("SIGTERM")


def test_signal_name_round_trips_every_cri_name_but_the_aliases() -> None:
    from sandbox.oci.signals import signal_name

    for name in api_pb2.Signal.keys():  # noqa: SIM118 - an enum wrapper, not a dict
        if name in ("RUNTIME_DEFAULT", "SIGCLD", "SIGIOT", "SIGPOLL"):
            continue
        spelled = signal_name(parse_signal(name)).replace("+", "PLUS").replace("-", "MINUS")
        assert spelled == name
    assert signal_name(17) == "SIGCHLD" and signal_name(6) == "SIGABRT"
    with pytest.raises(ValueError):
        signal_name(0)
