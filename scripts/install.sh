#!/usr/bin/env bash
# Builds walvault and installs it for every user (PostgreSQL runs it as its own user):
#   /opt/walvault/dist/...            the bundle (no node_modules needed at run time)
#   /usr/local/bin/walvault           the command PostgreSQL runs: a bash script that answers what the
#                                     look-ahead already did without starting Node (README "The shell
#                                     fast path") and runs the bundle with a Node >= 22.15 otherwise
# usage (as root, from a checkout): bash scripts/install.sh [PREFIX] [BINDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:-/opt/walvault}
BINDIR=${2:-/usr/local/bin}
NODE_BIN="$(scripts/setup-node.sh)"
PATH="$NODE_BIN:$PATH"
[ -d node_modules/@aws-sdk/client-s3 ] || npm ci --no-audit --no-fund --loglevel=error >&2
npm run build --silent >&2
rm -rf "$PREFIX/dist" && mkdir -p "$PREFIX" "$BINDIR"
cp -r dist "$PREFIX/dist"
chmod -R a+rX "$PREFIX"
scripts/make-wrapper.sh "$(cd "$NODE_BIN" && pwd)/node" "$(cd "$PREFIX" && pwd)/dist/walvault.mjs" > "$BINDIR/walvault.new"
chmod 755 "$BINDIR/walvault.new"
mv -f "$BINDIR/walvault.new" "$BINDIR/walvault"
echo "installed $BINDIR/walvault ($("$BINDIR/walvault" --version), node $("$NODE_BIN/node" --version))"
