"""RuntimeClass handlers: the OCI runtime (and its monitor) each configured handler runs pods
with, picked by RunPodSandbox's runtime_handler and kept for the pod's whole life.

A pod records the name of its handler in its metadata, and so does each of its containers, so
every later call, and every restart of the daemon, reaches them through the same runtime and
the same runtime state directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from cri.config import Config, ConfigError, HandlerConfig
from cri.errors import InvalidArgument
from sandbox.oci.runc import mount_options
from sandbox.oci.runtime import OCIRuntime


@dataclass
class Handler:
    name: str
    config: HandlerConfig  # every key filled in (see RuntimeConfig.handler)
    oci: OCIRuntime
    # The mount options its runtime understands (`runc features`), learnt at start-up.
    mount_options: frozenset[str] = frozenset()

    @property
    def rro_supported(self) -> bool:
        return "rro" in self.mount_options

    def pod_annotations(self, annotations: Mapping[str, str]) -> dict[str, str]:
        """The pod annotations its allowed_annotations let into OCI specs."""
        allowed = self.config.allowed_annotations
        return {k: v for k, v in annotations.items()
                if any(k == a or (a.endswith("*") and k.startswith(a[:-1])) for a in allowed)}


class Handlers:
    """The configured handlers by name; ``default`` is the one named by default_runtime."""

    def __init__(self, config: Config, make_oci: Callable[[HandlerConfig], OCIRuntime]) -> None:
        self.default = config.runtime.default_handler()
        # The default first, as Status lists them.
        names = [self.default, *sorted(n for n in config.runtime.handlers if n != self.default)]
        self._handlers: dict[str, Handler] = {}
        for name in names:
            full = config.runtime.handler(name, config.runroot)
            self._handlers[name] = Handler(name, full, make_oci(full))

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    def resolve(self, requested: str) -> Handler:
        """The handler RunPodSandbox's runtime_handler names ("" is the default)."""
        handler = self._handlers.get(requested or self.default)
        if handler is None:
            raise InvalidArgument(f"runtime handler {requested!r} is not configured "
                                  f"(configured: {', '.join(self._handlers)})")
        return handler

    def of(self, name: str) -> Handler:
        """The handler a pod or container recorded at its creation."""
        return self._handlers[name]

    def check_recorded(self, names: set[str]) -> None:
        """Refuse to start without a handler that existing pods still run with: the default's
        runtime state directory does not know their containers, which would run on unseen."""
        missing = sorted(names - self._handlers.keys())
        if missing:
            raise ConfigError(
                f"pycri.runtime.handlers: pods of handler(s) {', '.join(missing)} exist; "
                "configure them again until those pods are removed")

    async def learn_features(self) -> None:
        for handler in self:
            handler.mount_options = await mount_options(handler.oci.runtime_path)
