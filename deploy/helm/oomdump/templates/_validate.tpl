{{- /*
Checks values.schema.json cannot express: a Go duration's length, and rules spanning two
values. Limits and messages come from the webhook's registry (_registry.tpl, generated
from webhook/annotations.py), so the chart refuses what the webhook would refuse.
*/ -}}

{{- /* Nanoseconds in a Go duration whose syntax the schema has already checked. */ -}}
{{- define "oomdump.nanoseconds" -}}
{{- $registry := include "oomdump.registry" . | fromJson -}}
{{- $total := 0.0 -}}
{{- range regexFindAll $registry.durationPart .text -1 -}}
{{- $number := regexFind "^[0-9.]+" . -}}
{{- $unit := trimPrefix $number . -}}
{{- $total = addf $total (mulf (float64 $number) (get $registry.unitNanoseconds $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end }}

{{- define "oomdump.validate" -}}
{{- $registry := include "oomdump.registry" . | fromJson -}}
{{- $kube := .Capabilities.KubeVersion.Version -}}
{{- if not (hasPrefix "v0.0.0" $kube) -}}
{{- if not (semverCompare ">=1.27.0-0" $kube) -}}
{{- fail (printf "oomdump needs Kubernetes >= 1.27; this cluster runs %s" $kube) -}}
{{- end -}}
{{- if and (eq .Values.sidecarMode "native") (not (semverCompare ">=1.29.0-0" $kube)) -}}
{{- fail (printf "sidecarMode=native needs Kubernetes >= 1.29 (init containers with restartPolicy Always); this cluster runs %s: use sidecarMode=container" $kube) -}}
{{- end -}}
{{- end -}}
{{- range $value, $rule := $registry.durations -}}
{{- $text := index $.Values $value | toString -}}
{{- $ns := include "oomdump.nanoseconds" (dict "text" $text) | float64 -}}
{{- if or (lt $ns $rule.minNanoseconds) (gt $ns $rule.maxNanoseconds) -}}
{{- fail (printf "%s=%s (%s, as the annotation %s): %s" $value $text $rule.env $rule.annotation $rule.allowed) -}}
{{- end -}}
{{- end -}}
{{- range $value, $rule := $registry.refused -}}
{{- $text := index $.Values $value | toString -}}
{{- range $rule.patterns -}}
{{- if regexMatch . $text -}}
{{- fail (printf "%s=%s (%s, as the annotation %s): %s" $value $text $rule.env $rule.annotation $rule.allowed) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.privilegeProfile "least-privilege" -}}
{{- if eq .Values.detectMode "events" -}}
{{- fail "detectMode=events needs a writable cgroupfs, which privilegeProfile least-privilege does not give; use privilegeProfile: privileged" -}}
{{- end -}}
{{- if hasKey .Values.extraEnv "EMERGENCY_BRAKE" -}}
{{- if has (lower (toString .Values.extraEnv.EMERGENCY_BRAKE)) (list "1" "true" "on" "yes") -}}
{{- fail "extraEnv.EMERGENCY_BRAKE needs a writable cgroupfs, which privilegeProfile least-privilege does not give; use privilegeProfile: privileged" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with .Values.webhook.podDisruptionBudget -}}
{{- if and .enabled (ge (int .minAvailable) (int $.Values.webhook.replicas)) -}}
{{- fail (printf "webhook.podDisruptionBudget.minAvailable=%v must be less than webhook.replicas=%v, or no node drain could ever evict a webhook pod" .minAvailable $.Values.webhook.replicas) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.certificates.mode "cert-manager") (not (.Capabilities.APIVersions.Has "cert-manager.io/v1")) -}}
{{- fail "certificates.mode=cert-manager needs cert-manager installed first (its CRDs, cert-manager.io/v1, are not in this cluster); or use certificates.mode=bootstrap" -}}
{{- end -}}
{{- end }}
