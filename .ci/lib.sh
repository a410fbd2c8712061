# Shared helpers of the .ci scripts (sourced, not run).
# shellcheck shell=bash

die() {
  echo "error: $1" >&2
  [ $# -gt 1 ] && echo "hint: $2" >&2
  exit 1
}

# Export NAME=VALUE for this script and, as GitHub's GITHUB_ENV does, for the
# steps after it; outside GitHub the line is printed for `eval` or a shell.
export_env() {
  local name=$1 value=$2
  case $value in *$'\n'*) die "$name: a value with a newline cannot be exported" ;; esac
  export "$name=$value"
  if [ -n "${GITHUB_ENV:-}" ]; then
    echo "$name=$value" >>"$GITHUB_ENV"
  else
    echo "export $name=$(printf '%q' "$value")"
  fi
}

distbuild() {
  local bin=${DISTBUILD:-.venv/bin/distbuild}
  [ -x "$bin" ] || die "$bin not found" "run .ci/setup first, or set DISTBUILD to the distbuild program"
  "$bin" "$@"
}

# The image the workflow builds; IMAGE is set by the workflow.
image_name() {
  local image=${IMAGE:-node}
  [[ $image =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "IMAGE=$image is not an image name" "set IMAGE to a definition under images/, e.g. node"
  echo "$image"
}

# The build directory .ci/merge exported; every later release step works on it.
require_build() {
  [ -n "${BUILD:-}" ] || die "BUILD is not set" "run .ci/merge first: it exports BUILD (via GITHUB_ENV)"
  [ -f "$BUILD/build.json" ] || die "$BUILD/build.json not found" "BUILD must be a build directory (out/IMAGE/VERSION)"
}

# The artifact paths of the build record (relative to BUILD), one per line.
artifact_paths() {
  "${PYTHON:-.venv/bin/python}" -c '
import json, sys
paths = sorted({a["path"] for a in json.load(open(sys.argv[1]))["artifacts"]})
for p in paths:
    if p.startswith("/") or ".." in p.split("/") or "\n" in p:
        sys.exit(f"error: {sys.argv[1]}: unsafe artifact path {p!r}")
    print(p)
' "$BUILD/build.json"
}
