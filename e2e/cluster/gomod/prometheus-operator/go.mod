// Wrapper module pinning the prometheus-operator release whose CRDs (ServiceMonitor, PodMonitor, PrometheusRule)
// the chart tests install, so the API server validates the chart's monitoring objects for real.
module visionfleet.local/e2e/prometheusoperator

go 1.26.0

require github.com/prometheus-operator/prometheus-operator v0.79.2 // indirect
