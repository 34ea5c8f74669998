#!/usr/bin/env python3
"""The cpm chart's tests: lint, render, validate, and launch what it renders.

1. Lints the chart (strict) and renders it with the Helm v4 engine that PyPI's
   helm-python-sdk embeds (no helm binary), for the default values, the
   production-like ci/production-values.yaml and the all-in-one switch.
2. Validates every rendered object against the Kubernetes OpenAPI schemas,
   strictly (unknown fields are errors), with PyPI's kubernetes-validate.
3. Checks what the templates promise: Deployments that differ only in
   --target, probes on the plaintext health port (liveness never asks for
   readiness), the ConfigMap checksum rolling pods, NetworkPolicies that let
   only notifications out, values.schema.json refusing bad values.
4. Launches what it renders, twice (production-like values, then the same
   values in the development profile so `cpm demo` may mint tokens and
   auto-register its agency): the migration hook Job's container, then every
   Deployment's container, each as a local process with the rendered command,
   args and environment (envFrom resolved from the rendered ConfigMap and
   Secret, or from the "cluster's" Secrets the values name), and mounted
   volumes filled from their ConfigMaps and Secrets. It waits for each exactly
   as its readiness probe says (grpc.health.v1 on the probe's port, the
   probe's service), checks liveness and the TLS gRPC port, and in the second
   launch walks a referral through all five processes with `cpm demo`,
   through a small gRPC router that sends each service's calls to its
   Deployment over TLS, as an ingress would.

Translations from a cluster to one machine, and nothing else: the image's
/usr/local/bin/cpm is the binary given with --cpm; each pod's container ports
become free local ports (pods have network namespaces of their own; the
environment's `:<containerPort>` becomes `:<local port>` and 0.0.0.0 becomes
127.0.0.1); each volume's mountPath becomes a temporary directory (its path
prefix is replaced in the environment). Existing Secrets the values name are
created by the test: a scratch database and a private RabbitMQ vhost and user
stand in for the external PostgreSQL and RabbitMQ, a throwaway CA and
certificate for cert-manager's.

    python helm/cpm/tests/test_chart.py --cpm target/debug/cpm
    python helm/cpm/tests/test_chart.py --no-launch        # lint, render, validate only

The database server is CPM_TEST_DATABASE_URL (a superuser, as `cpm migrate`
needs) and the broker CPM_TEST_AMQP_URL's host, whose vhost and user are
created with rabbitmqctl. Exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import helm_python as helm
import kubernetes_validate
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

CHART = Path(__file__).resolve().parents[1]
KUBERNETES_VERSION = "1.30.0"
RELEASE, NAMESPACE = "cpm", "cpm"
# Custom resources the Kubernetes schemas do not hold.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Which Deployment serves which gRPC service, by target.
GRPC_SERVICES = {
    "cpm.v1.ReferralIntakeService": "referral-intake",
    "cpm.v1.RiskAssessmentService": "risk-assessment",
    "cpm.v1.MentorMatchingService": "mentor-matching",
    "cpm.v1.ContactLoggingService": "contact-logging",
    "cpm.v1.NotificationsService": "notifications",
}


def say(message: str) -> None:
    print(f"[chart] {message}", flush=True)


def fail(message: str) -> None:
    raise SystemExit(f"[chart] FAILED: {message}")


def merged(*layers: dict) -> dict:
    """Values layered as `helm -f a -f b` layers them: maps merge, the rest replaces."""
    result: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


def load_values(name: str) -> dict:
    return yaml.safe_load((CHART / name).read_text()) or {}


# ------------------------------------------------------------ render, lint ---


def render(values: dict, is_upgrade: bool = False) -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(
        values,
        name=RELEASE,
        namespace=NAMESPACE,
        is_install=not is_upgrade,
        is_upgrade=is_upgrade,
    )
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("metadata", {}).setdefault("namespace", NAMESPACE)
                objects.append(document)
    return objects


def lint(values: dict, label: str) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"error": e} for e in report["errors"]
    ]
    if problems:
        fail(f"helm lint --strict ({label}): {problems}")
    say(f"lint --strict passed ({label})")


def validate(objects: list[dict], label: str) -> None:
    """Every object against the Kubernetes schemas, strictly."""
    custom = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            custom += 1
            continue
        clean = copy.deepcopy(obj)
        clean["metadata"].pop("namespace", None)
        try:
            kubernetes_validate.validate(clean, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            fail(f"{obj['kind']} {obj['metadata']['name']} ({label}): {error.message} at {list(error.path)}")
    say(
        f"{len(objects) - custom} objects valid against Kubernetes {KUBERNETES_VERSION} (strict)"
        + (f"; {custom} custom resources checked by their own test" if custom else "")
        + f" ({label})"
    )


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    for obj in of_kind(objects, kind):
        if obj["metadata"]["name"] == name:
            return obj
    fail(f"no {kind} {name} rendered")
    raise AssertionError


def target_of(deployment: dict) -> str:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index("--target") + 1]


def check_shapes(objects: list[dict], values: dict, label: str) -> None:
    deployments = of_kind(objects, "Deployment")
    targets = sorted(target_of(d) for d in deployments)
    expected = sorted(GRPC_SERVICES.values())
    if targets != expected:
        fail(f"Deployments run {targets}, expected {expected} ({label})")

    # One image, one pod shape: only --target, the component label and the
    # component's own values may differ.
    def shape(deployment: dict) -> dict:
        pod = copy.deepcopy(deployment["spec"]["template"]["spec"])
        for key in ("affinity", "nodeSelector", "tolerations", "securityContext"):
            pod.pop(key, None)
        container = pod["containers"][0]
        container["args"] = [a for a in container["args"] if a != target_of(deployment)]
        for key in ("resources", "securityContext", "env"):
            container.pop(key, None)
        return pod

    shapes = {json.dumps(shape(d), sort_keys=True) for d in deployments}
    if len(shapes) != 1:
        fail(f"Deployments differ in more than --target ({label})")
    health_port = values["ports"]["health"]
    for deployment in deployments:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        readiness, liveness = container["readinessProbe"], container["livenessProbe"]
        if readiness["grpc"] != {"port": health_port, "service": ""}:
            fail(f"readiness probe {readiness} is not grpc on the health port")
        if liveness["grpc"] != {"port": health_port, "service": "liveness"}:
            fail(f"liveness probe {liveness} must ask for `liveness`, not readiness")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if ports["health"] != health_port:
            fail("the health port is not a container port")
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        if "checksum/config" not in annotations:
            fail("pods carry no checksum of their ConfigMap")
        security = container["securityContext"]
        if not security.get("readOnlyRootFilesystem") or security.get("allowPrivilegeEscalation"):
            fail(f"container security context {security} is not locked down")
    # Services never call each other: only notifications may leave the cluster.
    for policy in of_kind(objects, "NetworkPolicy"):
        component = policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        outside = [rule for rule in policy["spec"]["egress"] if any("ipBlock" in peer for peer in rule.get("to", []))]
        postgres_peers = values["networkPolicy"]["postgres"]["to"]
        outside = [rule for rule in outside if rule.get("to") != postgres_peers]
        if component == "notifications" and not outside:
            fail("notifications may not reach agencies' webhooks")
        if component != "notifications" and outside:
            fail(f"{component} may reach the outside: {outside}")
    jobs = of_kind(objects, "Job")
    if len(jobs) != 1 or "pre-install" not in jobs[0]["metadata"]["annotations"]["helm.sh/hook"]:
        fail("no pre-install/pre-upgrade migration Job")
    if jobs[0]["spec"]["template"]["spec"]["containers"][0]["args"][:1] != ["migrate"]:
        fail("the migration Job does not run `cpm migrate`")
    say(f"{len(deployments)} Deployments differ only in --target; probes, checksums, policies as promised ({label})")


def check_service_monitor(objects: list[dict]) -> None:
    """The one custom resource: it must scrape a port every Service has."""
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    if not monitors:
        fail("metrics and serviceMonitor are enabled but no ServiceMonitor rendered")
    for endpoint in monitors[0]["spec"]["endpoints"]:
        for service in of_kind(objects, "Service"):
            if endpoint["port"] not in {p["name"] for p in service["spec"]["ports"]}:
                fail(f"Service {service['metadata']['name']} has no port {endpoint['port']}")
    say("ServiceMonitor scrapes a port every Service has")


def check_values(defaults: dict) -> None:
    chart = helm.Chart.load(str(CHART))
    # The checksum rolls pods when the configuration changes, and only then.
    base = render(defaults)
    again = render(defaults)
    changed = render(merged(defaults, {"config": {"database": {"max_connections": 9}}}))
    checksum = lambda objs: of_kind(objs, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    if checksum(base) != checksum(again) or checksum(base) == checksum(changed):
        fail("checksum/config does not follow the ConfigMap")
    configmap = named(changed, "ConfigMap", RELEASE)["data"]
    if configmap.get("CPM__DATABASE__MAX_CONNECTIONS") != "9":
        fail(f"config.database.max_connections did not become CPM__DATABASE__MAX_CONNECTIONS: {configmap}")
    # values.schema.json refuses what the chart cannot honour.
    for bad in (
        {"profile": "staging"},
        {"tls": {"enabled": False}},
        {"config": {"grpc": {"listen": "0.0.0.0:1"}}},
        {"referralIntake": {"replicas": "two"}},
        {"podAntiAffinity": "sometimes"},
        {"unknownKey": True},
    ):
        try:
            chart.render(merged(defaults, bad), name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError:
            continue
        fail(f"values.schema.json accepted {bad}")
    say("checksum follows the configuration; values.schema.json refuses 6 kinds of bad values")


# ------------------------------------------------------------------ launch ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


class Cluster:
    """What the cluster holds besides the release: existing Secrets and
    ConfigMaps the values name, and the external PostgreSQL and RabbitMQ."""

    def __init__(self, workdir: Path, database_url: str, amqp_url: str):
        self.workdir = workdir
        self.suffix = secrets.token_hex(4)
        self.database = f"cpm_chart_{self.suffix}"
        admin = urllib.parse.urlsplit(database_url)
        self.admin_database_url = database_url
        self.database_url = urllib.parse.urlunsplit(
            (admin.scheme, admin.netloc, "/" + self.database, "sslmode=require", "")
        )
        broker = urllib.parse.urlsplit(amqp_url)
        self.vhost = self.user = f"cpm-chart-{self.suffix}"
        self.password = secrets.token_hex(12)
        self.amqp_url = f"amqp://{self.user}:{self.password}@{broker.hostname}:{broker.port or 5672}/{self.vhost}"
        self.master_key = base64.b64encode(os.urandom(32)).decode()
        self.hs256_secret = base64.b64encode(os.urandom(32)).decode()
        self.objects: dict[tuple[str, str], dict[str, str]] = {}

    def __enter__(self) -> "Cluster":
        run(["psql", "-X", "-q", self.admin_database_url, "-c", f'CREATE DATABASE "{self.database}"'])
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        run([ctl, "-q", "add_vhost", self.vhost])
        run([ctl, "-q", "add_user", self.user, self.password])
        run([ctl, "-q", "set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*"])
        self.make_certificates()
        return self

    def __exit__(self, *exc) -> None:
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        for command in (
            ["psql", "-X", "-q", self.admin_database_url, "-c", f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'],
            [ctl, "-q", "delete_vhost", self.vhost],
            [ctl, "-q", "delete_user", self.user],
        ):
            subprocess.run(command, capture_output=True)

    def make_certificates(self) -> None:
        """A throwaway CA and a server certificate naming every Service, as
        cert-manager would issue into the TLS Secret."""
        d = self.workdir / "pki"
        d.mkdir()
        names = [f"{RELEASE}-{target}" for target in GRPC_SERVICES.values()] + [f"{RELEASE}-all", "localhost"]
        san = ",".join([f"DNS:{n}" for n in names] + [f"DNS:{n}.{NAMESPACE}.svc" for n in names] + ["IP:127.0.0.1"])
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=cpm test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt")])
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
             "-keyout", str(d / "tls.key"), "-out", str(d / "tls.csr")])
        (d / "ext.cnf").write_text(f"subjectAltName={san}\n")
        run(["openssl", "x509", "-req", "-in", str(d / "tls.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "1", "-extfile", str(d / "ext.cnf"), "-out", str(d / "tls.crt")])
        self.ca_file = d / "ca.crt"

    def add_tls_secret(self, name: str) -> None:
        d = self.workdir / "pki"
        self.objects[("Secret", name)] = {"tls.crt": (d / "tls.crt").read_text(), "tls.key": (d / "tls.key").read_text()}

    def add_secret(self, name: str, data: dict[str, str]) -> None:
        self.objects[("Secret", name)] = data


def object_data(obj: dict) -> dict[str, str]:
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        data.update(obj.get("stringData") or {})
        return data
    return dict(obj.get("data") or {})


class Pod:
    """One rendered pod's container as a local process."""

    def __init__(self, name: str, pod_spec: dict, lookup, cpm: Path, workdir: Path):
        self.name = name
        self.spec = pod_spec
        self.container = pod_spec["containers"][0]
        self.ports = {p["containerPort"]: free_port() for p in self.container.get("ports", [])}
        self.named_ports = {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}
        self.root = workdir / name
        self.root.mkdir()
        (self.root / "cwd").mkdir()
        self.mounts = self.materialise_volumes(lookup)
        self.env = self.resolve_env(lookup)
        command = self.container["command"]
        if command[0] != "/usr/local/bin/cpm":
            fail(f"{name} runs {command[0]}, not the image's /usr/local/bin/cpm")
        self.argv = [str(cpm), *command[1:], *self.container.get("args", [])]
        self.process: subprocess.Popen | None = None
        self.log_path = self.root / "log"

    def materialise_volumes(self, lookup) -> dict[str, Path]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        mounts = {}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            target = self.root / "volumes" / mount["name"]
            target.mkdir(parents=True)
            if "configMap" in volume:
                files = lookup("ConfigMap", volume["configMap"]["name"])
            elif "secret" in volume:
                files = lookup("Secret", volume["secret"]["secretName"])
            elif "emptyDir" in volume:
                files = {}
            else:
                fail(f"{self.name}: volume kind {volume} not emulated")
            for key, content in files.items():
                (target / key).write_text(content)
            mounts[mount["mountPath"]] = target
        return mounts

    def local(self, value: str) -> str:
        """A container value as this machine sees it: mount paths and ports mapped."""
        for mount_path, directory in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                value = str(directory) + value[len(mount_path):]
                break
        for container_port, local_port in self.ports.items():
            value = value.replace(f":{container_port}", f":{local_port}")
        return value.replace("0.0.0.0:", "127.0.0.1:")

    def resolve_env(self, lookup) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root / "cwd")}
        for source in self.container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(lookup("ConfigMap", source["configMapRef"]["name"]))
            if "secretRef" in source:
                env.update(lookup("Secret", source["secretRef"]["name"]))
        for item in self.container.get("env", []):
            env[item["name"]] = item["value"]
        return {key: self.local(value) for key, value in env.items()}

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, env=self.env, cwd=self.root / "cwd",
            stdout=self.log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def probe_port(self, probe: dict) -> int:
        port = probe["grpc"]["port"]
        return self.ports[self.named_ports.get(port, port)]

    def probe(self, kind: str) -> bool:
        """One probe exactly as the rendered probe says: grpc.health.v1 Check
        of its service on its port, plaintext, within its timeout."""
        probe = self.container[kind]
        channel = grpc.insecure_channel(f"127.0.0.1:{self.probe_port(probe)}")
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")),
                timeout=probe.get("timeoutSeconds", 1),
            )
            return response.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False
        finally:
            channel.close()

    def await_ready(self, timeout: float) -> None:
        probe = self.container["readinessProbe"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                fail(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.probe("readinessProbe"):
                return
            time.sleep(min(probe.get("periodSeconds", 10), 1))
        fail(f"{self.name} never passed its readiness probe in {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


class Router(grpc.GenericRpcHandler):
    """Sends each cpm.v1 service's calls to the Deployment serving it over
    TLS, as an ingress routing by gRPC service would; bytes pass untouched."""

    def __init__(self, backends: dict[str, grpc.Channel]):
        self.backends = backends

    def service(self, details):
        service = details.method.split("/")[1]
        channel = self.backends.get(service)
        if channel is None:
            return None
        forward = channel.stream_stream(details.method)

        def handler(requests, context):
            metadata = [(k, v) for k, v in context.invocation_metadata() if not k.startswith(":")]
            call = forward(requests, metadata=metadata)
            try:
                # A server stream's headers go out before its first message,
                # as the backend sent them: the caller waits for them.
                context.send_initial_metadata(call.initial_metadata() or ())
                yield from call
            except grpc.RpcError:
                pass
            context.set_trailing_metadata(call.trailing_metadata() or ())
            if call.code() != grpc.StatusCode.OK:
                context.set_code(call.code())
                context.set_details(call.details() or "")

        return grpc.stream_stream_rpc_method_handler(handler)


def launch(label: str, objects: list[dict], cluster: Cluster, cpm: Path, walk: bool) -> None:
    rendered = {(o["kind"], o["metadata"]["name"]): object_data(o) for o in objects if o["kind"] in ("ConfigMap", "Secret")}

    def lookup(kind: str, name: str) -> dict[str, str]:
        found = rendered.get((kind, name), cluster.objects.get((kind, name)))
        if found is None:
            fail(f"the pods need {kind} {name}, which neither the chart nor the cluster holds")
        return found

    workdir = Path(tempfile.mkdtemp(prefix=f"cpm-chart-{label}-"))
    pods: list[Pod] = []
    try:
        job = of_kind(objects, "Job")[0]
        migrate = Pod("migrate", job["spec"]["template"]["spec"], lookup, cpm, workdir)
        migrate.start()
        if migrate.process.wait(timeout=job["spec"].get("activeDeadlineSeconds", 600)) != 0:
            fail(f"the migration Job failed:\n{migrate.log_tail()}")
        say(f"migration hook Job ran `{' '.join(migrate.container['args'])}` ({label})")

        for deployment in of_kind(objects, "Deployment"):
            pod = Pod(deployment["metadata"]["name"], deployment["spec"]["template"]["spec"], lookup, cpm, workdir)
            pod.start()
            pods.append(pod)
        for pod in pods:
            pod.await_ready(timeout=90)
            if not pod.probe("livenessProbe") or not pod.probe("startupProbe"):
                fail(f"{pod.name} is ready but fails its liveness or startup probe")
        say(f"{len(pods)} Deployments started and passed their readiness, liveness and startup probes ({label})")

        # What the ServiceMonitor scrapes: each pod's metrics port answers
        # Prometheus text with the platform's own metrics.
        for pod in pods:
            if "metrics" not in pod.named_ports:
                continue
            port = pod.ports[pod.named_ports["metrics"]]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
                text = answer.read().decode()
            if "cpm_outbox_backlog" not in text and "cpm_db_acquire_seconds" not in text:
                fail(f"{pod.name}'s metrics port does not serve the platform's metrics")
        say(f"every pod serves Prometheus metrics on its metrics port ({label})")

        tls = "CPM__GRPC__TLS_CERT_FILE" in pods[0].env
        for pod in pods:
            grpc_port = pod.ports[pod.named_ports["grpc"]]
            if tls:
                # The main port speaks TLS only: `cpm health` over TLS answers,
                # over plaintext it does not.
                command = [str(cpm), "health", "--endpoint", f"https://127.0.0.1:{grpc_port}",
                           "--tls-ca", str(cluster.ca_file), "--tls-domain", pod.name]
                over_tls = subprocess.run(command, capture_output=True, text=True, timeout=30)
                plain = subprocess.run([str(cpm), "health", "--endpoint", f"http://127.0.0.1:{grpc_port}"],
                                       capture_output=True, text=True, timeout=30)
                if over_tls.returncode != 0 or plain.returncode == 0:
                    fail(f"{pod.name}: TLS health {over_tls.returncode} {over_tls.stderr}, plaintext {plain.returncode}")
        if tls:
            say(f"every gRPC port serves TLS under the mounted certificate and refuses plaintext ({label})")

        if walk:
            walk_referral(pods, objects, cluster, cpm, tls)

        for pod in pods:
            code = pod.stop()
            if code != 0:
                fail(f"{pod.name} exited {code} on SIGTERM:\n{pod.log_tail()}")
            leftovers = list((pod.root / "cwd").iterdir())
            if leftovers:
                fail(f"{pod.name} wrote {leftovers}: the root filesystem is read-only in the pod")
        say(f"every process stopped gracefully on SIGTERM and wrote nothing outside its volumes ({label})")
    finally:
        for pod in pods:
            pod.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def walk_referral(pods: list[Pod], objects: list[dict], cluster: Cluster, cpm: Path, tls: bool) -> None:
    """`cpm demo` through a router to each service's own Deployment."""
    by_name = {pod.name: pod for pod in pods}
    backends = {}
    for grpc_service, target in GRPC_SERVICES.items():
        service = named(objects, "Service", f"{RELEASE}-{target}")
        selector = service["spec"]["selector"]
        deployment = next(
            d for d in of_kind(objects, "Deployment")
            if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())
        )
        pod = by_name[deployment["metadata"]["name"]]
        port = pod.ports[pod.named_ports[service["spec"]["ports"][0]["targetPort"]]]
        address = f"127.0.0.1:{port}"
        if tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=cluster.ca_file.read_bytes())
            backends[grpc_service] = grpc.secure_channel(
                address, credentials, options=[("grpc.ssl_target_name_override", service["metadata"]["name"])]
            )
        else:
            backends[grpc_service] = grpc.insecure_channel(address)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=32), handlers=[Router(backends)])
    router_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        env = dict(pods[0].env)
        demo = subprocess.run(
            [str(cpm), "demo", "--endpoint", f"http://127.0.0.1:{router_port}"],
            env=env, cwd=pods[0].root / "cwd", capture_output=True, text=True, timeout=300,
        )
        if demo.returncode != 0:
            logs = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in pods)
            fail(f"cpm demo failed:\n{demo.stdout}\n{demo.stderr}\n{logs}")
        last = demo.stdout.strip().splitlines()[-1]
        say(f"a referral walked through the five Deployments: {last}")
    finally:
        server.stop(grace=None)
        for channel in backends.values():
            channel.close()


# -------------------------------------------------------------------- main ---


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpm", type=Path, help="the cpm binary to launch (the image's /usr/local/bin/cpm)")
    parser.add_argument("--no-launch", action="store_true", help="lint, render and validate only")
    parser.add_argument("--database-url", default=os.environ.get("CPM_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1/postgres"))
    parser.add_argument("--amqp-url", default=os.environ.get("CPM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    args = parser.parse_args()

    defaults = load_values("values.yaml")
    production = merged(defaults, load_values("ci/production-values.yaml"))
    all_in_one = merged(defaults, {"allInOne": {"enabled": True}})

    for label, values, user_values in (
        ("default values", defaults, {}),
        ("ci/production-values.yaml", production, load_values("ci/production-values.yaml")),
        ("allInOne.enabled", all_in_one, {"allInOne": {"enabled": True}}),
    ):
        lint(user_values, label)
        objects = render(user_values)
        validate(objects, label)
        validate(render(user_values, is_upgrade=True), label + ", upgrade")
        if label == "allInOne.enabled":
            deployments = of_kind(objects, "Deployment")
            if [target_of(d) for d in deployments] != ["all"]:
                fail("allInOne renders more than one Deployment of --target all")
            say("allInOne renders one Deployment of `cpm serve --target all`")
        else:
            check_shapes(objects, values, label)
    check_service_monitor(render(load_values("ci/production-values.yaml")))
    check_values({})

    if args.no_launch:
        say("launch skipped (--no-launch)")
        return
    if args.cpm is None or not args.cpm.exists():
        fail("--cpm must name the built cpm binary")
    cpm = args.cpm.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="cpm-chart-"))
    try:
        with Cluster(workdir, args.database_url, args.amqp_url) as cluster:
            production_values = load_values("ci/production-values.yaml")
            cluster.add_tls_secret(production_values["tls"]["secretName"])
            cluster.add_secret(production_values["secrets"]["existingSecret"], {
                "CPM__DATABASE__URL": cluster.database_url,
                "CPM__AMQP__URL": cluster.amqp_url,
                "CPM__CRYPTO__MASTER_KEY": cluster.master_key,
                "CPM__AUTH__HS256_SECRET": cluster.hs256_secret,
            })
            # The test's broker has no TLS listener: the one named exception.
            broker = {"config": {"allow": {"plaintext_amqp": True}}}
            launch("production", render(merged(production_values, broker)), cluster, cpm, walk=False)
            # The same values in the development profile, whose demo mints
            # tokens with the shared key (so no issuer's JWKS) and registers
            # its own agency.
            development = merged(production_values, broker, {
                "profile": "development",
                "auth": {"jwks": ""},
                "config": {"referral_intake": {"auto_register_agencies": True}},
            })
            launch("walk", render(development), cluster, cpm, walk=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    say("all chart tests passed")


if __name__ == "__main__":
    main()
