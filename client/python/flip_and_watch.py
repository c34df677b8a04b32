#!/usr/bin/env python3
"""Turn custom SSO off for an org and watch the unlink job to its end.

An example of a Python client of orgauth built from ``proto/`` alone: no
generated code is checked in. At start the script compiles the .proto files
with ``grpc_tools.protoc`` into a temporary directory and imports the result.
(A real client would run the same protoc command once at build time and
import the generated package normally.)

It then

1. calls ``OrgService.UpdateOrg`` with ``allow_custom_sso = false`` and an
   update mask naming only that field, which returns at once with a job id;
2. follows the job with the server-streaming ``JobService.WatchJob``,
   printing one JSON line per message on stdout::

       {"version": 7, "state": "JOB_STATE_RUNNING", "processed": 1000, "total": 2000}

   If the stream breaks with UNAVAILABLE (say org-server restarts), it
   reconnects with ``since_version`` set to the last version seen, so no
   state is printed twice.

Exit status: 0 when the job SUCCEEDED, 1 when it ended otherwise (FAILED or
CANCELLED), 3 on an RPC error or timeout. Progress notes go to stderr.

Usage::

    ORGAUTH_TOKEN=oat_… python flip_and_watch.py --endpoint 127.0.0.1:50051 --org acme

Every call carries ``authorization: Bearer <token>`` (``--token`` or the
``ORGAUTH_TOKEN`` environment variable); a token of role admin, or of role
org covering the org, may flip it.

Needs ``grpcio`` and ``grpcio-tools`` (see requirements.txt).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc
from google.protobuf import field_mask_pb2
from grpc_tools import protoc

# client/python/flip_and_watch.py -> <workspace>/proto
DEFAULT_PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"

# WatchJob is reconnected this many times in a row at most.
MAX_RECONNECTS = 5

EXIT_SUCCEEDED = 0
EXIT_NOT_SUCCEEDED = 1
EXIT_RPC_ERROR = 3


@dataclass
class Generated:
    """The generated modules this client uses."""

    org_pb2: ModuleType
    org_grpc: ModuleType
    job_pb2: ModuleType
    job_grpc: ModuleType


def generate(proto_root: Path, out_dir: Path) -> Generated:
    """Compiles every orgauth .proto under ``proto_root`` into ``out_dir`` and imports
    the org and job modules.

    The well-known types (google/protobuf/*.proto) come from the copy bundled
    with grpc_tools, so no system protoc or include directory is needed.
    """
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    # orgauth's own protos only: proto/google/ holds wire-compatible copies of
    # Google's, which Python's googleapis-common-protos may already provide.
    protos = sorted(
        str(p.relative_to(proto_root)) for p in (proto_root / "orgauth").rglob("*.proto")
    )
    if not protos:
        raise SystemExit(f"no .proto files under {proto_root}")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")

    # The generated modules import each other as orgauth.org.v1.*, so the
    # output directory goes on the import path (as a namespace package).
    sys.path.insert(0, str(out_dir))
    return Generated(
        org_pb2=importlib.import_module("orgauth.org.v1.org_service_pb2"),
        org_grpc=importlib.import_module("orgauth.org.v1.org_service_pb2_grpc"),
        job_pb2=importlib.import_module("orgauth.org.v1.job_service_pb2"),
        job_grpc=importlib.import_module("orgauth.org.v1.job_service_pb2_grpc"),
    )


def credentials(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates us."""
    return (("authorization", f"Bearer {token}"),)


def disable_custom_sso(gen: Generated, channel: grpc.Channel, org_id: str, token: str, timeout: float) -> str:
    """Turns allow_custom_sso off for ``org_id`` and returns the job's id.

    Only the masked field changes; the request_id makes a retry of this very
    call return the same job instead of enqueuing another.
    """
    orgs = gen.org_grpc.OrgServiceStub(channel)
    request = gen.org_pb2.UpdateOrgRequest(
        org=gen.org_pb2.Org(id=org_id, allow_custom_sso=False),
        update_mask=field_mask_pb2.FieldMask(paths=["allow_custom_sso"]),
        request_id=str(uuid.uuid4()),
    )
    response = orgs.UpdateOrg(request, timeout=timeout, metadata=credentials(token))
    return response.job_id


def watch(gen: Generated, channel: grpc.Channel, job_id: str, token: str, deadline: float):
    """Yields each new state of the job until the stream ends after its
    terminal state.

    Reconnects on UNAVAILABLE from the last version seen; any other error,
    or running past ``deadline`` (a time.monotonic() value), raises
    grpc.RpcError.
    """
    jobs = gen.job_grpc.JobServiceStub(channel)
    last_version = 0
    reconnects = 0
    while True:
        request = gen.job_pb2.WatchJobRequest(job_id=job_id, since_version=last_version)
        try:
            stream = jobs.WatchJob(
                request,
                timeout=max(deadline - time.monotonic(), 0.001),
                metadata=credentials(token),
            )
            for message in stream:
                job = message.job
                if job.version <= last_version:
                    continue  # already seen before a reconnect
                last_version = job.version
                reconnects = 0
                yield job
            return  # the server ends the stream (OK) after the terminal state
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or reconnects >= MAX_RECONNECTS:
                raise
            reconnects += 1
            print(f"watch interrupted ({err.details()}); reconnecting", file=sys.stderr)
            time.sleep(min(0.2 * 2**reconnects, 2.0))


def state_line(gen: Generated, job) -> str:
    """One JSON line describing a job state."""
    return json.dumps(
        {
            "version": job.version,
            "state": gen.job_pb2.JobState.Name(job.state),
            "processed": job.processed_members,
            "total": job.total_members,
        }
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="org-server address, HOST:PORT (plaintext)")
    parser.add_argument("--org", required=True, help="id of the org whose custom SSO is turned off")
    parser.add_argument(
        "--token",
        default=os.environ.get("ORGAUTH_TOKEN"),
        help="bearer token (default: $ORGAUTH_TOKEN)",
    )
    parser.add_argument(
        "--proto-root",
        type=Path,
        default=DEFAULT_PROTO_ROOT,
        help="directory holding orgauth/**/*.proto (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the job to end (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.token:
        print("pass --token or set ORGAUTH_TOKEN: every call needs a bearer token", file=sys.stderr)
        return EXIT_RPC_ERROR
    deadline = time.monotonic() + args.timeout
    with tempfile.TemporaryDirectory(prefix="orgauth-py-") as out_dir:
        gen = generate(args.proto_root, Path(out_dir))
        with grpc.insecure_channel(args.endpoint) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=min(args.timeout, 20.0))
                job_id = disable_custom_sso(gen, channel, args.org, args.token, timeout=20.0)
                if not job_id:
                    print("UpdateOrg returned no job: custom SSO was already off", file=sys.stderr)
                    return EXIT_NOT_SUCCEEDED
                print(f"job {job_id} enqueued; watching", file=sys.stderr)
                last = None
                for job in watch(gen, channel, job_id, args.token, deadline):
                    print(state_line(gen, job), flush=True)
                    last = job
            except grpc.FutureTimeoutError:
                print(f"could not connect to {args.endpoint}", file=sys.stderr)
                return EXIT_RPC_ERROR
            except grpc.RpcError as err:
                print(f"RPC failed: {err.code().name}: {err.details()}", file=sys.stderr)
                return EXIT_RPC_ERROR

    if last is None:
        print("WatchJob ended without sending a state", file=sys.stderr)
        return EXIT_NOT_SUCCEEDED
    state = gen.job_pb2.JobState.Name(last.state)
    print(f"job {job_id} ended {state}: {last.processed_members}/{last.total_members} processed"
          + (f", last error: {last.last_error}" if last.last_error else ""), file=sys.stderr)
    return EXIT_SUCCEEDED if last.state == gen.job_pb2.JOB_STATE_SUCCEEDED else EXIT_NOT_SUCCEEDED


if __name__ == "__main__":
    sys.exit(main())
