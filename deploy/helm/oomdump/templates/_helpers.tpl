{{- /*
Names are fixed, not derived from the release: they are the contract of DESIGN.md
(the ConfigMap oomdump-sidecar-defaults, the Secret oomdump-webhook-tls, the
MutatingWebhookConfiguration oomdump) and the certs bootstrap's RBAC names them.
*/ -}}

{{- define "oomdump.labels" -}}
app.kubernetes.io/part-of: oomdump
{{- if .Values.releaseLabels }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end }}

{{- define "oomdump.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "oomdump.bootstrap" -}}
{{ eq .Values.certificates.mode "bootstrap" }}
{{- end }}

{{- /* The hardening every container of the webhook pod shares. */ -}}
{{- define "oomdump.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{- define "oomdump.pullPolicy" -}}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end }}

{{- /* The certs CLI's arguments, the same for the init container and the loop. */ -}}
{{- define "oomdump.bootstrapArgs" -}}
- --service=oomdump-webhook
- --secret-name=oomdump-webhook-tls
- --webhook-config-name=oomdump
- --out=/certs
{{- end }}
