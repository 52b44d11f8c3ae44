{{/* Object names: "<release>-kafka"; the umbrella chart relies on this. */}}
{{- define "kafka.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "kafka.headless" -}}
{{- printf "%s-headless" (include "kafka.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "kafka.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "kafka.labels" -}}
{{ include "kafka.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | quote }}
app.kubernetes.io/part-of: sensorlog
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{/* Secrets of security.enabled; the umbrella chart names them the same way. */}}
{{- define "kafka.tlsSecret" -}}
{{- default (printf "%s-tls" (include "kafka.fullname" .)) .Values.security.tls.existingSecret -}}
{{- end -}}
{{- define "kafka.scramSecret" -}}
{{- default (printf "%s-scram" (include "kafka.fullname" .)) .Values.security.scram.existingSecret -}}
{{- end -}}

{{/* DNS names of the brokers' certificate: both Services (short, namespaced, svc,
cluster.local), every pod, and a wildcard per headless domain so added brokers
are covered by a kept certificate. */}}
{{- define "kafka.dnsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $names := list -}}
{{- range $svc := list (include "kafka.fullname" .) (include "kafka.headless" .) -}}
{{- $names = concat $names (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) -}}
{{- end -}}
{{- $headless := printf "%s.%s.svc" (include "kafka.headless" .) $ns -}}
{{- range $i := until (int .Values.replicas) -}}
{{- $pod := printf "%s-%d.%s" (include "kafka.fullname" $) $i $headless -}}
{{- $names = concat $names (list $pod (printf "%s.cluster.local" $pod)) -}}
{{- end -}}
{{- $names = concat $names (list (printf "*.%s" $headless) (printf "*.%s.cluster.local" $headless)) -}}
{{- $names | toJson -}}
{{- end -}}

{{/* Base64 of a list of byte values (0-255). */}}
{{- define "kafka.base64" -}}
{{- $alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" -}}
{{- $n := len . -}}
{{- range $g := until (div (add $n 2) 3 | int) -}}
{{- $j := mul $g 3 -}}
{{- $b1 := 0 -}}{{- $b2 := 0 -}}
{{- if lt (add $j 1) $n }}{{ $b1 = index $ (add $j 1) }}{{ end -}}
{{- if lt (add $j 2) $n }}{{ $b2 = index $ (add $j 2) }}{{ end -}}
{{- $v := add (mul (index $ $j) 65536) (mul $b1 256) $b2 -}}
{{- $c := list (div $v 262144) (mod (div $v 4096) 64) (mod (div $v 64) 64) (mod $v 64) -}}
{{- $keep := min 4 (add 1 (sub $n $j)) -}}
{{- range $k := until 4 -}}
{{- if lt $k (int $keep) }}{{ substr (index $c $k | int) (add (index $c $k) 1 | int) $alphabet }}{{ else }}={{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The RSA key of genSignedCert (PKCS#1, "RSA PRIVATE KEY") as PKCS#8 ("PRIVATE
KEY"), the only encoding Kafka's PEM key store reads: PrivateKeyInfo {version 0,
AlgorithmIdentifier rsaEncryption, OCTET STRING pkcs1}. */}}
{{- define "kafka.pkcs8" -}}
{{- $der := . | replace "-----BEGIN RSA PRIVATE KEY-----" "" | replace "-----END RSA PRIVATE KEY-----" "" | nospace | b64dec -}}
{{- $l := len $der -}}
{{- $t := add $l 22 -}}
{{- $head := list 0x30 0x82 (div $t 256) (mod $t 256) 0x02 0x01 0x00 0x30 0x0d 0x06 0x09 0x2a 0x86 0x48 0x86 0xf7 0x0d 0x01 0x01 0x01 0x05 0x00 0x04 0x82 (div $l 256) (mod $l 256) -}}
{{- $b64 := printf "%s%s" (include "kafka.base64" $head | b64dec) $der | b64enc -}}
-----BEGIN PRIVATE KEY-----
{{ range $i := until (div (add (len $b64) 63) 64 | int) }}{{ substr (mul $i 64 | int) (mul (add $i 1) 64 | int) $b64 }}
{{ end }}-----END PRIVATE KEY-----
{{ end -}}

{{/* server.properties of security.enabled (dict ctx voters advertised common); $NAME
are expanded by the shell that writes the file. SASL_SSL on 9092 for clients and
between brokers (SCRAM-SHA-512, own user), the KRaft controller listener on 9093 as
SSL with client certificates (SCRAM cannot serve controllers: its credentials live in
the metadata log they serve), PEM stores throughout. */}}
{{- define "kafka.secureProperties" -}}
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters={{ join "," .voters }}
listeners=SASL_SSL://:9092,CONTROLLER://:9093
advertised.listeners=SASL_SSL://{{ .advertised | replace "$(POD_NAME)" "$POD_NAME" }}
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$INTER_BROKER_USER" password="$INTER_BROKER_PASSWORD";
listener.name.sasl_ssl.ssl.client.auth=none
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=$run/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.crt
ssl.endpoint.identification.algorithm=https
{{- range .common }}
{{ index . 0 }}={{ index . 1 }}
{{- end }}
{{- end -}}
