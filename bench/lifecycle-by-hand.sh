#!/usr/bin/env bash
# The reference for bench/build.ts: the five lifecycle phases run directly on host paths, as a
# platform author would script them — no sandbox, no store, the run image copied by skopeo.
# usage: lifecycle-by-hand.sh CNB_DIR APP_DIR WORK_DIR RUN_IMAGE UID GID
set -euo pipefail
cnb=$1 app=$2 work=$3 run_image=$4 uid=$5 gid=$6
layers=$work/layers platform=$work/platform cache=$work/cache repo=$work/layout-repo workspace=$work/workspace
mkdir -p "$layers" "$platform/env" "$cache" "$repo/locald.internal/run"
cp -r "$app" "$workspace"
# A port-free name: the lifecycle parses "<layout path>@sha256:…" back as a reference.
skopeo copy --quiet --src-tls-verify=false "docker://$run_image" "oci:$repo/locald.internal/run/latest"
chown -R "$uid:$gid" "$workspace" "$layers" "$cache" "$repo"
export CNB_PLATFORM_API=0.15 CNB_EXPERIMENTAL_MODE=warn
lc=$cnb/lifecycle
as_user=(setpriv "--reuid=$uid" "--regid=$gid" --clear-groups --)
ids=(-uid "$uid" -gid "$gid")
echo "===> ANALYZING" >&2
"$lc/analyzer" -layout -layout-dir "$repo" "${ids[@]}" -layers "$layers" -run "$cnb/run.toml" \
  -run-image locald.internal/run:latest locald.internal/app:latest
echo "===> DETECTING" >&2
"${as_user[@]}" "$lc/detector" -app "$workspace" -layers "$layers" -platform "$platform" \
  -buildpacks "$cnb/buildpacks" -order "$cnb/order.toml"
echo "===> RESTORING" >&2
"$lc/restorer" -cache-dir "$cache" -layers "$layers" "${ids[@]}" -layout -layout-dir "$repo"
echo "===> BUILDING" >&2
"${as_user[@]}" "$lc/builder" -app "$workspace" -layers "$layers" -platform "$platform" -buildpacks "$cnb/buildpacks"
echo "===> EXPORTING" >&2
"$lc/exporter" -layout -layout-dir "$repo" "${ids[@]}" -app "$workspace" -layers "$layers" -cache-dir "$cache" \
  -launcher "$lc/launcher" -report "$layers/report.toml" locald.internal/app:latest
