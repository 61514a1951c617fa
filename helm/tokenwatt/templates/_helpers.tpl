{{- define "tokenwatt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenwatt.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tokenwatt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenwatt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tokenwatt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tokenwatt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tokenwatt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tokenwatt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tokenwatt.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The exporter's port: the port of `config.listen`. */}}
{{- define "tokenwatt.port" -}}
{{- $listen := default "0.0.0.0:9839" .Values.config.listen }}
{{- regexFind "[0-9]+$" $listen | int }}
{{- end }}

{{/* "true" when servers are placed from the kubelet (config.placement.source: kubelet), else "". */}}
{{- define "tokenwatt.kubeletPlacement" -}}
{{- if eq (dig "placement" "source" "static" .Values.config) "kubelet" }}true{{ end }}
{{- end }}

{{/* "true" when tokenwatt discovers its node's pods through the Kubernetes API, else "". */}}
{{- define "tokenwatt.discovery" -}}
{{- if eq (dig "discovery" "source" "none" .Values.config) "kubernetes" }}true{{ end }}
{{- end }}

{{/* "true" when DRA-allocated GPUs are placed through ResourceSlices (config.placement.dra.enabled). */}}
{{- define "tokenwatt.dra" -}}
{{- if dig "placement" "dra" "enabled" false .Values.config }}true{{ end }}
{{- end }}

{{/* "true" when tokenwatt calls the Kubernetes API (discovery or DRA), else "". */}}
{{- define "tokenwatt.kubeApi" -}}
{{- if or (include "tokenwatt.discovery" .) (include "tokenwatt.dra" .) }}true{{ end }}
{{- end }}

{{- define "tokenwatt.scheme" -}}
{{- if and .Values.webConfig.enabled .Values.webConfig.tls }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{- define "tokenwatt.webConfigSecretName" -}}
{{- default (printf "%s-web" (include "tokenwatt.fullname" .)) .Values.webConfig.existingSecret }}
{{- end }}

{{/* tokenwatt.yml: the `config` values, pointed at the mounted web config when there is one. */}}
{{- define "tokenwatt.configFile" -}}
{{- $config := deepCopy .Values.config }}
{{- if .Values.webConfig.enabled }}
{{- $_ := set $config "web_config_file" "/etc/tokenwatt/web/web.yml" }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The tokenwatt container, shared by the DaemonSet and the sidecar snippet. Takes a dict:
  root: the chart's context; sidecar: true for the sidecar (no readiness probe unless asked).
*/}}
{{- define "tokenwatt.container" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
- name: tokenwatt
  image: {{ include "tokenwatt.image" $root }}
  imagePullPolicy: {{ $values.image.pullPolicy }}
  args: ["run", "--config", "/etc/tokenwatt/tokenwatt.yml"]
  ports:
    - name: metrics
      containerPort: {{ include "tokenwatt.port" $root }}
      protocol: TCP
  {{- $env := list }}
  {{- if and (not .sidecar) $values.gpuAccess.visibleDevices }}
  {{- $env = append $env (dict "name" "NVIDIA_VISIBLE_DEVICES" "value" $values.gpuAccess.visibleDevices) }}
  {{- $env = append $env (dict "name" "NVIDIA_DRIVER_CAPABILITIES" "value" "utility") }}
  {{- end }}
  {{- /* The node whose pods are discovered and whose ResourceSlices are read. */}}
  {{- if include "tokenwatt.kubeApi" $root }}
  {{- $env = append $env (dict "name" "NODE_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "spec.nodeName"))) }}
  {{- end }}
  {{- if .sidecar }}
  {{- $env = append $env (dict "name" "POD_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) }}
  {{- $env = append $env (dict "name" "POD_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) }}
  {{- $env = append $env (dict "name" "POD_UID" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.uid"))) }}
  {{- end }}
  {{- $env = concat $env $values.env }}
  {{- with $env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
      scheme: {{ include "tokenwatt.scheme" $root }}
    {{- toYaml $values.livenessProbe | nindent 4 }}
  {{- if or (not .sidecar) $values.sidecar.readinessProbe }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: metrics
      scheme: {{ include "tokenwatt.scheme" $root }}
    {{- toYaml $values.readinessProbe | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $values.resources | nindent 4 }}
  securityContext:
    {{- $security := deepCopy $values.securityContext }}
    {{- if include "tokenwatt.kubeletPlacement" $root }}
    {{- range $key, $value := $values.kubeletPlacement.securityContext }}
    {{- $_ := set $security $key $value }}
    {{- end }}
    {{- end }}
    {{- toYaml $security | nindent 4 }}
  volumeMounts:
    - name: tokenwatt-config
      mountPath: /etc/tokenwatt/tokenwatt.yml
      subPath: tokenwatt.yml
      readOnly: true
    {{- if $values.webConfig.enabled }}
    - name: tokenwatt-web-config
      mountPath: /etc/tokenwatt/web
      readOnly: true
    {{- end }}
    {{- if include "tokenwatt.kubeletPlacement" $root }}
    - name: tokenwatt-pod-resources
      mountPath: /var/lib/kubelet/pod-resources
      readOnly: true
    {{- end }}
{{- end }}

{{- define "tokenwatt.volumes" -}}
- name: tokenwatt-config
  configMap:
    name: {{ include "tokenwatt.fullname" . }}
{{- if .Values.webConfig.enabled }}
- name: tokenwatt-web-config
  secret:
    secretName: {{ include "tokenwatt.webConfigSecretName" . }}
{{- end }}
{{- if include "tokenwatt.kubeletPlacement" . }}
- name: tokenwatt-pod-resources
  hostPath:
    path: {{ .Values.kubeletPlacement.hostPath }}
    type: Directory
{{- end }}
{{- end }}

{{/*
For a chart that depends on this one (mode: sidecar), in the inference pod's spec:
  containers:
    - name: vllm
      ...
    {{- include "tokenwatt.sidecar.container" .Subcharts.tokenwatt | nindent 4 }}
  volumes:
    {{- include "tokenwatt.sidecar.volumes" .Subcharts.tokenwatt | nindent 4 }}
*/}}
{{- define "tokenwatt.sidecar.container" -}}
{{ include "tokenwatt.container" (dict "root" . "sidecar" true) }}
{{- end }}

{{- define "tokenwatt.sidecar.volumes" -}}
{{ include "tokenwatt.volumes" . }}
{{- end }}
