#!/usr/bin/env bash
# Peak RSS of a `tillswarm node` downloading, verifying and staging a large
# package from a coordinator on loopback (both real release binaries).
# Usage: bench/scripts/node-rss.sh [SIZE_MB]   (default 1024)
set -euo pipefail
size_mb=${1:-1024}
cd "$(dirname "$0")/../.."
cargo build --release -q --bin tillswarm
bin=$PWD/target/release/tillswarm
work=$(mktemp -d /tmp/tillswarm-rss.XXXXXX)
port=$((20000 + RANDOM % 20000))
cleanup() { kill "${node_pid:-}" "${coord_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

"$bin" fixtures generate --out "$work/pkg" --large-mb "$size_mb" >/dev/null
TILLSWARM_TOKEN=$("$bin" coordinator token create --name rss --role admin --data "$work/coord" | tail -n 1)
export TILLSWARM_TOKEN
auth="Authorization: Bearer $TILLSWARM_TOKEN"
"$bin" coordinator --data "$work/coord" --listen "127.0.0.1:$port" --poll-interval-s 1 >"$work/coord.log" 2>&1 &
coord_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.1; done
"$bin" coordinator import fixtures/registry/sample-chain.csv --coordinator "$url" >/dev/null
"$bin" package upload --coordinator "$url" --name demo-large --version 2.0.0 "$work/pkg/demo-large-2.0.0.tar" >"$work/upload.json"
package_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["package_id"])' "$work/upload.json")
group=$(curl -sf -XPOST "$url/api/v1/groups" -H "$auth" -H 'content-type: application/json' \
  -d '{"name":"rss","members":["71110000-0000-0000-0000-000000000001"]}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

cat >"$work/node.toml" <<TOML
device_id = "71110000-0000-0000-0000-000000000001"
chain_id = "sample"
store_id = "store-001"
coordinator_url = "$url"
coordinator_public_key = "$(cat "$work/coord/coordinator.pub")"
data_dir = "$work/node"
update_root = "$work/mint"
reboot_command = "none"
local_api_listen = "127.0.0.1:$((port + 1))"
initial_version = "1.0"
TOML
"$bin" node --config "$work/node.toml" >"$work/node.log" 2>&1 &
node_pid=$!
task=$(curl -sf -XPOST "$url/api/v1/tasks" -H "$auth" -H 'content-type: application/json' \
  -d "{\"kind\":\"download\",\"package_id\":\"$package_id\",\"group_id\":$group}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
start=$(date +%s.%N)
peak=0
while :; do
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$node_pid/status")
  [ "$hwm" -gt "$peak" ] && peak=$hwm
  state=$(curl -sf -H "$auth" "$url/api/v1/tasks/$task" | python3 -c 'import json,sys; t=json.load(sys.stdin); print(t["target_details"][0]["state"])')
  [ "$state" = downloaded ] && break
  [ "$state" = failed ] && { echo "download failed"; cat "$work/node.log"; exit 1; }
  sleep 0.2
done
end=$(date +%s.%N)
size=$(stat -c %s "$work/pkg/demo-large-2.0.0.tar")
python3 - "$size" "$peak" "$start" "$end" <<PY
import sys
size, peak_kib, start, end = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
secs = end - start
print(f"package: {size/2**20:.0f} MiB; download + verify + stage: {secs:.1f} s ({size/2**20/secs:.0f} MiB/s over loopback)")
print(f"node peak RSS (VmHWM): {peak_kib/1024:.1f} MiB; target <= 64 MiB: {'PASS' if peak_kib <= 64*1024 else 'MISS'}")
PY
