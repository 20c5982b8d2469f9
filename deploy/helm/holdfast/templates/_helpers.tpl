{{/*
Names, labels and the pod pieces every Holdfast Deployment shares.

Helpers that describe one component take a dict: (dict "root" $ "component" "ledger").
*/}}

{{/* The chart name, overridable. */}}
{{- define "holdfast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix: <release>-holdfast, or the release name alone when it already
contains the chart name. Kept to 45 characters so that the longest component suffix
("-billing-stream") still fits the 63-character limit on Service names and label values.
*/}}
{{- define "holdfast.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of one component's resources: <fullname>-<component>. */}}
{{- define "holdfast.componentName" -}}
{{- printf "%s-%s" (include "holdfast.fullname" .root) .component }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "holdfast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component; never change them, Deployments cannot. */}}
{{- define "holdfast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "holdfast.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every label of one component's resources. */}}
{{- define "holdfast.labels" -}}
helm.sh/chart: {{ include "holdfast.chart" .root }}
{{ include "holdfast.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: holdfast
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Labels of chart-wide resources (the ServiceAccount). */}}
{{- define "holdfast.commonLabels" -}}
helm.sh/chart: {{ include "holdfast.chart" . }}
app.kubernetes.io/name: {{ include "holdfast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: holdfast
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "holdfast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "holdfast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest, or repository:tag with the tag defaulting to the appVersion. */}}
{{- define "holdfast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Environment every process gets. DATABASE_URL (and NATS_URL when it carries credentials) come
from Secrets by reference only: their values never pass through the chart. Numbers go through
int64 because Helm reads them as floats, and a float of a million or more prints as 1e+06.
*/}}
{{- define "holdfast.commonEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.existingSecret is required: the name of a Secret holding the PostgreSQL URL (see the chart's README.md)" .Values.database.existingSecret | quote }}
      key: {{ .Values.database.urlKey | quote }}
{{- if .Values.nats.existingSecret }}
- name: NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.existingSecret | quote }}
      key: {{ .Values.nats.urlKey | quote }}
{{- else }}
- name: NATS_URL
  value: {{ .Values.nats.url | quote }}
{{- end }}
- name: LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: HOLDFAST_NAMESPACE
  value: {{ .Values.config.namespace | quote }}
{{- with .Values.config.streamName }}
- name: HOLDFAST_STREAM_NAME
  value: {{ . | quote }}
{{- end }}
- name: HOLDFAST_STREAM_REPLICAS
  value: {{ .Values.config.streamReplicas | int64 | quote }}
- name: HOLDFAST_STREAM_MAX_AGE_HOURS
  value: {{ .Values.config.streamMaxAgeHours | int64 | quote }}
- name: HOLDFAST_PG_CONNECT_TIMEOUT_MS
  value: {{ .Values.config.pgConnectTimeoutMs | int64 | quote }}
- name: HOLDFAST_PG_STATEMENT_TIMEOUT_MS
  value: {{ .Values.config.pgStatementTimeoutMs | int64 | quote }}
- name: HOLDFAST_WEBHOOK_ALLOWED_NETWORKS
  value: {{ .Values.config.webhookAllowedNetworks | quote }}
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The Prometheus scrape annotations of a pod, set into the dict given as "into" (nothing is
printed): (dict "root" $ "port" 9464 "into" $annotations). Only with metrics.podAnnotations.
*/}}
{{- define "holdfast.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
{{- $_ := set .into "prometheus.io/scrape" "true" }}
{{- $_ := set .into "prometheus.io/port" (toString (int64 .port)) }}
{{- $_ := set .into "prometheus.io/path" "/metrics" }}
{{- end }}
{{- end }}

{{/*
A worker's metrics port: the HOLDFAST_METRICS_PORT it reads, under "env", and the named
container port, under "ports"; both empty when metrics are off. (dict "root" $ "part" "env")
*/}}
{{- define "holdfast.workerMetrics" -}}
{{- if .root.Values.metrics.enabled }}
{{- if eq .part "env" }}
- name: HOLDFAST_METRICS_PORT
  value: {{ .root.Values.metrics.port | int64 | quote }}
{{- else }}
ports:
  - name: metrics
    containerPort: {{ .root.Values.metrics.port }}
    protocol: TCP
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod-level settings every pod shares: service account, pull secrets, security context and
scheduling. The values' podSecurityContext is merged under runAsNonRoot and the runtime's
default seccomp profile, which it cannot turn off.
*/}}
{{- define "holdfast.podSpecCommon" -}}
serviceAccountName: {{ include "holdfast.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- $fixed := dict "runAsNonRoot" true "seccompProfile" (dict "type" "RuntimeDefault") }}
  {{- toYaml (merge $fixed (deepCopy .Values.podSecurityContext)) | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod metadata of one component: its selector labels plus podLabels, and podAnnotations plus the
component's own (the dict's optional "annotations", which win).
*/}}
{{- define "holdfast.podMetadata" -}}
labels:
  {{- include "holdfast.selectorLabels" . | nindent 2 }}
  app.kubernetes.io/part-of: holdfast
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := merge (dict) (default (dict) (get . "annotations")) .root.Values.podAnnotations }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The container security context of every container: not root, no privilege escalation, no
capabilities, and a read-only root filesystem (the image writes nothing; /tmp is an emptyDir).
*/}}
{{- define "holdfast.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/* The writable /tmp every container gets, since the root filesystem is read-only. */}}
{{- define "holdfast.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "holdfast.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{/*
The TLS files of a process, from Secrets mounted read-only: PostgreSQL's (database.tls, named by
DATABASE_URL's sslrootcert, sslcert and sslkey) in every pod, and NATS's (nats.tls) for a process
that uses NATS ("nats" true), with the HOLDFAST_NATS_TLS_* variables pointing at them. Under
"env" the variables, under "mount" the volumeMounts, under "volume" the volumes; each empty
when its Secret is not set. (dict "root" $ "part" "mount" "nats" true)
*/}}
{{- define "holdfast.tlsFiles" -}}
{{- $root := .root }}
{{- $nats := and .nats $root.Values.nats.tls.existingSecret }}
{{- if eq .part "env" }}
{{- if $nats }}
{{- $dir := trimSuffix "/" $root.Values.nats.tls.mountPath }}
- name: HOLDFAST_NATS_TLS_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- if $root.Values.nats.tls.clientCertificate }}
- name: HOLDFAST_NATS_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: HOLDFAST_NATS_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
{{- end }}
{{- end }}
{{- else if eq .part "mount" }}
{{- if $root.Values.database.tls.existingSecret }}
- name: database-tls
  mountPath: {{ $root.Values.database.tls.mountPath | quote }}
  readOnly: true
{{- end }}
{{- if $nats }}
- name: nats-tls
  mountPath: {{ $root.Values.nats.tls.mountPath | quote }}
  readOnly: true
{{- end }}
{{- else }}
{{- with $root.Values.database.tls.existingSecret }}
- name: database-tls
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
{{- end }}
{{- if $nats }}
- name: nats-tls
  secret:
    secretName: {{ $root.Values.nats.tls.existingSecret | quote }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuses values that would render a working-looking but broken ledger: a grace period that
cuts the drain short, or an autoscaler without the CPU request it measures against.
*/}}
{{- define "holdfast.validateLedger" -}}
{{- $drainSeconds := div (add (int64 .Values.ledger.drainTimeoutMs) 999) 1000 }}
{{- $neededSeconds := add $drainSeconds (int64 .Values.ledger.preStopSleepSeconds) }}
{{- if le (int64 .Values.ledger.terminationGracePeriodSeconds) $neededSeconds }}
{{- fail (printf "ledger.terminationGracePeriodSeconds (%d) must exceed ledger.preStopSleepSeconds plus ledger.drainTimeoutMs in seconds (%d)" (int64 .Values.ledger.terminationGracePeriodSeconds) $neededSeconds) }}
{{- end }}
{{- if .Values.ledger.autoscaling.enabled }}
{{- if lt (int64 .Values.ledger.autoscaling.maxReplicas) (int64 .Values.ledger.autoscaling.minReplicas) }}
{{- fail "ledger.autoscaling.maxReplicas must be at least ledger.autoscaling.minReplicas" }}
{{- end }}
{{- if not (dig "requests" "cpu" "" .Values.ledger.resources) }}
{{- fail "ledger.autoscaling needs ledger.resources.requests.cpu: CPU utilization is measured against it" }}
{{- end }}
{{- end }}
{{- end }}
