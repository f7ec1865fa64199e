#!/usr/bin/env bash
# The Debian package, checked as a user would meet it: builds it with
# cargo-deb from the debug binary already built (the release build is the
# same recipe: `cargo deb`), reads its contents and control files, unpacks it
# into a throwaway root (dpkg -x; nothing is installed on this machine and no
# service of its own is touched), verifies both units with systemd-analyze
# against that root, runs the packaged postinst's systemd-sysusers step inside
# that root, and starts the unpacked binary with the unpacked configs.
# Needs: cargo-deb, dpkg-deb, systemd (systemd-analyze, systemd-sysusers).
# Without them it skips with the reason; under CI=true a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
bin="$target/debug/tillswarm"

skip() {
  if [ "${CI:-}" = "true" ]; then echo "packaging test: cannot run under CI: $1" >&2; exit 1; fi
  echo "packaging test skipped: $1"; exit 0
}
for tool in cargo-deb dpkg-deb systemd-analyze systemd-sysusers python3; do
  command -v "$tool" >/dev/null || skip "$tool is missing (.ci/run installs it)"
done
[ -x "$bin" ] || skip "$bin is not built (cargo build --bin tillswarm)"
fail() { echo "packaging test FAILED: $*" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "${coord:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

# 1. Build. cargo-deb warns that the dev profile is for testing only: this
# packs the debug binary that CI built already instead of a second, release
# build of every crate.
cargo deb --no-build --profile dev --output "$work/out/" 2>"$work/deb.log" >/dev/null \
  || { cat "$work/deb.log"; fail "cargo deb"; }
deb=$(ls "$work"/out/tillswarm_*.deb)
echo "built $(basename "$deb"): $(du -k "$deb" | cut -f1) KiB"

# 2. Contents, modes and control files.
dpkg-deb -c "$deb" | awk '{print $1, $6}' | sed 's#\./#/#' >"$work/contents"
expect_file() { # mode path
  grep -qx -- "$1 $2" "$work/contents" || { cat "$work/contents"; fail "no $2 with mode $1"; }
}
expect_file -rwxr-xr-x /usr/bin/tillswarm
expect_file -rw-r--r-- /usr/lib/systemd/system/tillswarm-node.service
expect_file -rw-r--r-- /usr/lib/systemd/system/tillswarm-coordinator.service
expect_file -rw-r--r-- /usr/lib/sysusers.d/tillswarm.conf
expect_file -rw-r--r-- /etc/tillswarm/coordinator.toml
expect_file -rw-r----- /etc/tillswarm/node.toml
expect_file -rw-r--r-- /usr/share/doc/tillswarm/README.md
expect_file -rw-r--r-- /usr/share/doc/tillswarm/examples/node.toml
dpkg-deb -e "$deb" "$work/control"
diff <(sort "$work/control/conffiles") <(printf '/etc/tillswarm/coordinator.toml\n/etc/tillswarm/node.toml\n') \
  || fail "conffiles are not exactly the two configs"
grep -q '^Depends:.*systemd' "$work/control/control" || fail "Depends lacks systemd"
for script in postinst prerm postrm; do
  sh -n "$work/control/$script" || fail "$script does not parse"
done
grep -q 'systemd-sysusers .*tillswarm.conf' "$work/control/postinst" || fail "postinst makes no user"
# The maintainer scripts, run against stand-ins that log what they would do
# (a copy that sees a fake /run/systemd/system, so the systemd branches run):
# a fresh install enables and starts nothing (a till must not start a
# coordinator, and neither works before its config is written); an upgrade
# restarts a running coordinator and never stops or restarts the node (up.sh
# may be the one running the upgrade; the till's reboot starts the new node).
fake="$work/fake"; mkdir -p "$fake/bin" "$fake/run-systemd"
for cmd in deb-systemd-invoke deb-systemd-helper systemctl systemd-sysusers; do
  printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$cmd" "$fake/calls" >"$fake/bin/$cmd"
  chmod +x "$fake/bin/$cmd"
done
# deb-systemd-helper's questions: was the unit installed / enabled before?
# Answered by FAKE_ENABLED (unset: a fresh machine).
cat >>"$fake/bin/deb-systemd-helper" <<'SH'
case "$1 $2" in
  "debian-installed "*|"--quiet was-enabled") [ -n "${FAKE_ENABLED:-}" ] || exit 1 ;;
esac
SH
run_script() { # name args...
  local name=$1; shift
  sed "s#/run/systemd/system#$fake/run-systemd#g" "$work/control/$name" >"$fake/$name"
  : >"$fake/calls"
  PATH="$fake/bin:$PATH" sh "$fake/$name" "$@" || fail "$name $* exited non-zero"
}
run_script postinst configure
grep -q 'systemd-sysusers tillswarm.conf' "$fake/calls" || { cat "$fake/calls"; fail "install makes no user"; }
if grep -Eq '^deb-systemd-helper enable|^deb-systemd-invoke (start|restart|try-restart)|^systemctl (enable|start)' "$fake/calls"; then
  cat "$fake/calls"; fail "a fresh install enables or starts a unit"
fi
export FAKE_ENABLED=1 # an upgrade of a machine whose admin enabled both units
run_script prerm upgrade 0.1.0-1
cp "$fake/calls" "$fake/upgrade-calls"
run_script postinst configure 0.0.9-1
cat "$fake/calls" >>"$fake/upgrade-calls"
if grep -Eq 'deb-systemd-invoke .*tillswarm-node' "$fake/upgrade-calls"; then
  cat "$fake/upgrade-calls"; fail "an upgrade stops or restarts the node"
fi
grep -q 'deb-systemd-invoke try-restart tillswarm-coordinator.service' "$fake/upgrade-calls" \
  || { cat "$fake/upgrade-calls"; fail "an upgrade does not restart a running coordinator"; }
run_script prerm remove
grep -q 'deb-systemd-invoke stop tillswarm-node.service' "$fake/calls" \
  && grep -q 'deb-systemd-invoke stop tillswarm-coordinator.service' "$fake/calls" \
  || { cat "$fake/calls"; fail "removing the package does not stop both services"; }
echo "contents, modes, conffiles, Depends; maintainer scripts on install, upgrade and remove: ok"

# 3. Unpack into a throwaway root and verify the units there. The root gets a
# copy of this machine's own unit files, so that the targets the units name
# (multi-user.target, network-online.target) resolve; systemd-analyze reads
# files only and talks to no running manager.
root="$work/root"
mkdir -p "$root/usr/lib/systemd/system" "$root/etc"
dpkg -x "$deb" "$root"
for d in /usr/lib/systemd/system /lib/systemd/system; do
  [ -d "$d" ] && cp -an "$d/." "$root/usr/lib/systemd/system/" 2>/dev/null || true
done
verify=$(systemd-analyze verify --root="$root" tillswarm-node.service tillswarm-coordinator.service 2>&1) \
  || { echo "$verify"; fail "systemd-analyze verify"; }
[ -z "$verify" ] || { echo "$verify"; fail "systemd-analyze verify has warnings"; }
for unit in tillswarm-coordinator tillswarm-node; do
  grep -qx 'Type=notify' "$root/usr/lib/systemd/system/$unit.service" || fail "$unit is not Type=notify"
  grep -q '^WatchdogSec=' "$root/usr/lib/systemd/system/$unit.service" || fail "$unit has no watchdog"
  grep -qx 'Restart=on-failure' "$root/usr/lib/systemd/system/$unit.service" || fail "$unit does not restart"
done
score=$(systemd-analyze security --offline=yes --root="$root" tillswarm-coordinator.service 2>&1 \
  | sed -n 's/.*exposure level for tillswarm-coordinator.service: \([0-9.]*\).*/\1/p')
node_score=$(systemd-analyze security --offline=yes --root="$root" tillswarm-node.service 2>&1 \
  | sed -n 's/.*exposure level for tillswarm-node.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze verify: both units clean; exposure: coordinator $score, node $node_score (runs up.sh as root)"
python3 -c "import sys; sys.exit(0 if float('$score') <= 2.0 else 1)" \
  || fail "the coordinator's sandbox weakened: exposure $score > 2.0"

# 4. The postinst's user step, inside the throwaway root.
: >"$root/etc/passwd"; : >"$root/etc/group"
systemd-sysusers --root="$root" tillswarm.conf
grep -q '^tillswarm:x:[0-9]*:[0-9]*:.*:/var/lib/tillswarm-coordinator:' "$root/etc/passwd" \
  || { cat "$root/etc/passwd"; fail "no tillswarm system user"; }
uid=$(awk -F: '$1 == "tillswarm" {print $3}' "$root/etc/passwd")
[ "$uid" -lt 1000 ] || fail "tillswarm is not a system user (uid $uid)"
grep -q '^User=tillswarm$' "$root/usr/lib/systemd/system/tillswarm-coordinator.service" \
  || fail "the coordinator does not run as its user"
echo "systemd-sysusers in the root: user tillswarm (uid $uid)"

# 5. The unpacked binary with the unpacked configs. The node's template
# refuses to start until its per-till values are set, pointing at one.
if "$root/usr/bin/tillswarm" node --config "$root/etc/tillswarm/node.toml" >"$work/node.log" 2>&1; then
  fail "the node started on the unedited template"
fi
grep -q 'SET-' "$work/node.log" || { cat "$work/node.log"; fail "the node's refusal does not point at a value to set"; }
# The coordinator starts on the shipped coordinator.toml (only the data
# folder and the port moved into this test's folder) and says READY to a
# stand-in for systemd's notify socket.
python3 - "$work/notify.sock" "$work/ready" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); s.settimeout(60)
while True:
    msg = s.recv(4096).decode()
    if "READY=1" in msg.splitlines():
        open(sys.argv[2], "w").write(msg); break
PY
listener=$!
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
NOTIFY_SOCKET="$work/notify.sock" "$root/usr/bin/tillswarm" coordinator \
  --config "$root/etc/tillswarm/coordinator.toml" --data "$work/data" --listen 127.0.0.1:0 \
  >"$work/coord.out" 2>"$work/coord.log" &
coord=$!
wait "$listener" || { cat "$work/coord.log"; fail "no READY from the packaged coordinator"; }
addr=$(sed -n 's/^STATUS=serving on //p' "$work/ready")
python3 -c "import urllib.request,sys; r=urllib.request.urlopen('http://$addr/healthz', timeout=5); sys.exit(0 if r.status == 200 else 1)" \
  || fail "the packaged coordinator does not answer /healthz on $addr"
grep -q "read the coordinator config" "$work/coord.log" || { cat "$work/coord.log"; fail "the config was not read"; }
kill -TERM "$coord"; wait "$coord" || fail "the coordinator did not stop cleanly on SIGTERM"
coord=
echo "unpacked binary: node refuses the unedited template, coordinator READY on $addr with the shipped config"
echo "packaging test passed"
