"""What a request costs: Roboflow's billing rule for each kind of endpoint, in one table.

``RULES`` is the one home of every billing rule: the client prices each answer with the rule
of the endpoint in use, the budget (``--max-credits``) and ``plan`` estimate with it, and
docs/cost.md shows it (a test checks the page against this table). Roboflow's serverless (v2)
servers time each request and say so in the answer's headers; the other endpoints bill a
fixed price per inference or image and send no cost header, so their price is the published
rule's, an estimate of what the invoice will say.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple
from urllib.parse import urlsplit

#: Seconds the server spent on the request, as a decimal number ("0.0421").
PROCESSING_TIME_HEADER = "X-Processing-Time"
#: Seconds spent on a remote model server; when present, it is what is billed.
REMOTE_PROCESSING_TIME_HEADER = "X-Remote-Processing-Time"
#: "true" when the request had to load the model first (a cold start).
COLD_START_HEADER = "X-Model-Cold-Start"
#: Serverless billing: every request counts at least this many milliseconds...
MIN_BILLED_MS = 100.0
#: ...and this many billed milliseconds make one credit.
MS_PER_CREDIT = 500_000.0
#: A cold start (the model loaded for the request) costs about this many warm calls.
COLD_START_FACTOR = 10.0
#: Where the rules come from.
PRICING_SOURCE = "Roboflow's pricing docs (2026; https://roboflow.com/pricing)"


class Billing(StrEnum):
    """The kinds of endpoint Roboflow bills differently (``--billing``)."""

    SERVERLESS = "serverless"
    HOSTED_V1 = "hosted-v1"
    SELF_HOSTED = "self-hosted"
    UPLOAD = "upload"


@dataclass(frozen=True, kw_only=True)
class BillingRule:
    """How one kind of endpoint is billed. ``per_unit``: a fixed price per request (per
    inference, per image); ``None``: priced by the processing time the server reports."""

    kind: Billing
    endpoint: str
    """Which endpoint, as people know it."""
    billed: str
    """The rule, in words (docs/cost.md's table)."""
    per_unit: float | None
    headers: str
    """The cost headers its answers carry."""

    @property
    def by_time(self) -> bool:
        return self.per_unit is None

    @property
    def floor(self) -> float:
        """The least one request costs."""
        return MIN_BILLED_MS / MS_PER_CREDIT if self.per_unit is None else self.per_unit

    @property
    def prior(self) -> float:
        """What one request is reckoned at before any answer said what requests cost: the
        price, or for time billing a cold start of a minimum-length call."""
        return COLD_START_FACTOR * self.floor if self.per_unit is None else self.per_unit

    def credits(self, cost: Cost) -> float | None:
        """What one answered request cost under this rule; ``None``: billed by time, and the
        server reported no time (the cost cannot be read)."""
        if self.per_unit is not None:
            return self.per_unit
        if cost.remote_ms is not None:
            return (MIN_BILLED_MS + cost.remote_ms) / MS_PER_CREDIT
        if cost.server_ms is None:
            return None
        return max(cost.server_ms, MIN_BILLED_MS) / MS_PER_CREDIT

    def credits_at(self, seconds: float) -> float:
        """What a request taking ``seconds`` of processing costs (estimates: ``plan``)."""
        return self.credits(Cost(seconds * 1000.0, None)) or 0.0


#: Every billing rule, the one table (docs/cost.md shows it; a test compares the two).
RULES: dict[Billing, BillingRule] = {
    rule.kind: rule
    for rule in (
        BillingRule(
            kind=Billing.SERVERLESS,
            endpoint="serverless v2 (`serverless.roboflow.com`, the default)",
            billed="per request: max(X-Processing-Time, 100 ms) / 500,000 ms; with "
            "X-Remote-Processing-Time, (100 ms + it) / 500,000 ms; a cold start ~10x a warm call",
            per_unit=None,
            headers="X-Processing-Time, X-Remote-Processing-Time, X-Model-Cold-Start",
        ),
        BillingRule(
            kind=Billing.HOSTED_V1,
            endpoint="hosted v1 (`classify.roboflow.com`, legacy)",
            billed="per inference: 1 credit per 1,000",
            per_unit=1 / 1_000,
            headers="none",
        ),
        BillingRule(
            kind=Billing.SELF_HOSTED,
            endpoint="self-hosted inference server, Roboflow weights",
            billed="per image: 1 credit per 3,000",
            per_unit=1 / 3_000,
            headers="none",
        ),
        BillingRule(
            kind=Billing.UPLOAD,
            endpoint="dataset uploads (`api.roboflow.com`)",
            billed="per image: 1 credit per 10,000",
            per_unit=1 / 10_000,
            headers="none",
        ),
    )
}
SERVERLESS = RULES[Billing.SERVERLESS]
#: Hosts of the hosted v1 ("legacy") endpoints.
_HOSTED_V1_HOSTS = frozenset(
    {"classify.roboflow.com", "detect.roboflow.com", "outline.roboflow.com"}
)


def rule_for_url(api_url: str, billing: Billing | str | None = None) -> BillingRule:
    """The rule of the endpoint at ``api_url``, or of ``billing`` when given (``--billing``):
    Roboflow's legacy hosts are hosted v1, any other ``roboflow.com`` host serverless, any
    other server (``local`` too) a self-hosted inference server."""
    if billing is not None:
        return RULES[Billing(billing)]
    host = (urlsplit(api_url).hostname or "").lower()
    if host in _HOSTED_V1_HOSTS:
        return RULES[Billing.HOSTED_V1]
    if host == "roboflow.com" or host.endswith(".roboflow.com"):
        return SERVERLESS
    return RULES[Billing.SELF_HOSTED]


class Cost(NamedTuple):
    """What an answer's headers say it cost; ``None`` for what is absent or unreadable."""

    server_ms: float | None
    cold_start: bool | None
    remote_ms: float | None = None


def _ms(raw: str | None) -> float | None:
    """Seconds as the header writes them, in milliseconds; a value that is no finite,
    non-negative number is not trusted."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return round(seconds * 1000.0, 3) if math.isfinite(seconds) and seconds >= 0 else None


def read_cost_headers(headers: Mapping[str, str]) -> Cost:
    """The cost an answer's headers report (``None`` fields for what is absent)."""
    cold = headers.get(COLD_START_HEADER)
    return Cost(
        _ms(headers.get(PROCESSING_TIME_HEADER)),
        None if cold is None else cold.strip().lower() == "true",
        _ms(headers.get(REMOTE_PROCESSING_TIME_HEADER)),
    )


def cost_text(
    *,
    credits: float,
    costed: int,
    uncosted: int = 0,
    billing: str | None = None,
    max_credits: float | None = None,
    spent: float | None = None,
) -> list[str]:
    """What a job (or run so far) cost, in words, for the summary and ``status``: the rule it
    was priced by, whether the server reported it or it is the rule's estimate, the requests
    whose cost could not be read, and ``--max-credits``'s spent and left."""
    lines = []
    rule = RULES[Billing(billing)] if billing in set(Billing) else SERVERLESS
    if costed:
        how = (
            "as the server reported them"
            if rule.by_time
            else "an estimate: the server reports no cost, this is the published price"
        )
        lines.append(
            f"cost: {credits:,.4f} credits for {costed:,} requests, {how} "
            f"({rule.kind} billing: {rule.billed})"
        )
    if uncosted:
        lines.append(
            f"cost not read: {uncosted:,} requests answered without a processing time "
            f"({rule.kind} billing needs it): not in the cost above"
        )
    if max_credits is not None:
        used = credits if spent is None else spent
        lines.append(
            f"budget: {used:,.4f} of --max-credits {max_credits:g} spent, "
            f"{max(0.0, max_credits - used):,.4f} left"
        )
    return lines
