{{- define "nutq.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "nutq.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nutq.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "nutq.secretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-api-keys" (include "nutq.fullname" .)) -}}
{{- end -}}

{{- define "nutq.voiceStore" -}}
{{- if .Values.voiceStore.url -}}
{{ .Values.voiceStore.url }}
{{- else if .Values.redis.enabled -}}
redis://{{ include "nutq.fullname" . }}-redis:6379/0
{{- end -}}
{{- end -}}

{{/* preStop pause + drain + uvicorn's 5 s connection grace + slack */}}
{{- define "nutq.gracePeriod" -}}
{{- add .Values.preStopSleepSeconds .Values.drainTimeoutSeconds 5 .Values.terminationSlackSeconds -}}
{{- end -}}
