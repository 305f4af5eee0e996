"""``python -m edgeinf.zoo``: train (or load from the cache) the built-in models and print their accuracy."""
from __future__ import annotations

import argparse
import logging
import sys

from edgeinf.errors import EdgeinfError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeinf.zoo", description=__doc__)
    parser.add_argument("models", nargs="*", help="zoo models (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="cache dir (default: $EDGEINF_CACHE or ~/.cache/edgeinf)")
    parser.add_argument("--retrain", action="store_true", help="train even if cached (and refresh the cache)")
    parser.add_argument("--json", default=None, help="also write the training records to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from edgeinf import zoo
    from edgeinf._atomic import write_json
    try:
        records = [_one(zoo, name, args) for name in (args.models or zoo.list_models())]
    except EdgeinfError as exc:
        print(f"edgeinf: error: {exc}", file=sys.stderr)
        return 1
    for r in records:
        accs = "  ".join(f"{k}={v:.4f}" for k, v in r["test_accuracy"].items())
        print(f"{r['name']:14s} train {r.get('train_s', '?')} s + exits {r.get('exit_train_s', '?')} s  test: {accs}")
    if args.json:
        write_json(args.json, records)
    return 0


def _one(zoo, name: str, args) -> dict:
    return zoo.get(name, cache=args.cache, seed=args.seed, retrain=args.retrain).zoo_info


if __name__ == "__main__":
    sys.exit(main())
