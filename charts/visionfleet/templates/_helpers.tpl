{{- define "visionfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "visionfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "visionfleet.labels" -}}
{{ include "visionfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: visionfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "visionfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "visionfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: set the name of an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "visionfleet.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- if not (hasPrefix "sha256:" .Values.image.digest) -}}
{{- fail (printf "image.digest: %q is not a digest; use the form sha256:<64 hex digits>" .Values.image.digest) -}}
{{- end -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches in namespaced mode. */}}
{{- define "visionfleet.namespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toJson .Values.watch.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{/* The rules for VisionDeployments and their children, shared by the ClusterRole (cluster mode)
     and each namespace's Role (namespaced mode). Only the verbs the operator uses:
     - visiondeployments: kopf lists and watches them and patches its finalizer; status: one patch per pass
     - jobs, deployments, configmaps, services, horizontalpodautoscalers (and controllerrevisions,
       in rbac.yaml): listed and watched (one watch per kind for the whole operator, filtered to
       objects labelled with a VisionDeployment; a pass reads its own from there), written by
       server-side apply (a PATCH, which the API server also authorizes as "create" when the object
       does not exist yet), deleted when a revision or class goes away
     - pods: compile and Triton pods are listed and watched the same way, to read the compile result
       (the termination message) and why a pod waits (unschedulable, image pull, missing Secret)
     - persistentvolumeclaims: get, one per claim the spec names (pvc://), to say when it is missing or
       when the model repository's cannot be mounted on several nodes; never listed or written
     - events: one per transition (the plan's Events)
     - httproutes: get and update the weights of a route the user names (gatewayAPI traffic) */}}
{{- define "visionfleet.namespacedRules" -}}
- apiGroups: ["visionfleet.io"]
  resources: ["visiondeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["visionfleet.io"]
  resources: ["visiondeployments/status"]
  verbs: ["patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "update"]
# An autoscaled class's HorizontalPodAutoscaler (fleet.classes[].replicas.autoscale)
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end -}}
