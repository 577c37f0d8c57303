#!/usr/bin/env bash
# curl as an agent, both ways in. Run after pasting the export lines `airlock dev` prints.
set -euo pipefail
proxy="${AIRLOCK_PROXY:-http://127.0.0.1:7879}"

echo "route mode:"
curl -sS "$proxy/r/demo/echo" -H 'Authorization: Bearer {{secret:demo/api-key}}'
echo
echo "proxy mode (the inject rule adds X-Api-Key):"
curl -sS --proxy "$proxy" http://demo.airlock.local/echo
echo
