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


def bench_gd(passes: int = 5, redraws: int = 5) -> dict:
    """Lesson 02: full-batch vs mini-batch vs SGD after the same passes, and widget redraw time."""
    import statistics
    import time

    from helpers import mf
    from helpers.data import load_movielens
    from helpers.plots import plot_playground
    from helpers.splits import random_split
    import matplotlib.pyplot as plt

    data = load_movielens("latest-small")
    train, test = random_split(data.ratings, 0.2, seed=0)
    mu = float(train["rating"].mean())
    report = {"benchmark": "gd", "dataset": data.name, "split": "random 80/20 by rating, seed 0",
              "model": "biased MF, d=32, l2=0.02", "passes": passes, "methods": {}}
    for name, batch_size, rate in [("full_batch", len(train), 20.0), ("mini_batch_256", 256, 1.0), ("sgd", 1, 0.005)]:
        params = mf.init_mf(data.n_users, data.n_items, 32, mu, seed=0)
        history = mf.train_mf(params, train, test, batch_size=batch_size, epochs=passes, learning_rate=rate, l2=0.02)
        report["methods"][name] = {"batch_size": batch_size, "learning_rate": rate, "test_rmse": history.test_rmse[-1],
                                   "updates": history.updates[-1], "seconds": round(history.seconds[-1], 3)}
    playground = mf.GDPlayground(train.sample(15_000, random_state=0), test.sample(5_000, random_state=0),
                                 data.n_users, data.n_items, dim=16)
    playground.run(1.0, 256, 300)  # warm-up: compile once, as the notebook does before the slider
    times = []
    for batch_size in [256, 1, 15_000, 64, 1024][:redraws]:
        start = time.perf_counter()
        plot_playground(playground.run(1.0 if batch_size > 1 else 0.01, batch_size, 300), 1.0, batch_size)
        plt.close("all")
        times.append(time.perf_counter() - start)
    report["widget_redraw_seconds_median"] = round(statistics.median(times), 3)
    report["widget_redraw_seconds_max"] = round(max(times), 3)
    return report


def bench_federated(variant: str, rounds: int = 300) -> dict:
    """Lesson 03: centralised vs FedSGD vs FedAvg on the same per-user split; round speed."""
    import time

    import numpy as np

    from helpers import federated as fl
    from helpers import mf
    from helpers.data import load_movielens
    from helpers.splits import per_user_split

    data = load_movielens(variant)
    train, test = per_user_split(data.ratings, 0.2, seed=0)
    federation = fl.Federation(train, test, data.n_users, data.n_items, mu=float(train["rating"].mean()))
    central = mf.train_mf(mf.init_mf(data.n_users, data.n_items, 32, federation.mu, seed=0), train, test,
                          batch_size=256, epochs=20, learning_rate=1.0, l2=0.02)
    report = {"benchmark": "federated", "dataset": data.name, "clients": len(federation.client_ids),
              "split": "each client's ratings 80/20, seed 0", "model": "biased MF, d=32, l2=0.02",
              "centralised_test_rmse": float(np.nanmin(central.test_rmse)), "rounds": rounds, "methods": {}}
    configs = {"fedavg": fl.FedConfig(50, 1, 16, 0.05, 10.0), "fedsgd": fl.FedConfig.fedsgd(50, 10.0)}
    for name, config in configs.items():
        history = fl.train_federated(federation, config, rounds, dim=32)[2]
        report["methods"][name] = {
            "config": {k: v for k, v in vars(config).items()},
            "test_rmse": history.test_rmse[-1], "best_test_rmse": min(history.test_rmse),
            "gap_to_centralised": min(history.test_rmse) / report["centralised_test_rmse"] - 1,
            "mb_touched_rows": round(history.mb_touched[-1], 1), "mb_full_table": round(history.mb_full[-1], 1),
        }
    config = configs["fedavg"]
    timings = {}
    for name, round_fn in [("vectorised", fl.run_round), ("reference", fl.reference_round)]:
        server, store = fl.init_state(federation, 32, seed=0)
        server = round_fn(server, store, federation, config)  # warm-up (compiles the vectorised one)
        start = time.perf_counter()
        for _ in range(5):
            server = round_fn(server, store, federation, config)
        timings[name] = (time.perf_counter() - start) / 5
    report["seconds_per_round_k50"] = {k: round(v, 4) for k, v in timings.items()}
    report["speedup_vectorised_over_reference"] = round(timings["reference"] / timings["vectorised"], 1)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    softmax = commands.add_parser("softmax", help="lesson 01: softmax recommender vs popularity")
    softmax.add_argument("--variant", choices=["latest-small", "100k"], default="latest-small")
    gd = commands.add_parser("gd", help="lesson 02: full-batch vs mini-batch vs SGD; widget redraw time")
    gd.add_argument("--passes", type=int, default=5)
    federated = commands.add_parser("federated", help="lesson 03: centralised vs FedSGD vs FedAvg; round speed")
    federated.add_argument("--variant", choices=["latest-small", "100k"], default="latest-small")
    federated.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    if args.command == "softmax":
        report = bench_softmax(args.variant)
    elif args.command == "gd":
        report = bench_gd(args.passes)
    elif args.command == "federated":
        report = bench_federated(args.variant, args.rounds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
