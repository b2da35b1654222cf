"""Prometheus metrics for one process: requests by route template, latency, audit volume, chain head."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sbt_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram(
            "sbt_request_duration_seconds", "Request latency", ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.audit_events = Gauge("sbt_audit_events_written_total",
                                  "Audit events this process has committed", registry=self.registry)
        self.chain_head = Gauge("sbt_audit_chain_head_seq", "Latest audit seq seen", registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
