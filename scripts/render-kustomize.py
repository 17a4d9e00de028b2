#!/usr/bin/env python3
"""Renders a kustomization the way `kubectl kustomize` does, for the few features that
deploy/k8s uses, when kubectl is not installed: resources (files and directories),
namespace, images, secretGenerator (envs, literals) and patches (strategic merge from a
file: maps merge, lists of named items merge by name, other lists are replaced).

A field it does not know fails loudly rather than render something else. Usage:
render-kustomize.py DIR > rendered.yaml (needs PyYAML).
"""

import base64
import hashlib
import json
import os
import sys

import yaml

KNOWN = {"apiVersion", "kind", "resources", "namespace", "images", "secretGenerator", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def merge(base, patch):
    """Strategic merge, as far as deploy/k8s needs it."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list):
        named = all(isinstance(i, dict) and "name" in i for i in base + patch)
        if named and base and patch:
            out = list(base)
            for item in patch:
                at = next((n for n, b in enumerate(out) if b["name"] == item["name"]), None)
                if at is None:
                    out.append(item)
                else:
                    out[at] = merge(out[at], item)
            return out
    return patch


def containers(resource):
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def render(directory):
    with open(os.path.join(directory, "kustomization.yaml"), encoding="utf-8") as f:
        kustomization = yaml.safe_load(f)
    unknown = set(kustomization) - KNOWN
    if unknown:
        sys.exit(f"render-kustomize: {directory}: unsupported fields {sorted(unknown)}; use kubectl kustomize")
    resources = []
    for entry in kustomization.get("resources", []):
        path = os.path.join(directory, entry)
        resources += render(path) if os.path.isdir(path) else load_all(path)
    renames = {}
    for generator in kustomization.get("secretGenerator", []):
        data = {}
        for env in generator.get("envs", []):
            with open(os.path.join(directory, env), encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        key, _, value = line.partition("=")
                        data[key] = value
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}
        digest = hashlib.sha256(json.dumps(encoded, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{generator['name']}-{digest}"
        renames[generator["name"]] = name
        resources.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                          "metadata": {"name": name}, "data": encoded})
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            sys.exit(f"render-kustomize: {directory}: only file patches are supported")
        for doc in load_all(os.path.join(directory, patch["path"])):
            at = next(n for n, r in enumerate(resources)
                      if r["kind"] == doc["kind"] and r["metadata"]["name"] == doc["metadata"]["name"])
            resources[at] = merge(resources[at], doc)
    for resource in resources:
        if "namespace" in kustomization and resource["kind"] not in CLUSTER_SCOPED:
            resource["metadata"]["namespace"] = kustomization["namespace"]
        for container in containers(resource):
            for image in kustomization.get("images", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
        volumes = resource.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
        for volume in volumes:
            secret = volume.get("secret", {})
            if secret.get("secretName") in renames:
                secret["secretName"] = renames[secret["secretName"]]
    return resources


if __name__ == "__main__":
    yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=False)
