{{/* Object names: "<release>-timescaledb"; the umbrella chart relies on this. */}}
{{- define "timescaledb.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "timescaledb.secretName" -}}
{{- default (include "timescaledb.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}
{{- define "timescaledb.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "timescaledb.labels" -}}
{{ include "timescaledb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: sensorlog
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
