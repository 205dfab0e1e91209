// Wrapper module pinning Traefik, the local fleet's Gateway API implementation (build-binaries.sh,
// group "traefik"). Traefik's own go.mod has replace directives, so it cannot be built from here:
// build-binaries.sh downloads the pinned module zip (verified against this go.sum), copies it,
// applies gateway-request-mirror.patch and builds ./cmd/traefik inside the copy with Traefik's own
// go.mod/go.sum, plus two build-only substitutions for modules the Go module proxy does not serve:
// lego-unavailable-dns-providers.patch, and abbot/go-http-auth below (go-http-auth-fork-api.patch).
module visionfleet.local/e2e/traefik

go 1.26.0

require (
	// Traefik replaces abbot/go-http-auth (basic/digest auth middlewares) with a containous fork
	// whose version the module proxy does not serve; the build uses the fork's upstream instead,
	// patched with the two functions Traefik uses of the fork.
	github.com/abbot/go-http-auth v0.4.0
	github.com/traefik/traefik/v3 v3.7.13
)

require (
	golang.org/x/crypto v0.56.0 // indirect
	golang.org/x/net v0.58.0 // indirect
)
