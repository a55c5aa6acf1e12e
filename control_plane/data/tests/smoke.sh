#!/bin/sh
# Smoke test every Factory image passes: the layout is there, the account exists, and the image
# runs on the machine it was built for.
set -eu
fail() { echo "FAIL: $*" >&2; exit 1; }

test -f /etc/factory-release || fail "/etc/factory-release is missing"
grep -q '^FACTORY_CORE_VERSION=' /etc/factory-release || fail "core fragment not applied"
grep -q '^app:x:10001:' /etc/passwd || fail "service account 'app' missing"
[ "${FACTORY_MANIFEST_ID:-}" != "" ] || fail "FACTORY_MANIFEST_ID not set"

machine=$(uname -m)
case "${FACTORY_PLATFORM:-}" in
  linux/amd64*) want=x86_64 ;;
  linux/arm64*) want=aarch64 ;;
  *) fail "unexpected FACTORY_PLATFORM=${FACTORY_PLATFORM:-}" ;;
esac
[ "$machine" = "$want" ] || fail "runs as $machine, expected $want for $FACTORY_PLATFORM"

if [ -x /opt/factory/bin/worker ]; then
  /opt/factory/bin/worker | grep -q "on $machine" || fail "worker entry point misbehaves"
fi
echo "smoke ok: $FACTORY_MANIFEST_ID on $machine"
