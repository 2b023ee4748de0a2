"""stzoo components: every registered component, per kind, with its one-line description."""

from __future__ import annotations

import json

from components import registry


def add_parser(subcommands) -> None:
    p = subcommands.add_parser("components", help="list every registered component")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    catalogue = registry.catalogue()
    if args.json:
        print(json.dumps(catalogue, indent=2))
        return 0
    for kind, entries in catalogue.items():
        if not entries:
            continue
        print(f"{kind}:")
        width = max(len(e["name"]) for e in entries)
        for entry in entries:
            print(f"  {entry['name']:<{width}}  {entry['description']}")
    return 0
