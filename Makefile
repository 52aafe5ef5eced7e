# ocistow. `make demo` runs the whole job on this machine; `make test` runs
# the tests. Both need Go (and gcc for -race): the registries, KMS, cosign
# and the Lambda emulator are built from pinned modules under tools/; the
# tests also need Node.js and npm for the pinned Step Functions engine
# (tools/stepfunctions).
GO ?= go

STACK ?= ocistow
MEMORY ?= 1024
TIMEOUT ?= 900
TRACING ?= PassThrough
MAX_CONCURRENCY ?= 8
SOURCE_KEY_ARNS ?=

.PHONY: build demo test vet fmt-check clean lambda deploy bench fuzz chaos

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
	$(MAKE) --no-print-directory fuzz FUZZTIME=20000x

# Fuzz each target for FUZZTIME (CI: 20000 executions each, from the committed
# seeds: a count, not a duration, because Go 1.26's fuzz coordinator can fail a
# duration-bound run with "context deadline exceeded" on a loaded machine,
# go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 30s
FUZZ_TARGETS = ./pkg/registry:FuzzParseReference ./internal/app:FuzzKeyValues \
	./cmd/ocistow-lambda/internal/payload:FuzzDecodePayload ./pkg/sign:FuzzCheckPayload \
	./pkg/policy:FuzzLegacyBundle
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# The Lambda function for both architectures: dist/ocistow-lambda-{arm64,x86_64}.zip,
# each holding a static, stripped executable named bootstrap (provided.al2023).
lambda:
	@set -e; for a in arm64:arm64 amd64:x86_64; do \
		goarch=$${a%%:*}; name=$${a#*:}; mkdir -p dist/$$name; \
		GOOS=linux GOARCH=$$goarch CGO_ENABLED=0 $(GO) build -tags lambda.norpc -trimpath -ldflags="-s -w" \
			-o dist/$$name/bootstrap ./cmd/ocistow-lambda; \
		rm -f dist/ocistow-lambda-$$name.zip; (cd dist/$$name && zip -q -X ../ocistow-lambda-$$name.zip bootstrap); \
		echo "dist/ocistow-lambda-$$name.zip"; \
	done

# make deploy AWS_KMS_KEY_ARN=arn:aws:kms:… DEPLOY_BUCKET=bucket REPOSITORIES=repo1,repo2
deploy: lambda
	@test -n "$(AWS_KMS_KEY_ARN)" || { echo "set AWS_KMS_KEY_ARN (a key ARN)"; exit 2; }
	@test -n "$(DEPLOY_BUCKET)" || { echo "set DEPLOY_BUCKET (an S3 bucket for the function's code)"; exit 2; }
	@test -n "$(REPOSITORIES)" || { echo "set REPOSITORIES (ECR repository names to push to, comma-separated)"; exit 2; }
	aws cloudformation package --template-file deploy/template.yaml --s3-bucket $(DEPLOY_BUCKET) \
		--output-template-file dist/packaged.yaml
	aws cloudformation deploy --template-file dist/packaged.yaml --stack-name $(STACK) --capabilities CAPABILITY_IAM \
		--parameter-overrides KmsKeyArn=$(AWS_KMS_KEY_ARN) DestinationRepositories=$(REPOSITORIES) \
		MemorySize=$(MEMORY) Timeout=$(TIMEOUT) Tracing=$(TRACING) MaxConcurrency=$(MAX_CONCURRENCY) \
		SourceKeyArns=$(SOURCE_KEY_ARNS)
	aws cloudformation describe-stacks --stack-name $(STACK) --query 'Stacks[0].Outputs' --output table

# The reliability scenarios at full scale (CI runs them smaller), printing their figures.
# pipefail: a failing test fails make chaos, although grep found lines to print.
CHAOS_RUNS ?= 20
chaos: SHELL := /bin/bash
chaos:
	set -o pipefail; CHAOS_RUNS=$(CHAOS_RUNS) $(GO) test -count=1 -v -run 'TestChaos|TestKMSThrottling|TestConcurrentPromotions|TestOverallTimeout|TestRetries|TestHostileRegistries|TestBlobRedirect|TestKilledPromotionResumes|TestFailedCopyLeavesTagUntouched|TestConcurrentSigners|TestMovingATag|TestTimeoutLeavesTagUntouched|TestStalledUploadIsRetried|TestManifestCutMidBodyIsRetried|TestTimeoutEndsRetrySleeps' ./cmd/... \
		| grep -E '^(=== RUN|--- |ok|FAIL)|chaos:'

# The side-by-side benchmark (minutes; not part of CI). BENCH_FLAGS=-layers 6 -layer-mib 128 -runs 3
bench:
	$(GO) run ./internal/bench $(BENCH_FLAGS)

clean:
	rm -rf bin dist
