#!/usr/bin/env bash
# Builds walvault and installs it for every user (PostgreSQL runs it as its own user):
#   /opt/walvault/dist/...            the bundle (no node_modules needed at run time)
#   /usr/local/bin/walvault           a wrapper that runs it with a Node >= 22.15
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
cat > "$BINDIR/walvault" <<WRAPPER
#!/bin/sh
exec "$NODE_BIN/node" "$PREFIX/dist/walvault.mjs" "\$@"
WRAPPER
chmod 755 "$BINDIR/walvault"
echo "installed $BINDIR/walvault ($("$BINDIR/walvault" --version), node $("$NODE_BIN/node" --version))"
