"""Exec, Attach and PortForward: check the request, then hand out a single-use URL on the streaming server
(cri/streaming/); what runs behind it is cri/streaming/service.py."""

from __future__ import annotations

from collections.abc import Sequence

from cri.errors import FailedPrecondition, InvalidArgument
from cri.runtime.daemon import Runtime
from cri.streaming.service import PortForwardRequest, StreamRequest


def _check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout and stderr must be set")
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be set (a terminal has one output)")


def exec_url(rt: Runtime, ctr_id: str, cmd: list[str], tty: bool, stdin: bool, stdout: bool,
             stderr: bool) -> str:
    if not cmd:
        raise InvalidArgument("Exec needs a command")
    _check_streams(stdin, stdout, stderr, tty)
    ctr = rt.containers.lookup(ctr_id)
    if not ctr.running:
        raise FailedPrecondition(f"container {ctr.id} is {ctr.status.state.value}, not running")
    return rt.streaming().issue("exec", StreamRequest(ctr.id, tuple(cmd), tty, stdin, stdout,
                                                      stderr))


def attach_url(rt: Runtime, ctr_id: str, tty: bool, stdin: bool, stdout: bool,
               stderr: bool) -> str:
    _check_streams(stdin, stdout, stderr, tty)
    ctr = rt.containers.lookup(ctr_id)
    if not ctr.running:
        raise FailedPrecondition(f"container {ctr.id} is {ctr.status.state.value}, not running")
    if stdin and not ctr.config.stdin:
        raise InvalidArgument(f"container {ctr.id} was not created with stdin open")
    return rt.streaming().issue("attach", StreamRequest(ctr.id, (), tty, stdin, stdout, stderr))


def port_forward_url(rt: Runtime, pod_id: str, ports: Sequence[int] = ()) -> str:
    bad = [p for p in ports if not 0 < p <= 0xFFFF]
    if bad:
        raise InvalidArgument(f"port-forward ports must be in 1..65535, got {bad}")
    pod = rt.sandboxes.lookup(pod_id)
    if not pod.ready:
        raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")
    return rt.streaming().issue("portforward", PortForwardRequest(pod.id, tuple(ports)))
