"""Benchmarks: ``python -m helpers.bench NAME [options]`` prints one JSON object.

Speed and quality targets live here, not in the tests. Data comes through the same
loaders as the lessons, so ``COURSE_DATA_MIRROR`` is honoured.
"""

from __future__ import annotations

import argparse
import json


def bench_softmax(variant: str) -> dict:
    """Lesson 01: softmax recommender vs most-popular under leave-last-out."""
    from helpers import softmax as sm
    from helpers.data import load_movielens
    from helpers.splits import leave_last_out

    data = load_movielens(variant)
    train, test = leave_last_out(data.ratings)
    result = sm.train_softmax(train, data.n_users, data.n_items, dim=32, epochs=10,
                              batch_size=256, learning_rate=3e-3, seed=0)
    model = sm.evaluate_ranking(sm.user_scores(result.model, test["user_idx"].to_numpy()), train, test)
    popular = sm.evaluate_ranking(sm.popularity_scores(train, data.n_items), train, test)
    return {
        "benchmark": "softmax",
        "dataset": data.name,
        "protocol": "leave-last-out by timestamp; full catalogue ranked; training items excluded; ties pessimistic",
        "users": model["users"],
        "items": data.n_items,
        "model": {"HR@10": model["HR@10"], "NDCG@10": model["NDCG@10"], "dim": 32, "epochs": 10},
        "most_popular": {"HR@10": popular["HR@10"], "NDCG@10": popular["NDCG@10"]},
        "train_seconds": round(result.seconds, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    softmax = commands.add_parser("softmax", help="lesson 01: softmax recommender vs popularity")
    softmax.add_argument("--variant", choices=["latest-small", "100k"], default="latest-small")
    args = parser.parse_args(argv)
    if args.command == "softmax":
        report = bench_softmax(args.variant)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
