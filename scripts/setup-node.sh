#!/usr/bin/env bash
# Prints the bin directory of a Node >= 22.15, installing Node 24 from the npm registry when the
# machine's own node is older. The npm package node-linux-<arch> ships the real binary (it is what the
# `node` package's installer fetches; installing it directly needs no install scripts).
# usage: export PATH="$(scripts/setup-node.sh):$PATH"
set -euo pipefail
PREFIX=${WALVAULT_NODE_PREFIX:-/opt/walvault-node}

ok() { # node binary -> exit 0 when >= 22.15
  "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=15)?0:1)' 2>/dev/null
}

if command -v node >/dev/null 2>&1 && ok "$(command -v node)"; then
  dirname "$(command -v node)"; exit 0
fi
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) echo "setup-node: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
BIN=$PREFIX/node_modules/node-linux-$arch/bin
if [ ! -x "$BIN/node" ] || ! ok "$BIN/node"; then
  command -v npm >/dev/null 2>&1 || { echo "setup-node: npm is needed to install Node 24" >&2; exit 1; }
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "node-linux-$arch@24" >&2
fi
# PostgreSQL runs walvault as its own user: the runtime must be readable and executable by others.
chmod -R a+rX "$PREFIX"
ok "$BIN/node" || { echo "setup-node: $BIN/node is not a usable Node >= 22.15" >&2; exit 1; }
echo "$BIN"
