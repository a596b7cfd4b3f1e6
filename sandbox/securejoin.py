"""Paths inside a container's root filesystem, resolved the way the container itself would.

An image is untrusted input. Its ``/etc`` or ``/etc/passwd`` may be a symlink to ``/../../host``,
to ``../../../etc/shadow`` or to ``/proc/self/root/...``; when the runtime (running on the host)
opens such a path with plain ``open()``, the kernel follows the link out of the rootfs and the
runtime reads host files as if they were the image's (CVE-2024-5154 in CRI-O, CVE-2024-9676 in
podman). Here every component is looked up with ``lstat`` and every symlink is expanded by hand,
as under a chroot: an absolute target starts again at the rootfs and ``..`` stops at it. The
kernel never follows a link of the image.

``resolve_in_root`` returns a host path; it is exact for a tree nobody changes meanwhile (an
unpacked image before its container starts). ``open_in_root`` walks with directory fds and
``O_NOFOLLOW`` instead, so a component swapped for a symlink during the walk fails the open
rather than leading it out.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup (ELOOP)

# O_PATH: a handle for lookups only; opening a directory this way needs no read permission and
# runs no open() side effect. O_NOFOLLOW|O_DIRECTORY: a symlink in its place fails with ENOTDIR.
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(path: str) -> list[str]:
    if "\0" in path:
        raise ValueError("path contains a NUL byte")
    return [p for p in path.split("/") if p not in ("", ".")]


def _loop(path: str) -> OSError:
    return OSError(errno.ELOOP, "too many levels of symbolic links", path)


def resolve_in_root(root: Path, path: str, *, max_links: int = MAX_LINKS) -> Path:
    """Return the host path that ``path`` names inside ``root``, following symlinks within it.

    Components that do not exist (or sit below a non-directory) are kept as plain names, so the
    result may not exist, and a ``..`` after one just drops it (``open_in_root`` would fail
    there, as the kernel does). More than ``max_links`` symlinks raise ``OSError(ELOOP)``.
    """
    pending = _parts(path)[::-1]  # a stack: the next component is at the end
    current: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if current:  # ".." of the root is the root, as in a chroot
                current.pop()
            continue
        candidate = root.joinpath(*current, part)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            current.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            current.append(part)
            continue
        links += 1
        if links > max_links:
            raise _loop(path)
        target = os.readlink(candidate)
        if target.startswith("/"):
            current.clear()  # absolute targets are relative to the container's root
        pending.extend(_parts(target)[::-1])
    return root.joinpath(*current)


def _not_regular(path: str) -> OSError:
    return OSError(errno.EINVAL, "not a regular file", path)


def _open_last(dir_fd: int, name: str, flags: int, path: str, regular_only: bool) -> int:
    # O_NOFOLLOW: had the name become a symlink since our lstat, the open fails with ELOOP.
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    if regular_only and not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_regular(path)
    return fd


def open_in_root(root: Path, path: str, flags: int, *, regular_only: bool = False,
                 max_links: int = MAX_LINKS) -> int:
    """Open an existing ``path`` inside ``root`` (symlinks resolved within it) and return the fd.

    ``O_NOFOLLOW | O_CLOEXEC`` are added to ``flags``. ``O_CREAT`` is refused: this opens what
    the tree already holds. With ``regular_only`` anything but a regular file raises
    ``OSError(EINVAL)`` before it is opened, so a device node of the image never sees an
    open() from the host (its driver may act on open), and once more through ``fstat`` after.
    Missing components raise ``FileNotFoundError``; a non-directory in the middle,
    ``NotADirectoryError``; too many symlinks, ``OSError(ELOOP)``.
    """
    if flags & os.O_CREAT:
        raise ValueError("open_in_root opens existing files only (no O_CREAT)")
    pending = _parts(path)[::-1]
    # ".." pops this stack instead of asking the kernel, so it never climbs above the root even
    # if a directory was moved out of the tree while we held it.
    stack = [os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        links = 0
        while pending:
            part = pending.pop()
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > max_links:
                    raise _loop(path)
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                pending.extend(_parts(target)[::-1])
                continue
            if not pending:
                if regular_only and not stat.S_ISREG(st.st_mode):
                    raise _not_regular(path)
                return _open_last(stack[-1], part, flags, path, regular_only)
            if not stat.S_ISDIR(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            stack.append(os.open(part, _DIR_FLAGS, dir_fd=stack[-1]))
        # The path named a directory we already hold (the root, or one reached through "..").
        if regular_only:
            raise _not_regular(path)
        return _open_last(stack[-1], ".", flags, path, regular_only)
    finally:
        for fd in stack:
            os.close(fd)
