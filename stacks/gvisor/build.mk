# gVisor netstack recipe: build/stacks/gvisor-http, included from the Makefile.
# Debian packages: golang-go golang-gvisor-gvisor-dev
#
# GOPATH mode against the packaged sources, so the build is offline. The Go
# build cache lives under build/ (GOCACHE) and GOENV is off, so neither HOME
# nor anything outside the tree needs to exist or be writable (CI as root).
# CGO_ENABLED=0: netstack needs no C, and a static binary needs no gcc.

GVISOR_GO_ENV = GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOENV=off \
	GOCACHE=$(CURDIR)/$(BUILD)/gocache CGO_ENABLED=0

$(BUILD)/stacks/gvisor-http: $(wildcard stacks/gvisor/*.go) stacks/gvisor/build.mk
	@mkdir -p $(BUILD)/stacks $(BUILD)/gocache
	cd stacks/gvisor && $(GVISOR_GO_ENV) go build -o $(CURDIR)/$@ .
