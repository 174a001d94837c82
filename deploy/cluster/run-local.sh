#!/usr/bin/env bash
# A three-node Ferrite cluster on this machine, for trying it out: nats-server (JetStream on),
# three `ferrite serve` nodes of one database, and nginx (deploy/nginx/nginx.conf) in front of
# all three. Runs in the foreground; Ctrl-C stops everything.
#
#   DATABASE_URL=postgres://user:pass@127.0.0.1:5432/app deploy/cluster/run-local.sh
#
# Settings (environment): FERRITE (the binary; default `ferrite` on PATH, else the release build),
# NODE_PORTS (default "3001 3002 3003"), NATS_PORT (4222), NGINX_PORT (8080), STATE_DIR (where
# shape logs, the NATS store and nginx's cache go; default .ferrite/cluster).
# Packages: postgresql (or any reachable Postgres 14+ with wal_level=logical), nats-server, nginx.
set -euo pipefail
cd "$(dirname "$0")/../.."

: "${DATABASE_URL:?set DATABASE_URL to the Postgres database to serve}"
FERRITE=${FERRITE:-$(command -v ferrite || echo target/release/ferrite)}
NODE_PORTS=${NODE_PORTS:-"3001 3002 3003"}
NATS_PORT=${NATS_PORT:-4222}
NGINX_PORT=${NGINX_PORT:-8080}
STATE_DIR=${STATE_DIR:-.ferrite/cluster}
for tool in "$FERRITE" nats-server nginx; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || [ -x "/usr/sbin/$tool" ] || {
    echo "run-local.sh: $tool not found (build Ferrite with cargo build --release; apt-get install nats-server nginx)" >&2
    exit 1
  }
done
mkdir -p "$STATE_DIR/nats" "$STATE_DIR/nginx/conf" "$STATE_DIR/nginx/prefix"
STATE_DIR=$(cd "$STATE_DIR" && pwd)

pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

PATH=$PATH:/usr/sbin
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$STATE_DIR/nats" &
pids+=($!)

upstreams=""
i=0
for port in $NODE_PORTS; do
  i=$((i + 1))
  FERRITE_CLUSTER__NATS_URL="nats://127.0.0.1:$NATS_PORT" FERRITE_CLUSTER__NODE_NAME="node-$i" \
    "$FERRITE" serve --port "$port" --data-dir "$STATE_DIR/node-$i" &
  pids+=($!)
  upstreams="${upstreams}server 127.0.0.1:$port;\n    "
done

# deploy/nginx as shipped, with this cluster's nodes as the upstream and the chosen port.
for f in deploy/nginx/*.conf; do
  sed -e "s|server 127.0.0.1:3000;|${upstreams%\\n    }|" -e "s|listen 8080;|listen 127.0.0.1:$NGINX_PORT;|" "$f" \
    > "$STATE_DIR/nginx/conf/$(basename "$f")"
done
user=()
[ "$(id -u)" = 0 ] && user=(-g "daemon off; pid $STATE_DIR/nginx/nginx.pid; user root;") \
  || user=(-g "daemon off; pid $STATE_DIR/nginx/nginx.pid;")
nginx -p "$STATE_DIR/nginx/prefix" -c "$STATE_DIR/nginx/conf/nginx.conf" -e stderr "${user[@]}" &
pids+=($!)

echo "Ferrite cluster: nodes on ports $NODE_PORTS, NATS on $NATS_PORT, nginx at http://127.0.0.1:$NGINX_PORT"
echo "  shapes:  http://127.0.0.1:$NGINX_PORT/v1/shape?table=<table>&offset=-1"
echo "  status:  $FERRITE cluster status --url http://127.0.0.1:${NODE_PORTS%% *}"
wait -n "${pids[@]}" || true
echo "run-local.sh: a process of the cluster exited; stopping the others" >&2
