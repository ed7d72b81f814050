"""The overall budget a search must meet: FLOPs, parameters, peak memory or latency, as a
ratio of the original network or an absolute value.

`Target.parse("flops=0.5")` keeps at most half the original FLOPs; `params=120000` or
`params=120k` is an absolute cap; `memory=2MB`; `latency=3ms` is absolute (milliseconds),
`latency=0.6` a ratio of the measured original. Values up to 1 (or written with `%`) are
ratios, larger ones absolute."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .base import SearchError

KINDS = ("flops", "params", "memory", "latency")
RESOURCE_KEYS = {"flops": "flops", "params": "params", "memory": "memory_bytes", "latency": "latency_ms"}
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "kb": 1024.0, "mb": 1024.0**2, "gb": 1024.0**3, "b": 1.0, "ms": 1.0}
LATENCY_SLACK = 0.05
"""How far over a latency target a measurement may be and still count as timing noise."""
_VALUE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """A budget on one resource: `value` is a fraction of the original (`absolute=False`) or
    an absolute amount (MACs, parameters, bytes, milliseconds)."""

    kind: str
    value: float
    absolute: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SearchError(f"unknown target {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if not math.isfinite(self.value):
            raise SearchError(f"target {self.kind} must be a finite number, got {self.value}")
        if not self.value > 0:
            raise SearchError(f"target {self.kind} must be positive, got {self.value}")
        if not self.absolute and self.value > 1.0:
            raise SearchError(f"target ratio {self.kind}={self.value} must be at most 1 (of the original)")

    @property
    def resource_key(self) -> str:
        """The key of this resource in `SearchSpace.resources()` and in `Result` fields."""
        return RESOURCE_KEYS[self.kind]

    def budget(self, original: float) -> float:
        """The absolute amount of the resource a network may use, given the original's."""
        return float(self.value) if self.absolute else float(self.value) * float(original)

    def describe(self) -> str:
        """Short human form, e.g. `flops<=50%` or `latency<=3.0ms`."""
        if not self.absolute:
            return f"{self.kind}<={self.value * 100:g}%"
        unit = {"latency": "ms", "memory": "B"}.get(self.kind, "")
        return f"{self.kind}<={self.value:g}{unit}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def measured_miss(self, before_ms: float, after_ms: float, predicted_ms: float, runtime: str) -> str | None:
        """For a latency target: a one-line warning when the returned network, measured, runs
        over the target by more than timing noise (`LATENCY_SLACK`), with the numbers; else None.
        A ratio target is a fraction of the unpruned network measured beside it (`before_ms`)."""
        if self.kind != "latency":
            return None
        limit = self.value if self.absolute else self.value * before_ms
        if after_ms <= limit * (1 + LATENCY_SLACK):
            return None
        of = "" if self.absolute else f", {self.value:g} of the unpruned network's {before_ms:.3f} ms"
        return (
            f"the returned network measures {after_ms:.3f} ms in {runtime}, over the latency target "
            f"({limit:.3f} ms{of}); the lookup table predicted {predicted_ms:.3f} ms: give a tighter "
            "target to meet it"
        )

    @classmethod
    def parse(cls, text: str) -> Target:
        """`KIND=VALUE` → Target; VALUE is a ratio (`0.5`, `50%`) or absolute (`120000`, `1.2M`, `2MB`, `3ms`)."""
        kind, sep, raw = str(text).partition("=")
        kind = kind.strip().lower()
        if not sep or not raw.strip():
            raise SearchError(f"target must look like KIND=VALUE (e.g. flops=0.5), got {text!r}")
        m = _VALUE.match(raw)
        if not m:
            raise SearchError(f"cannot read target value {raw.strip()!r} (e.g. 0.5, 50%, 120k, 3ms)")
        number, suffix = float(m.group(1)), m.group(2).lower()
        if suffix == "%":
            return cls(kind, number / 100.0, absolute=False)
        if suffix not in _SUFFIX:
            raise SearchError(f"unknown unit {suffix!r} in target {text!r}")
        if suffix == "ms" and kind != "latency":
            raise SearchError(f"'ms' only applies to latency targets, got {text!r}")
        if suffix or (kind == "latency" and number > 1.0):
            return cls(kind, number * _SUFFIX[suffix], absolute=True)
        return cls(kind, number, absolute=number > 1.0)

    @classmethod
    def from_value(cls, spec: Target | str | Mapping[str, Any]) -> Target:
        """A Target from itself, a `KIND=VALUE` string, `{"flops": 0.5}` or
        `{"kind": "flops", "value": 0.5, "absolute": false}`."""
        if isinstance(spec, Target):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, Mapping):
            if "kind" in spec:
                return cls(str(spec["kind"]), float(spec["value"]), bool(spec.get("absolute", False)))
            keys = [k for k in spec if k in KINDS]
            if len(keys) != 1 or len(spec) != 1:
                raise SearchError(f"target needs exactly one of {', '.join(KINDS)}, got {dict(spec)}")
            value = spec[keys[0]]
            return cls.parse(f"{keys[0]}={value}")
        raise SearchError(f"cannot read a target from {spec!r}")
