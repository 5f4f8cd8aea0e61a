# riposte — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
CACHE ?= $(CURDIR)/.cache

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/riposte
	$(GO) build -o $(BIN)/riposte ./cmd/riposte

# ---- the two commands of the README

.PHONY: run
run: setup-run build ## the story: rules over a recorded intrusion, then the host agent (eBPF), then the cluster demo
	@echo "== 1. riposte replay: the shipped rules over a recorded intrusion (riposte events + kube-apiserver audit lines)"
	$(BIN)/riposte replay --rules rules test/fixtures/attack.jsonl
	@echo
	@bash hack/run-agent-demo.sh $(BIN)/riposte
	@echo
	@echo "== 3. the cluster: riposte controller on a real kube-apiserver (built once from pinned modules: ~10 min the first time)"
	@RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) run ./hack/cluster-demo

# Packages whose code or tests run goroutines: make test runs them under the
# race detector, once (their concurrency tests assert nothing without it).
# cmd/riposte is left out: its TestMain builds the binary, and its
# concurrency lives in these packages.
RACE_PKGS := ./engine/... ./internal/agent/... ./internal/audit ./internal/incident ./internal/kube ./internal/objects \
	./internal/webhook ./internal/controllermgr ./internal/agentmgr ./bpf ./responders/... ./test/proc

.PHONY: setup setup-run
setup: ## install the Debian packages make test needs (as root), or name the missing ones
	@bash hack/setup.sh test
setup-run:
	@bash hack/setup.sh run

.PHONY: test
test: setup testenv build check ## every test: unit, property, fuzz seeds, real kernel, real control plane, a real node; rule library; vet and staticcheck
	@bash hack/kernel-prereqs.sh
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" RIPOSTE_FLUX_BIN="$$(bash test/tools/flux/build.sh $(CACHE))" $(GO) test -count=1 -timeout 30m \
		$$(comm -23 <($(GO) list ./... | sort) <($(GO) list $(RACE_PKGS) | sort))
	@echo "== under the race detector: $(RACE_PKGS)"
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -race -count=1 -timeout 30m $(RACE_PKGS)
	@echo "== the real node: kubelet, containerd, real pods, the riposte agent on them"
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -tags e2enode -count=1 -timeout 30m ./test/node/ ./test/e2e/ ./test/scenario/
	$(BIN)/riposte test --junit $(CACHE)/rules-junit.xml rules
	$(BIN)/riposte lint --strict rules
	@bash hack/check-leftovers.sh

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck-$(STATICCHECK_VERSION)

$(STATICCHECK):
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(BIN)/staticcheck $@

.PHONY: check
check: setup $(STATICCHECK) check-generated-bpf ## gofmt, go vet, staticcheck, committed eBPF objects match their C sources
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2enode ./test/node/ ./test/e2e/ ./test/scenario/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags e2enode ./test/node/ ./test/e2e/ ./test/scenario/

.PHONY: faults
# The fault tests also run in make test (CI); this target prints their figures.
faults: ## the fault tests with their figures (docs/reliability.md), without the race detector (root)
	$(GO) test -count=1 -v -timeout 20m -run 'TestRingBufferStorm' ./internal/agent
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -count=1 -v -timeout 20m -run 'TestAuditOverload' ./test/faults
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -count=1 -v -timeout 20m -run 'TestAPIServerOutageSpools' ./internal/incident
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -count=1 -v -timeout 20m -run 'TestControllerRestartMidPlaybook|TestEtcdRestartUnderLoad' ./internal/controllermgr

.PHONY: bench
bench: ## the benchmarks behind docs/benchmarks.md
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -run '^$$' -bench . -benchmem -count 1 ./engine/... ./internal/audit ./internal/incident ./test/scenario

.PHONY: fuzz
fuzz: ## fuzz the event decoder, the compiler and the rule loader for 60 s each (seed corpora run in make test)
	$(GO) test -run '^$$' -fuzz FuzzDecodeLine -fuzztime 60s ./engine
	$(GO) test -run '^$$' -fuzz FuzzCompile -fuzztime 60s ./engine
	$(GO) test -run '^$$' -fuzz FuzzLoad -fuzztime 60s ./engine/ruleset
	$(GO) test -run '^$$' -fuzz FuzzParsePath -fuzztime 60s ./host

CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)

$(CONTROLLER_GEN):
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(BIN)/controller-gen $@

.PHONY: generate
generate: $(CONTROLLER_GEN) generate-bpf ## regenerate deepcopy, CRDs and bpf2go output
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases

.PHONY: testenv
testenv: ## build the test control plane (etcd, kube-apiserver, …) and Flux's controllers once into .cache/{testenv,flux}/<key>/bin
	@bash test/tools/build.sh $(CACHE)
	@bash test/tools/flux/build.sh $(CACHE)

# ---- agent (bpf/, internal/agent): Debian packages clang llvm libbpf-dev bpftool
BPF_DIR := bpf

.PHONY: generate-bpf
generate-bpf: ## regenerate bpf/c/vmlinux.h (from this kernel's BTF) and the bpf2go output
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $(BPF_DIR)/c/vmlinux.h
	cd $(BPF_DIR) && $(GO) generate ./...

.PHONY: check-generated-bpf
check-generated-bpf: ## fail if the committed bpf2go output differs from the C sources (vmlinux.h kept)
	cd $(BPF_DIR) && $(GO) generate ./...
	git diff --exit-code -- $(BPF_DIR)/sensors_x86_bpfel.go $(BPF_DIR)/sensors_x86_bpfel.o

.PHONY: test-agent
test-agent: ## agent tests against the real kernel (root, BTF; riposte agent also needs make testenv); they fail, not skip
	$(GO) test -count=1 ./bpf/... ./internal/agent/...
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -count=1 -run 'TestRunReports' ./cmd/riposte
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -count=1 ./internal/agentmgr

.PHONY: bench-scale
bench-scale: testenv ## agents at scale: 50 agents' API requests and kube-apiserver CPU, one agent's memory with 10,000 pods (minutes)
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -run '^$$' -bench 'AgentsAtScale|AgentMemory' -benchtime 1x -timeout 30m ./internal/agentmgr

.PHONY: fuzz-bpf
fuzz-bpf: ## fuzz the ring-buffer record decoder for 30s
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime 30s ./bpf

.PHONY: bench-agent
bench-agent: ## agent benchmarks: overhead on/off, kernel drop fraction, decode, process-table memory (root)
	$(GO) test -run '^$$' -bench AgentOverhead -benchtime 3x ./internal/agent
	$(GO) test -run '^$$' -bench 'Decode|Memory' -benchmem ./bpf ./internal/agent/proctable

# ---- the real node (test/node): Debian packages containerd runc containernetworking-plugins busybox-static
.PHONY: e2e-node
e2e-node: testenv ## end-to-end tests on a real node (kubelet, containerd, real pods): test/node, test/e2e and test/scenario (root)
	$(GO) vet -tags e2enode ./test/node/ ./test/e2e/ ./test/scenario/
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" $(GO) test -tags e2enode -count=1 -timeout 30m ./test/node/ ./test/e2e/ ./test/scenario/
	@bash hack/check-leftovers.sh

# ---- GitOps (test/gitops): Flux's source-controller and kustomize-controller from test/tools/flux, git
.PHONY: e2e-gitops
e2e-gitops: testenv ## the GitOps loop with Flux's own controllers on the real control plane, and the CI workflow of docs/gitops.md (root, eBPF)
	RIPOSTE_TESTENV_BIN="$$(bash test/tools/build.sh $(CACHE))" RIPOSTE_FLUX_BIN="$$(bash test/tools/flux/build.sh $(CACHE))" $(GO) test -count=1 -v -timeout 20m ./test/gitops/
	@left="$$(pgrep -a -f '(^|/)(source-controller|kustomize-controller) ' || true)"; if [[ -n "$$left" ]]; then echo "e2e-gitops: Flux controllers left behind:"; echo "$$left"; exit 1; fi
	@bash hack/check-leftovers.sh
