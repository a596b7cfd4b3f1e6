from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from sandbox.errors import SandboxError
from sandbox.oci import user
from sandbox.oci.user import Identity, UserError, parse_group, parse_passwd, resolve_identity

# The /etc files of critest's user images (as shared/critest/build.py builds them).
PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""
# test-image-predefined-group: default-user(1000) is also in group-defined-in-image(50000).
PREDEFINED_PASSWD = PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
PREDEFINED_GROUP = GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"

# What a hostile image hopes the runtime reads instead of its own files.
HOST_PASSWD = "hostuser:x:1002:4242:host:/host-home:/bin/sh\nwww-data:x:0:0:pwned:/:/bin/sh\n"
HOST_GROUP = "hostgroup:x:4343:www-data,hostuser\n"


def make_rootfs(base: Path, passwd: str | None = PASSWD, group: str | None = GROUP) -> Path:
    root = base / "rootfs"
    (root / "etc").mkdir(parents=True)
    if passwd is not None:
        (root / "etc" / "passwd").write_text(passwd)
    if group is not None:
        (root / "etc" / "group").write_text(group)
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path)


@pytest.fixture
def predefined(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path, PREDEFINED_PASSWD, PREDEFINED_GROUP)


@pytest.fixture
def host_etc(tmp_path: Path) -> Path:
    """Files outside the rootfs, standing in for the host's /etc."""
    d = tmp_path / "host" / "etc"
    d.mkdir(parents=True)
    (d / "passwd").write_text(HOST_PASSWD)
    (d / "group").write_text(HOST_GROUP)
    return d


def resolve(rootfs: Path, image_user: str = "", *, run_as_user: int | None = None,
            run_as_username: str | None = None, run_as_group: int | None = None,
            supplemental_groups: Sequence[int] = (), strict_groups: bool = False) -> Identity:
    return resolve_identity(rootfs, image_user=image_user, run_as_user=run_as_user,
                            run_as_username=run_as_username, run_as_group=run_as_group,
                            supplemental_groups=supplemental_groups, strict_groups=strict_groups)


# --- the image's USER ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        ("", Identity(0, 0, (), "root", "/root")),
        ("0", Identity(0, 0, (), "root", "/root")),
        ("root", Identity(0, 0, (), "root", "/root")),
        # critest's test-image-user-* images
        ("1002", Identity(1002, 0, (), "", "/")),
        ("www-data", Identity(33, 33, (), "www-data", "/var/www")),
        ("1003:1004", Identity(1003, 1004, (), "", "/")),
        ("www-data:1004", Identity(33, 1004, (), "www-data", "/var/www")),
        # the other forms
        ("1003:www-data", Identity(1003, 33, (), "", "/")),
        ("nobody:users", Identity(65534, 100, (), "nobody", "/home")),
        ("33", Identity(33, 33, (), "www-data", "/var/www")),
        ("0033:0100", Identity(33, 100, (), "www-data", "/var/www")),
        ("4294967295", Identity(2**32 - 1, 0, (), "", "/")),
        ("1:4294967295", Identity(1, 2**32 - 1, (), "daemon", "/usr/sbin")),
    ],
)
def test_image_user(rootfs: Path, image_user: str, expected: Identity) -> None:
    assert resolve(rootfs, image_user) == expected


@pytest.mark.parametrize(
    ("image_user", "message"),
    [
        ("nosuch", 'user "nosuch" not found in /etc/passwd of the image'),
        ("nosuch:1004", 'user "nosuch" not found in /etc/passwd of the image'),
        ("1003:nosuch", 'group "nosuch" not found in /etc/group of the image'),
        ("www-data:nosuch", 'group "nosuch" not found in /etc/group of the image'),
        ("1003:", "not of the form user[:group]"),
        (":1004", "not of the form user[:group]"),
        ("a:b:c", "not of the form user[:group]"),
        ("bad\nname", r'user "bad\nname" not found'),  # escaped, not a second log line
    ],
)
def test_image_user_errors(rootfs: Path, image_user: str, message: str) -> None:
    with pytest.raises(UserError) as exc:
        resolve(rootfs, image_user)
    assert message in str(exc.value)


def test_user_error_is_a_sandbox_value_error() -> None:
    # The daemon maps SandboxError/ValueError to InvalidArgument-like codes in one place.
    assert issubclass(UserError, SandboxError)
    assert issubclass(UserError, ValueError)


# --- out-of-range ids (CVE-2024-40635: a big USER wrapped around to root) ----------------------

@pytest.mark.parametrize(
    "image_user",
    [
        "4294967296",  # 2^32: uint32 truncation gives 0
        "8589934592",  # 2^33
        "4294967296:4294967296",
        "1003:4294967296",
        "99999999999999999999999999999999",
        "1" + "0" * 5000,  # past int()'s digit limit: still a UserError
        "-1",
        "1003:-1",
        "+1",
    ],
)
def test_out_of_range_image_ids(rootfs: Path, image_user: str) -> None:
    with pytest.raises(UserError, match=r"is not a number in 0\.\.4294967295"):
        resolve(rootfs, image_user)


@pytest.mark.parametrize("image_user", ["\u0661\u0660\u0660\u0662", "1\u00b2", "1_000", " 1002"])
def test_non_ascii_digits_are_names_not_ids(rootfs: Path, image_user: str) -> None:
    with pytest.raises(UserError, match="not found in /etc/passwd"):
        resolve(rootfs, image_user)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run_as_user": 2**32},
        {"run_as_user": -1},
        {"run_as_user": 2**63 - 1},
        {"run_as_user": 1001, "run_as_group": 2**32},
        {"run_as_user": 1001, "run_as_group": -1},
        {"run_as_user": 1001, "supplemental_groups": [1234, 2**32]},
        {"supplemental_groups": [-5]},
    ],
)
def test_out_of_range_cri_ids(rootfs: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(UserError, match=r"out of range 0\.\.4294967295"):
        resolve(rootfs, **kwargs)  # type: ignore[arg-type]


def test_passwd_entry_with_overflowing_id_is_ignored(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, PASSWD + "evil:x:4294967296:4294967296::/:/bin/sh\n"
                       "evil2:x:33:4294967296::/:/bin/sh\n",
                       GROUP + "evilgroup:x:4294967296:\n")
    for name in ("evil", "evil2"):
        with pytest.raises(UserError, match="not found in /etc/passwd"):
            resolve(root, name)
    with pytest.raises(UserError, match="not found in /etc/group"):
        resolve(root, "1003:evilgroup")


# --- CRI security context ------------------------------------------------------------------

def test_run_as_user(rootfs: Path) -> None:
    # critest "RunAsUser": 1001 has no passwd entry in busybox.
    assert resolve(rootfs, run_as_user=1001) == Identity(1001, 0, (), "", "/")
    assert resolve(rootfs, run_as_user=33) == Identity(33, 33, (), "www-data", "/var/www")


def test_run_as_user_zero_is_root_not_unset(rootfs: Path) -> None:
    assert resolve(rootfs, "www-data:1004", run_as_user=0) == Identity(0, 0, (), "root", "/root")


def test_cri_user_replaces_image_user_and_its_group(rootfs: Path) -> None:
    assert resolve(rootfs, "1003:1004", run_as_user=1001) == Identity(1001, 0, (), "", "/")
    assert resolve(rootfs, "nosuch:nosuch", run_as_username="nobody").uid == 65534


def test_run_as_username(rootfs: Path) -> None:
    # critest "RunAsUserName": nobody, `id -nu` prints it back.
    assert resolve(rootfs, "1002", run_as_username="nobody") == Identity(65534, 65534, (), "nobody", "/home")
    with pytest.raises(UserError, match='user "ghost" not found in /etc/passwd of the image'):
        resolve(rootfs, run_as_username="ghost")


def test_run_as_username_is_a_name_even_when_numeric(rootfs: Path) -> None:
    with pytest.raises(UserError, match='user "33" not found'):
        resolve(rootfs, run_as_username="33")


def test_run_as_user_wins_over_run_as_username(rootfs: Path) -> None:
    ident = resolve(rootfs, run_as_user=1001, run_as_username="ghost")
    assert (ident.uid, ident.username) == (1001, "")


def test_run_as_group(rootfs: Path) -> None:
    # critest "RunAsGroup": `echo $(id -u):$(id -g)` prints 1001:1002.
    ident = resolve(rootfs, run_as_user=1001, run_as_group=1002)
    assert (ident.uid, ident.gid, ident.additional_gids) == (1001, 1002, ())
    ident = resolve(rootfs, run_as_username="www-data", run_as_group=0)
    assert (ident.uid, ident.gid, ident.additional_gids) == (33, 0, ())


@pytest.mark.parametrize("image_user", ["", "1003", "1003:1004", "www-data"])
def test_run_as_group_without_user_is_an_error(rootfs: Path, image_user: str) -> None:
    with pytest.raises(UserError, match="run_as_group is set without run_as_user or run_as_username"):
        resolve(rootfs, image_user, run_as_group=1002)
    with pytest.raises(UserError, match="run_as_group is set without"):
        resolve(rootfs, image_user, run_as_username="", run_as_group=1002)


def test_supplemental_groups(rootfs: Path) -> None:
    # critest "SupplementalGroups": `id -G` must contain 1234 and 5678.
    ident = resolve(rootfs, supplemental_groups=[1234, 5678])
    assert ident.additional_gids == (1234, 5678)


# --- SupplementalGroupsPolicy ----------------------------------------------------------------

def test_merge_adds_the_image_groups(predefined: Path) -> None:
    ident = resolve(predefined, "1000", run_as_user=1000, supplemental_groups=[1234])
    assert (ident.uid, ident.gid, ident.username) == (1000, 1000, "default-user")
    # critest compares ContainerStatus's groups, [gid, *additional_gids], sorted, with these.
    assert sorted([ident.gid, *ident.additional_gids]) == [1000, 1234, 50000]
    assert ident.additional_gids == (50000, 1234)


def test_strict_leaves_the_image_groups_out(predefined: Path) -> None:
    ident = resolve(predefined, "1000", run_as_user=1000, supplemental_groups=[1234], strict_groups=True)
    assert (ident.uid, ident.gid) == (1000, 1000)
    assert ident.additional_gids == (1234,)


def test_merge_from_the_image_user_alone(predefined: Path) -> None:
    assert resolve(predefined, "1000").additional_gids == (50000,)
    assert resolve(predefined, "default-user").additional_gids == (50000,)
    # Another primary group replaces passwd's 1000 (not kept as an extra); the listed one stays,
    # unless it is the primary gid itself.
    assert resolve(predefined, "default-user:users").additional_gids == (50000,)
    assert resolve(predefined, "default-user:50000").additional_gids == ()


def test_merge_order_and_dedup(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, PREDEFINED_PASSWD, PREDEFINED_GROUP
                       + "second:x:60000:someone, default-user ,other\nthird:x:1000:default-user\n")
    # Image groups in file order, then the CRI's; duplicates and the primary gid (1000, which
    # both "third" and the CRI list name) left out.
    ident = resolve(root, "1000", supplemental_groups=[1234, 50000, 1234, 1000, 7])
    assert ident.additional_gids == (50000, 60000, 1234, 7)


def test_merge_needs_a_user_name(tmp_path: Path) -> None:
    # A uid without a passwd entry has no name to find in member lists (nor does "").
    root = make_rootfs(tmp_path, PASSWD, GROUP + "odd:x:777:,,\n")
    assert resolve(root, "1002", supplemental_groups=[5]).additional_gids == (5,)


# --- parsing -------------------------------------------------------------------------------

def test_parse_passwd_skips_junk() -> None:
    text = ("# comment\n\n  \nshort:x:1\n:x:5:5::/:/bin/sh\nbad:x:one:1::/:/bin/sh\n"
            "crlf:x:7:8:gecos:/home/crlf:/bin/sh\r\nnohome:x:9:9\nemptyhome:x:10:10:::/bin/sh\n"
            "crlf:x:70:80:dup:/dup:/bin/sh\n")
    assert [(e.name, e.uid, e.gid, e.home) for e in parse_passwd(text)] == [
        ("crlf", 7, 8, "/home/crlf"), ("nohome", 9, 9, "/"), ("emptyhome", 10, 10, "/"),
        ("crlf", 70, 80, "/dup")]


def test_parse_group_members() -> None:
    text = "a:x:1:\nb:x:2:u1,u2, u3 ,,\nc:x:3\nd:x:x:u1\n"
    assert [(g.name, g.gid, g.members) for g in parse_group(text)] == [
        ("a", 1, ()), ("b", 2, ("u1", "u2", "u3")), ("c", 3, ())]


def test_first_entry_wins(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path,
                       "toor:x:0:5:alias:/toor:/bin/sh\n" + PASSWD + "www-data:x:99:99::/x:/bin/sh\n")
    assert resolve(root).username == "toor"
    assert resolve(root, "www-data").uid == 33


# --- the image's /etc files are untrusted (CVE-2024-5154, CVE-2024-9676) ----------------------

def test_missing_etc_files(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, None, None)
    assert resolve(root) == Identity(0, 0, (), "", "/")
    assert resolve(root, "1003:1004") == Identity(1003, 1004, (), "", "/")
    with pytest.raises(UserError, match="not found in /etc/passwd"):
        resolve(root, "www-data")
    with pytest.raises(UserError, match="not found in /etc/group"):
        resolve(root, "1003:www-data")


def test_missing_etc_dir(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    assert resolve(root, "1002") == Identity(1002, 0, (), "", "/")


def test_missing_rootfs_is_not_an_empty_image(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        resolve(tmp_path / "nope", "1002")


def _assert_host_files_unused(root: Path) -> None:
    # Through the host files, 1002 would be hostuser (gid 4242) and www-data root.
    assert resolve(root, "1002") == Identity(1002, 0, (), "", "/")
    with pytest.raises(UserError, match="not found in /etc/passwd"):
        resolve(root, "www-data")
    with pytest.raises(UserError, match="not found in /etc/group"):
        resolve(root, "1003:hostgroup")


def test_etc_symlinked_to_an_absolute_host_dir(tmp_path: Path, host_etc: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to(host_etc)
    _assert_host_files_unused(root)


def test_etc_symlinked_out_with_dotdot(tmp_path: Path, host_etc: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to("../../../../../../../../../../" + str(host_etc).lstrip("/"))
    _assert_host_files_unused(root)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "proc-self-root", "proc-self-cwd"])
def test_passwd_and_group_symlinked_out(tmp_path: Path, host_etc: Path, how: str) -> None:
    root = make_rootfs(tmp_path, None, None)
    for name in ("passwd", "group"):
        host_file = str(host_etc / name)
        target = {
            "absolute": host_file,
            "dotdot": "/../../../../../../../../.." + host_file,
            "proc-self-root": "/proc/self/root" + host_file,
            "proc-self-cwd": "../" * 30 + "proc/self/cwd/" + "../" * 30 + host_file.lstrip("/"),
        }[how]
        (root / "etc" / name).symlink_to(target)
    assert Path(root / "etc" / "passwd").read_text() == HOST_PASSWD  # the kernel would follow it
    _assert_host_files_unused(root)


def test_symlinks_inside_the_rootfs_are_followed(tmp_path: Path, host_etc: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "usr" / "share" / "base").mkdir(parents=True)
    (root / "usr" / "share" / "base" / "passwd").write_text(PASSWD)
    (root / "usr" / "share" / "base" / "group").write_text(GROUP)
    (root / "etc").symlink_to("usr/share/base")
    assert resolve(root, "www-data").uid == 33
    # The same escape-looking target, but the file it names exists inside the rootfs: used.
    (root / "etc").unlink()
    (root / "etc").mkdir()
    inside = root / str(host_etc).lstrip("/")
    inside.mkdir(parents=True)
    (inside / "passwd").write_text("www-data:x:4000:4000::/w:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to("/../../.." + str(host_etc / "passwd"))
    assert resolve(root, "www-data") == Identity(4000, 4000, (), "www-data", "/w")


def test_fifo_passwd_does_not_hang(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, None, None)
    os.mkfifo(root / "etc" / "passwd")
    os.mkfifo(root / "etc" / "group")
    assert resolve(root, "1002") == Identity(1002, 0, (), "", "/")
    with pytest.raises(UserError, match="not found in /etc/passwd"):
        resolve(root, "www-data")
    with pytest.raises(UserError, match="not found in /etc/group"):
        resolve(root, "1003:users")


def test_fifo_held_open_by_a_writer(tmp_path: Path) -> None:
    # Even with a writer present (a read would then wait for data), the FIFO is never read.
    root = make_rootfs(tmp_path, None, GROUP)
    fifo = root / "etc" / "passwd"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        assert resolve(root, "1002").username == ""
    finally:
        os.close(writer)
        os.close(reader)


def test_directory_or_loop_as_passwd(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, None, GROUP)
    (root / "etc" / "passwd").mkdir()
    (root / "etc" / "group").unlink()
    (root / "etc" / "group").symlink_to("/etc/group")
    assert resolve(root, "1002") == Identity(1002, 0, (), "", "/")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_device_as_passwd(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path, None, GROUP)
    os.mknod(root / "etc" / "passwd", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero
    assert resolve(root, "1002") == Identity(1002, 0, (), "", "/")


def test_oversized_passwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_rootfs(tmp_path)
    monkeypatch.setattr(user, "MAX_FILE_BYTES", len(PASSWD))
    assert resolve(root, "www-data").uid == 33  # exactly at the cap: read
    (root / "etc" / "passwd").write_text(PASSWD + "x")
    with pytest.raises(UserError, match="/etc/passwd of the image is larger than"):
        resolve(root, "1002")


def test_default_cap_is_4_mib(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path)
    with open(root / "etc" / "group", "r+b") as f:
        f.truncate(4 * 1024 * 1024 + 1)  # sparse: cheap to make
    with pytest.raises(UserError, match="/etc/group of the image is larger than 4194304 bytes"):
        resolve(root, "1002")


def test_invalid_utf8_names_match_nothing(tmp_path: Path) -> None:
    root = make_rootfs(tmp_path)
    (root / "etc" / "passwd").write_bytes(PASSWD.encode() + b"caf\xe9:x:7:7::/:/bin/sh\n")
    assert resolve(root, "7").username == "caf\ufffd"
    with pytest.raises(UserError):
        resolve(root, "caf\xe9")
