{{/* The chart's name, or nameOverride. */}}
{{- define "netsonde.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Namespaced objects' name: fullnameOverride, else the release name when it already says
netsonde, else <release>-netsonde (63 characters at most, as Kubernetes names must be).
*/}}
{{- define "netsonde.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "netsonde.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "netsonde.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Cluster-scoped objects' name (ClusterRole, ClusterRoleBinding): the fullname and the
namespace, so two releases of the same name in two namespaces do not take each other's.
*/}}
{{- define "netsonde.clusterName" -}}
{{- printf "%s-%s" (include "netsonde.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "netsonde.selectorLabels" -}}
app.kubernetes.io/name: {{ include "netsonde.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "netsonde.labels" -}}
{{ include "netsonde.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}
