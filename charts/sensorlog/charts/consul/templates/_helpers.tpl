{{/* Object names: "<release>-consul"; the umbrella chart relies on this. */}}
{{- define "consul.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "consul.headless" -}}
{{- printf "%s-headless" (include "consul.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "consul.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "consul.labels" -}}
{{ include "consul.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: sensorlog
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
