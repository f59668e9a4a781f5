{{- define "orchestra.labels" -}}
app.kubernetes.io/name: orchestra-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "orchestra.selector" -}}
app.kubernetes.io/name: orchestra-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
