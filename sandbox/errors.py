"""Errors raised by the sandbox library.

The daemon maps these to gRPC status codes in one place (its interceptor); this package never
imports the daemon, so it has its own small hierarchy rather than reusing ``cri.errors``.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every failure the sandbox library reports on purpose."""


class InvalidSysctl(SandboxError, ValueError):
    """A sysctl the pod asked for is not allowed (not namespaced, host namespace, bad value)."""


class InvalidPodFile(SandboxError, ValueError):
    """A hostname or DNS setting that cannot be written into a pod file safely."""


class CgroupError(SandboxError):
    """A cgroup could not be created, configured or removed."""


class NetnsError(SandboxError):
    """A network namespace could not be created, pinned or configured."""
