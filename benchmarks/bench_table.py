"""The benchmarks' shared record of one measured figure, its target and its verdict."""

from __future__ import annotations


def check(checks: list[dict], metric: str, value: float, unit: str, target: str,
          ok: bool | None) -> str:
    """Record one measured figure; ``ok`` None means for information (no target)."""
    verdict = "info" if ok is None else ("PASS" if ok else "FAIL")
    checks.append({"metric": metric, "value": value, "unit": unit, "target": target,
                   "result": verdict})
    return f"{value:.4g} {unit}".rstrip() + (f"  [{verdict}: {target}]" if ok is not None
                                              else "")
