{{/* ---------------------------------------------------------------- security
TLS material is mounted read-only from Secrets at fixed paths and the processes are
told the paths; passwords travel as secretKeyRef (see sensorlog.env), never as values. */}}

{{- define "sensorlog.securityDir" -}}/etc/sensorlog{{- end -}}

{{/* Database TLS settings of any process (JSON dict for the env helper's settings). */}}
{{- define "sensorlog.dbSecuritySettings" -}}
{{- $d := .Values.database -}}
{{- $out := dict "databaseSslmode" $d.sslmode -}}
{{- if $d.caSecret.name -}}
{{- $_ := set $out "databaseSslRootCertFile" (printf "%s/db-ca/ca.crt" (include "sensorlog.securityDir" .)) -}}
{{- end -}}
{{- if and (has $d.sslmode (list "verify-ca" "verify-full")) (not $d.caSecret.name) -}}
{{- fail (printf "database.sslmode=%s needs database.caSecret.name (the CA that signed the database's certificate)" $d.sslmode) -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{/* The Kafka client security in effect (JSON dict shaped like .Values.kafkaSecurity):
with the bundled Kafka's kafka.security.enabled, SASL_SSL/SCRAM-SHA-512 as its user
with its generated (or existing) Secrets, whatever kafkaSecurity says; otherwise
kafkaSecurity. The Secret names follow the kafka subchart's kafka.tlsSecret and
kafka.scramSecret. */}}
{{- define "sensorlog.kafkaClient" -}}
{{- $k := .Values.kafkaSecurity -}}
{{- if and .Values.kafka.enabled .Values.kafka.security.enabled -}}
{{- if or (ne $k.protocol "PLAINTEXT") $k.saslUsername $k.saslPasswordSecret.name $k.caSecret.name $k.clientCertSecret -}}
{{- fail "kafka.security.enabled configures the clients of the bundled Kafka itself: leave kafkaSecurity.* unset (it is for an external Kafka)" -}}
{{- end -}}
{{- $s := .Values.kafka.security -}}
{{- $kafka := include "sensorlog.subchart" (list . "kafka") -}}
{{- dict "protocol" "SASL_SSL" "saslMechanism" "SCRAM-SHA-512" "saslUsername" $s.scram.username
      "saslPasswordSecret" (dict "name" (default (printf "%s-scram" $kafka) $s.scram.existingSecret) "key" "password")
      "caSecret" (dict "name" (default (printf "%s-tls" $kafka) $s.tls.existingSecret) "key" "ca.crt")
      "clientCertSecret" "" | toJson -}}
{{- else -}}
{{- $k | toJson -}}
{{- end -}}
{{- end -}}

{{/* Kafka client settings of the writer (JSON dict). */}}
{{- define "sensorlog.kafkaSecuritySettings" -}}
{{- $k := include "sensorlog.kafkaClient" . | fromJson -}}
{{- $dir := include "sensorlog.securityDir" . -}}
{{- $tls := has $k.protocol (list "SSL" "SASL_SSL") -}}
{{- $sasl := has $k.protocol (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- $out := dict "kafkaSecurityProtocol" $k.protocol -}}
{{- if and (not $tls) (or $k.caSecret.name $k.clientCertSecret) -}}
{{- fail (printf "kafkaSecurity.caSecret/clientCertSecret need kafkaSecurity.protocol SSL or SASL_SSL, not %s" $k.protocol) -}}
{{- end -}}
{{- if and $tls $k.caSecret.name -}}
{{- $_ := set $out "kafkaSslCaFile" (printf "%s/kafka-ca/ca.crt" $dir) -}}
{{- end -}}
{{- if and $tls $k.clientCertSecret -}}
{{- $_ := set $out "kafkaSslCertFile" (printf "%s/kafka-client/tls.crt" $dir) -}}
{{- $_ := set $out "kafkaSslKeyFile" (printf "%s/kafka-client/tls.key" $dir) -}}
{{- end -}}
{{- if $sasl -}}
{{- if not (and $k.saslUsername $k.saslPasswordSecret.name) -}}
{{- fail (printf "kafkaSecurity.protocol=%s needs kafkaSecurity.saslUsername and kafkaSecurity.saslPasswordSecret.name" $k.protocol) -}}
{{- end -}}
{{- $_ := set $out "kafkaSaslMechanism" $k.saslMechanism -}}
{{- $_ := set $out "kafkaSaslUsername" $k.saslUsername -}}
{{- end -}}
{{- if and .Values.kafka.enabled (not .Values.kafka.security.enabled) (ne $k.protocol "PLAINTEXT") -}}
{{- fail (printf "kafkaSecurity.protocol=%s, but the bundled Kafka serves PLAINTEXT: set kafka.security.enabled=true (it configures the clients itself) or kafka.enabled=false with externalKafka.bootstrapServers" $k.protocol) -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{/* Kafka secretKeyRefs of the writer (JSON dict for the env helper's secrets). */}}
{{- define "sensorlog.kafkaSecuritySecrets" -}}
{{- $k := include "sensorlog.kafkaClient" . | fromJson -}}
{{- if has $k.protocol (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- dict "kafkaSaslPassword" (dict "name" $k.saslPasswordSecret.name "key" $k.saslPasswordSecret.key) | toJson -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* KEDA's kafka trigger for the writer's consumer group, from the writer's own client
security (sensorlog.kafkaClient), as JSON {"metadata": {...}, "secretTargetRef": [...],
"env": [...]}. The references name the very Secret keys the writer mounts or reads, so
scaler and writer cannot drift apart. sasl and tls are plain words KEDA (>= 2.10) reads
from the trigger metadata; the user name is no secret, but KEDA takes it only as an
authentication parameter, so it comes from the writer container's own variable. */}}
{{- define "sensorlog.kedaKafkaAuth" -}}
{{- $k := include "sensorlog.kafkaClient" . | fromJson -}}
{{- $metadata := dict -}}
{{- $refs := list -}}
{{- $env := list -}}
{{- if has $k.protocol (list "SSL" "SASL_SSL") -}}
{{- $_ := set $metadata "tls" "enable" -}}
{{- with $k.caSecret.name -}}
{{- $refs = append $refs (dict "parameter" "ca" "name" . "key" $k.caSecret.key) -}}
{{- end -}}
{{- with $k.clientCertSecret -}}
{{- $refs = append $refs (dict "parameter" "cert" "name" . "key" "tls.crt") -}}
{{- $refs = append $refs (dict "parameter" "key" "name" . "key" "tls.key") -}}
{{- end -}}
{{- end -}}
{{- if has $k.protocol (list "SASL_PLAINTEXT" "SASL_SSL") -}}
{{- $sasl := get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") $k.saslMechanism -}}
{{- if not $sasl -}}
{{- fail (printf "writer.keda.enabled with kafkaSecurity.saslMechanism=%s: KEDA's kafka trigger is given only PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (sasl plaintext, scram_sha256, scram_sha512); set writer.keda.enabled=false and use writer.autoscaling" $k.saslMechanism) -}}
{{- end -}}
{{- $_ := set $metadata "sasl" $sasl -}}
{{- $refs = append $refs (dict "parameter" "password" "name" $k.saslPasswordSecret.name "key" $k.saslPasswordSecret.key) -}}
{{- /* The env helper's name for the writer's kafkaSaslUsername setting. */ -}}
{{- $env = append $env (dict "parameter" "username" "name" "SENSORLOG_WRITER_KAFKA_SASL_USERNAME" "containerName" "writer") -}}
{{- end -}}
{{- dict "metadata" $metadata "secretTargetRef" $refs "env" $env | toJson -}}
{{- end -}}

{{/* gRPC TLS settings of the query service (JSON dict). */}}
{{- define "sensorlog.grpcSecuritySettings" -}}
{{- $t := .Values.query.tls -}}
{{- $dir := include "sensorlog.securityDir" . -}}
{{- $out := dict -}}
{{- if $t.secret -}}
{{- $_ := set $out "grpcTlsCertFile" (printf "%s/grpc-tls/tls.crt" $dir) -}}
{{- $_ := set $out "grpcTlsKeyFile" (printf "%s/grpc-tls/tls.key" $dir) -}}
{{- $_ := set $out "grpcHealthPort" $t.healthPort -}}
{{- if $t.clientCaSecret -}}
{{- $_ := set $out "grpcTlsClientCaFile" (printf "%s/grpc-client-ca/ca.crt" $dir) -}}
{{- end -}}
{{- else if $t.clientCaSecret -}}
{{- fail "query.tls.clientCaSecret (mTLS) needs query.tls.secret (the server certificate)" -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{/* (list . "db" "kafka" "grpc"): the Secret volumes those parts need, as a YAML list. */}}
{{- define "sensorlog.securityVolumes" -}}
{{- $ctx := index . 0 -}}
{{- $parts := rest . -}}
{{- $v := $ctx.Values -}}
{{- if and (has "db" $parts) $v.database.caSecret.name }}
- name: db-ca
  secret: {secretName: {{ $v.database.caSecret.name }}, items: [{key: {{ $v.database.caSecret.key }}, path: ca.crt}]}
{{- end }}
{{- $k := include "sensorlog.kafkaClient" $ctx | fromJson }}
{{- if and (has "kafka" $parts) (has $k.protocol (list "SSL" "SASL_SSL")) }}
{{- with $k.caSecret.name }}
- name: kafka-ca
  secret: {secretName: {{ . }}, items: [{key: {{ $k.caSecret.key }}, path: ca.crt}]}
{{- end }}
{{- with $k.clientCertSecret }}
- name: kafka-client
  secret: {secretName: {{ . }}, items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]}
{{- end }}
{{- end }}
{{- if and (has "grpc" $parts) $v.query.tls.secret }}
- name: grpc-tls
  secret: {secretName: {{ $v.query.tls.secret }}, items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]}
{{- with $v.query.tls.clientCaSecret }}
- name: grpc-client-ca
  secret: {secretName: {{ . }}, items: [{key: ca.crt, path: ca.crt}]}
{{- end }}
{{- end }}
{{- end -}}

{{/* (list . "db" ...): mounts matching sensorlog.securityVolumes. */}}
{{- define "sensorlog.securityMounts" -}}
{{- $ctx := index . 0 -}}
{{- $dir := include "sensorlog.securityDir" $ctx -}}
{{- range $vol := include "sensorlog.securityVolumes" . | fromYamlArray }}
- {name: {{ $vol.name }}, mountPath: {{ printf "%s/%s" $dir $vol.name }}, readOnly: true}
{{- end }}
{{- end -}}

{{/* (list . "kafka" "database" "apiserver"): NetworkPolicy egress rules for those needs,
plus DNS and, when configured, the trace collector and Consul agent. A bundled
dependency is matched by its pods; an external one by egress.*Peers (or any address)
on its ports. */}}
{{- define "sensorlog.egress" -}}
{{- $ctx := index . 0 -}}
{{- $needs := rest . -}}
{{- $e := $ctx.Values.networkPolicy.egress -}}
- ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
{{- if has "kafka" $needs }}
{{- if $ctx.Values.kafka.enabled }}
- to: [{podSelector: {matchLabels: {app.kubernetes.io/name: kafka, app.kubernetes.io/instance: {{ $ctx.Release.Name }}}}}]
  ports: [{port: 9092}]
{{- else }}
- ports: [{{ range $i, $p := $e.kafkaPorts }}{{ if $i }}, {{ end }}{port: {{ $p }}}{{ end }}]
  {{- with $e.kafkaPeers }}
  to: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- if has "database" $needs }}
{{- if $ctx.Values.timescaledb.enabled }}
- to: [{podSelector: {matchLabels: {app.kubernetes.io/name: timescaledb, app.kubernetes.io/instance: {{ $ctx.Release.Name }}}}}]
  ports: [{port: 5432}]
{{- else }}
- ports: [{{ range $i, $p := $e.databasePorts }}{{ if $i }}, {{ end }}{port: {{ $p }}}{{ end }}]
  {{- with $e.databasePeers }}
  to: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- if has "apiserver" $needs }}
- ports: [{{ range $i, $p := $e.apiServerPorts }}{{ if $i }}, {{ end }}{port: {{ $p }}}{{ end }}]
{{- end }}
{{- if or (include "sensorlog.otlpEndpoint" $ctx) (include "sensorlog.consulAddress" $ctx) }}
- ports: [{{ range $i, $p := $e.observabilityPorts }}{{ if $i }}, {{ end }}{port: {{ $p }}}{{ end }}]
{{- end }}
{{- end -}}
