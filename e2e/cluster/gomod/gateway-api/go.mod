// Wrapper module pinning the Gateway API release whose CRDs the local fleet installs.
module visionfleet.local/e2e/gatewayapi

go 1.26.0

require sigs.k8s.io/gateway-api v1.6.3 // indirect
