# ocistow. `make demo` runs the whole job on this machine; `make test` runs
# the tests. Both need only Go (and gcc for -race): the registries, KMS,
# cosign and the Lambda emulator are built from pinned modules under tools/.
GO ?= go

.PHONY: build demo test vet fmt-check clean

build:
	$(GO) build -trimpath -o bin/ocistow ./cmd/ocistow

demo: build
	$(GO) run ./internal/demo

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: fmt-check vet
	$(GO) test -race -count=1 ./...

clean:
	rm -rf bin
