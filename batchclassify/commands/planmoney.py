"""What a plan says about money: requests, upload and credits as a range, and the budget's reach.

A plan knows some things exactly (the requests a run makes with ``--cache``, a fixed price)
and some only within bounds: without a cache file, identical images share a request only
when they are in flight together, so a run makes between ``requests`` and ``requests_max``
requests; time billing's price depends on processing times only the server will report.
Where it cannot know, it says a range, in the text and in ``--json``, and which end is an
estimate. The price comes from the billing rule's one table (``cost.py``).
"""

from __future__ import annotations

import math
from typing import Any

from ..cost import COLD_START_FACTOR, BillingRule


def credit_range(
    rule: BillingRule, *, requests: int, requests_max: int, latency: float
) -> tuple[float, float]:
    """The least and (an estimate of) the most a run's requests cost: the rule's floor for
    the fewest requests; for the most, the price at ``latency`` of processing, and one cold
    start per run (``COLD_START_FACTOR`` calls) when billed by time."""
    low = requests * rule.floor
    each = rule.credits_at(latency)
    high = requests_max * each
    if rule.by_time and requests_max:
        high += (COLD_START_FACTOR - 1) * each
    return low, max(low, high)


def money(
    rule: BillingRule,
    *,
    requests: int,
    requests_max: int,
    bytes_sent: int,
    bytes_sent_max: int,
    latency: float,
    max_credits: float | None,
) -> dict[str, Any]:
    """The plan's money, for ``--json``: the billing rule, the ranges, the budget's reach."""
    low, high = credit_range(rule, requests=requests, requests_max=requests_max, latency=latency)
    data: dict[str, Any] = {
        "billing": str(rule.kind),
        "requests_max": requests_max,
        "bytes_sent_max": bytes_sent_max,
        "credits_min": round(low, 6),
        "credits_max": round(high, 6),
        "credits_max_is_estimate": rule.by_time,
    }
    if max_credits is not None:
        # The most requests the budget pays for, at each request's least and likeliest price.
        each = rule.credits_at(latency)
        reach = requests_max if each == 0 else min(requests_max, math.floor(max_credits / each))
        data["max_credits"] = max_credits
        data["budget_requests"] = reach
        data["budget_covers_all"] = high <= max_credits
    return data


def money_lines(data: dict[str, Any], *, latency: float) -> list[str]:
    """The plan's money, in words."""
    low, high = data["credits_min"], data["credits_max"]
    kind = data["billing"]
    if low == high:
        cost = f"cost ({kind} billing, an estimate at its published price): {low:,.4f} credits"
    else:
        said = (
            f"the upper end an estimate at {latency:g} s a request (--latency) and one cold "
            "start; the server reports the real cost"
            if data["credits_max_is_estimate"]
            else "the upper end if identical images are not in flight together"
        )
        cost = f"cost ({kind} billing): {low:,.4f} to {high:,.4f} credits ({said})"
    lines = [cost]
    if "max_credits" in data:
        if data["budget_covers_all"]:
            lines.append(f"--max-credits {data['max_credits']:g} covers the whole run")
        else:
            left = data["requests_max"] - data["budget_requests"]
            lines.append(
                f"--max-credits {data['max_credits']:g} reaches about "
                f"{data['budget_requests']:,} requests; about {left:,} would be left for a "
                "rerun with a higher cap (in the order the sources list them)"
            )
    return lines
