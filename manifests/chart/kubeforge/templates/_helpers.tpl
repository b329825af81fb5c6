{{- define "kubeforge.labels" -}}
app.kubernetes.io/name: kubeforge-operator
app.kubernetes.io/part-of: kubeforge
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "kubeforge.rules" -}}
- apiGroups: [kubeforge.dev]
  resources: [trainingjobs]
  verbs: [get, list, watch, delete]
- apiGroups: [kubeforge.dev]
  resources: [trainingjobs/status]
  verbs: [get, patch, update]
- apiGroups: [""]
  resources: [pods, services]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
