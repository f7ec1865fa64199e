#!/usr/bin/env bash
# Benchmark: distribute one package to one store's tills over a real (network
# namespace) store network, and compare with every till fetching it by plain
# HTTP over the same WAN. Derived from tests/netns/store.sh; this is a
# measurement, not a pass/fail test.
#
#   coordinator ns --[WAN veth, tbf W Mbit/s both ends]-- router ns (br0 = store LAN)
#   router ns --[veth tN, tbf L Mbit/s both ends]-- till N ns   (N = 1..TILLS)
#
# In one invocation:
#   1. swarm: TILLS real `tillswarm node` processes (mdns = true) get a Download
#      task of a SIZE_MB package; measured: task creation -> the last till's
#      "package staged" log line, WAN bytes (task's wan_bytes and the router's
#      WAN rx counter), LAN bytes, each node's peak RSS (VmHWM) and CPU time.
#   2. http baseline (unless --skip-http): the nodes are stopped, and every till
#      fetches the same file at once with curl (python3 urllib if there is no
#      curl) from `python3 -m http.server` in the coordinator namespace; measured: start -> the last download done,
#      router WAN rx bytes.
#   3. a table on stdout and JSON to --json.
#
# Usage (as root):
#   bench/scripts/netns-distribution.sh /path/to/tillswarm [--tills N] [--size-mb M]
#       [--wan-mbit W] [--lan-mbit L] [--json OUT.json] [--skip-http]
#       [--http-timeout S] [--swarm-timeout S] [--settle-s S] [--keep-logs DIR]
#       [--node-log RUST_LOG-filter] [--stores 1] [--no-multicast] [--seed-first]
#       [--package FILE] [--base FILE]
# The same settings as environment variables: TILLS (20), SIZE_MB (64),
# WAN_MBIT (20), LAN_MBIT (1000; 0 = LAN unshaped), STORES (only 1), JSON_OUT,
# SKIP_HTTP=1, HTTP_TIMEOUT_S, SWARM_TIMEOUT_S, SETTLE_S (min wait before the
# task, 5), SETTLE_MAX_S (30), KEEP_LOGS (copy the logs there at the end),
# NODE_LOG (RUST_LOG for the nodes; default: the binary's own, info),
# NO_MULTICAST=1 (the store bridge floods no multicast: mDNS cannot reach the
# other tills, which must find each other through the coordinator),
# POLL_INTERVAL_S (the coordinator's poll interval, 1; a real chain's is 30),
# START_SPREAD_S (0: the tills start this many seconds apart in all, so their
# polls fall at different moments of the interval, as in a real store),
# SEED_FIRST=1 (till 1 alone takes the package first, over the WAN; the
# measured task then has it serve the 19 others at once, a next rollout
# wave: its peak RSS is reported as `seed_peak_rss_bytes`),
# PACKAGE (the package file to distribute, any upload format; default: a
# generated SIZE_MB tar), BASE (a delta: every till first takes this package,
# unmeasured, as version 1.0.0; the measured task is then PACKAGE as 2.0.0).
# Only addresses inside the namespaces are used (10.79.0.0/30 WAN, 10.79.1.0/24
# store LAN); the host's interfaces, routes and sysctls are untouched.
set -euo pipefail

usage() { sed -n '/^# Usage/,/^# Only/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 1 ] || usage
case $1 in -h|--help) usage ;; esac
bin=$(realpath "$1"); shift
[ -x "$bin" ] || { echo "not executable: $bin" >&2; exit 2; }

tills=${TILLS:-20}
size_mb=${SIZE_MB:-64}
wan_mbit=${WAN_MBIT:-20}
lan_mbit=${LAN_MBIT:-1000}
stores=${STORES:-1}
json_out=${JSON_OUT:-}
skip_http=${SKIP_HTTP:-0}
http_timeout=${HTTP_TIMEOUT_S:-}
swarm_timeout=${SWARM_TIMEOUT_S:-}
settle_s=${SETTLE_S:-5}
settle_max_s=${SETTLE_MAX_S:-30}
keep_logs=${KEEP_LOGS:-}
node_log=${NODE_LOG:-}
no_multicast=${NO_MULTICAST:-0}
poll_interval_s=${POLL_INTERVAL_S:-1}
start_spread_s=${START_SPREAD_S:-0}
seed_first=${SEED_FIRST:-0}
package=${PACKAGE:-}
base=${BASE:-}
while [ $# -gt 0 ]; do
  case $1 in
    --tills) tills=$2; shift 2 ;;
    --size-mb) size_mb=$2; shift 2 ;;
    --wan-mbit) wan_mbit=$2; shift 2 ;;
    --lan-mbit) lan_mbit=$2; shift 2 ;;
    --stores) stores=$2; shift 2 ;;
    --json) json_out=$2; shift 2 ;;
    --skip-http) skip_http=1; shift ;;
    --http-timeout) http_timeout=$2; shift 2 ;;
    --swarm-timeout) swarm_timeout=$2; shift 2 ;;
    --settle-s) settle_s=$2; shift 2 ;;
    --keep-logs) keep_logs=$2; shift 2 ;;
    --node-log) node_log=$2; shift 2 ;;
    --no-multicast) no_multicast=1; shift ;;
    --seed-first) seed_first=1; shift ;;
    --package) package=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
for v in tills size_mb wan_mbit lan_mbit stores settle_s settle_max_s; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v must be a whole number: ${!v}" >&2; exit 2; }
done
[ "$stores" = 1 ] || { echo "only --stores 1 is supported (one store network)" >&2; exit 2; }
[ "$tills" -ge 1 ] && [ "$tills" -le 200 ] || { echo "--tills must be 1..200" >&2; exit 2; }
[ "$wan_mbit" -ge 1 ] || { echo "--wan-mbit must be >= 1" >&2; exit 2; }
[ "$size_mb" -ge 1 ] || { echo "--size-mb must be >= 1" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 2; }
if [ -n "$json_out" ]; then
  mkdir -p "$(dirname "$json_out")"
  json_out=$(realpath -m "$json_out")
fi
[ -z "$keep_logs" ] || keep_logs=$(realpath -m "$keep_logs")

# Only namespace addresses: no proxy, whatever the caller's environment says.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
# The real interpreter (not a pyenv-style shim), so $! of a spawned server is it.
py=$(python3 -c 'import sys; print(sys.executable)')
have_curl=0
command -v curl >/dev/null 2>&1 && have_curl=1
clk_tck=$(getconf CLK_TCK)
page_size=$(getconf PAGESIZE)

tag=$$
coord=tsb-coord-$tag
gw=tsb-gw-$tag
till_ns() { echo "tsb-t$1-$tag"; }
all_ns=("$coord" "$gw")
for n in $(seq "$tills"); do all_ns+=("$(till_ns "$n")"); done

work=$(mktemp -d /tmp/tillswarm-netns-bench.XXXXXX)
pids=()      # live processes we started (removed once stopped and reaped)
made_ns=()

# forget PID: drop a reaped process from the cleanup list (its PID may be reused).
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
# stop_pids PID...: TERM, up to 5 s grace, then KILL; each PID is positive and ours.
stop_pids() {
  local p alive
  for p in "$@"; do [ "$p" -gt 1 ] && kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do [ "$p" -gt 1 ] && kill -KILL "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; forget "$p"; done
  return 0
}

cleanup() {
  local rc=$?
  set +e
  trap '' INT TERM
  if [ "$rc" != 0 ]; then
    echo "--- netns benchmark failed (exit $rc); log tails:" >&2
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $f" >&2
      tail -n 15 "$f" >&2
    done
  fi
  [ "${#pids[@]}" -gt 0 ] && stop_pids "${pids[@]}"
  for ns in "${made_ns[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [ -n "$keep_logs" ]; then
    mkdir -p "$keep_logs"
    cp "$work"/*.log "$work"/*.json "$work"/*.samples "$work"/*.out "$work"/*.csv "$keep_logs"/ 2>/dev/null
    echo "logs kept in $keep_logs" >&2
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" env TILLSWARM_NETNS=1 "$@"; }
# Start a long-running process in a namespace; `ip netns exec` and `env` both
# exec, so $! is the process itself. Its PID goes to $spawned and the list.
spawn() {
  local ns=$1 log=$2; shift 2
  ip netns exec "$ns" env TILLSWARM_NETNS=1 "$@" >"$work/$log.log" 2>&1 &
  spawned=$!
  pids+=("$spawned")
}

wan_ip=10.79.0.1      # coordinator
gw_wan_ip=10.79.0.2   # store router, WAN side
gw_lan_ip=10.79.1.1   # store router, LAN side
till_ip() { echo "10.79.1.$((10 + $1))"; }
url=http://$wan_ip:8080
http_port=8000

# api METHOD PATH [JSON]: the operator API, called from the coordinator namespace.
api() {
  in_ns "$coord" "$py" - "$url" "$@" <<'PY'
import os, sys, urllib.request
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
json_field() { "$py" -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
wan_rx() { ip netns exec "$gw" cat /sys/class/net/wan/statistics/rx_bytes; }
# Bytes the tills put on the LAN (router-side veths receive them): peer uploads
# plus requests, mDNS and acks; the rough wire figure for LAN traffic.
lan_in() {
  local n total=0
  for n in $(seq "$tills"); do
    total=$((total + $(ip netns exec "$gw" cat "/sys/class/net/t$n/statistics/rx_bytes")))
  done
  echo "$total"
}
# start_sampler OUT BASE [PID...]: every 0.1 s, to OUT: time, the router's WAN
# rx bytes minus BASE, the CPU ticks (utime+stime) of the PIDs (the nodes) and
# the host's busy and total CPU ticks (/proc/stat). A loop in the router
# namespace with builtins only, so a sample costs no exec. Its PID: $sampler.
start_sampler() {
  local out=$1 base=$2; shift 2
  : >"$out"
  spawn "$gw" "sampler-$(basename "$out")" bash -c '
    out=$1 base=$2; shift 2
    while :; do
      read -r b </sys/class/net/wan/statistics/rx_bytes
      ticks=0
      for p in "$@"; do
        if read -r -a f </proc/$p/stat 2>/dev/null; then ticks=$((ticks + f[13] + f[14])); fi
      done
      read -r _ u n s i w q sq st _ </proc/stat
      echo "$EPOCHREALTIME $((b - base)) $ticks $((u + n + s + q + sq + st)) $((u + n + s + i + w + q + sq + st))" >>"$out"
      sleep 0.1
    done' sampler "$out" "$base" "$@"
  sampler=$spawned
}
# proc_stat PID: "VmHWM_bytes cpu_seconds" of a live process.
proc_stat() {
  "$py" - "$1" "$clk_tck" <<'PY'
import sys
pid, tck = sys.argv[1], int(sys.argv[2])
hwm = 0
for line in open(f"/proc/{pid}/status"):
    if line.startswith("VmHWM:"):
        hwm = int(line.split()[1]) * 1024
rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
# Fields 14 and 15 of stat (utime, stime); rest starts at field 3.
print(hwm, (int(rest[11]) + int(rest[12])) / tck)
PY
}
# tbf parameters for RATE Mbit/s: a burst of 2 ms of traffic (at least 32 KiB).
tbf_shape() {
  local ns=$1 dev=$2 mbit=$3 burst
  burst=$((mbit * 1000000 / 8 / 500))
  [ "$burst" -ge 32768 ] || burst=32768
  ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "${mbit}mbit" burst "$burst" latency 50ms
}

echo "netns benchmark: 1 store, $tills tills, ${size_mb} MiB package, WAN ${wan_mbit} Mbit/s, LAN ${lan_mbit} Mbit/s$([ "$lan_mbit" = 0 ] && echo ' (unshaped)'), work dir $work" >&2

# --- the network ------------------------------------------------------------------
for ns in "${all_ns[@]}"; do
  ip netns add "$ns"
  made_ns+=("$ns")
  ip -n "$ns" link set lo up
done

# WAN: coordinator <-> store router, W Mbit/s each way (egress of both ends),
# shaped exactly as tests/netns/store.sh does.
ip -n "$gw" link add wan type veth peer name wan netns "$coord"
ip -n "$coord" addr add "$wan_ip/30" dev wan
ip -n "$gw" addr add "$gw_wan_ip/30" dev wan
ip -n "$coord" link set wan up
ip -n "$gw" link set wan up
ip -n "$coord" route add 10.79.1.0/24 via "$gw_wan_ip"
for ns in "$coord" "$gw"; do
  ip netns exec "$ns" tc qdisc add dev wan root tbf rate "${wan_mbit}mbit" burst 32kbit latency 400ms
done

# Store LAN: a bridge in the router (no multicast snooping, so mDNS floods);
# forwarding on in the router namespace only.
ip -n "$gw" link add br0 type bridge mcast_snooping 0
ip -n "$gw" addr add "$gw_lan_ip/24" dev br0
ip -n "$gw" link set br0 multicast on up
ip netns exec "$gw" sysctl -qw net.ipv4.ip_forward=1
for n in $(seq "$tills"); do
  ns=$(till_ns "$n")
  ip -n "$gw" link add "t$n" type veth peer name eth0 netns "$ns"
  ip -n "$gw" link set "t$n" master br0 multicast on up
  ip -n "$ns" addr add "$(till_ip "$n")/24" dev eth0
  ip -n "$ns" link set eth0 multicast on up
  ip -n "$ns" route add default via "$gw_lan_ip"
  ip -n "$ns" route add 224.0.0.0/4 dev eth0
  if [ "$no_multicast" = 1 ]; then
    ip netns exec "$gw" bridge link set dev "t$n" mcast_flood off
  fi
  if [ "$lan_mbit" -gt 0 ]; then
    tbf_shape "$gw" "t$n" "$lan_mbit"
    tbf_shape "$ns" eth0 "$lan_mbit"
  fi
done

# --- the coordinator, the registry and the package ----------------------------------
if [ -n "$package" ]; then
  mkdir -p "$work/pkg"
  pkg=$work/pkg/$(basename "$package")
  cp "$package" "$pkg"
else
  "$bin" fixtures generate --out "$work/pkg" --large-mb "$size_mb" >/dev/null
  pkg=$work/pkg/demo-large-2.0.0.tar
fi
size=$(stat -c %s "$pkg")
store_id=store-bench
guid() { printf '7b000000-0000-4000-8000-%012x' "$1"; }
{
  echo "guid,till_name,till_number,store_id,store_name,store_address,till_type,time_zone"
  for n in $(seq "$tills"); do
    echo "$(guid "$n"),Till $n,$n,$store_id,Bench Store,\"1 Bench St, Testville\",standard,Europe/Moscow"
  done
} >"$work/registry.csv"

# An operator token for the API calls below (api, import, upload read it).
TILLSWARM_TOKEN=$("$bin" coordinator token create --name bench --role admin --data "$work/coord" | tail -n 1)
export TILLSWARM_TOKEN
# Plain HTTP on the namespaces' private addresses: nothing here leaves them.
spawn "$coord" coordinator "$bin" coordinator --listen "$wan_ip:8080" --insecure-http --data "$work/coord" --poll-interval-s "$poll_interval_s"
coord_pid=$spawned
up=0
for _ in $(seq 100); do
  if api GET /healthz >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
[ "$up" = 1 ] || { echo "coordinator did not come up" >&2; exit 1; }
in_ns "$coord" "$bin" coordinator import "$work/registry.csv" --coordinator "$url" >"$work/import.out"
if [ -n "$base" ]; then
  cp "$base" "$work/base.pkg"
  in_ns "$coord" "$bin" package upload --coordinator "$url" --name demo-large --version 1.0.0 "$work/base.pkg" >"$work/upload-base.json"
  base_id=$(json_field package_id <"$work/upload-base.json")
fi
in_ns "$coord" "$bin" package upload --coordinator "$url" --name demo-large --version 2.0.0 "$pkg" >"$work/upload.json"
package_id=$(json_field package_id <"$work/upload.json")
members=$(for n in $(seq "$tills"); do printf '"%s",' "$(guid "$n")"; done)
group=$(api POST /api/v1/groups "{\"name\":\"$store_id netns bench\",\"members\":[${members%,}]}" | json_field id)

# --- the tills ------------------------------------------------------------------------
pubkey=$(cat "$work/coord/coordinator.pub")
node_pids=()
for n in $(seq "$tills"); do
  cat >"$work/till$n.toml" <<TOML
device_id = "$(guid "$n")"
chain_id = "bench"
store_id = "$store_id"
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
  if [ -n "$node_log" ]; then
    spawn "$(till_ns "$n")" "till$n" env RUST_LOG="$node_log" "$bin" node --config "$work/till$n.toml"
  else
    spawn "$(till_ns "$n")" "till$n" "$bin" node --config "$work/till$n.toml"
  fi
  node_pids+=("$spawned")
  [ "$start_spread_s" = 0 ] || sleep "$(python3 -c "print($start_spread_s / $tills)")"
done

# Wait until every till has registered with the coordinator and has met the
# store's other tills ("store peer joined" for TILLS-1 distinct devices), at
# least settle_s and at most settle_max_s.
settle_start=$SECONDS
ready_msg=""
while :; do
  for p in "${node_pids[@]}" "$coord_pid"; do
    kill -0 "$p" 2>/dev/null || { echo "a process exited early" >&2; exit 1; }
  done
  online=$(api GET "/api/v1/devices?store=$store_id&per_page=1000" 2>/dev/null | "$py" -c '
import json, sys
d = json.load(sys.stdin)
items = d["items"] if isinstance(d, dict) else d
print(sum(1 for x in items if x.get("online")))' 2>/dev/null || echo 0)
  min_peers=$("$py" - "$work" "$tills" <<'PY'
import re, sys
work, tills = sys.argv[1], int(sys.argv[2])
least = None
for n in range(1, tills + 1):
    seen = set()
    for line in open(f"{work}/till{n}.log", errors="replace"):
        if "store peer joined" in line:
            m = re.search(r"device=(\S+)", re.sub(r"\x1b\[[0-9;]*m", "", line))
            seen.add(m.group(1) if m else line)
    least = len(seen) if least is None else min(least, len(seen))
print(least or 0)
PY
)
  waited=$((SECONDS - settle_start))
  ready_msg="$online/$tills tills online at the coordinator, each till met >= $min_peers/$((tills - 1)) peers after ${waited}s"
  if [ "$waited" -ge "$settle_s" ] && [ "$online" -ge "$tills" ] && [ "$min_peers" -ge $((tills - 1)) ]; then
    break
  fi
  if [ "$waited" -ge "$settle_max_s" ]; then
    echo "warning: not fully settled, starting anyway: $ready_msg" >&2
    break
  fi
  sleep 1
done
echo "settled: $ready_msg" >&2
settle_json="{\"waited_s\": $waited, \"online\": $online, \"min_peers_joined\": $min_peers, \"peers_expected\": $((tills - 1))}"

# --- 0. with --seed-first: till 1 alone takes the package over the WAN -------------------
if [ "$seed_first" = 1 ]; then
  seed_group=$(api POST /api/v1/groups "{\"name\":\"$store_id seed\",\"members\":[\"$(guid 1)\"]}" | json_field id)
  seed_task=$(api POST /api/v1/tasks "{\"kind\":\"download\",\"package_id\":\"$package_id\",\"group_id\":$seed_group}" | json_field id)
  echo "seed task $seed_task: till 1 takes the package first" >&2
  seed_deadline=$((SECONDS + 60 + 4 * ${size_mb} * 8 / wan_mbit))
  until grep -q "package staged" "$work/till1.log"; do
    [ "$SECONDS" -lt "$seed_deadline" ] || { echo "the seed did not stage in time" >&2; exit 1; }
    sleep 0.25
  done
  echo "seed staged; it now serves the store" >&2
fi

# --- 0. with --base: every till takes the base version first (unmeasured) --------------
base_s=null
if [ -n "$base" ]; then
  base_start=$SECONDS
  base_task=$(api POST /api/v1/tasks "{\"kind\":\"download\",\"package_id\":\"$base_id\",\"group_id\":$group}" | json_field id)
  echo "base task $base_task: every till takes version 1.0.0 first" >&2
  base_deadline=$((SECONDS + 120 + 4 * $(stat -c %s "$work/base.pkg") * 8 / (wan_mbit * 1000000)))
  for n in $(seq "$tills"); do
    until grep -q "package staged" "$work/till$n.log"; do
      [ "$SECONDS" -lt "$base_deadline" ] || { echo "till $n did not stage the base in time" >&2; exit 1; }
      sleep 0.25
    done
  done
  base_s=$((SECONDS - base_start))
  echo "base staged on every till in ${base_s}s; the measured task is the delta" >&2
  settle_json="${settle_json%\}}, \"base_seconds\": $base_s}"
fi

# --- 1. the swarm run -------------------------------------------------------------------
bound=$("$py" -c "print($size * 8 / ($wan_mbit * 1e6))")
[ -n "$swarm_timeout" ] || swarm_timeout=$("$py" -c "print(int(max(180, 6 * $bound)))")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rx0=$(wan_rx)
lan0=$(lan_in)
start_sampler "$work/wan.samples" "$rx0" "${node_pids[@]}"
start=$(date +%s.%N)
task=$(api POST /api/v1/tasks "{\"kind\":\"download\",\"package_id\":\"$package_id\",\"group_id\":$group}" | json_field id)
echo "task $task created; waiting (timeout ${swarm_timeout}s)" >&2
deadline=$((SECONDS + swarm_timeout))
while :; do
  api GET "/api/v1/tasks/$task" >"$work/task.json"
  status=$("$py" - "$work" "$tills" "$seed_first" "${base:+1}" <<'PY'
import json, sys
work, tills = sys.argv[1], int(sys.argv[2])
seed_first = sys.argv[3] == "1"
delta = sys.argv[4] == "1"
states = [t["state"] for t in json.load(open(f"{work}/task.json"))["target_details"]]
staged = sum(1 for n in range(1, tills + 1)
             if open(f"{work}/till{n}.log", errors="replace").read().count("package staged")
             >= (2 if (n == 1 and seed_first) or delta else 1))
if any(s == "failed" for s in states):
    print("failed")
elif staged == tills and len(states) == tills and all(s == "downloaded" for s in states):
    print("done")
else:
    print(f"staged {staged}/{tills}, coordinator: " + ",".join(sorted(set(states))))
PY
)
  case $status in
    done) break ;;
    failed) echo "a target failed:" >&2; cat "$work/task.json" >&2; exit 1 ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "swarm timeout after ${swarm_timeout}s: $status" >&2
    cat "$work/task.json" >&2
    exit 1
  fi
  sleep 0.25
done
coord_done=$(date +%s.%N)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
swarm_rx=$(($(wan_rx) - rx0))
swarm_lan_wire=$(($(lan_in) - lan0))

# Peak RSS and CPU of every node (and the coordinator), just before stopping them.
: >"$work/procs.out"
for n in $(seq "$tills"); do
  echo "till$n $(proc_stat "${node_pids[$((n - 1))]}")" >>"$work/procs.out"
done
echo "coordinator $(proc_stat "$coord_pid")" >>"$work/procs.out"
stop_pids "${node_pids[@]}" "$coord_pid" "$sampler"
echo "swarm done; nodes and coordinator stopped" >&2

# --- 2. the plain HTTP baseline -----------------------------------------------------------
http_state=skipped
if [ "$skip_http" != 1 ]; then
  [ -n "$http_timeout" ] || http_timeout=$("$py" -c "print(int(1.5 * $tills * $bound + 60))")
  spawn "$coord" httpserver "$py" -m http.server "$http_port" --bind "$wan_ip" --directory "$work/pkg"
  http_pid=$spawned
  file_url=http://$wan_ip:$http_port/demo-large-2.0.0.tar
  up=0
  for _ in $(seq 100); do
    if in_ns "$coord" "$py" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2).close()" \
         "http://$wan_ip:$http_port/" >/dev/null 2>&1; then up=1; break; fi
    sleep 0.1
  done
  [ "$up" = 1 ] || { echo "http server did not come up" >&2; exit 1; }
  sleep 1   # let the WAN counters settle after the swarm's last packets
  http_rx0=$(wan_rx)
  start_sampler "$work/http.samples" "$http_rx0"
  http_start=$(date +%s.%N)
  fetch_pids=()
  for n in $(seq "$tills"); do
    ns=$(till_ns "$n")
    if [ "$have_curl" = 1 ]; then
      ip netns exec "$ns" curl -sS --noproxy '*' -o /dev/null \
        -w '%{http_code} %{size_download} %{time_total}\n' "$file_url" >"$work/http$n.out" 2>"$work/http$n.err" &
    else
      ip netns exec "$ns" "$py" -c '
import sys, time, urllib.request
t = time.time(); n = 0
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    code = r.status
    while True:
        b = r.read(1 << 20)
        if not b: break
        n += len(b)
print(code, n, time.time() - t)' "$file_url" >"$work/http$n.out" 2>"$work/http$n.err" &
    fi
    fetch_pids+=($!)
    pids+=($!)
  done
  echo "http baseline: $tills downloads started (timeout ${http_timeout}s)" >&2
  http_deadline=$((SECONDS + http_timeout))
  declare -A fetch_end=()
  while :; do
    now=$(date +%s.%N)
    running=0
    for i in "${!fetch_pids[@]}"; do
      [ -n "${fetch_end[$i]:-}" ] && continue
      if kill -0 "${fetch_pids[$i]}" 2>/dev/null; then
        running=$((running + 1))
      else
        fetch_end[$i]=$now
      fi
    done
    [ "$running" = 0 ] && break
    if [ "$SECONDS" -ge "$http_deadline" ]; then
      echo "http baseline timeout after ${http_timeout}s: $running downloads still running" >&2
      http_state=timeout
      break
    fi
    sleep 0.2
  done
  http_rx=$(($(wan_rx) - http_rx0))
  : >"$work/http_ends.out"
  for i in "${!fetch_pids[@]}"; do
    rc=0
    if [ -n "${fetch_end[$i]:-}" ]; then wait "${fetch_pids[$i]}" || rc=$?; forget "${fetch_pids[$i]}"; fi
    echo "till$((i + 1)) ${fetch_end[$i]:-none} $rc $(cat "$work/http$((i + 1)).out" 2>/dev/null | tr '\n' ' ')" >>"$work/http_ends.out"
  done
  running_pids=()
  for p in "${fetch_pids[@]}"; do kill -0 "$p" 2>/dev/null && running_pids+=("$p"); done
  [ "${#running_pids[@]}" = 0 ] || stop_pids "${running_pids[@]}"
  stop_pids "$http_pid" "$sampler"
  [ "$http_state" = timeout ] || http_state=done
fi

# --- 3. the report --------------------------------------------------------------------------
"$py" - "$work" "$size" "$tills" "$wan_mbit" "$lan_mbit" "$start" "$coord_done" "$swarm_rx" \
  "$swarm_lan_wire" "$http_state" "${http_start:-0}" "${http_rx:-0}" "$json_out" \
  "$bin" "$load_before" "$load_after" "$settle_json" "$no_multicast" "$seed_first" <<'PY'
import datetime, json, re, statistics, sys
(work, size, tills, wan_mbit, lan_mbit, start, coord_done, swarm_rx, lan_wire,
 http_state, http_start, http_rx, json_out) = sys.argv[1:14]
size, tills, wan_mbit, lan_mbit = int(size), int(tills), int(wan_mbit), int(lan_mbit)
start, coord_done, http_start = float(start), float(coord_done), float(http_start)
swarm_rx, lan_wire, http_rx = int(swarm_rx), int(lan_wire), int(http_rx)
binary, load_before, load_after = sys.argv[14:17]
settle = json.loads(sys.argv[17])
multicast = sys.argv[18] != "1"
seed_first = sys.argv[19] == "1"
bound = size * 8 / (wan_mbit * 1e6)
MiB = 2 ** 20

def log_time(line):
    return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()

# Per till: when it logged "package staged" (its clock is this machine's).
staged, first_log = {}, {}
for n in range(1, tills + 1):
    for line in open(f"{work}/till{n}.log", errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        # The last one: with --seed-first till 1 also staged before the task.
        if "package staged" in line:
            staged[n] = log_time(line) - start
missing = [n for n in range(1, tills + 1) if n not in staged]
swarm_s = max(staged.values()) if not missing else float("nan")

task = json.load(open(f"{work}/task.json"))
targets = task["target_details"]
wan_task = sum(t.get("wan_bytes", 0) for t in targets)
lan_task = sum(t.get("lan_bytes", 0) for t in targets)

cols = [list(map(float, l.split())) for l in open(f"{work}/wan.samples") if len(l.split()) == 5]
samples = [(c[0], c[1]) for c in cols]
def when(samples, t0, nbytes):
    return next((t - t0 for t, b in samples if b >= nbytes), float("nan"))
t_wan_busy = when(samples, start, 65536)
t_wan_size = when(samples, start, size)
# When the WAN went quiet: 99.9% of what crossed by the last till's staging
# (heartbeats keep adding a few KiB afterwards).
rx_at_done = max((b for t, b in samples if t - start <= swarm_s), default=0) if swarm_s == swarm_s else 0
t_wan_quiet = when(samples, start, 0.999 * rx_at_done) if rx_at_done else float("nan")
# CPU use in a window [a, b] (seconds from task creation): the nodes' CPUs
# (cores busy) and the whole host's busy share, from the sampler.
import os
tck = os.sysconf("SC_CLK_TCK")
def cpu_window(a, b):
    w = [c for c in cols if a <= c[0] - start <= b]
    if len(w) < 2 or w[-1][0] - w[0][0] <= 0:
        return None
    d = w[-1][0] - w[0][0]
    host = (w[-1][3] - w[0][3]) / max(w[-1][4] - w[0][4], 1)
    return {"seconds": round(d, 2), "nodes_cores": round((w[-1][2] - w[0][2]) / tck / d, 2),
            "host_busy": round(host, 3)}
cpu_transfer = cpu_window(0, t_wan_quiet) if t_wan_quiet == t_wan_quiet else None
cpu_tail = cpu_window(t_wan_quiet, swarm_s) if t_wan_quiet == t_wan_quiet and swarm_s == swarm_s else None

procs = {}
for line in open(f"{work}/procs.out"):
    name, hwm, cpu = line.split()
    procs[name] = (int(hwm), float(cpu))
nodes = [v for k, v in procs.items() if k.startswith("till")]
rss = [h for h, _ in nodes]
cpu = [c for _, c in nodes]

http = None
if http_state != "skipped":
    ends, ok = [], True
    per = []
    for line in open(f"{work}/http_ends.out"):
        parts = line.split()
        name, end, rc = parts[0], parts[1], int(parts[2])
        got = int(parts[4]) if len(parts) >= 5 else -1
        code = parts[3] if len(parts) >= 4 else "?"
        if end == "none" or rc != 0 or got != size or code != "200":
            ok = False
        if end != "none":
            ends.append(float(end) - http_start)
        per.append({"till": name, "seconds": float(end) - http_start if end != "none" else None,
                    "exit": rc, "http_code": code, "bytes": got})
    http_s = max(ends) if (ends and ok and http_state == "done") else None
    http = {
        "seconds": round(http_s, 3) if http_s is not None else None,
        "first_done_s": round(min(ends), 3) if ends else None,
        "wan_bytes_per_store": http_rx,
        "wan_bytes_expected": tills * size,
        "wan_bytes_ratio_to_size": round(http_rx / size, 4),
        "complete": bool(ok and http_state == "done"),
        "state": http_state,
        "per_till": per,
    }

out = {
    "mode": "netns",
    "package_size": size,
    "stores": 1,
    "tills_per_store": tills,
    "wan_mbit": wan_mbit,
    "lan_mbit": lan_mbit,
    "multicast": multicast,
    "seed_first": seed_first,
    "lower_bound_s": round(bound, 3),
    "swarm": {
        "seconds": round(swarm_s, 3) if swarm_s == swarm_s else None,
        "ratio_to_lower_bound": round(swarm_s / bound, 3) if swarm_s == swarm_s else None,
        "first_till_staged_s": round(min(staged.values()), 3) if staged else None,
        "coordinator_saw_all_done_s": round(coord_done - start, 3),
        "wan_bytes_per_store": wan_task,
        "wan_bytes_ratio_to_size": round(wan_task / size, 4),
        "wan_rx_bytes_router": swarm_rx,
        "wan_rx_ratio_to_size": round(swarm_rx / size, 4),
        "lan_bytes": lan_task,
        "lan_wire_bytes_from_tills": lan_wire,
        "wan_busy_from_s": round(t_wan_busy, 3),
        "wan_package_size_in_by_s": round(t_wan_size, 3),
        "wan_quiet_s": round(t_wan_quiet, 3) if t_wan_quiet == t_wan_quiet else None,
        "cpu_until_wan_quiet": cpu_transfer,
        "cpu_after_wan_quiet": cpu_tail,
        "tail_after_wan_quiet_s": round(swarm_s - t_wan_quiet, 3) if swarm_s == swarm_s and t_wan_quiet == t_wan_quiet else None,
        "peak_rss_bytes": max(rss),
        "seed_peak_rss_bytes": procs["till1"][0] if seed_first else None,
        "mean_rss_bytes": int(statistics.mean(rss)),
        "cpu_seconds_total": round(sum(cpu), 3),
        "cpu_seconds_mean": round(statistics.mean(cpu), 3),
        "coordinator_peak_rss_bytes": procs["coordinator"][0],
        "coordinator_cpu_seconds": round(procs["coordinator"][1], 3),
        "staged_s_per_till": {f"till{n}": round(s, 3) for n, s in sorted(staged.items())},
        "wan_lan_bytes_per_till": [[t.get("wan_bytes", 0), t.get("lan_bytes", 0)] for t in targets],
    },
    "http": http,
    "settle_before_task": settle,
    "host": {"binary": binary, "cpus": __import__("os").cpu_count(),
             "loadavg_before_task": load_before, "loadavg_at_swarm_end": load_after},
}

def f(x, fmt):
    return "n/a" if x is None or x != x else format(x, fmt)
sw = out["swarm"]
rows = [
    ("package", f"{size} B ({size / MiB:.1f} MiB)"),
    ("tills / WAN / LAN", f"{tills} / {wan_mbit} Mbit/s / " + (f"{lan_mbit} Mbit/s" if lan_mbit else "unshaped")),
    ("lower bound size*8/W", f"{bound:.2f} s"),
    ("store LAN multicast", "on (mDNS)" if multicast else "blocked (peers from the coordinator only)"),
    ("swarm: last till staged", f"{f(sw['seconds'], '.2f')} s  (ratio {f(sw['ratio_to_lower_bound'], '.3f')})"
        + (f"  MISSING tills {missing}" if missing else "")),
    ("swarm: first till staged", f"{f(sw['first_till_staged_s'], '.2f')} s"),
    ("swarm: WAN timeline", f"busy (>64 KiB) +{t_wan_busy:.2f} s, size on the wire +{t_wan_size:.2f} s "
        f"({size * 8 / max(t_wan_size - t_wan_busy, 1e-9) / 1e6:.1f} Mbit/s wire), quiet +{t_wan_quiet:.2f} s; "
        f"last staged {swarm_s - t_wan_quiet:+.2f} s after quiet"),
    ("swarm: WAN bytes (task)", f"{wan_task}  (ratio {wan_task / size:.4f})"),
    ("swarm: WAN rx (router)", f"{swarm_rx}  (ratio {swarm_rx / size:.4f}, frames incl. headers)"),
    ("swarm: LAN bytes (task)", f"{lan_task}  ({lan_task / size:.2f} x size)"),
    ("swarm: LAN wire from tills", f"{lan_wire}"),
    ("node peak RSS max / mean", f"{max(rss) / MiB:.1f} MiB / {statistics.mean(rss) / MiB:.1f} MiB"
        + (f"; the seed (till 1) {procs['till1'][0] / MiB:.1f} MiB" if seed_first else "")),
    ("node CPU total / mean", f"{sum(cpu):.2f} s / {statistics.mean(cpu):.2f} s"),
    ("CPU until WAN quiet / after", " / ".join(
        "n/a" if c is None else f"nodes {c['nodes_cores']:.2f} cores, host {100 * c['host_busy']:.0f}% busy"
        for c in (cpu_transfer, cpu_tail))),
    ("before the task", f"{settle['online']}/{tills} online, every till joined >= "
        f"{settle['min_peers_joined']}/{settle['peers_expected']} peers (waited {settle['waited_s']} s)"),
    ("host load (before / after swarm)", f"{load_before} / {load_after} on {__import__('os').cpu_count()} CPUs"),
    ("coordinator RSS / CPU", f"{procs['coordinator'][0] / MiB:.1f} MiB / {procs['coordinator'][1]:.2f} s"),
]
if http is None:
    rows.append(("http baseline", "skipped"))
else:
    hs_ = http["seconds"]
    rows += [
        ("http: last till done", f"{f(hs_, '.2f')} s  (ratio {f(hs_ / bound if hs_ else None, '.3f')})"
            + ("" if http["complete"] else f"  INCOMPLETE ({http_state})")),
        ("http: first till done", f"{f(http['first_done_s'], '.2f')} s"),
        ("http: WAN rx (router)", f"{http_rx}  (ratio {http_rx / size:.3f}; expected {tills} x size)"),
        ("speed-up http/swarm", f(hs_ / swarm_s if hs_ and swarm_s == swarm_s else None, ".2f") + " x"),
    ]
w = max(len(k) for k, _ in rows)
print()
for k, v in rows:
    print(f"{k:<{w}}  {v}")
def clean(o):
    # NaN (a moment that never came, e.g. the whole package size on the
    # WAN of a delta) is not JSON: write null.
    if isinstance(o, float) and o != o:
        return None
    if isinstance(o, dict):
        return {k: clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [clean(v) for v in o]
    return o

if json_out:
    with open(json_out, "w") as fh:
        json.dump(clean(out), fh, indent=2)
        fh.write("\n")
    print(f"\nJSON written to {json_out}")
PY
