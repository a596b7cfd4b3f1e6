"""The few calls pycri makes to systemd's manager over D-Bus: transient slices and scopes.

With the systemd cgroup driver systemd owns the tree; pycri asks it for units and never writes
behind its back (a write systemd does not know of is undone at its next daemon-reload). The
calls are org.freedesktop.systemd1.Manager's StartTransientUnit, SetUnitProperties and StopUnit
(org.freedesktop.systemd1(5)); each returns a job, and the answer is the job's result, which
systemd sends as the JobRemoved signal. dbus-fast speaks the protocol.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Protocol

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from sandbox.errors import CgroupError

log = logging.getLogger(__name__)

SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
_DEST = "org.freedesktop.systemd1"
_PATH = "/org/freedesktop/systemd1"
_MANAGER = "org.freedesktop.systemd1.Manager"
# A unit property: (name, D-Bus signature, value), e.g. ("MemoryMax", "t", 1 << 26).
Property = tuple[str, str, Any]


class SystemdManager(Protocol):
    """What the systemd cgroup driver needs from systemd; a test fake plays it."""

    async def connect(self) -> None:
        """Reach systemd now (CgroupError if it is not there), so a node without it fails at
        start-up, not at its first pod."""

    async def start_transient_unit(self, name: str, properties: list[Property]) -> None:
        """Create and start unit ``name``; CgroupError if it exists or fails to start."""

    async def set_unit_properties(self, name: str, properties: list[Property]) -> None:
        """Change a unit's properties at run time (not persisted across reboots)."""

    async def stop_unit(self, name: str) -> None:
        """Stop ``name`` and wait until it is gone; an unknown unit is fine."""


class UnitExists(CgroupError):
    """StartTransientUnit of a name that systemd already has loaded."""


class DBusSystemd:
    """SystemdManager over the system bus. Connects on first use and again after the bus or
    systemd went away; every call waits for its job to end (``job_timeout``)."""

    def __init__(self, address: str = SYSTEM_BUS, job_timeout: float = 30.0) -> None:
        self.address = address
        self.job_timeout = job_timeout
        self._bus: MessageBus | None = None
        self._connecting = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[str]] = {}
        # Jobs whose JobRemoved came before the caller knew the job's path: the signal can be
        # read in the same batch as the reply that names the job. Bounded: every client's
        # jobs are broadcast to subscribers, not only ours.
        self._finished: collections.OrderedDict[str, str] = collections.OrderedDict()

    async def _connected(self) -> MessageBus:
        async with self._connecting:
            if self._bus is not None and self._bus.connected:
                return self._bus
            try:
                bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
            except (OSError, EOFError) as exc:
                raise CgroupError(f"cannot reach systemd over D-Bus at {self.address}: {exc}") from exc
            bus.add_message_handler(self._on_message)
            rule = (f"type='signal',sender='{_DEST}',path='{_PATH}',interface='{_MANAGER}',"
                    "member='JobRemoved'")
            await _checked(bus, Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="AddMatch", signature="s", body=[rule]))
            # systemd emits its manager signals only while some client has subscribed.
            await _checked(bus, _manager_call("Subscribe"))
            self._bus = bus
            return bus

    def _on_message(self, msg: Message) -> bool:
        if (msg.message_type is not MessageType.SIGNAL or msg.member != "JobRemoved"
                or msg.interface != _MANAGER):
            return False
        # JobRemoved(u id, o job, s unit, s result)
        _, job, _, result = msg.body
        fut = self._waiting.pop(job, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(result)
        else:
            self._finished[job] = result
            while len(self._finished) > 1024:
                self._finished.popitem(last=False)
        return False

    async def _run_job(self, what: str, msg: Message) -> None:
        bus = await self._connected()
        reply = await _checked(bus, msg)
        job = str(reply.body[0])
        result = self._finished.pop(job, None)
        if result is None:
            fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._waiting[job] = fut
            try:
                async with asyncio.timeout(self.job_timeout):
                    result = await fut
            except TimeoutError as exc:
                raise CgroupError(f"{what}: systemd job {job} did not finish in "
                                  f"{self.job_timeout:g}s") from exc
            finally:
                self._waiting.pop(job, None)
        if result != "done":
            raise CgroupError(f"{what}: systemd job ended with result {result!r}")

    async def connect(self) -> None:
        await self._connected()

    async def start_transient_unit(self, name: str, properties: list[Property]) -> None:
        props = [(key, Variant(sig, value)) for key, sig, value in properties]
        msg = _manager_call("StartTransientUnit", "ssa(sv)a(sa(sv))", [name, "fail", props, []])
        await self._run_job(f"start {name}", msg)

    async def set_unit_properties(self, name: str, properties: list[Property]) -> None:
        props = [(key, Variant(sig, value)) for key, sig, value in properties]
        bus = await self._connected()
        await _checked(bus, _manager_call("SetUnitProperties", "sba(sv)", [name, True, props]))

    async def stop_unit(self, name: str) -> None:
        try:
            await self._run_job(f"stop {name}", _manager_call("StopUnit", "ss", [name, "replace"]))
        except _NoSuchUnit:
            return

    def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None


class _NoSuchUnit(CgroupError):
    pass


def _manager_call(member: str, signature: str = "", body: list[Any] | None = None) -> Message:
    return Message(destination=_DEST, path=_PATH, interface=_MANAGER, member=member,
                   signature=signature, body=body or [])


async def _checked(bus: MessageBus, msg: Message) -> Message:
    try:
        reply = await bus.call(msg)
    except (OSError, EOFError) as exc:
        raise CgroupError(f"D-Bus call {msg.member} failed: {exc}") from exc
    if reply.message_type is MessageType.ERROR:
        text = f"{msg.member} {msg.body[0] if msg.body else ''}: {reply.error_name}: " \
               f"{reply.body[0] if reply.body else ''}"
        if reply.error_name == "org.freedesktop.systemd1.UnitExists":
            raise UnitExists(text)
        if reply.error_name == "org.freedesktop.systemd1.NoSuchUnit":
            raise _NoSuchUnit(text)
        raise CgroupError(f"systemd refused {text}")
    return reply
