{{/* Names, labels and the decisions several templates share. */}}

{{- define "helmrelease-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "helmrelease-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects also carry the release namespace: one install per tenant namespace (each watching its own
namespaces) must not collide on ClusterRole names.
*/}}
{{- define "helmrelease-operator.clusterScopedName" -}}
{{- printf "%s-%s" (include "helmrelease-operator.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "helmrelease-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "helmrelease-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "helmrelease-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "helmrelease-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Shards: the Deployment of shard .shard (empty: the HelmReleases without a shard label) and the label that tells its
Pods apart. The unsharded Deployment keeps the chart's name and selector (a Deployment's selector cannot change).
*/}}
{{- define "helmrelease-operator.shardName" -}}
{{- if .shard }}
{{- printf "%s-%s" (include "helmrelease-operator.fullname" .) .shard }}
{{- else }}
{{- include "helmrelease-operator.fullname" . }}
{{- end }}
{{- end }}

{{- define "helmrelease-operator.shardLabel" -}}
{{- with .shard }}
helmrelease.helm.fluxcd.io/shard: {{ . }}
{{- end }}
{{- end }}

{{- define "helmrelease-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "helmrelease-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "helmrelease-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when ServiceAccount impersonation is granted: multi-tenancy needs it, or it was asked for. */}}
{{- define "helmrelease-operator.impersonation" -}}
{{- if or .Values.operator.requireServiceAccount .Values.rbac.impersonation.enabled .Values.rbac.impersonation.usersAndGroups }}true{{ end }}
{{- end }}

{{/* The operator's ServiceAccount as an RBAC subject. */}}
{{- define "helmrelease-operator.subject" -}}
- kind: ServiceAccount
  name: {{ include "helmrelease-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Watched namespaces without duplicates; empty means cluster-wide. */}}
{{- define "helmrelease-operator.watchNamespaces" -}}
{{- .Values.watchNamespaces | default list | uniq | toJson }}
{{- end }}

{{/*
Rules the operator needs in every namespace it watches; in a ClusterRole when cluster-wide, in a Role per
namespace otherwise. Pass a dict with "root" (the chart context) and "peerings" (kopfpeerings or
clusterkopfpeerings, the peering kind this scope uses).
*/}}
{{- define "helmrelease-operator.watchedNamespaceRules" -}}
{{- $root := .root -}}
# HelmReleases: kopf watches them and patches finalizers and its annotations; the sidecar patches tags.
- apiGroups: [helm.fluxcd.io]
  resources: [helmreleases]
  verbs: [get, list, watch, patch, update]
- apiGroups: [helm.fluxcd.io]
  resources: [helmreleases/status]
  verbs: [get, patch, update]
# Events on HelmReleases (kopf and the reconciler).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# valuesFrom sources.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
# Secrets: valuesFrom sources and chart credentials (get), the index of helm's release storage and the watch that
# notices a values Secret change (list, watch), the sidecar's registry pull secrets (get). Helm writes its release
# storage (sh.helm.release.v1.* Secrets) as the operator (create, update, patch, delete), except when every release
# must run as its own ServiceAccount (operator.requireServiceAccount): then helm writes it as that account, and the
# operator's own identity can read Secrets but never write or delete one.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch{{ if not $root.Values.operator.requireServiceAccount }}, create, update, patch, delete{{ end }}]
# imagePullSecrets of the ServiceAccounts releases run as; whether a spec.serviceAccountName exists (never
# impersonate one that does not).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get]
{{- if include "helmrelease-operator.impersonation" $root }}
# Multi-tenancy: run helm as the HelmRelease's spec.serviceAccountName.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [impersonate]
{{- end }}
{{- if $root.Values.operator.peering.name }}
# kopf peering: keep-alives in the peering object, and seeing the other peers.
- apiGroups: [kopf.dev]
  resources: [{{ .peerings }}]
  verbs: [get, list, watch, patch]
# Claims on releases: a Lease per release while a replica runs Helm on it, so peers never do at once.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update, delete]
{{- end }}
{{- end }}

{{/* Rules that only exist cluster-wide, needed in both modes. */}}
{{- define "helmrelease-operator.clusterRules" -}}
# kopf discovers the resources it serves from CRDs and notices them appearing.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- if .Values.rbac.impersonation.usersAndGroups }}
# Impersonating identities other than ServiceAccounts (users and groups are cluster-scoped).
- apiGroups: [""]
  resources: [users, groups]
  verbs: [impersonate]
{{- end }}
{{- end }}

{{/*
The metrics ports of the Service (and the ServiceMonitor's endpoints), as a JSON list of {name, port, targetPort}:
the reconciler's unless operator.metricsPort is 0, the sidecar's when it runs.
*/}}
{{- define "helmrelease-operator.metricsPorts" -}}
{{- $ports := list }}
{{- if .Values.operator.metricsPort }}
{{- $ports = append $ports (dict "name" "operator-metrics" "port" (int .Values.metrics.service.operatorPort) "targetPort" "op-metrics") }}
{{- end }}
{{- if .Values.imagePolicy.enabled }}
{{- $ports = append $ports (dict "name" "metrics" "port" (int .Values.metrics.service.port) "targetPort" "metrics") }}
{{- end }}
{{- toJson $ports }}
{{- end }}

{{/* Refuse values that would render a Deployment that cannot work, with the reason. */}}
{{- define "helmrelease-operator.validate" -}}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount must be 0 or 1: two operators must not act on one release at once, and kopf peers of equal priority all freeze" }}
{{- end }}
{{- if not (has .Values.logFormat (list "text" "json")) }}
{{- fail (printf "logFormat must be text or json, not %q" .Values.logFormat) }}
{{- end }}
{{- if not (has (upper .Values.logLevel) (list "DEBUG" "INFO" "WARNING" "ERROR" "CRITICAL")) }}
{{- fail (printf "logLevel must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not %q" .Values.logLevel) }}
{{- end }}
{{- with .Values.imagePolicy.git }}
{{- if and (not .url) (or .branch .path .author .writebackAll .defaultNamespace .sshKeySecret.name .knownHosts.configMapName) }}
{{- fail "the imagePolicy.git settings need imagePolicy.git.url: without a repository the sidecar refuses them" }}
{{- end }}
{{- end }}
{{- if and .Values.imagePolicy.registry.caBundles.hosts (not .Values.imagePolicy.registry.caBundles.configMapName) }}
{{- fail "imagePolicy.registry.caBundles.hosts needs imagePolicy.registry.caBundles.configMapName" }}
{{- end }}
{{- $shards := .Values.shards | default list }}
{{- range $shards }}
{{- if not (and (kindIs "string" .) (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" .) (le (len .) 63)) }}
{{- fail (printf "shards: %v is not a shard name (lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)" .) }}
{{- end }}
{{- end }}
{{- if ne (len $shards) (len (uniq $shards)) }}
{{- fail "shards: each name once: two Deployments of one shard would reconcile the same HelmReleases" }}
{{- end }}
{{- if and .Values.metrics.service.enabled (not (include "helmrelease-operator.metricsPorts" . | fromJsonArray)) }}
{{- fail "metrics.service.enabled needs metrics to serve: operator.metricsPort is 0 and imagePolicy.enabled is false" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled scrapes the metrics Service: it needs metrics.service.enabled" }}
{{- end }}
{{- with .Values.imagePolicy.webhooks }}
{{- if and .enabled (not $.Values.imagePolicy.enabled) }}
{{- fail "imagePolicy.webhooks.enabled serves the image-policy sidecar's webhooks: it needs imagePolicy.enabled" }}
{{- end }}
{{- if and .enabled (not .tokenSecret.name) }}
{{- fail "imagePolicy.webhooks.enabled needs imagePolicy.webhooks.tokenSecret.name: webhooks are never served unauthenticated" }}
{{- end }}
{{- end }}
{{- end }}
