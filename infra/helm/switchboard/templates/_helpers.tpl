{{/* Names and labels shared by every template. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "switchboard.fullname" -}}
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

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end -}}

{{/* selectorLabels: call with (dict "ctx" $ "component" "backend") */}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "switchboard.backend.name" -}}{{ include "switchboard.fullname" . }}-backend{{- end -}}
{{- define "switchboard.backend.headless" -}}{{ include "switchboard.fullname" . }}-backend-headless{{- end -}}
{{- define "switchboard.gateway.name" -}}{{ include "switchboard.fullname" . }}-gateway{{- end -}}
{{- define "switchboard.redis.name" -}}{{ include "switchboard.fullname" . }}-redis{{- end -}}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image: call with (dict "image" .Values.backend.image "ctx" $) */}}
{{- define "switchboard.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* One env var from the chart's Secret: (dict "ctx" $ "name" "ENV" "key" "secret-key" "optional" false) */}}
{{- define "switchboard.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.existingSecret is required (credentials never go in values)" .ctx.Values.secrets.existingSecret }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* OpenTelemetry environment for a component: (dict "ctx" $ "service" "switchboard-backend") */}}
{{- define "switchboard.otelEnv" -}}
{{- if .ctx.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .ctx.Values.otel.endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "k8s.namespace.name=%s,service.instance.id=$(POD_NAME)" .ctx.Release.Namespace | quote }}
{{- if .ctx.Values.otel.samplerRatio }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .ctx.Values.otel.samplerRatio | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Backend URLs for the gateway: every StatefulSet replica by its stable DNS name. */}}
{{- define "switchboard.backendUrls" -}}
{{- $urls := list -}}
{{- $headless := include "switchboard.backend.headless" . -}}
{{- $sts := include "switchboard.backend.name" . -}}
{{- range $i, $_ := until (int .Values.backend.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc:%d" $sts $i $headless $.Release.Namespace (int $.Values.backend.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{- define "switchboard.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
