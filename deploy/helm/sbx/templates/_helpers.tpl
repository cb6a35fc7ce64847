{{- define "sbx.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sbx.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (api or node): never change after install. */}}
{{- define "sbx.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "sbx.serviceAccountName" -}}
{{- default (include "sbx.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "sbx.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "sbx.clusterSecretName" -}}
{{- default (printf "%s-cluster" (include "sbx.fullname" .)) .Values.clusterSecret.existingSecret -}}
{{- end -}}

{{- define "sbx.keysSecretName" -}}
{{- default (printf "%s-keys" (include "sbx.fullname" .)) .Values.keys.existingSecret -}}
{{- end -}}

{{- define "sbx.scheme" -}}
{{- if .Values.tls.existingSecret }}https{{ else }}http{{ end -}}
{{- end -}}

{{/* The downward API: who and where this Pod is (Lease namespace and identity, advertise URL). */}}
{{- define "sbx.downwardEnv" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: POD_IP
  valueFrom: {fieldRef: {fieldPath: status.podIP}}
- name: NODE_NAME
  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
{{- end -}}

{{/* Secrets reach the process through the environment and files, never the manifest. */}}
{{- define "sbx.secretEnv" -}}
- name: SBX_DATABASE
  valueFrom:
    secretKeyRef: {name: {{ required "database.existingSecret: name the Secret holding the PostgreSQL DSN" .Values.database.existingSecret | quote }}, key: {{ .Values.database.key | quote }}}
{{- with .Values.blobStore.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.blobStore.accessKeyIdKey | quote }}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.blobStore.secretAccessKeyKey | quote }}}
{{- end }}
{{- end -}}

{{/* Flags both roles share. */}}
{{- define "sbx.commonArgs" -}}
- --cluster-secret-file=/etc/sbx/cluster/{{ .Values.clusterSecret.key }}
- --coordination={{ .Values.coordination }}
{{- with .Values.blobStore.url }}
- --blob-store={{ . }}
{{- end }}
{{- with .Values.domain }}
- --domain={{ . }}
{{- end }}
{{- if .Values.tls.existingSecret }}
- --tls-cert=/etc/sbx/tls/tls.crt
- --tls-key=/etc/sbx/tls/tls.key
{{- end }}
{{- end -}}

{{- define "sbx.secretVolumes" -}}
- name: cluster-secret
  secret:
    secretName: {{ include "sbx.clusterSecretName" . }}
    defaultMode: 0400
- name: keys
  secret:
    secretName: {{ include "sbx.keysSecretName" . }}
    defaultMode: 0400
{{- with .Values.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ . }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "sbx.secretMounts" -}}
- name: cluster-secret
  mountPath: /etc/sbx/cluster
  readOnly: true
{{- /* One admin key and one secrets key for every process on the database: each process
would otherwise make its own at start (the data dir's file is the truth). */}}
- name: keys
  mountPath: {{ .dataDir }}/admin-key
  subPath: admin-key
  readOnly: true
- name: keys
  mountPath: {{ .dataDir }}/secrets.key
  subPath: secrets.key
  readOnly: true
{{- if .root.Values.tls.existingSecret }}
- name: tls
  mountPath: /etc/sbx/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "sbx.probes" -}}
{{- $p := .root.Values.probes -}}
readinessProbe:
  httpGet: {path: /health, port: {{ .port }}, scheme: {{ include "sbx.scheme" .root | upper }}}
  initialDelaySeconds: {{ $p.initialDelaySeconds }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
livenessProbe:
  httpGet: {path: /health, port: {{ .port }}, scheme: {{ include "sbx.scheme" .root | upper }}}
  initialDelaySeconds: {{ $p.initialDelaySeconds }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ mul $p.failureThreshold 2 }}
{{- end -}}
