"""Prometheus metrics, one registry per app (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The counters, gauges and histograms vaxbot exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vaxbot_webhook_requests",
            "Webhook requests by platform and outcome",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "vaxbot_webhook_seconds",
            "Webhook request latency",
            ["platform"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0),
            registry=self.registry,
        )
        self.outbox_depth = Gauge("vaxbot_outbox_messages", "Outbox rows by status", ["status"], registry=self.registry)
        self.outbox_sent = Counter(
            "vaxbot_outbox_sent",
            "Messages delivered by the outbox",
            ["platform", "kind"],
            registry=self.registry,
        )
        self.send_failures = Counter(
            "vaxbot_outbox_send_failures",
            "Failed delivery attempts by platform and error code",
            ["platform", "code"],
            registry=self.registry,
        )
        self.token_refreshes = Counter(
            "vaxbot_access_token_refreshes", "Access-token fetches", ["platform"], registry=self.registry
        )
        self.api_errors = Counter(
            "vaxbot_platform_api_errors",
            "Platform API calls that failed, by code (response_signature_invalid deserves an alert)",
            ["platform", "code"],
            registry=self.registry,
        )
        self.handler_errors = Counter(
            "vaxbot_handler_errors", "Handlers that raised", ["platform"], registry=self.registry
        )

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
