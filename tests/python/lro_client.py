#!/usr/bin/env python3
"""Follow an orgauth job with Google's generic long-running-operations client.

org-server serves ``google.longrunning.Operations`` over its jobs, so a
client that already speaks LRO needs nothing orgauth-specific to follow one:
this script uses ``google.api_core.operations_v1.OperationsClient`` and the
``google.api_core.operation.Operation`` future from ``google-api-core[grpc]``
exactly as it would against a Google API. The only orgauth code it needs is
the ``Job`` message, to unpack ``Operation.metadata`` and ``response``; it
generates that from ``proto/orgauth`` with ``grpc_tools.protoc`` at start.
(``proto/google`` is left out: google-api-core brings its own
``google.longrunning`` and ``google.rpc`` modules, and the two copies of the
same files cannot share one descriptor pool.)

Given a job id (e.g. from UpdateOrg), it

1. calls GetOperation on ``operations/{job_id}``;
2. calls ListOperations on the collection ``operations`` with the filter
   ``org_id = "ORG"``;
3. wraps the operation in the generic future and waits for its result,
   which polls GetOperation until the operation is done;

then prints one JSON object on stdout::

    {"first": {...}, "listed": [...], "final": {...}, "result": {...}}

Exit status: 0 when the operation ended with a response, 1 when it ended
with an error, 3 on an RPC error or timeout. Notes go to stderr.

Usage::

    ORGAUTH_TOKEN=oat_… python lro_client.py --endpoint 127.0.0.1:50051 \\
        --org acme --job 01890a5d-ac96-774b-bcce-b302099a8057

Every call carries ``authorization: Bearer <token>`` as call metadata
(``--token`` or ``ORGAUTH_TOKEN``). Needs ``google-api-core[grpc]`` and
``grpcio-tools`` (see requirements.txt).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import grpc
from google.api_core import exceptions, operation
from google.api_core.operations_v1 import OperationsClient
from grpc_tools import protoc

# tests/python/lro_client.py -> <workspace>/proto
DEFAULT_PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"

EXIT_RESPONSE = 0
EXIT_ERROR = 1
EXIT_RPC_ERROR = 3


def generate_job_module(proto_root: Path, out_dir: Path) -> ModuleType:
    """Compiles orgauth's own .proto files into ``out_dir`` and imports the
    module that holds ``Job``."""
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    protos = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "orgauth").rglob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_root / 'orgauth'}")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("orgauth.org.v1.job_service_pb2")


def credentials(token: str) -> list[tuple[str, str]]:
    """Fresh call metadata for each call: OperationsClient appends its
    routing header to the list it is given."""
    return [("authorization", f"Bearer {token}")]


def job_json(job_pb2: ModuleType, job) -> dict:
    return {
        "id": job.id,
        "org_id": job.org_id,
        "state": job_pb2.JobState.Name(job.state),
        "processed": job.processed_members,
        "total": job.total_members,
        "unlinked": job.unlinked_members,
        "version": job.version,
    }


def operation_json(job_pb2: ModuleType, op) -> dict:
    """What the test checks of one google.longrunning.Operation."""
    summary = {
        "name": op.name,
        "done": op.done,
        "metadata_type_url": op.metadata.type_url,
        "result": op.WhichOneof("result"),
    }
    job = job_pb2.Job()
    if op.metadata.Unpack(job):
        summary["metadata"] = job_json(job_pb2, job)
    if op.HasField("response"):
        summary["response_type_url"] = op.response.type_url
    if op.HasField("error"):
        summary["error"] = {"code": op.error.code, "message": op.error.message}
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="org-server address, HOST:PORT (plaintext)")
    parser.add_argument("--org", required=True, help="the job's org, for the ListOperations filter")
    parser.add_argument("--job", required=True, help="the job's id")
    parser.add_argument("--token", default=os.environ.get("ORGAUTH_TOKEN"), help="bearer token (default: $ORGAUTH_TOKEN)")
    parser.add_argument("--proto-root", type=Path, default=DEFAULT_PROTO_ROOT, help="directory holding orgauth/**/*.proto")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the operation (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.token:
        print("pass --token or set ORGAUTH_TOKEN: every call needs a bearer token", file=sys.stderr)
        return EXIT_RPC_ERROR
    name = f"operations/{args.job}"
    with tempfile.TemporaryDirectory(prefix="orgauth-lro-") as out_dir:
        job_pb2 = generate_job_module(args.proto_root, Path(out_dir))
        with grpc.insecure_channel(args.endpoint) as channel:
            client = OperationsClient(channel)
            try:
                first = client.get_operation(name, metadata=credentials(args.token))
                listed = list(
                    client.list_operations("operations", f'org_id = "{args.org}"', metadata=credentials(args.token))
                )
                future = operation.Operation(
                    first,
                    refresh=lambda **_: client.get_operation(name, metadata=credentials(args.token)),
                    cancel=lambda **_: client.cancel_operation(name, metadata=credentials(args.token)),
                    result_type=job_pb2.Job,
                    metadata_type=job_pb2.Job,
                )
                try:
                    result = future.result(timeout=args.timeout)
                except exceptions.GoogleAPICallError as err:
                    # The operation ended with an error status: still a
                    # complete answer, reported below.
                    print(f"operation {name} ended with {err}", file=sys.stderr)
                    result = None
            except exceptions.GoogleAPICallError as err:
                print(f"RPC failed: {err}", file=sys.stderr)
                return EXIT_RPC_ERROR
            except TimeoutError:
                print(f"operation {name} not done within {args.timeout}s", file=sys.stderr)
                return EXIT_RPC_ERROR

            print(
                json.dumps(
                    {
                        "first": operation_json(job_pb2, first),
                        "listed": [operation_json(job_pb2, op) for op in listed],
                        "final": operation_json(job_pb2, future.operation),
                        "final_metadata": job_json(job_pb2, future.metadata) if future.metadata else None,
                        "result": job_json(job_pb2, result) if result is not None else None,
                    }
                ),
                flush=True,
            )
    return EXIT_RESPONSE if result is not None else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
