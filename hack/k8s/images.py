#!/usr/bin/env python3
"""The images a kubeadm cluster runs, made on this machine from hack/k8s/build.sh's static
binaries (and a few of the host's Debian files), as OCI image layouts in tar files that
`pycri image import` takes. Nothing is pulled from anywhere.

    python3 hack/k8s/images.py --cache DIR --bin DIR_OR_FILE... REF...

REF is an image as kubeadm names it (`kubeadm config images list`), or a test image; the last
element of its repository chooses what goes in:

    kube-apiserver kube-controller-manager kube-scheduler   the binary in /usr/local/bin
    kube-proxy    the binary, plus the host's iptables (nf_tables backend, the host's own: both
                  must program the same tables) with the libraries and xtables extensions it
                  loads
    etcd          /usr/local/bin/etcd (kubeadm's manifest runs `etcd`, found through PATH)
    coredns       /coredns as the entrypoint, as upstream's image has it
    pause         a static pause built from ../shared/critest/pause.c (pycri's own pause is
                  built in; kubeadm only checks that the image is there)
    busybox       Debian's busybox with its libraries, every applet linked in /bin (test pods)

Every image but pause and busybox has a base layer with what the static Go binaries expect of
a distroless image: /etc/passwd and /etc/group (root, nonroot 65532, nobody), /etc/nsswitch.conf
(Go's resolver reads it), a world-writable /tmp and the host's CA bundle. Layers are plain tars
(no compression: they only go from this cache to the store next to it).

The archives are cached in DIR/images-KEY/, KEY hashing this script, the references and the
path, size and mtime of every file put in, so a new binary or pin makes new archives. Prints
"REF ARCHIVE" per reference.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared"
MTIME = 0  # reproducible layers: the same inputs give the same digests
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

USERS = """root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
"""
GROUPS = """root:x:0:
nobody:x:65534:
nonroot:x:65532:
"""
NSSWITCH = "hosts: files dns\n"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
XTABLES_EXT = Path("/usr/lib/x86_64-linux-gnu/xtables")
XTABLES = Path("/usr/sbin/xtables-nft-multi")
# The names kube-proxy runs (iptables mode), all the nf_tables multi-call binary.
XTABLES_NAMES = ["iptables", "iptables-save", "iptables-restore",
                 "ip6tables", "ip6tables-save", "ip6tables-restore"]


@dataclass
class Layer:
    """What goes into one layer: directories, files from the host, bytes, symlinks, links."""

    entries: list[tuple[str, str, object, int]] = field(default_factory=list)

    def dir(self, name: str, mode: int = 0o755) -> None:
        self.entries.append(("dir", name, None, mode))

    def file(self, name: str, src: Path, mode: int | None = None) -> None:
        self.entries.append(("file", name, src, mode if mode is not None else
                             os.stat(src).st_mode & 0o7777))

    def data(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.entries.append(("data", name, data, mode))

    def symlink(self, name: str, target: str) -> None:
        self.entries.append(("symlink", name, target, 0o777))

    def hardlink(self, name: str, target: str) -> None:
        self.entries.append(("hardlink", name, target, 0o755))

    def sources(self) -> list[Path]:
        return [e[2] for e in self.entries if e[0] == "file"]  # type: ignore[misc]


@dataclass
class Image:
    layers: list[Layer]
    config: dict[str, object]


def dirs_for(layer: Layer, names: Iterable[str]) -> None:
    """The parent directories of names, each once, before them."""
    seen = {e[1] for e in layer.entries if e[0] == "dir"}
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in seen:
                seen.add(d)
                layer.dir(d)


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries ldd says the binary loads, and the loader."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def add_libraries(layer: Layer, binaries: Iterable[Path]) -> None:
    libs: dict[str, Path] = {}
    for b in binaries:
        for lib in shared_libraries(b):
            libs[str(lib).lstrip("/")] = lib
    dirs_for(layer, libs)
    for name, lib in sorted(libs.items()):
        layer.file(name, lib.resolve(), 0o755)  # at the path ldd names, the link's target's bytes


def base_layer() -> Layer:
    layer = Layer()
    for d in ["etc", "etc/ssl", "etc/ssl/certs", "home", "root", "run", "usr", "usr/local",
              "usr/local/bin", "var", "var/run"]:
        layer.dir(d)
    layer.dir("home/nonroot")
    layer.dir("tmp", 0o1777)
    layer.data("etc/passwd", USERS.encode())
    layer.data("etc/group", GROUPS.encode())
    layer.data("etc/nsswitch.conf", NSSWITCH.encode())
    layer.file("etc/ssl/certs/ca-certificates.crt", CA_BUNDLE.resolve(), 0o644)
    return layer


def binary_layer(name: str, src: Path) -> Layer:
    layer = Layer()
    dirs_for(layer, [name])
    layer.file(name, src, 0o755)
    return layer


def iptables_layer() -> Layer:
    layer = Layer()
    exts = sorted(XTABLES_EXT.glob("*.so"))
    add_libraries(layer, [XTABLES, *exts])
    names = ["usr/sbin/xtables-nft-multi"] + [str(p).lstrip("/") for p in exts]
    dirs_for(layer, names)
    layer.file("usr/sbin/xtables-nft-multi", XTABLES, 0o755)
    for n in XTABLES_NAMES:
        layer.symlink(f"usr/sbin/{n}", "xtables-nft-multi")
    for p in exts:
        layer.file(str(p).lstrip("/"), p.resolve(), 0o644)
    if Path("/etc/protocols").exists():  # iptables -p NAME looks the number up there first
        layer.file("etc/protocols", Path("/etc/protocols"), 0o644)
    return layer


def busybox_layer(busybox: Path) -> Layer:
    layer = Layer()
    for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev",
              "run", "var", "var/run", "mnt"]:
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.file("bin/busybox", busybox.resolve(), 0o755)
    add_libraries(layer, [busybox])
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in sorted(set(applets) - {"busybox"}):
        layer.hardlink(f"bin/{a}", "bin/busybox")
    layer.data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    layer.data("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return layer


def static_pause(workdir: Path) -> Path:
    out = workdir / "pause"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(SHARED / "critest" / "pause.c")],
                   check=True)
    return out


def recipe(ref: str, bins: dict[str, Path], workdir: Path) -> Image:
    repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    kind = repo.rsplit("/", 1)[-1]
    env = {"Env": [PATH_ENV]}
    if kind in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        return Image([base_layer(), binary_layer(f"usr/local/bin/{kind}", bins[kind])],
                     {**env, "Entrypoint": [f"/usr/local/bin/{kind}"]})
    if kind == "kube-proxy":
        return Image([base_layer(), iptables_layer(),
                      binary_layer("usr/local/bin/kube-proxy", bins[kind])],
                     {**env, "Entrypoint": ["/usr/local/bin/kube-proxy"]})
    if kind == "coredns":
        return Image([base_layer(), binary_layer("coredns", bins[kind])],
                     {**env, "Entrypoint": ["/coredns"], "WorkingDir": "/",
                      "ExposedPorts": {"53/tcp": {}, "53/udp": {}}})
    if kind == "pause":
        layer = binary_layer("pause", static_pause(workdir))
        return Image([layer], {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"})
    if kind == "busybox":
        return Image([busybox_layer(bins.get("busybox", Path("/usr/bin/busybox")))],
                     {**env, "Cmd": ["sh"]})
    raise SystemExit(f"images.py: no recipe for {ref} (repository {kind})")


# --- writing ------------------------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what passes through to another."""

    def __init__(self, out: io.BufferedWriter) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.out.write(b)
        self.sha.update(b)
        self.size += len(b)
        return len(b)


def write_layer(layer: Layer, dest: Path) -> tuple[str, int]:
    """The layer as a tar in dest; its sha256 digest and size."""
    with open(dest, "wb") as f:
        h = _Hashing(f)  # type: ignore[arg-type]
        with tarfile.open(fileobj=h, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            for kind, name, arg, mode in layer.entries:
                ti = tarfile.TarInfo(name)
                ti.mode, ti.mtime, ti.uid, ti.gid = mode, MTIME, 0, 0
                if kind == "dir":
                    ti.type = tarfile.DIRTYPE
                    tf.addfile(ti)
                elif kind == "symlink":
                    ti.type, ti.linkname = tarfile.SYMTYPE, str(arg)
                    tf.addfile(ti)
                elif kind == "hardlink":
                    ti.type, ti.linkname = tarfile.LNKTYPE, str(arg)
                    tf.addfile(ti)
                elif kind == "data":
                    assert isinstance(arg, bytes)
                    ti.size = len(arg)
                    tf.addfile(ti, io.BytesIO(arg))
                else:
                    assert isinstance(arg, Path)
                    ti.size = arg.stat().st_size
                    with open(arg, "rb") as src:
                        tf.addfile(ti, src)
    return "sha256:" + h.sha.hexdigest(), h.size


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), 0o644, MTIME
    tf.addfile(ti, io.BytesIO(data))


def write_archive(ref: str, image: Image, dest: Path, workdir: Path) -> None:
    """An OCI image layout with one image named ref, as a tar at dest (whole, or not at all)."""
    layers = []
    for i, layer in enumerate(image.layers):
        path = workdir / f"layer{i}.tar"
        digest, size = write_layer(layer, path)
        layers.append((path, digest, size))
    config = json.dumps({
        "created": "1970-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": image.config,
        "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/k8s/images.py"}
                    for _ in layers],
    }, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}
                   for _, d, s in layers],
    }, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": ref}}]},
        sort_keys=True).encode()
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(tf, "index.json", index)
        blobs = {config_digest: config, manifest_digest: manifest}
        for digest, data in blobs.items():
            _add_bytes(tf, "blobs/sha256/" + digest.split(":")[1], data)
        done = set()
        for path, digest, _ in layers:
            if digest not in done:  # two images share the base layer, one image never twice
                done.add(digest)
                ti = tf.gettarinfo(path, "blobs/sha256/" + digest.split(":")[1])
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = MTIME, 0, 0, "", "", 0o644
                with open(path, "rb") as src:
                    tf.addfile(ti, src)
            path.unlink()
    tmp.rename(dest)


def archive_name(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", ref) + ".tar"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, required=True, help="where the archives are kept")
    p.add_argument("--bin", action="append", default=[], type=Path,
                   help="a binary, or a folder of them, known by its file name")
    p.add_argument("refs", nargs="+")
    args = p.parse_args(argv)
    bins: dict[str, Path] = {}
    for b in args.bin:
        for f in ([*b.iterdir()] if b.is_dir() else [b]):
            if f.is_file() and os.access(f, os.X_OK):
                bins[f.name] = f
    with tempfile.TemporaryDirectory(prefix="pycri-images-") as td:
        work = Path(td)
        images = {ref: recipe(ref, bins, work) for ref in args.refs}
        key = hashlib.sha256(Path(__file__).read_bytes())
        for ref, image in sorted(images.items()):
            key.update(ref.encode())
            for src in sorted({s for layer in image.layers for s in layer.sources()}):
                if src.is_relative_to(work):
                    continue  # made here (pause): its source is in the key below
                st = src.stat()
                key.update(f"{src} {st.st_size} {st.st_mtime_ns}".encode())
        key.update((SHARED / "critest" / "pause.c").read_bytes())
        out = args.cache / f"images-{key.hexdigest()[:16]}"
        out.mkdir(parents=True, exist_ok=True)
        for ref, image in images.items():
            dest = out / archive_name(ref)
            if not dest.exists():
                print(f"images.py: writing {dest}", file=sys.stderr)
                write_archive(ref, image, dest, work)
            print(ref, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
