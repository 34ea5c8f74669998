#!/usr/bin/env python3
"""Checks deploy/compose.yaml holds together, where CI has no container engine
to run it: the five services are the one image, each `cpm serve --target` of
its own service, read-only and non-root, probed on the health port and
serving metrics; Prometheus scrapes exactly those metrics ports and loads the
platform's alert rules; every metric the alert rules and the Grafana
dashboard use is one the platform records (services/runtime/src/metrics.rs);
every file a container mounts exists.

    python deploy/compose/test_compose.py      # exits non-zero on the first problem
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TARGETS = {"referral-intake", "risk-assessment", "mentor-matching", "contact-logging", "notifications"}
METRIC = re.compile(r"\bcpm_[a-z0-9_]+")


def fail(message: str) -> None:
    print(f"[compose] FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def say(message: str) -> None:
    print(f"[compose] {message}")


def recorded_metrics() -> set[str]:
    """The metric names the platform documents (and records) in runtime's metrics module."""
    text = (ROOT / "services/runtime/src/metrics.rs").read_text()
    doc = "\n".join(line for line in text.splitlines() if line.startswith("//!"))
    names = set(METRIC.findall(doc))
    if not names:
        fail("services/runtime/src/metrics.rs documents no metric")
    return names


def base_name(metric: str) -> str:
    """A histogram's series (`_bucket`, `_sum`, `_count`) belong to its name."""
    return re.sub(r"_(bucket|sum|count)$", "", metric)


def main() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]

    cpm = {name: spec for name, spec in services.items() if spec.get("image") == "cpm:local"}
    serving = {name: spec for name, spec in cpm.items() if spec.get("command", [])[:1] == ["serve"]}
    targets = {spec["command"][2] for spec in serving.values()}
    if targets != TARGETS or len(serving) != len(TARGETS):
        fail(f"the cpm containers serve {sorted(targets)}, not each of {sorted(TARGETS)} once")
    for name, spec in serving.items():
        if spec["command"] != ["serve", "--target", name]:
            fail(f"{name} runs {spec['command']}")
        if not spec.get("read_only") or spec.get("user") != "65532:65532":
            fail(f"{name} is not read-only as user 65532")
        env = spec["environment"]
        health = env["CPM__GRPC__HEALTH_LISTEN"].rsplit(":", 1)[1]
        probe = spec["healthcheck"]["test"]
        if probe[:3] != ["CMD", "/usr/local/bin/cpm", "health"] or not probe[-1].endswith(f":{health}"):
            fail(f"{name}'s healthcheck {probe} does not ask the health port {health}")
        if env.get("CPM__TELEMETRY__METRICS_LISTEN") != "0.0.0.0:9464":
            fail(f"{name} serves no metrics on 9464")
        if spec["depends_on"]["migrate"]["condition"] != "service_completed_successfully":
            fail(f"{name} does not wait for the migration")
    migrate = services["migrate"]
    if migrate["command"] != ["migrate", "--target", "all"]:
        fail(f"the migration runs {migrate['command']}")
    if migrate["build"]["dockerfile"] != "deploy/Dockerfile" or not (DEPLOY / "Dockerfile").exists():
        fail("the image is not built from deploy/Dockerfile")
    say(f"{len(serving)} services from the one image, each its own target, read-only, probed, with metrics")

    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                if not (DEPLOY / source).exists():
                    fail(f"{name} mounts {source}, which does not exist")
    say("every file a container mounts exists")

    prometheus = yaml.safe_load((DEPLOY / "compose/prometheus.yaml").read_text())
    scraped = {
        target
        for job in prometheus["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    if scraped != {f"{name}:9464" for name in TARGETS}:
        fail(f"Prometheus scrapes {sorted(scraped)}")
    if "/etc/prometheus/alerts.yml" not in prometheus.get("rule_files", []):
        fail("Prometheus does not load the alert rules")
    say("Prometheus scrapes the five metrics ports and loads the alert rules")

    known = recorded_metrics()
    alerts = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    for rule in rules:
        for metric in METRIC.findall(rule["expr"]):
            if base_name(metric) not in known:
                fail(f"alert {rule['alert']} uses {metric}, which the platform does not record")
    say(f"{len(rules)} alert rules use only metrics the platform records")

    dashboards = list((DEPLOY / "compose/grafana/dashboards").glob("*.json"))
    if not dashboards:
        fail("no Grafana dashboard")
    for dashboard in dashboards:
        text = json.dumps(json.loads(dashboard.read_text()))
        used = {base_name(metric) for metric in METRIC.findall(text)}
        unknown = used - known
        if unknown:
            fail(f"{dashboard.name} charts {sorted(unknown)}, which the platform does not record")
        if not used:
            fail(f"{dashboard.name} charts no platform metric")
    say("the Grafana dashboard charts only metrics the platform records")
    say("compose checks passed")


if __name__ == "__main__":
    main()
