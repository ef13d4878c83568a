{{- define "app.fullname" -}}{{ .Release.Name | trunc 53 | trimSuffix "-" }}{{- end -}}
