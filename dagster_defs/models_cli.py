"""The model store of the current deployment, from the command line.

    python -m dagster_defs.models_cli list churn
    python -m dagster_defs.models_cli promote churn 3f2a9c0d1e2b4a5c [--alias champion]

Same environment as the code location (BATCH_INFERENCE_DEPLOYMENT, BATCH_INFERENCE_ROOT, ...).
`promote` moves an alias by hand, e.g. to roll the champion back; the next run resolves it.
"""

import argparse
import os
import sys
from pathlib import Path

from batch_inference_assets.models.store import ModelStore, ModelStoreError
from dagster_defs.deployments import deployment_resources


def model_store() -> ModelStore:
    root = Path(os.environ.get("BATCH_INFERENCE_ROOT") or ".data").resolve()
    store: ModelStore = deployment_resources(root)["model_store"]
    return store


def list_versions(store: ModelStore, name: str) -> str:
    aliases: dict[str, list[str]] = {}
    for alias, version in sorted(store.aliases(name).items()):
        aliases.setdefault(version, []).append(alias)
    lines = [f"{'version':<18}{'kind':<22}{'created_at':<34}{'holdout metrics':<40}aliases"]
    for meta in store.versions(name):
        metrics = ", ".join(
            f"{k.removeprefix('holdout_')}={v:.4f}"
            for k, v in sorted(meta.get("metrics", {}).items())
            if k.startswith("holdout_") and not k.endswith("_rows")
        )
        lines.append(
            f"{meta['version']:<18}{meta['kind']:<22}{meta.get('created_at', ''):<34}"
            f"{metrics:<40}{', '.join(aliases.get(meta['version'], []))}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, store: ModelStore | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="versions, metrics and aliases of a model")
    listing.add_argument("name")
    promote = sub.add_parser("promote", help="point an alias at a version")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion")
    args = parser.parse_args(argv)
    store = store or model_store()
    try:
        if args.command == "list":
            print(list_versions(store, args.name))
        else:
            try:
                previous = store.resolve(args.name, args.alias)
            except ModelStoreError:
                previous = "(none)"
            store.load(args.name, args.version)  # refuses unknown, corrupt or unloadable ones
            store.set_alias(args.name, args.alias, args.version)
            print(f"{args.name}@{args.alias}: {previous} -> {args.version}")
    except ModelStoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
