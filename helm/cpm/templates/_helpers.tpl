{{/* The chart's name, as Helm charts conventionally trim it. */}}
{{- define "cpm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cpm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "cpm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cpm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cpm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "cpm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cpm
{{- end -}}

{{/*
The components the chart runs, as a list of dicts {key, target, values}: the five services
(those enabled), or the one all-in-one process. Every per-component template ranges over it,
so Deployments differ only in --target and their own values.
*/}}
{{- define "cpm.components" -}}
{{- $components := list -}}
{{- if .Values.allInOne.enabled -}}
{{- $components = append $components (dict "key" "allInOne" "target" "all" "values" .Values.allInOne) -}}
{{- else -}}
{{- range $key, $target := dict "referralIntake" "referral-intake" "riskAssessment" "risk-assessment" "mentorMatching" "mentor-matching" "contactLogging" "contact-logging" "notifications" "notifications" -}}
{{- $values := index $.Values $key -}}
{{- if $values.enabled -}}
{{- $components = append $components (dict "key" $key "target" $target "values" $values) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "items" $components) -}}
{{- end -}}

{{/* The name of one component's objects: <fullname>-<target>. */}}
{{- define "cpm.componentName" -}}
{{- printf "%s-%s" (include "cpm.fullname" .root) .component.target | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cpm.componentSelectorLabels" -}}
{{ include "cpm.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component.target }}
{{- end -}}

{{- define "cpm.componentLabels" -}}
{{ include "cpm.labels" .root }}
app.kubernetes.io/component: {{ .component.target }}
{{- end -}}

{{- define "cpm.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "cpm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cpm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cpm.secretName" -}}
{{- default (include "cpm.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "cpm.authConfigMapName" -}}
{{- default (printf "%s-auth" (include "cpm.fullname" .)) .Values.auth.existingConfigMap -}}
{{- end -}}

{{- define "cpm.authEnabled" -}}
{{- if or .Values.auth.existingConfigMap .Values.auth.jwks .Values.auth.rs256PublicKey -}}true{{- end -}}
{{- end -}}

{{/*
A configuration value as the environment carries it: whole numbers without an exponent
(values arrive as floats), lists joined with commas, booleans as true/false.
*/}}
{{- define "cpm.envValue" -}}
{{- $value := . -}}
{{- if kindIs "slice" $value -}}
{{- $items := list -}}
{{- range $value }}{{ $items = append $items (include "cpm.envValue" .) }}{{ end -}}
{{- join "," $items -}}
{{- else if or (kindIs "float64" $value) (kindIs "float32" $value) -}}
{{- if eq ($value | float64) (floor $value) -}}{{- $value | int64 -}}{{- else -}}{{- $value -}}{{- end -}}
{{- else -}}
{{- $value -}}
{{- end -}}
{{- end -}}

{{/* Flattens a map of configuration into CPM__A__B: value lines (recursive). */}}
{{- define "cpm.envLines" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .values -}}
{{- $name := printf "%s__%s" $prefix ($key | upper) -}}
{{- if kindIs "map" $value -}}
{{ include "cpm.envLines" (dict "prefix" $name "values" $value) }}
{{- else if not (kindIs "invalid" $value) }}
{{ $name }}: {{ include "cpm.envValue" $value | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap's data: configuration as environment variables, then the chart's own. */}}
{{- define "cpm.configData" -}}
{{- include "cpm.envLines" (dict "prefix" "CPM" "values" .Values.config) }}
CPM__PROFILE: {{ .Values.profile | quote }}
CPM__GRPC__LISTEN: {{ printf "0.0.0.0:%v" .Values.ports.grpc | quote }}
CPM__GRPC__HEALTH_LISTEN: {{ printf "0.0.0.0:%v" .Values.ports.health | quote }}
{{- if .Values.metrics.enabled }}
CPM__TELEMETRY__METRICS_LISTEN: {{ printf "0.0.0.0:%v" .Values.metrics.port | quote }}
{{- end }}
{{- if .Values.tls.enabled }}
CPM__GRPC__TLS_CERT_FILE: "/etc/cpm/tls/tls.crt"
CPM__GRPC__TLS_KEY_FILE: "/etc/cpm/tls/tls.key"
{{- if .Values.tls.clientCaSecretName }}
CPM__GRPC__TLS_CLIENT_CA_FILE: "/etc/cpm/client-ca/ca.crt"
{{- end }}
{{- end }}
{{- if or .Values.auth.jwks (and .Values.auth.existingConfigMap (eq .Values.auth.existingConfigMapFormat "jwks")) }}
CPM__AUTH__JWKS_FILE: "/etc/cpm/auth/jwks.json"
{{- else if or .Values.auth.rs256PublicKey .Values.auth.existingConfigMap }}
CPM__AUTH__RS256_PUBLIC_KEY_FILE: "/etc/cpm/auth/public.pem"
{{- end }}
{{- if .Values.configToml }}
CPM_CONFIG: "/etc/cpm/config/cpm.toml"
{{- end }}
{{- end -}}

{{/*
Volumes every cpm container mounts (TLS, client CA, issuer keys, cpm.toml) and a /tmp.
Called with {root, hook}: the migration hook mounts the hook copies of the chart's ConfigMaps.
*/}}
{{- define "cpm.volumes" -}}
{{- $root := .root -}}
{{- $suffix := ternary "-migrate" "" .hook -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- if $root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ $root.Values.tls.secretName }}
{{- if $root.Values.tls.clientCaSecretName }}
- name: client-ca
  secret:
    secretName: {{ $root.Values.tls.clientCaSecretName }}
{{- end }}
{{- end }}
{{- if include "cpm.authEnabled" $root }}
- name: auth
  configMap:
    name: {{ if $root.Values.auth.existingConfigMap }}{{ $root.Values.auth.existingConfigMap }}{{ else }}{{ include "cpm.fullname" $root }}-auth{{ $suffix }}{{ end }}
{{- end }}
{{- if $root.Values.configToml }}
- name: config
  configMap:
    name: {{ include "cpm.fullname" $root }}-toml{{ $suffix }}
{{- end }}
{{- end -}}

{{- define "cpm.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/cpm/tls
  readOnly: true
{{- if .Values.tls.clientCaSecretName }}
- name: client-ca
  mountPath: /etc/cpm/client-ca
  readOnly: true
{{- end }}
{{- end }}
{{- if include "cpm.authEnabled" . }}
- name: auth
  mountPath: /etc/cpm/auth
  readOnly: true
{{- end }}
{{- if .Values.configToml }}
- name: config
  mountPath: /etc/cpm/config
  readOnly: true
{{- end }}
{{- end -}}

{{/* Pod annotations that roll pods when their configuration changes. */}}
{{- define "cpm.checksums" -}}
checksum/config: {{ include "cpm.configData" . | sha256sum }}
checksum/config-files: {{ printf "%s|%s|%s" .Values.configToml .Values.auth.jwks .Values.auth.rs256PublicKey | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ toJson .Values.secrets | sha256sum }}
{{- end }}
{{- end -}}

{{/* The podAntiAffinity preset for a component whose own affinity is empty. */}}
{{- define "cpm.affinity" -}}
{{- $component := .component -}}
{{- if $component.values.affinity -}}
{{- toYaml $component.values.affinity -}}
{{- else if eq .root.Values.podAntiAffinity "hard" -}}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - labelSelector:
        matchLabels:
          {{- include "cpm.componentSelectorLabels" . | nindent 10 }}
      topologyKey: kubernetes.io/hostname
{{- else if eq .root.Values.podAntiAffinity "soft" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        labelSelector:
          matchLabels:
            {{- include "cpm.componentSelectorLabels" . | nindent 12 }}
        topologyKey: kubernetes.io/hostname
{{- end -}}
{{- end -}}
