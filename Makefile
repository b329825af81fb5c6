# Kubeforge developer commands. `make demo` and `make test` are the two that matter; see README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)-$(EXTRAS)
CLUSTER_DIR ?= $(CURDIR)/.cluster

.PHONY: venv minicp helm generate lint test test-unit bench demo cluster-up cluster-down node-kill node-partition node-heal node-revive nodes operator-up operator-down s3-env s3-secret \
	dashboard dashboard-down kind-up kind-e2e images

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

minicp:  ## build (or reuse the cached) control-plane, metrics-server, object-store (SeaweedFS) and Kueue binaries
	embedded-cluster/build-minicp.sh
	embedded-cluster/build-metrics-server.sh
	embedded-cluster/build-seaweedfs.sh
	embedded-cluster/build-kueue.sh

helm:  ## build (or reuse the cached) helm binary from its Go module; prints its path last
	@embedded-cluster/build-helm.sh

generate: venv  ## CRDs (manifests/crds + the chart's copy) and docs/api.md tables from operator/kubeforge_api
	$(PY) -m kubeforge_api.codegen

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy operator trainer_image dashboard embedded-cluster/minicluster bench
	$(VENV)/bin/lint-imports

test: lint minicp helm
	$(PY) -m pytest -q -ra

test-unit: venv
	$(PY) -m pytest -q -ra tests/unit

bench: venv minicp  ## side-by-side benchmarks -> bench/results/*.json -> docs/benchmarks.md (every part, even after a failure)
	@status=0; \
	$(PY) bench/operator/bench_operator.py || status=1; \
	$(PY) bench/cluster/bench_node_loss.py || status=1; \
	$(PY) bench/train/bench_elastic.py || status=1; \
	$(PY) bench/kueue/bench_kueue.py || status=1; \
	$(PY) bench/train/bench_train.py || status=1; \
	$(PY) bench/compress/bench_compress.py || status=1; \
	$(PY) bench/compress/bench_llm_int8.py || status=1; \
	$(PY) bench/dashboard/bench_dashboard.py || status=1; \
	{ command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk); } && \
	  bench/serve/setup_kserve.sh $(PY) && $(PY) bench/serve/bench_serve.py || status=1; \
	bench/serve/setup_kserve.sh $(PY) && $(PY) bench/serve/bench_serve_hf.py || status=1; \
	$(PY) bench/serve/bench_storage.py || status=1; \
	$(PY) bench/report.py || status=1; \
	exit $$status

cluster-up: venv minicp  ## start the embedded cluster in the background (NODES=3: three node agents; KUEUE=1: Kueue's manager too); prints the ClusterIP routing line first, the admin kubeconfig path last
	@NODES="$(NODES)" KUEUE="$(KUEUE)" embedded-cluster/cluster-up.sh "$(CLUSTER_DIR)" "$(PY)"

cluster-down:  ## stop the embedded cluster; deletes its volumes (trained models) unless KEEP_VOLUMES=1
	@embedded-cluster/cluster-down.sh "$(CLUSTER_DIR)"

node-kill: venv  ## a node death: NODE's agent stops for good and its pods' processes are SIGKILLed
	@$(PY) -m minicluster node kill "$(NODE)" --dir "$(CLUSTER_DIR)"

node-partition: venv  ## a network partition: NODE stops renewing its Lease and status; its pods keep running
	@$(PY) -m minicluster node partition "$(NODE)" --dir "$(CLUSTER_DIR)"

node-heal: venv  ## end NODE's partition: it reconnects and posts Ready again
	@$(PY) -m minicluster node heal "$(NODE)" --dir "$(CLUSTER_DIR)"

node-revive: venv  ## a killed NODE comes back as a new agent (a rebooted machine): Ready again, runs pods bound to it
	@$(PY) -m minicluster node revive "$(NODE)" --dir "$(CLUSTER_DIR)"

nodes: venv  ## each node agent of the embedded cluster and its state (Running, Partitioned, Dead)
	@$(PY) -m minicluster node status --dir "$(CLUSTER_DIR)"

operator-up: venv  ## install CRDs+RBAC into the current kubeconfig's cluster; run the operator as its SA
	$(PY) -m minicluster operator-up --dir "$(CLUSTER_DIR)/operator"

operator-down:
	$(PY) -m minicluster operator-down --dir "$(CLUSTER_DIR)/operator"

demo: venv minicp  ## the embedded cluster + operator; every sample trained, compressed and served, then queried
	@$(PY) -m minicluster demo --samples manifests/samples $(if $(KEEP),--keep) $(DEMO_ARGS)

images:  ## (opt-in, slow; podman + runc + debootstrap, root) build the three images and start each; IMAGES=operator for one
	@tests/e2e/images.sh

kind-up: venv  ## (Docker + kind) a kind cluster, images built and loaded, Kubeforge installed by helm
	@tests/e2e/kind.sh up "$(PY)"

kind-e2e: venv  ## (Docker + kind) kind-up, then the cluster test tier against the kind cluster
	@tests/e2e/kind.sh e2e "$(PY)"

dashboard: venv  ## the dashboard in the background (current kubeconfig, or local runs without a cluster); URL last
	@$(PY) -m kubeforge_dashboard.launch up --dir "$(CLUSTER_DIR)/dashboard"

dashboard-down:
	@$(PY) -m kubeforge_dashboard.launch down --dir "$(CLUSTER_DIR)/dashboard"

s3-env:  ## the embedded object store's AWS_* settings as exports: eval "$(make -s s3-env)"
	@$(PY) -m minicluster.s3env "$(CLUSTER_DIR)/ready.json"

s3-secret:  ## Secret s3-credentials (in the current namespace) from the AWS_* environment, for secretRef
	@kubectl create secret generic s3-credentials --dry-run=client -o yaml \
	  --from-literal=AWS_ACCESS_KEY_ID="$$AWS_ACCESS_KEY_ID" --from-literal=AWS_SECRET_ACCESS_KEY="$$AWS_SECRET_ACCESS_KEY" \
	  $${AWS_ENDPOINT_URL:+--from-literal=AWS_ENDPOINT_URL="$$AWS_ENDPOINT_URL"} \
	  $${AWS_REGION:+--from-literal=AWS_REGION="$$AWS_REGION"} | kubectl apply -f -
