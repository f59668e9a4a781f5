#!/usr/bin/env python3
"""Kueue's own manifests, named and filtered as upstream's kustomization and this cluster need.

Reads, on stdin, upstream's CRDs and webhook configurations as kubectl prints them
(`kubectl create --dry-run=client -o json`: one JSON value per object, or a List), and writes
them back as one JSON List with:

- each webhook's and each converting CRD's `clientConfig` the Service `--service` in
  `--namespace` (upstream's kustomization renames `system/webhook-service` so, and adds the
  conversion webhook to the CRDs it lists; Kueue's own certificate rotation then fills in each
  caBundle);
- only the webhooks of the integrations that run (`--keep`: Kueue's own types and batch/v1 Jobs):
  a webhook registered with failurePolicy Fail for an integration the manager does not serve
  would refuse every object of that kind (every pod, for the pod integration);
- the configurations' names with upstream's `kueue-` prefix, which the rotation looks for.

Usage: kueue_manifests.py --namespace kueue-system --service kueue-webhook-service \\
           --convert workloads,... --keep batch-v1-job,kueue-x-k8s-io < manifests.json
"""
import argparse
import json
import sys


def json_documents(text):
    """The JSON values of `text` one after another (kubectl prints one per object)."""
    decoder, at = json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        doc, at = decoder.raw_decode(text, at)
        yield doc


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--namespace", required=True, help="the manager's namespace")
    p.add_argument("--service", required=True, help="the Service in front of its webhook server")
    p.add_argument("--convert", required=True,
                   help="comma-separated plural names of the CRDs with a conversion webhook")
    p.add_argument("--keep", required=True,
                   help="comma-separated fragments of the webhook paths to keep")
    args = p.parse_args()

    convert = {c for c in args.convert.split(",") if c}
    keep = [k for k in args.keep.split(",") if k]

    def service(path):
        return {"service": {"namespace": args.namespace, "name": args.service, "path": path, "port": 443}}

    items = []
    for doc in json_documents(sys.stdin.read()):
        items.extend(doc["items"] if doc.get("kind") == "List" else [doc])
    out, converted, kept, dropped = [], set(), [], []
    for obj in items:
        kind = obj.get("kind")
        if kind == "CustomResourceDefinition":
            plural = obj["spec"]["names"]["plural"]
            if plural in convert:
                obj["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {"clientConfig": service("/convert"), "conversionReviewVersions": ["v1"]},
                }
                converted.add(plural)
        elif kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            hooks = []
            for hook in obj.get("webhooks", []):
                path = hook["clientConfig"]["service"]["path"]
                if any(k in path for k in keep):
                    hook["clientConfig"] = service(path)
                    hooks.append(hook)
                    kept.append(path)
                else:
                    dropped.append(path)
            obj["webhooks"] = hooks
            obj["metadata"]["name"] = "kueue-" + obj["metadata"]["name"]
        else:
            sys.exit(f"kueue_manifests: unexpected {kind} in upstream's manifests")
        obj["metadata"].pop("creationTimestamp", None)
        out.append(obj)

    missing = convert - converted
    if missing:
        sys.exit(f"kueue_manifests: no CRD named {sorted(missing)} among upstream's CRDs")
    for k in keep:
        if not any(k in path for path in kept):
            sys.exit(f"kueue_manifests: no webhook path contains {k!r} in upstream's manifests")
    print(f"kueue_manifests: {len(kept)} webhooks kept, {len(dropped)} of integrations that do not "
          f"run dropped, conversion for {sorted(converted)}", file=sys.stderr)
    json.dump({"apiVersion": "v1", "kind": "List", "items": out}, sys.stdout)


if __name__ == "__main__":
    main()
