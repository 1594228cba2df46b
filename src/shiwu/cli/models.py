"""``shiwu models``: the models shiwu knows, whether their weights are here, how to get them."""

from __future__ import annotations

import json

from .options import EXIT_OK


def add(commands) -> None:
    models = commands.add_parser("models", help="list models and whether their weights are installed")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(run=run)


def run(args) -> int:
    from ..models.registry import DEFAULT_MODEL, catalog

    rows = [{"name": spec.name, "classes": spec.num_classes, "input_size": spec.preprocessing.size,
             "weights_installed": spec.available, "description": spec.description,
             "install": None if spec.available else spec.install_hint}
            for spec in catalog()]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    width = max(len(row["name"]) for row in rows)  # the ModelScope names are long: one column for all
    for row in rows:
        mark = "installed" if row["weights_installed"] else "not installed"
        default = " (default)" if row["name"] == DEFAULT_MODEL else ""
        print(f"{row['name']:<{width}}  {row['classes']:>6} classes  {row['input_size']}px  {mark:<13}  "
              f"{row['description']}{default}")
        if row["install"]:
            print(f"{'':<{width}}  {row['install']}")
    return EXIT_OK
