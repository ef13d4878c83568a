#!/usr/bin/env bash
# Build the pinned external binaries into a per-version cache outside the repo and link them into bin/.
# A warm cache makes this a few stat calls; a cold one builds from the Go module proxy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${HELMRELEASE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/helmrelease-operator}
bindir="$repo/bin"
mkdir -p "$cache" "$bindir"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf '[tools] %s\n' "$*" >&2; }

# link NAME TARGET: point bin/NAME at a cached binary.
link() { ln -sfn "$2" "$bindir/$1"; }

# bin_name PACKAGE[=NAME]: the binary's name: NAME when given, else the package's last path element.
bin_name() { local spec=$1; if [ "${spec#*=}" != "$spec" ]; then echo "${spec#*=}"; else basename "$spec"; fi; }

# build NAME VERSION MODULE LOCAL_VERSION PACKAGE...: build the packages (commands) of MODULE@VERSION with a
# generated wrapper module (see wrapper-gomod.sh) into $cache/NAME-VERSION/bin, unless they are already there,
# then link each into bin/. The link name is the package's last path element unless given as PACKAGE=LINK.
build() {
  local name=$1 version=$2 module=$3 local_version=$4; shift 4
  local dir="$cache/$name-$version" spec missing=0
  for spec in "$@"; do [ -x "$dir/bin/$(bin_name "$spec")" ] || missing=1; done
  if [ "$missing" = 1 ]; then
    log "building $module@$version: $* (cold cache)"
    local start=$SECONDS
    mkdir -p "$dir/wrapper"
    "$here/wrapper-gomod.sh" "$module" "$version" "$local_version" > "$dir/wrapper/go.mod.new"
    mv "$dir/wrapper/go.mod.new" "$dir/wrapper/go.mod"
    rm -rf "$dir/bin.partial" && mkdir -p "$dir/bin.partial"
    # -mod=mod lets go fill the wrapper's go.sum (verified against the checksum database) for exactly these packages.
    for spec in "$@"; do
      (cd "$dir/wrapper" && go build -mod=mod -trimpath -ldflags="-s -w ${LDFLAGS_EXTRA:-}" \
        -o "../bin.partial/$(bin_name "$spec")" "${spec%%=*}")
    done
    rm -rf "$dir/bin" && mv "$dir/bin.partial" "$dir/bin"
    log "built $name $version in $((SECONDS - start))s"
  fi
  for spec in "$@"; do link "$(bin_name "$spec")" "$dir/bin/$(bin_name "$spec")"; done
}

kube_ldflags() {
  local minor; minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
  echo "-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
}

want=${*:-kubernetes etcd helm helm3 registry}
for tool in $want; do
  case $tool in
    kubernetes)
      LDFLAGS_EXTRA=$(kube_ldflags) build kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes "v0${KUBERNETES_VERSION#v1}" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ;;
    etcd) build etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "" go.etcd.io/etcd/server/v3=etcd ;;
    helm) build helm "$HELM_VERSION" helm.sh/helm/v4 "" helm.sh/helm/v4/cmd/helm ;;
    helm3) build helm3 "$HELM3_VERSION" helm.sh/helm/v3 "" helm.sh/helm/v3/cmd/helm=helm3 ;;
    registry) build registry "$REGISTRY_VERSION" github.com/distribution/distribution/v3 "" \
      github.com/distribution/distribution/v3/cmd/registry ;;
    *) log "unknown tool $tool"; exit 2 ;;
  esac
done
