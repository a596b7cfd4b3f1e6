"""Which mount a path lives on and how that mount propagates, from /proc/self/mountinfo text."""

from __future__ import annotations

from pathlib import Path

from sandbox.oci.mountinfo import MountEntry, mount_of, parse_mountinfo, propagation_of

# Shaped like a real node's mountinfo (proc(5)): optional fields between the mount options and
# the "-" separator; mount points with spaces, tabs and backslashes octal-escaped.
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 27 0:28 / /sys/fs/cgroup rw,relatime shared:4 - tmpfs tmpfs rw,mode=755
46 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
57 46 0:4 net:[4026532182] /run/netns/pod-a rw shared:2 - nsfs nsfs rw
60 27 0:40 / /var/lib/kubelet rw,relatime master:7 - ext4 /dev/vdb rw
61 60 0:41 / /var/lib/kubelet/pods/x/volumes rw,relatime shared:9 master:3 - tmpfs tmpfs rw
62 27 0:42 / /mnt/my\\040disk rw,relatime shared:11 - ext4 /dev/vdc rw
63 27 0:43 / /mnt/tab\\011and\\134slash rw,relatime - tmpfs tmpfs rw
64 27 0:44 / /foo rw,relatime shared:12 - tmpfs tmpfs rw
65 27 0:45 / /data rw,relatime - tmpfs tmpfs rw
66 27 0:46 / /data rw,relatime shared:13 - tmpfs tmpfs rw
67 27 0:47 / /opt rw,relatime shared:14 unbindable - tmpfs tmpfs rw
"""


def by_point(entries: list[MountEntry]) -> dict[str, list[MountEntry]]:
    out: dict[str, list[MountEntry]] = {}
    for e in entries:
        out.setdefault(e.mount_point, []).append(e)
    return out


def test_parse_optional_fields() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert len(entries) == 13
    points = by_point(entries)
    assert points["/"] == [MountEntry("/", shared=False, slave=False)]
    assert points["/run/netns"] == [MountEntry("/run/netns", shared=True, slave=False)]
    assert points["/var/lib/kubelet"] == [MountEntry("/var/lib/kubelet", shared=False, slave=True)]
    assert points["/var/lib/kubelet/pods/x/volumes"] == [
        MountEntry("/var/lib/kubelet/pods/x/volumes", shared=True, slave=True)]
    assert points["/opt"] == [MountEntry("/opt", shared=True, slave=False)]
    # The root field of an nsfs mount (net:[...]) is not the mount point.
    assert "/run/netns/pod-a" in points


def test_parse_unescapes_mount_points() -> None:
    points = by_point(parse_mountinfo(MOUNTINFO))
    assert points["/mnt/my disk"] == [MountEntry("/mnt/my disk", shared=True, slave=False)]
    assert "/mnt/tab\tand\\slash" in points
    assert not any("\\0" in p for p in points)


def test_parse_skips_malformed_lines() -> None:
    text = "garbage\n\n1 2 3 4 5 6 7 8\n" + "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
    assert parse_mountinfo(text) == [MountEntry("/", shared=False, slave=False)]


def test_dash_before_the_optional_fields_is_not_the_separator() -> None:
    # The separator is searched from field 7 on; a "-" earlier (here as the root field of a
    # strange bind) must not shift the optional fields.
    text = "70 27 0:50 - /weird rw shared:20 - tmpfs tmpfs rw\n"
    assert parse_mountinfo(text) == [MountEntry("/weird", shared=True, slave=False)]


def test_mount_of_longest_prefix() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    found = mount_of("/var/lib/kubelet/pods/x/volumes/cfg/file", entries)
    assert found is not None and found.mount_point == "/var/lib/kubelet/pods/x/volumes"
    found = mount_of("/var/lib/kubelet/pods/y", entries)
    assert found is not None and found.mount_point == "/var/lib/kubelet"
    found = mount_of("/run/netns/pod-a", entries)
    assert found is not None and found.mount_point == "/run/netns/pod-a"
    found = mount_of("/etc/passwd", entries)
    assert found == MountEntry("/", shared=False, slave=False)
    found = mount_of("/", entries)
    assert found == MountEntry("/", shared=False, slave=False)
    found = mount_of("/mnt/my disk/sub", entries)
    assert found is not None and found.mount_point == "/mnt/my disk"


def test_mount_of_is_not_a_string_prefix_match() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    found = mount_of("/foobar", entries)
    assert found is not None and found.mount_point == "/"
    found = mount_of("/foo", entries)
    assert found is not None and found.mount_point == "/foo" and found.shared
    found = mount_of("/foo/bar", entries)
    assert found is not None and found.mount_point == "/foo"
    found = mount_of("/datas/x", entries)
    assert found is not None and found.mount_point == "/"


def test_mount_of_stacked_mounts_takes_the_last() -> None:
    # Two mounts on /data: the later line is on top and is the one a bind would see.
    entries = parse_mountinfo(MOUNTINFO)
    assert mount_of("/data/x", entries) == MountEntry("/data", shared=True, slave=False)
    assert mount_of("/data", entries) == MountEntry("/data", shared=True, slave=False)
    reordered = parse_mountinfo(MOUNTINFO.replace("shared:13 ", "").replace(
        "65 27 0:45 / /data rw,relatime -", "65 27 0:45 / /data rw,relatime shared:13 -"))
    assert mount_of("/data", reordered) == MountEntry("/data", shared=False, slave=False)


def test_mount_of_without_entries() -> None:
    assert mount_of("/x", []) is None
    only_sub = [MountEntry("/sub", shared=True, slave=False)]
    assert mount_of("/x", only_sub) is None


def test_propagation_of_resolves_symlinks(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    link = tmp_path / "link"
    link.symlink_to(shared)
    info = tmp_path / "mountinfo"
    info.write_text(
        "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        f"80 27 0:60 / {shared} rw shared:30 - tmpfs tmpfs rw\n"
    )
    entry = propagation_of(link / "sub", mountinfo=info)
    assert entry == MountEntry(str(shared), shared=True, slave=False)
    entry = propagation_of(tmp_path / "other", mountinfo=info)
    assert entry == MountEntry("/", shared=False, slave=False)


def _root_line_fields() -> list[str]:
    """The optional fields of the topmost "/" mount, read without the module under test."""
    fields: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        parts = line.split()
        if parts[4] == "/":
            fields = parts[6:parts.index("-", 6)]
    return fields


def test_propagation_of_real_root() -> None:
    entry = propagation_of(Path("/"))
    assert entry is not None and entry.mount_point == "/"
    optional = _root_line_fields()
    assert entry.shared == any(f.startswith("shared:") for f in optional)
    assert entry.slave == any(f.startswith("master:") for f in optional)
    # The test machines' / is private; only a test that ran `mount --make-rshared /` and
    # did not undo it would change that.
    assert not entry.shared and not entry.slave
