{{/* FULLNAME: the release name unless fullnameOverride (63 characters, DNS). */}}
{{- define "fluxion.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fluxion.selectorLabels" -}}
app.kubernetes.io/name: fluxiond
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fluxion.labels" -}}
{{ include "fluxion.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "fluxion.tlsSecret" -}}
{{- default (printf "%s-tls" (include "fluxion.fullname" .)) .Values.tls.secretName -}}
{{- end -}}

{{- define "fluxion.adminSecret" -}}
{{- default (printf "%s-admin-token" (include "fluxion.fullname" .)) .Values.adminToken.secretName -}}
{{- end -}}

{{/* The probe kind after "auto" and the checks that keep it working. */}}
{{- define "fluxion.probeKind" -}}
{{- $kind := .Values.probes.kind -}}
{{- if not (has $kind (list "auto" "grpc" "http")) -}}
{{- fail (printf "probes.kind is %q: use auto, grpc or http" $kind) -}}
{{- end -}}
{{- if eq $kind "auto" -}}
{{- $kind = ternary "http" "grpc" .Values.tls.enabled -}}
{{- end -}}
{{- if and (eq $kind "grpc") .Values.tls.enabled -}}
{{- fail "probes.kind grpc needs tls.enabled false: the kubelet's gRPC probe speaks plaintext only (use probes.kind http with TLS)" -}}
{{- end -}}
{{- $kind -}}
{{- end -}}

{{- define "fluxion.scheme" -}}
{{- ternary "https" "http" .Values.tls.enabled -}}
{{- end -}}
