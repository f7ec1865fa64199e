#!/usr/bin/env bash
# The "real network" store test: a coordinator behind a shaped 20 Mbit/s WAN
# link, a store router with a bridge as the store LAN, and five tills running
# the real `tillswarm node` with real mDNS discovery, all in network
# namespaces. A 16 MiB download task must reach every till while the package
# crosses the WAN about once, in about the time one copy takes over the WAN.
#
# Usage (as root): tests/netns/store.sh /path/to/tillswarm
# Only addresses inside the namespaces are used (10.77.0.0/24 store LAN,
# 10.78.0.0/30 WAN); the host's interfaces, routes and sysctls are untouched.
set -euo pipefail

bin=$(realpath "${1:?usage: store.sh /path/to/tillswarm}")
[ -x "$bin" ] || { echo "not executable: $bin" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
registry=$repo/fixtures/registry/sample-chain.csv
tills=5
rate_bits=20000000
wait_s=${STORE_WAIT_S:-180}
# STORE_NO_MULTICAST=1: the store bridge floods no multicast to the tills
# (mDNS cannot cross, as across VLANs or Wi-Fi client isolation); the tills
# must find each other through the coordinator's signed member lists.
no_multicast=${STORE_NO_MULTICAST:-0}

coord=ts-coord-$$
gw=ts-gw-$$
till_ns() { echo "ts-till$1-$$"; }
all_ns=("$coord" "$gw")
for n in $(seq "$tills"); do all_ns+=("$(till_ns "$n")"); done

work=$(mktemp -d /tmp/tillswarm-store.XXXXXX)
pids=()
made_ns=()

cleanup() {
  local rc=$?
  set +e
  # Finish cleaning up even if interrupted again.
  trap '' INT TERM
  if [ "$rc" != 0 ]; then
    echo "--- store test failed (exit $rc); log tails:" >&2
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 25 "$f" >&2
    done
  fi
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" env TILLSWARM_NETNS=1 "$@"; }
# Start a long-running process inside a namespace; `ip netns exec` and `env`
# both exec, so $! is the process itself.
spawn() {
  local ns=$1 log=$2; shift 2
  ip netns exec "$ns" env TILLSWARM_NETNS=1 "$@" >"$work/$log.log" 2>&1 &
  pids+=($!)
}

url=http://10.78.0.1:8080
# api METHOD PATH [JSON]: the operator API, called from inside the coordinator namespace.
api() {
  in_ns "$coord" python3 - "$url" "$@" <<'PY'
import json, os, sys, urllib.request
base, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
headers = {"content-type": "application/json"}
if os.environ.get("TILLSWARM_TOKEN"):
    headers["authorization"] = "Bearer " + os.environ["TILLSWARM_TOKEN"]
req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
with urllib.request.urlopen(req, timeout=10) as r:
    sys.stdout.write(r.read().decode())
PY
}
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# --- the network --------------------------------------------------------------
for ns in "${all_ns[@]}"; do
  ip netns add "$ns"
  made_ns+=("$ns")
  ip -n "$ns" link set lo up
done

# WAN: coordinator <-> store router, 20 Mbit/s each way (egress of both ends).
ip -n "$gw" link add wan type veth peer name wan netns "$coord"
ip -n "$coord" addr add 10.78.0.1/30 dev wan
ip -n "$gw" addr add 10.78.0.2/30 dev wan
ip -n "$coord" link set wan up
ip -n "$gw" link set wan up
ip -n "$coord" route add 10.77.0.0/24 via 10.78.0.2
for ns in "$coord" "$gw"; do
  ip netns exec "$ns" tc qdisc add dev wan root tbf rate 20mbit burst 32kbit latency 400ms
done

# Store LAN: a bridge in the router; forwarding on in the router only.
ip -n "$gw" link add br0 type bridge mcast_snooping 0
ip -n "$gw" addr add 10.77.0.1/24 dev br0
ip -n "$gw" link set br0 multicast on up
ip netns exec "$gw" sysctl -qw net.ipv4.ip_forward=1
for n in $(seq "$tills"); do
  ns=$(till_ns "$n")
  ip -n "$gw" link add "till$n" type veth peer name eth0 netns "$ns"
  ip -n "$gw" link set "till$n" master br0 multicast on up
  ip -n "$ns" addr add "10.77.0.1$n/24" dev eth0
  ip -n "$ns" link set eth0 multicast on up
  ip -n "$ns" route add default via 10.77.0.1
  ip -n "$ns" route add 224.0.0.0/4 dev eth0
  if [ "$no_multicast" = 1 ]; then
    ip netns exec "$gw" bridge link set dev "till$n" mcast_flood off
  fi
done
if [ "$no_multicast" = 1 ]; then
  echo "store: multicast blocked on the store bridge (mDNS cannot reach the other tills)"
fi

# --- the coordinator, the registry and the package ------------------------------
"$bin" fixtures generate --out "$work/pkg" --large-mb 16 >/dev/null
pkg=$work/pkg/demo-large-2.0.0.tar
size=$(stat -c %s "$pkg")
# An operator token for the API calls below (api, import, upload read it).
TILLSWARM_TOKEN=$("$bin" coordinator token create --name netns --role admin --data "$work/coord" | tail -n 1)
export TILLSWARM_TOKEN
# Plain HTTP on the namespaces' private addresses: nothing here leaves them.
spawn "$coord" coordinator "$bin" coordinator --listen 10.78.0.1:8080 --insecure-http --data "$work/coord" --poll-interval-s 1
up=0
for _ in $(seq 100); do
  if api GET /healthz >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
[ "$up" = 1 ] || { echo "coordinator did not come up" >&2; exit 1; }
in_ns "$coord" "$bin" coordinator import "$registry" --coordinator "$url" >"$work/import.out"
in_ns "$coord" "$bin" package upload --coordinator "$url" --name demo-large --version 2.0.0 "$pkg" >"$work/upload.json"
package_id=$(json_field package_id <"$work/upload.json")
members=$(for n in $(seq "$tills"); do printf '"71110000-0000-0000-0000-00000000000%d",' "$n"; done)
group=$(api POST /api/v1/groups "{\"name\":\"store-001 netns\",\"members\":[${members%,}]}" | json_field id)

# --- the tills ------------------------------------------------------------------
pubkey=$(cat "$work/coord/coordinator.pub")
for n in $(seq "$tills"); do
  cat >"$work/till$n.toml" <<TOML
device_id = "71110000-0000-0000-0000-00000000000$n"
chain_id = "sample"
store_id = "store-001"
coordinator_url = "$url"
coordinator_public_key = "$pubkey"
data_dir = "$work/till$n/data"
update_root = "$work/till$n/mint"
reboot_command = "none"
local_api_listen = "127.0.0.1:7781"
initial_version = "0.9"
swarm_key = "5f1b1a0c9d3e7f2a4b6c8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c"
swarm_listen = "0.0.0.0:7782"
mdns = true
TOML
  spawn "$(till_ns "$n")" "till$n" "$bin" node --config "$work/till$n.toml"
done
# Let the tills start, register with the coordinator and find each other.
sleep "${STORE_SETTLE_S:-5}"
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a process exited early" >&2; exit 1; }; done

# --- the task -------------------------------------------------------------------
# Bytes the router received from the WAN (sysfs of the router's namespace), for
# the timeline: when the WAN got busy, when one package's worth had crossed.
wan_rx() { ip netns exec "$gw" cat /sys/class/net/wan/statistics/rx_bytes; }
rx0=$(wan_rx)
start=$(date +%s.%N)
task=$(api POST /api/v1/tasks "{\"kind\":\"download\",\"package_id\":\"$package_id\",\"group_id\":$group}" | json_field id)
deadline=$((SECONDS + wait_s))
while :; do
  api GET "/api/v1/tasks/$task" >"$work/task.json"
  end=$(date +%s.%N)
  echo "$end $(($(wan_rx) - rx0))" >>"$work/wan.samples"
  status=$(python3 - "$work/task.json" "$start" "$end" <<'PY' 2>>"$work/progress.log"
import json, sys
targets = json.load(open(sys.argv[1]))["target_details"]
states = [t["state"] for t in targets]
# Progress per till (as last reported by its heartbeat), for the failure log.
print(f"+{float(sys.argv[3]) - float(sys.argv[2]):5.2f} s", " ".join(
    f"{t['state'][:4]}:{t.get('bytes_done', 0) // 1024}k" for t in targets), file=sys.stderr)
if any(s == "failed" for s in states):
    print("failed")
elif states and all(s == "downloaded" for s in states):
    print("done")
else:
    print("waiting " + ",".join(states))
PY
)
  case $status in
    done) break ;;
    failed) echo "a target failed:" >&2; cat "$work/task.json" >&2; exit 1 ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "timeout after ${wait_s}s: $status" >&2
    cat "$work/task.json" >&2
    exit 1
  fi
  sleep 0.2
done

# --- the checks -----------------------------------------------------------------
python3 - "$work/task.json" "$size" "$start" "$end" "$rate_bits" "$tills" "$work/wan.samples" <<'PY'
import json, sys
task = json.load(open(sys.argv[1]))
samples = [tuple(map(float, line.split())) for line in open(sys.argv[7])]
size, start, end, rate, tills = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
targets = task["target_details"]
ok = True
if len(targets) != tills or any(t["state"] != "downloaded" for t in targets):
    print("FAIL: not every till downloaded:", [(t.get("device"), t["state"]) for t in targets])
    ok = False
wan = sum(t["wan_bytes"] for t in targets)
lan = sum(t.get("lan_bytes", 0) for t in targets)
ratio = wan / size
secs = end - start
bound = size * 8 / rate
tratio = secs / bound
print(f"store: package {size} B ({size / 2**20:.1f} MiB); WAN bytes {wan} (ratio {ratio:.3f}, limit 1.05); "
      f"LAN bytes {lan}; {secs:.2f} s from task creation to last till done; "
      f"lower bound {bound:.2f} s; time ratio {tratio:.2f} from task creation")
def when(nbytes):
    return next((t - start for t, b in samples if b >= nbytes), float("nan"))
# Bytes the router received from the WAN since task creation (frames, so a
# little over the payload); heartbeats add a few KiB.
t0, t1 = when(65536), when(size)
# When each node logged "package staged" (its own clock = this machine's).
import datetime, glob, re
staged, started = [], []
for log in glob.glob(sys.argv[1].rsplit("/", 1)[0] + "/till*.log"):
    for line in open(log, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        for needle, into in (("package staged", staged), ("download started", started)):
            if needle in line:
                ts = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
                into.append(ts.timestamp() - start)
t_staged = max(staged) if len(staged) == tills else float("nan")
# "All tills hold the package" is when the last till logged "package staged"
# (the coordinator only hears it at the next report, sampled every ~0.3 s here).
done_at = t_staged if t_staged == t_staged else secs
dratio = done_at / bound
print(f"from task creation to the last till staged: {done_at:.2f} s, time ratio {dratio:.2f} (limit 1.5; "
      f"coordinator-observed {tratio:.2f})")
print(f"timeline: WAN busy (>64 KiB in) from +{t0:.1f} s, package size in by +{t1:.1f} s "
      f"({size * 8 / max(t1 - t0, 1e-9) / 1e6:.1f} Mbit/s), last till staged +{t_staged:.2f} s (node log), "
      f"coordinator saw all done +{secs:.2f} s (sampled every ~0.3 s)")
print("per till wan/lan:", [(t["wan_bytes"], t.get("lan_bytes", 0)) for t in targets])
print("downloads started (node logs, s after task creation):", [round(t, 2) for t in sorted(started)])
if ratio > 1.05:
    print("FAIL: the package crossed the WAN more than ~once")
    ok = False
# From task creation: includes the tills learning of the task at their next
# poll (1 s interval + 20% jitter, up to 1.2 s of a 6.7 s transfer). This runs
# the debug binary on a 2-core host under test load: typical runs take
# 1.23-1.28x; one in six CI runs took 1.42x with the WAN not kept full (17.3
# Mbit/s of 20), unexplained. The limit catches a regression of the kind that
# matters (a till waiting a poll interval, a serial download), not noise;
# release figures are in bench/RESULTS.md.
if dratio > 1.5:
    print("FAIL: slower than 1.5 x one WAN copy (task creation to last till staged)")
    ok = False
# From the first till's start to the last till staged: the swarm's own time.
first = min(started) if len(started) == tills else float("nan")
xratio = (t_staged - first) / bound
# Same debug binary and host: 1.17-1.29x typically; one CI run took 1.34x
# with the WAN delivering 16.1 of its 20 Mbit/s (CPU-bound tbf and nodes).
print(f"from the first download started (+{first:.2f} s) to the last till staged: "
      f"time ratio {xratio:.2f} (limit 1.4)")
if not xratio <= 1.4:
    print("FAIL: slower than 1.4 x one WAN copy (first start to last till staged)")
    ok = False
sys.exit(0 if ok else 1)
PY
