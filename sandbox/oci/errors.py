"""Errors of the OCI runtime layer; the CRI layer maps them to gRPC codes."""

from __future__ import annotations


class OCIRuntimeError(Exception):
    """runc or conmon failed; the message is runc's own error text when there is one."""


class OCINotFound(OCIRuntimeError):
    """runc has no container with this id."""


class OCINotRunning(OCIRuntimeError):
    """The container exists but has no live init process (a signal cannot be delivered)."""


class OCITimeout(OCIRuntimeError):
    """runc or conmon did not answer in time; the process was killed."""
