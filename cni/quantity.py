"""Kubernetes resource quantities ("10M", "1Gi", "500k", "1e6", "1500m"), as the bandwidth
annotations kubernetes.io/ingress-bandwidth and kubernetes.io/egress-bandwidth carry them.

Grammar (k8s.io/apimachinery resource.Quantity): a signed decimal number followed by a decimal
SI suffix (m k M G T P E), a binary suffix (Ki Mi Gi Ti Pi Ei) or a decimal exponent (e3, E-2).
"1E" is one exa, "1E3" one thousand. Value() rounds up to an integer, and so does this.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[+-]?\d+))?$"
)
# Far beyond any rate; bounds the Decimal work a hostile annotation can cause.
_MAX_EXPONENT = 64


def parse_quantity(text: str) -> int:
    """A quantity as an integer, rounded up. ValueError names the text and the expected form."""
    if not isinstance(text, str):
        raise ValueError(f"invalid quantity {text!r}: not a string")
    m = _QUANTITY_RE.match(text)
    if m is None:
        raise ValueError(f"invalid quantity {text!r}: expected a number with an optional suffix "
                         "(k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, m) or exponent (e6)")
    try:
        num = Decimal(m.group("num"))
        if m.group("exp") is not None:
            exp = int(m.group("exp"))
            if abs(exp) > _MAX_EXPONENT:
                raise ValueError(f"invalid quantity {text!r}: exponent out of range")
            value = num.scaleb(exp)
        else:
            value = num * _SUFFIXES[m.group("suffix") or ""]
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {text!r}") from exc
    return int(value.to_integral_value(rounding=ROUND_CEILING))
