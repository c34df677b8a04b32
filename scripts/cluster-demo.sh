#!/usr/bin/env bash
# The cluster recipe of docs/cluster.md, run end to end on this machine:
#   1. builds the release binaries,
#   2. starts a throw-away PostgreSQL (Debian's postgresql package; as the
#      `postgres` user when run as root, since initdb refuses root) with
#      one database per service,
#   3. starts two auth-server and two org-server replicas on it,
#   4. creates an org of MEMBERS linked members through replica A,
#   5. flips allow_custom_sso off through replica B and watches the job
#      through replica A (whichever replica's worker runs it),
#   6. kills replica A with SIGKILL and checks that B still serves the org
#      and the finished job,
#   7. checks that Auth has no SSO connection left for the org.
# Everything lives in a temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

MEMBERS="${MEMBERS:-20000}"
ORG="${ORG:-acme}"

pg_bin="${ORGAUTH_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "error: PostgreSQL's binaries were not found (apt-get install -y postgresql," >&2
    echo "       or set ORGAUTH_PG_BIN to the directory holding initdb)" >&2
    exit 1
fi

echo "==> building release binaries"
cargo build --release --quiet -p auth-server -p org-server -p orgauth-client
bin="$PWD/target/release"

work="$(mktemp -d)"
chmod 755 "$work"
pids=()
# as_pg CMD...: PostgreSQL's tools, as the postgres user when we are root.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    as_pg "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# start NAME LOG ARGS...: runs a server in the background and sets $addr
# and $pid to its address (from its `listening ADDR` line) and process.
start() {
    local name="$1" log="$2"; shift 2
    "$bin/$name" "$@" >"$work/$log.out" 2>"$work/$log.log" &
    pid="$!"
    pids+=("$pid")
    for _ in $(seq 1 300); do
        addr="$(sed -n 's/^listening //p' "$work/$log.out" 2>/dev/null | head -n 1)"
        if [ -n "$addr" ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "error: $log did not start; its log:" >&2
    cat "$work/$log.log" >&2
    return 1
}

echo "==> postgres: a throw-away server in $work/pg"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$work/pg"
if [ "$(id -u)" = 0 ]; then chown postgres "$work/pg"; fi
as_pg "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w \
    -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
for db in orgauth_org orgauth_auth; do
    "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
done
org_db="postgres://postgres@127.0.0.1:$port/orgauth_org"
auth_db="postgres://postgres@127.0.0.1:$port/orgauth_auth"

echo "==> issuing tokens (one tokens file for every replica)"
tokens="$work/tokens"
ORGCTL_TOKEN="$("$bin/orgctl" token issue --name demo-admin --role admin --append "$tokens")"
export ORGCTL_TOKEN
(umask 077 && "$bin/orgctl" token issue --name org-server --role service --append "$tokens" >"$work/service-token")

echo "==> auth-server x 2 on $auth_db"
start auth-server auth-a --listen 127.0.0.1:0 --database "$auth_db" --tokens-file "$tokens"
auth_a="$addr"
start auth-server auth-b --listen 127.0.0.1:0 --database "$auth_db" --tokens-file "$tokens"
auth_b="$addr"

echo "==> org-server x 2 on $org_db"
start org-server org-a --listen 127.0.0.1:0 --database "$org_db" \
    --auth-endpoint "http://$auth_a" --auth-token-file "$work/service-token" --tokens-file "$tokens"
org_a="$addr" pid_a="$pid"
start org-server org-b --listen 127.0.0.1:0 --database "$org_db" \
    --auth-endpoint "http://$auth_b" --auth-token-file "$work/service-token" --tokens-file "$tokens"
org_b="$addr"
echo "    auth-server on $auth_a and $auth_b, org-server A on $org_a, B on $org_b"
export ORGCTL_AUTH_ENDPOINT="http://$auth_a"
on_a() { "$bin/orgctl" --endpoint "http://$org_a" "$@"; }
on_b() { "$bin/orgctl" --endpoint "http://$org_b" "$@"; }

echo "==> through A: org '$ORG' with custom SSO allowed and $MEMBERS linked members"
on_a org create --id "$ORG" --display-name "Acme" --allow-custom-sso true --watch >/dev/null
on_a member seed "$ORG" --count "$MEMBERS" --link
echo "    Auth holds $(on_a auth connections "$ORG" --count) SSO connections for '$ORG'"

echo "==> through B: allow_custom_sso off; watched through A"
job="$(on_b --json org update "$ORG" --allow-custom-sso false |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["job_id"])')"
echo "    job $job enqueued through B"
on_a job watch "$job"
ran_on="$(grep -l "$job" "$work/org-a.log" "$work/org-b.log" | xargs -n1 basename | tr '\n' ' ')"
echo "    the job appears in the logs of: $ran_on"

echo "==> kill -9 of replica A; B still serves the org and the job"
kill -KILL "$pid_a"
wait "$pid_a" 2>/dev/null || true
on_b org get "$ORG"
on_b job get "$job"

left="$(on_b auth connections "$ORG" --count)"
echo "==> Auth holds $left SSO connections for '$ORG' after the job"
if [ "$left" != "0" ]; then
    echo "error: expected no connection left" >&2
    exit 1
fi
echo "==> done: two replicas of each service shared one PostgreSQL"
