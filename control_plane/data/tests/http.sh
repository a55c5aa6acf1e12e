#!/bin/sh
# Start the site on loopback (the test container has no other network) and fetch the page.
set -eu
PORT=18080 /opt/factory/bin/serve &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
i=0
until timeout 2 wget -q -O /tmp/index.html "http://127.0.0.1:18080/" 2>/dev/null; do
  i=$((i + 1))
  [ "$i" -lt 20 ] || { echo "FAIL: httpd did not answer on 127.0.0.1:18080" >&2; exit 1; }
  sleep 0.2
done
grep -q 'factory edge proxy ok' /tmp/index.html || { echo "FAIL: unexpected page" >&2; exit 1; }
echo "http ok"
