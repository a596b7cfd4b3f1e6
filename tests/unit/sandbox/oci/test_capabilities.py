"""Capability names, the daemon's bounding set and the OCI capability sets of a container."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sandbox.oci.capabilities import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    bounding_set,
    container_capabilities,
    normalize,
)

EVERYTHING = frozenset(ALL_CAPABILITIES)
# This project's VMs: the daemon runs without CAP_SYS_RESOURCE.
NO_SYS_RESOURCE = EVERYTHING - {"CAP_SYS_RESOURCE"}
SETS = ("ambient", "bounding", "effective", "inheritable", "permitted")


def caps(add: list[str] | None = None, drop: list[str] | None = None, *,
         privileged: bool = False, bounding: frozenset[str] = EVERYTHING) -> dict[str, list[str]]:
    return container_capabilities(add or [], drop or [], privileged=privileged, bounding=bounding)


def granted(result: dict[str, list[str]]) -> set[str]:
    """The one set the container gets; the three non-empty sets must agree."""
    assert sorted(result) == list(SETS)
    assert result["bounding"] == result["effective"] == result["permitted"]
    return set(result["bounding"])


def test_table_matches_the_kernel_numbers() -> None:
    assert len(ALL_CAPABILITIES) == 41
    assert len(set(ALL_CAPABILITIES)) == 41
    numbers = {name: number for number, name in enumerate(ALL_CAPABILITIES)}
    assert numbers["CAP_CHOWN"] == 0
    assert numbers["CAP_KILL"] == 5
    assert numbers["CAP_NET_BIND_SERVICE"] == 10
    assert numbers["CAP_NET_RAW"] == 13
    assert numbers["CAP_SYS_ADMIN"] == 21
    assert numbers["CAP_SYS_RESOURCE"] == 24
    assert numbers["CAP_AUDIT_READ"] == 37
    assert numbers["CAP_BPF"] == 39
    assert numbers["CAP_CHECKPOINT_RESTORE"] == 40


def test_default_set_is_cri_o_s() -> None:
    assert DEFAULT_CAPABILITIES == (
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID",
        "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_KILL",
    )
    assert set(DEFAULT_CAPABILITIES) <= EVERYTHING


@pytest.mark.parametrize("name", ["chown", "CHOWN", "CAP_CHOWN", "cap_chown", "Cap_Chown", " chown "])
def test_normalize_accepts_every_spelling(name: str) -> None:
    assert normalize(name) == "CAP_CHOWN"


@pytest.mark.parametrize("name", ["", "CAP_", "ALL", "CHOWNX", "CAP_CAP_CHOWN", "NET-RAW", "41"])
def test_normalize_refuses_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown capability"):
        normalize(name)


def test_bounding_set_of_this_process() -> None:
    mask = next(
        int(line.split()[1], 16)
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("CapBnd:")
    )
    expected = {name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1}
    assert bounding_set() == expected


def status_with(tmp_path: Path, capbnd: str) -> Path:
    path = tmp_path / "status"
    path.write_text(f"Name:\tpycri\nCapInh:\t0000000000000000\nCapBnd:\t{capbnd}\nNoNewPrivs:\t0\n")
    return path


def test_bounding_set_decodes_the_mask(tmp_path: Path) -> None:
    # CHOWN (0), KILL (5), SYS_ADMIN (21), CHECKPOINT_RESTORE (40)
    mask = 1 << 0 | 1 << 5 | 1 << 21 | 1 << 40
    assert bounding_set(status_with(tmp_path, f"{mask:016x}")) == {
        "CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN", "CAP_CHECKPOINT_RESTORE",
    }


def test_bounding_set_without_sys_resource(tmp_path: Path) -> None:
    # What this project's VMs report: every bit up to 40 except 24.
    assert bounding_set(status_with(tmp_path, "000001fffeffffff")) == NO_SYS_RESOURCE


def test_bounding_set_ignores_bits_a_newer_kernel_adds(tmp_path: Path) -> None:
    assert bounding_set(status_with(tmp_path, "00000e0000000001")) == {"CAP_CHOWN"}


def test_bounding_set_without_capbnd_line(tmp_path: Path) -> None:
    path = tmp_path / "status"
    path.write_text("Name:\tx\nCapEff:\t0000000000000000\n")
    with pytest.raises(ValueError, match="no CapBnd"):
        bounding_set(path)


def test_defaults_only() -> None:
    result = caps()
    assert granted(result) == set(DEFAULT_CAPABILITIES)
    assert result["bounding"] == sorted(DEFAULT_CAPABILITIES)


def test_add_and_drop_by_short_name() -> None:
    assert granted(caps(["NET_ADMIN", "sys_time"], ["KILL", "cap_chown"])) == (
        set(DEFAULT_CAPABILITIES) | {"CAP_NET_ADMIN", "CAP_SYS_TIME"}
    ) - {"CAP_KILL", "CAP_CHOWN"}


def test_explicit_drop_wins_over_explicit_add() -> None:
    assert "CAP_NET_RAW" not in granted(caps(["NET_RAW"], ["NET_RAW"]))


def test_add_all() -> None:
    assert granted(caps(["ALL"])) == EVERYTHING


def test_add_all_then_drop_one() -> None:
    assert granted(caps(["all"], ["SYS_ADMIN"])) == EVERYTHING - {"CAP_SYS_ADMIN"}


def test_drop_all() -> None:
    result = caps(drop=["ALL"])
    assert granted(result) == set()
    assert all(value == [] for value in result.values())


def test_drop_all_then_add_one() -> None:
    assert granted(caps(["NET_RAW"], ["ALL"])) == {"CAP_NET_RAW"}


def test_add_all_and_drop_all() -> None:
    assert granted(caps(["ALL", "KILL"], ["ALL"])) == {"CAP_KILL"}


def test_unknown_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="NO_SUCH_CAP"):
        caps(["NO_SUCH_CAP"])
    with pytest.raises(ValueError, match="BOGUS"):
        caps(drop=["BOGUS"])


def test_privileged_gets_the_whole_bounding_set() -> None:
    assert granted(caps(privileged=True, bounding=NO_SYS_RESOURCE)) == NO_SYS_RESOURCE
    assert granted(caps(privileged=True, bounding=frozenset({"CAP_KILL"}))) == {"CAP_KILL"}


def test_privileged_ignores_add_and_drop() -> None:
    result = caps(["NOT_A_CAP"], ["ALL", "CHOWN"], privileged=True, bounding=NO_SYS_RESOURCE)
    assert granted(result) == NO_SYS_RESOURCE


def test_capabilities_outside_bounding_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="sandbox.oci.capabilities"):
        result = caps(["SYS_RESOURCE", "NET_ADMIN"], bounding=NO_SYS_RESOURCE)
    assert granted(result) == set(DEFAULT_CAPABILITIES) | {"CAP_NET_ADMIN"}
    assert "CAP_SYS_RESOURCE" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_add_all_is_limited_by_bounding() -> None:
    assert granted(caps(["ALL"], bounding=NO_SYS_RESOURCE)) == NO_SYS_RESOURCE


def test_defaults_outside_bounding_are_left_out() -> None:
    bounding = frozenset({"CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"})
    assert granted(caps(bounding=bounding)) == {"CAP_CHOWN", "CAP_KILL"}


@pytest.mark.parametrize(
    ("add", "drop", "privileged"),
    [([], [], False), (["ALL"], [], False), (["SETPCAP", "SETFCAP"], [], False), ([], [], True)],
)
def test_inheritable_and_ambient_always_empty(add: list[str], drop: list[str], privileged: bool) -> None:
    # CVE-2022-27652: inheritable capabilities let an unprivileged process regain them on exec.
    result = caps(add, drop, privileged=privileged)
    assert result["bounding"]
    assert result["inheritable"] == []
    assert result["ambient"] == []


def test_lists_are_sorted_and_independent() -> None:
    result = caps(["SYS_ADMIN", "AUDIT_WRITE", "NET_RAW"])
    assert result["bounding"] == sorted(result["bounding"])
    result["effective"].append("CAP_X")
    assert "CAP_X" not in result["bounding"] and "CAP_X" not in result["permitted"]
