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

# go_install NAME DIRNAME PACKAGE@VERSION: `go install` into $cache/DIRNAME/bin unless already there.
go_install() {
  local name=$1 dir="$cache/$2" pkg=$3 bin
  bin="$dir/bin/$(basename "${pkg%@*}")"
  if [ ! -x "$bin" ]; then
    log "building $pkg (cold cache)"
    local start=$SECONDS
    GOBIN="$dir/bin.partial" go install -trimpath -ldflags='-s -w' "$pkg"
    rm -rf "$dir/bin" && mv "$dir/bin.partial" "$dir/bin"
    log "built $pkg in $((SECONDS - start))s"
  fi
  link "$name" "$bin"
}

# Kubernetes: k8s.io/kubernetes pins its staging modules to ./staging/src/..., which does not resolve from the
# module proxy. A generated wrapper module replaces every staging module with its published v0.X.Y.
build_kubernetes() {
  local dir="$cache/kubernetes-$KUBERNETES_VERSION" staging_version="v0${KUBERNETES_VERSION#v1}"
  if [ -x "$dir/bin/kube-apiserver" ] && [ -x "$dir/bin/kubectl" ]; then
    link kube-apiserver "$dir/bin/kube-apiserver"; link kubectl "$dir/bin/kubectl"; return
  fi
  log "building kube-apiserver and kubectl $KUBERNETES_VERSION (cold cache, several minutes)"
  local start=$SECONDS mod="$dir/wrapper"
  mkdir -p "$mod"
  "$here/kube-wrapper-gomod.sh" "$KUBERNETES_VERSION" > "$mod/go.mod.new"
  mv "$mod/go.mod.new" "$mod/go.mod"
  (
    cd "$mod"
    go mod download k8s.io/kubernetes
    # -mod=mod lets go fill go.sum for exactly the packages these two commands need.
    mkdir -p ../bin.partial
    go build -mod=mod -trimpath -ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)" \
      -o ../bin.partial/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  )
  rm -rf "$dir/bin" && mv "$dir/bin.partial" "$dir/bin"
  log "built kubernetes $KUBERNETES_VERSION (staging $staging_version) in $((SECONDS - start))s"
  link kube-apiserver "$dir/bin/kube-apiserver"; link kubectl "$dir/bin/kubectl"
}

want=${*:-kubernetes etcd helm helm3 registry}
for tool in $want; do
  case $tool in
    kubernetes) build_kubernetes ;;
    etcd) go_install etcd "etcd-$ETCD_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" ;;
    helm) go_install helm "helm-$HELM_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" ;;
    helm3) go_install helm3 "helm3-$HELM3_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM3_VERSION" ;;
    registry) go_install registry "registry-$REGISTRY_VERSION" "github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION" ;;
    *) log "unknown tool $tool"; exit 2 ;;
  esac
done
