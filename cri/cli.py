"""The ``pycri`` command: serve | config | version | image import | inspect."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from cri import __version__
from cri.config import ConfigError, load, render

EXIT_CONFIG = 2

# CLI flags that override config keys (flags win over the file and its drop-ins).
FLAG_KEYS = {
    "root": "pycri.root",
    "runroot": "pycri.runroot",
    "log_level": "pycri.log_level",
    "listen": "pycri.api.listen",
    "cni_conf_dir": "pycri.network.conf_dir",
    "cni_plugin_dir": "pycri.network.plugin_dirs",
    "pause_image": "pycri.image.pause_image",
    "registries_conf": "pycri.image.registries_conf",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pycri", description="A Kubernetes CRI v1 runtime.")
    sub = p.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", type=Path, help="TOML config file (default /etc/pycri/pycri.conf)")
    serve.add_argument("--root")
    serve.add_argument("--runroot")
    serve.add_argument("--log-level", dest="log_level")
    serve.add_argument("--listen", help="unix socket path")
    serve.add_argument("--cni-conf-dir", dest="cni_conf_dir")
    serve.add_argument("--cni-plugin-dir", dest="cni_plugin_dir", action="append",
                       help="repeatable; replaces the configured plugin_dirs")
    serve.add_argument("--pause-image", dest="pause_image")
    serve.add_argument("--registries-conf", dest="registries_conf")
    cfg = sub.add_parser("config", help="print the full commented config (defaults + --config)")
    cfg.add_argument("--config", type=Path)
    sub.add_parser("version", help="print the version")
    image = sub.add_parser("image", help="offline image operations")
    image_sub = image.add_subparsers(dest="image_cmd", required=True)
    imp = image_sub.add_parser(
        "import", help="import an OCI layout (dir or tar) or a docker-archive into the store")
    imp.add_argument("file", type=Path)
    imp.add_argument("--tag", default="", help="also tag the image with this name")
    imp.add_argument("--config", type=Path)
    insp = sub.add_parser(
        "inspect", help="a pod's or container's namespaces, cgroup limits and veth, read from "
        "the state files, /proc and the cgroup tree (works while the daemon is down)")
    insp.add_argument("target", help="pod or container id (or unique prefix), or NAMESPACE/NAME "
                      "of a pod")
    insp.add_argument("--json", action="store_true", help="print JSON (keys: see the README)")
    insp.add_argument("--config", type=Path)
    insp.add_argument("--root")
    insp.add_argument("--runroot")
    return p


def _image_import(config_root: str, file: Path, tag: str) -> int:
    from cri.image.archive import ArchiveError
    from cri.image.importer import import_images
    from cri.image.manifest import ManifestError
    from cri.image.store import ImageStore
    from cri.image.unpack import UnsafeLayer
    from cri.store import state_format
    from cri.store.state_format import NewerState

    try:
        state_format.claim(Path(config_root))
    except NewerState as exc:
        print(f"pycri: refusing to import: {exc}", file=sys.stderr)
        return 2
    store = ImageStore(Path(config_root) / "images")
    store.open()
    try:
        records = import_images(store, file, tag)
    except (ArchiveError, ManifestError, UnsafeLayer, OSError, KeyError) as exc:
        print(f"pycri: cannot import {file}: {exc}", file=sys.stderr)
        return 1
    for rec in records:
        print(f"{rec.id} {' '.join(rec.repo_tags) or '<untagged>'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "version":
        print(f"pycri {__version__}")
        return 0
    overrides: dict[str, Any] = {}
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"pycri: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.cmd == "config":
        sys.stdout.write(render(config))
        return 0
    if args.cmd == "image":
        return _image_import(config.root, args.file, args.tag)
    if args.cmd == "inspect":
        from cri.inspect.command import inspect

        return inspect(config, args.target, as_json=args.json)
    from cri.server import serve  # the daemon's imports are heavier than config's

    if sys.version_info < (3, 12):
        # 3.11's default child watcher starts a thread per subprocess (conmon, every runc
        # call) to wait for it; a pidfd in the event loop does the same without one. 3.12+
        # picks the pidfd watcher by itself.
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    try:
        return asyncio.run(serve(config))
    except ConfigError as exc:  # found only when the daemon applies it (e.g. a cgroup)
        print(f"pycri: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
