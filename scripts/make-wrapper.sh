#!/bin/bash
# Writes the `walvault` command PostgreSQL runs (a bash script with the shell fast path, README
# "The shell fast path") to stdout, from scripts/wrapper/{head,push,fetch,tail}.bash with the Node
# binary and dist/walvault.mjs filled in. Used by install.sh, the benchmark and the tests alike.
# usage: scripts/make-wrapper.sh /path/to/node /path/to/dist/walvault.mjs > walvault
set -euo pipefail
(($# == 2)) || { echo "usage: $0 NODE MAIN" >&2; exit 2; }
[[ $1 == /* && $2 == /* ]] || { echo "$0: NODE and MAIN must be absolute paths" >&2; exit 2; }
dir=$(dirname "$0")/wrapper
node=$(printf '%q' "$1")
main=$(printf '%q' "$2")
for part in head push fetch tail; do
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line//@NODE@/$node}
    printf '%s\n' "${line//@MAIN@/$main}"
  done <"$dir/$part.bash"
done
