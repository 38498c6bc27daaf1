{{- define "csi-provider-aws.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "csi-provider-aws.fullname" -}}
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

{{- define "csi-provider-aws.serviceAccountName" -}}
{{- default (include "csi-provider-aws.fullname" .) .Values.rbac.serviceAccountName }}
{{- end }}

{{- define "csi-provider-aws.selectorLabels" -}}
app.kubernetes.io/name: {{ include "csi-provider-aws.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app: csi-secrets-store-provider-aws
{{- end }}

{{- define "csi-provider-aws.labels" -}}
{{ include "csi-provider-aws.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- /*
--http-addr from httpBindAddress and port. pod-ip and pod-ipv6 name the
POD_IP variable (the downward API's status.podIP), which the kubelet expands
in args; an IPv6 address takes brackets.
*/}}
{{- define "csi-provider-aws.httpAddr" -}}
{{- $hosts := dict "0.0.0.0" "0.0.0.0" "::" "[::]" "pod-ip" "$(POD_IP)" "pod-ipv6" "[$(POD_IP)]" -}}
{{- $host := get $hosts .Values.httpBindAddress -}}
{{- required "httpBindAddress: one of 0.0.0.0, ::, pod-ip, pod-ipv6" $host }}:{{ .Values.port }}
{{- end }}

{{- define "csi-provider-aws.bindsPodIP" -}}
{{- if hasPrefix "pod-ip" .Values.httpBindAddress }}true{{ end }}
{{- end }}
