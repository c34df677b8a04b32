#!/usr/bin/env bash
# The main job, end to end on embedded SQLite:
#   1. builds the release binaries,
#   2. issues bearer tokens (an admin one for orgctl, a service one for
#      org-server's calls to Auth) and starts auth-server and org-server as
#      real processes on free ports, with authentication on,
#   3. creates a demo org that allows custom SSO, adds MEMBERS members and
#      links each one's custom SSO in Auth,
#   4. flips allow_custom_sso off with UpdateOrg (its latency is printed),
#   5. watches the unlink job live to completion,
#   6. checks that Auth has no SSO connection left for the org.
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

MEMBERS="${MEMBERS:-30000}"
ORG="${ORG:-demo}"

echo "==> building release binaries"
cargo build --release --quiet -p auth-server -p org-server -p orgauth-client
bin="$PWD/target/release"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME ARGS...: runs a server in the background and sets $addr to
# the address from its `listening ADDR` line. Not called in $(...): a
# subshell would lose the pid that cleanup needs.
start() {
    local name="$1"; shift
    "$bin/$name" "$@" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=("$!")
    for _ in $(seq 1 300); do
        addr="$(sed -n 's/^listening //p' "$work/$name.out" 2>/dev/null | head -n 1)"
        if [ -n "$addr" ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "error: $name did not start; its log:" >&2
    cat "$work/$name.log" >&2
    return 1
}

echo "==> issuing tokens into $work/tokens (only their hashes are stored)"
tokens="$work/tokens"
ORGCTL_TOKEN="$("$bin/orgctl" token issue --name demo-admin --role admin --append "$tokens")"
export ORGCTL_TOKEN
(umask 077 && "$bin/orgctl" token issue --name org-server --role service --append "$tokens" >"$work/service-token")

echo "==> starting auth-server and org-server (data in $work)"
start auth-server --listen 127.0.0.1:0 --database "sqlite://$work/auth.db" --tokens-file "$tokens"
auth_addr="$addr"
start org-server --listen 127.0.0.1:0 --database "sqlite://$work/org.db" \
    --auth-endpoint "http://$auth_addr" --workers 4 \
    --tokens-file "$tokens" --auth-token-file "$work/service-token" \
    --metrics-listen 127.0.0.1:0
org_addr="$addr"
# The `metrics ADDR` line follows the `listening` one.
for _ in $(seq 1 50); do
    metrics_addr="$(sed -n 's/^metrics //p' "$work/org-server.out" | head -n 1)"
    [ -n "$metrics_addr" ] && break
    sleep 0.1
done
echo "    auth-server on $auth_addr, org-server on $org_addr (metrics: http://$metrics_addr/metrics)"
export ORGCTL_ENDPOINT="http://$org_addr" ORGCTL_AUTH_ENDPOINT="http://$auth_addr"
orgctl() { "$bin/orgctl" "$@"; }

echo "==> creating org '$ORG' with custom SSO allowed (a job sets Auth's policy)"
orgctl org create --id "$ORG" --display-name "Demo Org" --allow-custom-sso true --watch

echo "==> adding $MEMBERS members and linking each one's custom SSO in Auth"
orgctl member seed "$ORG" --count "$MEMBERS" --link
linked="$(orgctl auth connections "$ORG" --count)"
echo "    Auth holds $linked SSO connections for '$ORG'"

echo "==> turning allow_custom_sso off: UpdateOrg returns at once, a worker unlinks"
orgctl org update "$ORG" --allow-custom-sso false --watch

left="$(orgctl auth connections "$ORG" --count)"
echo "==> Auth holds $left SSO connections for '$ORG' after the job"
if [ "$left" != "0" ]; then
    echo "error: expected no connection left" >&2
    exit 1
fi
echo "==> org-server's metrics after the job (http://$metrics_addr/metrics):"
python3 - "http://$metrics_addr/metrics" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
wanted = ("orgauth_members_unlinked_total", "orgauth_jobs_finished_total",
          "orgauth_unlink_batch_duration_seconds_count", "orgauth_job_queue_depth",
          'grpc_server_handled_total{grpc_service="orgauth.org.v1.OrgService",grpc_method="UpdateOrg"')
for line in text.splitlines():
    if line.startswith(wanted):
        print("    " + line)
PY
echo "==> done: every member's custom SSO connection was unlinked"
