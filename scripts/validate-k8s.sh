#!/usr/bin/env bash
# Validates the deployment files offline:
#   1. renders deploy/k8s/base and every overlay with kustomize (`kubectl kustomize`; where
#      kubectl is missing, scripts/render-kustomize.py, which covers what deploy/k8s uses
#      and is checked against kubectl wherever both exist);
#   2. checks every rendered resource against Kubernetes' own OpenAPI schemas, strictly
#      (an unknown or misspelt field fails), for the oldest and the newest Kubernetes the
#      manifests support (kubernetes-validate, which ships the schemas);
#   3. runs checkov's security checks on the rendered overlays and on the Dockerfile, with
#      the skips (each justified) in deploy/k8s/checkov.yaml.
# The Python tools are installed once, pinned, into a virtual environment of their own
# ($QUORUMKV_TOOLS_DIR, default ~/.cache/quorumkv/k8s-tools); quiet when present.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
# The oldest Kubernetes the manifests are for (StatefulSet PVC retention is on by default
# from 1.27), and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS=(1.30.0 1.37.0)

TOOLS=${QUORUMKV_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/quorumkv/k8s-tools}
STAMP="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION checkov==$CHECKOV_VERSION"

install_tools() {
    if [ -f "$TOOLS/stamp" ] && [ "$(cat "$TOOLS/stamp")" = "$STAMP" ]; then
        return 0
    fi
    echo "validate-k8s: installing $STAMP into $TOOLS"
    rm -rf "$TOOLS"
    mkdir -p "$(dirname "$TOOLS")"
    if ! python3 -m venv "$TOOLS" >/dev/null 2>&1; then
        # Debian's system Python keeps venv (and its pip) in a package of its own.
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        fi
        rm -rf "$TOOLS"
        python3 -m venv "$TOOLS"
    fi
    # shellcheck disable=SC2086 # the stamp is the list of pinned requirements
    "$TOOLS/bin/pip" install --quiet --disable-pip-version-check $STAMP
    echo "$STAMP" >"$TOOLS/stamp"
}

command -v python3 >/dev/null 2>&1 || { echo "validate-k8s: python3 is needed" >&2; exit 1; }
install_tools
have_kubectl=false
command -v kubectl >/dev/null 2>&1 && have_kubectl=true
$have_kubectl || echo "validate-k8s: no kubectl; rendering with scripts/render-kustomize.py"

# The same documents, in the same order, whatever the Secret's hash suffix.
same_rendering() {
    "$TOOLS/bin/python" - "$1" "$2" <<'PY'
import re, sys, yaml
def load(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    docs.sort(key=lambda d: (d["kind"], d["metadata"]["name"]))
    return re.sub(r"(quorumkv-secrets)-[a-z0-9]+", r"\1", yaml.safe_dump_all(docs, sort_keys=True))
sys.exit(0 if load(sys.argv[1]) == load(sys.argv[2]) else 1)
PY
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

targets=(deploy/k8s/base)
for overlay in deploy/k8s/overlays/*/; do
    targets+=("${overlay%/}")
done

for target in "${targets[@]}"; do
    name=$(echo "$target" | tr '/' '_')
    "$TOOLS/bin/python" scripts/render-kustomize.py "$target" >"$out/$name.fallback.yaml"
    if $have_kubectl; then
        kubectl kustomize "$target" >"$out/$name.yaml"
        same_rendering "$out/$name.yaml" "$out/$name.fallback.yaml" || {
            echo "validate-k8s: scripts/render-kustomize.py renders $target otherwise than kubectl" >&2
            exit 1
        }
    else
        mv "$out/$name.fallback.yaml" "$out/$name.yaml"
    fi
    for version in "${KUBERNETES_VERSIONS[@]}"; do
        "$TOOLS/bin/kubernetes-validate" --strict --quiet --no-warn \
            --kubernetes-version "$version" "$out/$name.yaml"
    done
    count=$(grep -c '^kind:' "$out/$name.yaml")
    echo "validate-k8s: $target: $count resources valid against Kubernetes ${KUBERNETES_VERSIONS[*]}"
done

# Security checks on what is deployed: the overlays (the base alone has no namespace and
# no Secret, which the overlays add), and the image.
run_checkov() {
    local label=$1 status=0
    shift
    "$TOOLS/bin/checkov" --config-file deploy/k8s/checkov.yaml "$@" >"$out/checkov.txt" 2>&1 \
        || status=$?
    grep -v '^[[:space:]]*$' "$out/checkov.txt" | sed "s|^|validate-k8s: checkov $label: |" || true
    return "$status"
}
for target in "${targets[@]:1}"; do
    name=$(echo "$target" | tr '/' '_')
    run_checkov "$target" --framework kubernetes -f "$out/$name.yaml"
done
run_checkov deploy/docker/Dockerfile --framework dockerfile -f deploy/docker/Dockerfile
