#!/usr/bin/env sh
# Copy the canonical HelmRelease CRD (crds/helmrelease.yaml at the repository root) into the operator's chart.
# The chart needs a real file (helm package does not follow symlinks reliably), and the root copy stays canonical:
# tests/unit/test_operator_chart_files.py fails until this script is run after the CRD changes.
set -eu
manifests=$(cd "$(dirname "$0")" && pwd)
cp "$manifests/../crds/helmrelease.yaml" "$manifests/chart/helmrelease-operator/crds/helmrelease.yaml"
