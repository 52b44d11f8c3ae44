{{/* ---------------------------------------------------------------- names */}}
{{- define "sensorlog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sensorlog.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "sensorlog.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sensorlog.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", e.g. (include "sensorlog.component" (list . "query")) */}}
{{- define "sensorlog.component" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" (include "sensorlog.fullname" $ctx) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Names of the bundled subcharts' objects ("<release>-<chart>", see each subchart's helpers). */}}
{{- define "sensorlog.subchart" -}}
{{- $ctx := index . 0 -}}
{{- printf "%s-%s" $ctx.Release.Name (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* ---------------------------------------------------------------- labels */}}
{{- define "sensorlog.selectorLabels" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ include "sensorlog.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "sensorlog.labels" -}}
{{- $ctx := index . 0 -}}
{{ include "sensorlog.selectorLabels" . }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sensorlog
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" }}
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- images */}}
{{/* (list . .Values.query) -> registry/repository:tag */}}
{{- define "sensorlog.image" -}}
{{- $ctx := index . 0 -}}
{{- $c := index . 1 -}}
{{- $repo := $c.repository -}}
{{- with $ctx.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- printf "%s:%s" $repo (default (default $ctx.Chart.AppVersion $ctx.Values.image.tag) $c.tag) -}}
{{- end -}}

{{/* ---------------------------------------------------------------- endpoints */}}
{{- define "sensorlog.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s.%s.svc:9092" (include "sensorlog.subchart" (list . "kafka")) .Release.Namespace -}}
{{- else if .Values.externalKafka.bootstrapServers -}}
{{- .Values.externalKafka.bootstrapServers -}}
{{- else -}}
{{- fail "kafka.enabled is false: set externalKafka.bootstrapServers to your Kafka's host:port list" -}}
{{- end -}}
{{- end -}}

{{/* secretKeyRef of the primary DSN as a dict {name, key}. */}}
{{- define "sensorlog.dsnSecretRef" -}}
{{- if .Values.database.existingSecret -}}
{{- dict "name" .Values.database.existingSecret "key" .Values.database.existingSecretKey | toJson -}}
{{- else if .Values.timescaledb.enabled -}}
{{- dict "name" (default (include "sensorlog.subchart" (list . "timescaledb")) .Values.timescaledb.auth.existingSecret) "key" "dsn" | toJson -}}
{{- else -}}
{{- fail "timescaledb.enabled is false: set database.existingSecret to a Secret holding the DSN (key database.existingSecretKey)" -}}
{{- end -}}
{{- end -}}

{{/* Consul HTTP API for query and writer; empty when they should not use Consul. */}}
{{- define "sensorlog.consulAddress" -}}
{{- if .Values.consulClient.enabled -}}
{{- if .Values.consulClient.address -}}
{{- .Values.consulClient.address -}}
{{- else if .Values.consul.enabled -}}
{{- printf "http://%s.%s.svc:8500" (include "sensorlog.subchart" (list . "consul")) .Release.Namespace -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sensorlog.otlpEndpoint" -}}
{{- if .Values.jaeger.enabled -}}
{{- printf "http://%s.%s.svc:4317" (include "sensorlog.subchart" (list . "jaeger")) .Release.Namespace -}}
{{- else -}}
{{- .Values.externalTracing.otlpEndpoint -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- env
The one place values become environment variables.
  include "sensorlog.env" (dict "ctx" . "prefix" "SENSORLOG_QUERY_" "service" "sensorlog-query"
                                "settings" (dict "grpcPort" 50051 ...) "secrets" (dict "databaseDsn" $ref))
settings: camelCase keys -> PREFIX + UPPER_SNAKE (batchMaxRecords -> SENSORLOG_WRITER_BATCH_MAX_RECORDS);
empty or null values are left out so the process keeps its own default.
secrets: camelCase keys -> the same names, as secretKeyRef {name, key}; never inline values.
Every process also gets the common settings (log, metrics port) and its tracing_*
settings when a trace endpoint exists; with "consul" true (query, writer) also its
consul_* settings when a Consul address exists. */}}
{{- define "sensorlog.env" -}}
{{- $ctx := .ctx -}}
{{- $common := dict "logLevel" $ctx.Values.log.level "logFormat" $ctx.Values.log.format "metricsPort" $ctx.Values.metricsPort -}}
{{- with include "sensorlog.otlpEndpoint" $ctx }}
{{- $_ := merge $common (dict "tracingEndpoint" . "tracingServiceName" $.service "tracingSampleRatio" $ctx.Values.tracing.sampleRatio) }}
{{- end }}
{{- $secrets := deepCopy (default dict .secrets) -}}
{{- if .consul }}
{{- with include "sensorlog.consulAddress" $ctx }}
{{- $_ := merge $common (dict "consulEnabled" true "consulAddress" . "consulServiceName" $.service "consulKvConfig" $ctx.Values.consulClient.kvConfig) }}
{{- with $ctx.Values.consulClient.tokenSecret }}
{{- $_ := set $secrets "consulToken" (dict "name" . "key" $ctx.Values.consulClient.tokenSecretKey) }}
{{- end }}
{{- end }}
{{- end }}
{{- $all := merge (deepCopy (default dict .settings)) $common -}}
{{- range $key := keys $all | sortAlpha }}
{{- $value := get $all $key }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
- name: {{ printf "%s%s" $.prefix (snakecase $key | upper) }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- range $key := keys $secrets | sortAlpha }}
{{- $ref := get $secrets $key }}
- name: {{ printf "%s%s" $.prefix (snakecase $key | upper) }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- pod pieces */}}
{{- define "sensorlog.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "sensorlog.securityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}

{{- define "sensorlog.metricsAnnotations" -}}
{{- if .Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metricsPort | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* The migrate init container / Job container (list . "name"). */}}
{{- define "sensorlog.migrateContainer" -}}
{{- $ctx := index . 0 -}}
name: {{ index . 1 }}
image: {{ include "sensorlog.image" (list $ctx $ctx.Values.migrations) }}
imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
command: [sensorlog-migrate]
securityContext: {{- include "sensorlog.securityContext" $ctx | nindent 2 }}
env:
  {{- include "sensorlog.env" (dict "ctx" $ctx "prefix" "SENSORLOG_MIGRATE_" "service" "sensorlog-migrate"
        "settings" (merge (dict "timescaledb" $ctx.Values.migrations.timescaledb "metricsPort" 0) $ctx.Values.migrations.config
            (include "sensorlog.dbSecuritySettings" $ctx | fromJson))
        "secrets" (dict "databaseDsn" (include "sensorlog.dsnSecretRef" $ctx | fromJson))) | nindent 2 }}
resources: {{- toYaml $ctx.Values.migrations.resources | nindent 2 }}
volumeMounts:
  - {name: tmp, mountPath: /tmp}
  {{- include "sensorlog.securityMounts" (list $ctx "db") | nindent 2 }}
{{- end -}}

{{/* ---------------------------------------------------------------- checks */}}
{{- define "sensorlog.validate" -}}
{{- $partitions := int .Values.topics.readings.partitions -}}
{{- $w := .Values.writer -}}
{{- if $w.enabled -}}
{{- if gt (int $w.replicas) $partitions -}}
{{- fail (printf "writer.replicas=%d exceeds topics.readings.partitions=%d: a consumer group never uses more members than partitions, the extra writers would sit idle. Lower writer.replicas or raise topics.readings.partitions." (int $w.replicas) $partitions) -}}
{{- end -}}
{{- if and $w.autoscaling.enabled (gt (int $w.autoscaling.maxReplicas) $partitions) -}}
{{- fail (printf "writer.autoscaling.maxReplicas=%d exceeds topics.readings.partitions=%d: replicas beyond the partition count would sit idle." (int $w.autoscaling.maxReplicas) $partitions) -}}
{{- end -}}
{{- if and $w.keda.enabled (gt (int $w.keda.maxReplicaCount) $partitions) -}}
{{- fail (printf "writer.keda.maxReplicaCount=%d exceeds topics.readings.partitions=%d: replicas beyond the partition count would sit idle." (int $w.keda.maxReplicaCount) $partitions) -}}
{{- end -}}
{{- if and $w.keda.enabled $w.autoscaling.enabled -}}
{{- fail "writer.keda.enabled and writer.autoscaling.enabled are both true: KEDA creates its own HPA, set writer.autoscaling.enabled=false" -}}
{{- end -}}
{{- if and $w.autoscaling.enabled (gt (int $w.autoscaling.minReplicas) (int $w.autoscaling.maxReplicas)) -}}
{{- fail "writer.autoscaling.minReplicas exceeds writer.autoscaling.maxReplicas" -}}
{{- end -}}
{{- if le (float64 $w.terminationGracePeriodSeconds) (float64 $w.shutdownGraceSeconds) -}}
{{- fail (printf "writer.terminationGracePeriodSeconds=%v must exceed writer.shutdownGraceSeconds=%v, or Kubernetes kills the writer mid-batch" $w.terminationGracePeriodSeconds $w.shutdownGraceSeconds) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.query.autoscaling.enabled (gt (int .Values.query.autoscaling.minReplicas) (int .Values.query.autoscaling.maxReplicas)) -}}
{{- fail "query.autoscaling.minReplicas exceeds query.autoscaling.maxReplicas" -}}
{{- end -}}
{{- if and .Values.kafka.enabled (gt (int .Values.topics.replicationFactor) (int .Values.kafka.replicas)) -}}
{{- fail (printf "topics.replicationFactor=%d exceeds kafka.replicas=%d" (int .Values.topics.replicationFactor) (int .Values.kafka.replicas)) -}}
{{- end -}}
{{- end -}}
