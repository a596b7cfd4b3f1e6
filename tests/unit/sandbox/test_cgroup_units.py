"""systemd unit names and where systemd puts them in the tree."""

from __future__ import annotations

import pytest

from sandbox.cgroups import units
from sandbox.cgroups._fs import parse_path
from sandbox.errors import CgroupError


@pytest.mark.parametrize(("path", "components"), [
    ("pycri.slice", ("pycri.slice",)),
    ("kubepods-besteffort-pod1_2.slice",
     ("kubepods.slice", "kubepods-besteffort.slice", "kubepods-besteffort-pod1_2.slice")),
    ("kubepods-pod1.slice:pycri:abc", ("kubepods.slice", "kubepods-pod1.slice", "pycri-abc.scope")),
    ("system.slice:pycri-conmon:abc", ("system.slice", "pycri-conmon-abc.scope")),
    ("/kubepods/burstable/pod1", ("kubepods", "burstable", "pod1")),
])
def test_both_forms_name_their_place_in_the_tree(path: str, components: tuple[str, ...]) -> None:
    assert parse_path(path) == components


@pytest.mark.parametrize("path", [
    "-.slice",  # the root slice is systemd's, never a pod's
    "a--b.slice", "-a.slice", "a-.slice", "a..slice", "../x.slice", "a/b.slice",
    "a@b.slice", "kubepods.slice:pycri", "kubepods.slice:pycri:../x", "kubepods.slice::x",
    "x.scope:pycri:abc", "kubepods", "x" * 250 + ".slice",
])
def test_malformed_names_are_refused(path: str) -> None:
    with pytest.raises(CgroupError):
        parse_path(path)


def test_a_pods_slice_nests_under_its_parent_with_the_uid_dashes_escaped() -> None:
    # A dash is nesting; a uid's dashes would make levels the kubelet never made.
    assert units.pod_slice("kubepods-besteffort.slice", "6f1c-42") == \
        "kubepods-besteffort-pod6f1c_42.slice"
    assert parse_path(units.pod_slice("pycri.slice", "a-b-c"))[-2:] == \
        ("pycri.slice", "pycri-poda_b_c.slice")
