#!/usr/bin/env bash
# Installs what locald and its tests need, idempotently; fast when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(docker-registry skopeo umoci runc bubblewrap openssl apache2-utils zstd util-linux time busybox-static uidmap mmdebstrap cargo)
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

# npm install only when the lockfile changed since the last install.
stamp=node_modules/.locald-lock-hash
hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  echo "setup: installing npm dependencies"
  npm install --no-audit --no-fund --loglevel=error
  echo "$hash" > "$stamp"
fi

node_modules/.bin/tsc -b
node scripts/bundle.mjs
