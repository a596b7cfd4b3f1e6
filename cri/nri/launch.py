"""Pre-installed plugins: executables named "NN-name" in plugin_path, started by pycri with one
end of a socket pair, as NRI's adaptation starts them.

A plugin finds the socket's fd number in NRI_PLUGIN_SOCKET, its name and index in
NRI_PLUGIN_NAME and NRI_PLUGIN_IDX; its environment holds nothing else. Its configuration is
plugin_config_path/NN-name.conf, else name.conf (empty when neither exists).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from cri.nri import names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    idx: str
    name: str
    path: Path
    config: str


def discover(plugin_path: Path, config_path: Path) -> list[Installed]:
    """The executable plugins in ``plugin_path`` in index order; a file with another name is
    skipped with a warning (one bad file does not keep the others from starting)."""
    try:
        entries = sorted(plugin_path.iterdir())
    except FileNotFoundError:
        return []
    out = []
    for path in entries:
        try:
            st = path.stat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            continue
        try:
            idx, name = names.parse_file_name(path.name)
        except ValueError as exc:
            log.warning("NRI: skipping %s: %s", path, exc)
            continue
        out.append(Installed(idx, name, path, read_config(config_path, idx, name)))
    return sorted(out, key=lambda p: (p.idx, p.name))


def read_config(config_path: Path, idx: str, name: str) -> str:
    for candidate in (config_path / f"{idx}-{name}.conf", config_path / f"{name}.conf"):
        try:
            return candidate.read_text()
        except FileNotFoundError:
            continue
    return ""


async def launch(plugin: Installed) -> tuple[asyncio.subprocess.Process, socket.socket]:
    """Start ``plugin`` with its end of a fresh socket pair; ours is returned connected."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fd = theirs.fileno()
        process = await asyncio.create_subprocess_exec(
            str(plugin.path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,  # its stderr goes to the daemon's log
            pass_fds=(fd,), start_new_session=True,
            env={names.NAME_ENV: plugin.name, names.IDX_ENV: plugin.idx,
                 names.SOCKET_ENV: str(fd)},
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    log.info("NRI: started pre-installed plugin %s-%s (pid %d)", plugin.idx, plugin.name,
             process.pid)
    return process, ours

