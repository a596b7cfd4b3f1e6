"""Signal names as images and the CRI spell them, to numbers.

An image's StopSignal is "SIGTERM", "TERM", "15" or "SIGRTMIN+3"; the CRI's Signal enum uses
names such as SIGRTMINPLUS3 and SIGRTMAXMINUS1. Linux signal numbers (x86 and arm64 agree).
"""

from __future__ import annotations

import signal

_BY_NAME: dict[str, int] = {
    "ABRT": 6, "ALRM": 14, "BUS": 7, "CHLD": 17, "CLD": 17, "CONT": 18, "FPE": 8, "HUP": 1,
    "ILL": 4, "INT": 2, "IO": 29, "IOT": 6, "KILL": 9, "PIPE": 13, "POLL": 29, "PROF": 27,
    "PWR": 30, "QUIT": 3, "SEGV": 11, "STKFLT": 16, "STOP": 19, "SYS": 31, "TERM": 15,
    "TRAP": 5, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "USR1": 10, "USR2": 12,
    "VTALRM": 26, "WINCH": 28, "XCPU": 24, "XFSZ": 25,
}
# The kernel's real-time range; glibc reserves the first two or three for itself, but a
# container's process sees the raw numbers, which is what runc sends.
SIGRTMIN, SIGRTMAX = 34, 64


def parse_signal(text: str) -> int:
    """"SIGTERM", "term", "15", "SIGRTMIN+3", "RTMAX-1", CRI "SIGRTMINPLUS3" -> a number.

    Raises ValueError for anything else (including 0 and numbers above SIGRTMAX)."""
    raw = text.strip().upper()
    if raw.isascii() and raw.isdigit():
        num = int(raw)
        if 1 <= num <= SIGRTMAX:
            return num
        raise ValueError(f"signal {text!r} out of range")
    name = raw.removeprefix("SIG")
    if name in _BY_NAME:
        return _BY_NAME[name]
    name = name.replace("PLUS", "+").replace("MINUS", "-")
    for base, number in (("RTMIN", SIGRTMIN), ("RTMAX", SIGRTMAX)):
        if name == base:
            return number
        rest = name[len(base) + 1:]
        if name.startswith(base) and name[len(base)] in "+-" and rest.isascii() and rest.isdigit():
            offset = int(name[len(base) + 1:])
            num = number + offset if name[len(base)] == "+" else number - offset
            if SIGRTMIN <= num <= SIGRTMAX:
                return num
    raise ValueError(f"unknown signal {text!r}")


DEFAULT_STOP_SIGNAL = int(signal.SIGTERM)


def signal_name(number: int) -> str:
    """The canonical "SIGxxx" name of a signal number (real-time ones as SIGRTMIN+N / SIGRTMAX-N,
    whichever is nearer, as the CRI's Signal enum spells them)."""
    for name, num in _BY_NAME.items():
        if num == number and name not in _ALIASES:
            return f"SIG{name}"
    if SIGRTMIN <= number <= SIGRTMAX:
        if number == SIGRTMIN:
            return "SIGRTMIN"
        if number == SIGRTMAX:
            return "SIGRTMAX"
        if number - SIGRTMIN <= 15:
            return f"SIGRTMIN+{number - SIGRTMIN}"
        return f"SIGRTMAX-{SIGRTMAX - number}"
    raise ValueError(f"no signal {number}")


# Second names of a number; the canonical one comes first in _BY_NAME's order otherwise.
_ALIASES = frozenset({"CLD", "IOT", "POLL"})
