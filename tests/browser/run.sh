#!/usr/bin/env bash
# Runs the operator panel's browser tests (tests/browser) against
# target/debug/tillswarm. Installs nothing: needs Debian's chromium and
# chromium-driver, and the Python packages of requirements.txt. Screenshots go
# to target/screenshots/ (fail-<test>.png for a failed test).
set -u
cd "$(dirname "$0")/../.."

missing=""
for f in /usr/bin/chromium /usr/bin/chromedriver; do
  [ -x "$f" ] || missing="$missing $f"
done
if [ -n "$missing" ]; then
  echo "browser tests: missing$missing (apt-get install chromium chromium-driver)" >&2
  # Under CI a skip would hide the tests: it is a failure everywhere.
  echo "browser tests: 0 passed, 1 failed (no browser)"
  exit 1
fi
if ! python3 -c "import selenium, pytest" 2>/dev/null; then
  echo "browser tests: selenium or pytest missing (pip install -r tests/browser/requirements.txt)" >&2
  echo "browser tests: 0 passed, 1 failed (no selenium/pytest)"
  exit 1
fi

args=(-q -x --tb=short -p no:cacheprovider tests/browser)
if python3 -c "import pytest_timeout" 2>/dev/null; then
  args+=(--timeout 300)   # per test; the waits inside are bounded at 60 s
fi

export PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)
log=$(mktemp)
timeout 600 python3 -m pytest "${args[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
secs=$(( $(date +%s) - start ))
summary=$(grep -E '^=* ?[0-9]+ (passed|failed|error)' "$log" | tail -1)
rm -f "$log"
[ "$rc" = 124 ] && summary="timed out after 600 s"
echo "browser tests: exit $rc in ${secs}s; ${summary:-no pytest summary}; screenshots in ${CARGO_TARGET_DIR:-target}/screenshots/"
exit "$rc"
