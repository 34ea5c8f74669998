#!/usr/bin/env python3
"""An agency's client for the CPM referral API, in Python with grpcio.

It walks through what an agency's integration does, printing each step:

1. submits a referral with an idempotency key;
2. retries the same submission and sees it replayed (same referral, nothing new);
3. reads the referral back and lists the agency's referrals, page by page;
4. sends a bad request and reads the google.rpc.BadRequest field violations
   from the `grpc-status-details-bin` trailer;
5. reuses the idempotency key with a different body (INVALID_ARGUMENT on
   `idempotency_key`) and asks for an unknown referral (NOT_FOUND);
6. subscribes to the agency's notifications for a few seconds.

Stubs are generated at start from the repository's .proto files into a
temporary directory, so nothing generated is committed. Install the
dependencies with `pip install -r examples/python/requirements.txt`, then:

    TOKEN=$(cpm token --role referrer --agency agency-a)   # development only
    python examples/python/agency_client.py --endpoint http://127.0.0.1:50051 --token "$TOKEN"

In production, use `https://` (TLS; `--ca-file` for a private CA) and a token
from the programme's identity provider. Exits non-zero when a step does not
behave as the API promises.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import grpc_tools
from grpc_tools import protoc

# The repository's proto directory, two levels above this file.
DEFAULT_PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"


def load_stubs(proto_dir: Path, out_dir: Path):
    """Compiles cpm/v1/*.proto to Python modules in out_dir and imports them."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(
        str(path.relative_to(proto_dir)) for path in (proto_dir / "cpm" / "v1").glob("*.proto")
    )
    if not sources:
        sys.exit(f"no .proto files under {proto_dir / 'cpm' / 'v1'}")
    arguments = [
        "grpc_tools.protoc",
        f"--proto_path={proto_dir}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(arguments) != 0:
        sys.exit("protoc could not compile the .proto files")
    sys.path.insert(0, str(out_dir))
    names = ["common_pb2", "referral_intake_pb2", "referral_intake_pb2_grpc",
             "notifications_pb2", "notifications_pb2_grpc"]
    return {name: importlib.import_module(f"cpm.v1.{name}") for name in names}


def open_channel(endpoint: str, ca_file: str | None) -> grpc.Channel:
    """`http://host:port` is plaintext (development); `https://host:port` is TLS."""
    if endpoint.startswith("https://"):
        root_certificates = Path(ca_file).read_bytes() if ca_file else None
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(endpoint.removeprefix("https://"), credentials)
    return grpc.insecure_channel(endpoint.removeprefix("http://"))


def call_with_retry(method, request, metadata, attempts: int = 5):
    """Calls a unary method, retrying UNAVAILABLE and ABORTED (nothing was
    done either way) with exponential back-off and jitter. Safe for
    SubmitReferral because the idempotency key makes a retry return the
    first referral instead of creating a second."""
    for attempt in range(1, attempts + 1):
        try:
            return method(request, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)
            if error.code() not in retryable or attempt == attempts:
                raise
            delay = min(0.2 * 2 ** attempt, 5.0) * random.uniform(0.5, 1.0)
            print(f"  {error.code().name.lower()}, retrying in {delay:.1f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of a google.rpc.BadRequest carried in
    the `grpc-status-details-bin` trailer of a failed call."""
    from google.rpc import error_details_pb2

    try:
        from grpc_status import rpc_status
        status = rpc_status.from_call(error)
    except ImportError:
        # Without grpcio-status, decode the trailer by hand.
        from google.rpc import status_pb2
        status = None
        for key, value in error.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
    if status is None:
        return []
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
    return violations


def expect_error(call, code: grpc.StatusCode) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as error:
        if error.code() != code:
            sys.exit(f"expected {code.name}, got {error.code().name}: {error.details()}")
        return error
    sys.exit(f"expected {code.name}, but the call succeeded")


def fictional_referral(pb, area: str, key: str):
    """A referral for a made-up person; real code fills this from its case system."""
    common = pb["common_pb2"]
    intake = pb["referral_intake_pb2"]
    unique = uuid.uuid4().hex[:8]
    return intake.SubmitReferralRequest(
        idempotency_key=key,
        client=intake.ClientIdentity(
            given_name="Jordan",
            family_name=f"Example-{unique}",
            date_of_birth="1968-03-14",
            gender=common.GENDER_NON_BINARY,
            address="4 Fictional Close",
            area=area,
            phone="07700 900456",
            safe_contact_instructions="call after 10am; do not leave messages",
        ),
        referrer=intake.Referrer(
            name="Sam Caseworker",
            role=intake.REFERRER_ROLE_FRONTLINE,
            contact="sam.caseworker@agency.example",
        ),
        reason="isolated since bereavement; frequent calls to 999 at night",
        desired_outcomes="a routine and people to talk to",
        client_consented=True,
        vulnerabilities=[common.VULNERABILITY_BEREAVEMENT,
                         common.VULNERABILITY_VULNERABLE_AND_ISOLATED],
        emergency_calls_last_12_months=24,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:50051",
                        help="http://host:port (plaintext, development) or https://host:port (TLS)")
    parser.add_argument("--token", required=True,
                        help="a bearer token with role referrer and the agency_id claim")
    parser.add_argument("--ca-file", help="PEM roots for a TLS endpoint with a private CA")
    parser.add_argument("--proto-dir", type=Path, default=DEFAULT_PROTO_DIR)
    parser.add_argument("--area", default="Darlington")
    parser.add_argument("--subscribe-seconds", type=float, default=3.0)
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cpm-stubs-") as out_dir:
        pb = load_stubs(arguments.proto_dir, Path(out_dir))
        intake_pb = pb["referral_intake_pb2"]
        common = pb["common_pb2"]
        notifications_pb = pb["notifications_pb2"]
        metadata = [("authorization", f"Bearer {arguments.token}")]

        with open_channel(arguments.endpoint, arguments.ca_file) as channel:
            grpc.channel_ready_future(channel).result(timeout=15)
            intake = pb["referral_intake_pb2_grpc"].ReferralIntakeServiceStub(channel)
            notifications = pb["notifications_pb2_grpc"].NotificationsServiceStub(channel)
            status_name = common.ReferralStatus.Name

            # 1. Submit with an idempotency key the agency keeps with its case.
            key = f"example-{uuid.uuid4()}"
            request = fictional_referral(pb, arguments.area, key)
            first = call_with_retry(intake.SubmitReferral, request, metadata)
            referral_id = first.referral.referral_id
            print(f"submitted referral {referral_id} status {status_name(first.referral.status)} "
                  f"replayed={first.replayed}")
            if first.referral.earlier_referral_id:
                print(f"  the client was referred before: {first.referral.earlier_referral_id}")

            # 2. A retry (say, after a timeout) answers with the first referral.
            again = call_with_retry(intake.SubmitReferral, request, metadata)
            if again.referral.referral_id != referral_id or not again.replayed:
                sys.exit("a retry with the same idempotency key did not replay the first referral")
            print(f"retried with the same key: replayed={again.replayed} "
                  f"same referral {again.referral.referral_id}")

            # 3. Read it back (audited: it returns personal data) and list.
            got = intake.GetReferral(intake_pb.GetReferralRequest(referral_id=referral_id),
                                     metadata=metadata, timeout=30).referral
            print(f"read back referral {got.referral_id} status {status_name(got.status)} "
                  f"area {got.area}")
            listed, page_token, pages = [], "", 0
            while True:
                page = intake.ListReferrals(
                    intake_pb.ListReferralsRequest(page_size=50, page_token=page_token),
                    metadata=metadata, timeout=30)
                listed.extend(page.referrals)
                pages += 1
                page_token = page.next_page_token
                if not page_token:
                    break
            if referral_id not in {r.referral_id for r in listed}:
                sys.exit("the new referral is missing from ListReferrals")
            print(f"listed {len(listed)} referrals of agency {got.agency_id} in {pages} page(s), "
                  f"including ours")

            # 4. A bad request: every problem comes back at once, by field.
            bad = fictional_referral(pb, arguments.area, f"example-{uuid.uuid4()}")
            bad.client.date_of_birth = (datetime.date.today()
                                        + datetime.timedelta(days=30)).isoformat()
            bad.client_consented = False
            bad.reason = ""
            error = expect_error(lambda: intake.SubmitReferral(bad, metadata=metadata, timeout=30),
                                 grpc.StatusCode.INVALID_ARGUMENT)
            violations = field_violations(error)
            print(f"bad request rejected: {error.code().name} with {len(violations)} "
                  "field violations")
            for field, description in violations:
                print(f"  violation {field}: {description}")
            if not violations:
                sys.exit("no google.rpc.BadRequest in the grpc-status-details-bin trailer")

            # 5. The same key with a different body is a client bug, not a retry.
            changed = fictional_referral(pb, arguments.area, key)
            error = expect_error(
                lambda: intake.SubmitReferral(changed, metadata=metadata, timeout=30),
                grpc.StatusCode.INVALID_ARGUMENT)
            fields = [field for field, _ in field_violations(error)]
            print(f"same key, different body: {error.code().name} on {', '.join(fields)}")
            # Another agency's referral answers exactly as a missing one.
            error = expect_error(
                lambda: intake.GetReferral(
                    intake_pb.GetReferralRequest(referral_id=str(uuid.uuid4())),
                    metadata=metadata, timeout=30),
                grpc.StatusCode.NOT_FOUND)
            print(f"unknown or other agency's referral: {error.code().name}")

            # 6. Notifications: a stream from after_sequence, then live ones.
            # An agency stores the last sequence it handled and resumes there.
            last_sequence, received = 0, 0
            stream = notifications.Subscribe(
                notifications_pb.SubscribeRequest(after_sequence=last_sequence),
                metadata=metadata, timeout=arguments.subscribe_seconds)
            try:
                for message in stream:
                    notification = message.notification
                    received += 1
                    last_sequence = notification.sequence
                    print(f"  notification {notification.sequence}: referral "
                          f"{notification.referral_id} "
                          f"{notifications_pb.NotificationKind.Name(notification.kind)} "
                          f"{status_name(notification.status)}")
            except grpc.RpcError as error:
                # The deadline ends this demonstration's subscription; a real
                # client resubscribes after last_sequence (also on UNAVAILABLE).
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            print(f"subscribed for {arguments.subscribe_seconds:g}s: {received} notifications, "
                  f"resume after sequence {last_sequence}")
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
