"""Benchmarks: ``python -m helpers.bench NAME [options]`` prints one JSON object.

Speed and quality targets live here, not in the tests. Data comes through the same
loaders as the lessons, so ``COURSE_DATA_MIRROR`` is honoured.
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import json
import sys
import time


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


def bench_federated(variant: str, rounds: int = 300, dropout: float = 0.0) -> dict:
    """Lesson 03: centralised vs FedSGD vs FedAvg (and its drift remedies) on the same per-user split,
    each round's costs from the core's round reports; round speed of both client updates.

    Every run is stopped where its validation RMSE is lowest (each client's held-out ratings split
    into validation and test, :func:`helpers.lessons.movielens_federation`) and its test RMSE is read
    there, once: the epoch or round chosen is reported with it.

    ``dropout``: the share of asked clients that never report (they download, but neither train
    nor upload), applied to every method.
    """
    import dataclasses
    import time

    import numpy as np

    from helpers import fedcore as fc
    from helpers import federated as fl
    from helpers import lessons, mf
    from helpers.metrics import chosen_round

    data, federation = lessons.movielens_federation(variant, validation=True)
    dim = lessons.EMBEDDING_DIM
    central = mf.train_mf(mf.init_mf(data.n_users, data.n_items, dim, federation.mu, seed=0), federation.train,
                          federation.test, batch_size=256, epochs=20, learning_rate=1.0, l2=0.02, valid=federation.valid)
    epoch = chosen_round(central)
    central_test = float(central.test_rmse[epoch])
    report = {"benchmark": "federated", "dataset": data.name, "clients": len(federation.client_ids),
              "split": "each client's ratings 80/20 (seed 0), the 20 % halved into validation and test (seed 1)",
              "model": f"biased MF, d={dim}, l2=0.02", "stopping": "the epoch or round with the lowest validation RMSE",
              "centralised": {"epoch_chosen_on_validation": epoch, "valid_rmse": float(central.valid_rmse[epoch]),
                              "test_rmse": central_test},
              "rounds": rounds, "dropout": dropout, "methods": {}}
    sampler = fc.with_dropout(fc.uniform, dropout)
    methods = {"fedavg": (lessons.mf_config(), fc.Algorithm(sampler=sampler)),
               "fedsgd": (fl.FedConfig.fedsgd(lessons.MF_FEDAVG["clients_per_round"], lessons.MF_FEDSGD_RATE),
                          fc.Algorithm(sampler=sampler))}
    for name, (config, algorithm) in lessons.mf_drift_remedies().items():
        methods[f"{name.lower()}_e{config.local_epochs}"] = (config, dataclasses.replace(algorithm, sampler=sampler))
    for name, (config, algorithm) in methods.items():
        history = fl.train_federated(federation, config, rounds, dim=dim, algorithm=algorithm)[2]
        chosen = chosen_round(history)
        report["methods"][name] = {
            "config": dataclasses.asdict(config),
            "round_chosen_on_validation": chosen, "valid_rmse": float(history.valid_rmse[chosen]),
            "test_rmse": float(history.test_rmse[chosen]),
            "gap_to_centralised": float(history.test_rmse[chosen]) / central_test - 1,
            "mb_down_and_up": round(history.mb[-1], 1), "mb_uploaded": round(history.mb_up[-1], 1),
            "mb_if_whole_table": round(history.mb_dense[-1], 1),
            "mean_clients_trained_per_round": float(np.mean(history.clients_trained)),
            "client_examples_millions": round(history.client_examples[-1] / 1e6, 2),
        }
    config = lessons.mf_config()
    timings = {}
    for name, algorithm in [("vectorised", fc.FEDAVG), ("reference", fc.Algorithm(client_update=fl.reference_training))]:
        state, store = fl.init_state(federation, dim, seed=0)
        state, _ = fc.run_round(state, federation, store, config, algorithm)  # warm-up (compiles the vectorised one)
        start = time.perf_counter()
        for _ in range(5):
            state, _ = fc.run_round(state, federation, store, config, algorithm)
        timings[name] = (time.perf_counter() - start) / 5
    report["seconds_per_round_k50"] = {k: round(v, 4) for k, v in timings.items()}
    report["speedup_vectorised_over_reference"] = round(timings["reference"] / timings["vectorised"], 1)
    return report


SOFTMAX_SWEEP = {  # lesson 04's validation sweep (seed 0): the presets in helpers.lessons come from it
    "FedSGD": {"client_lr": (1.0, 2.0, 5.0), "server_lr": (5.0, 10.0, 20.0)},
    "FedAvg": {"local_epochs": (5, 10), "client_lr": (0.5, 1.0, 2.0), "server_lr": (5.0, 10.0)},
    "centralised": {"learning_rate": (0.001, 0.003, 0.01), "batch_users": (8, 32), "l2": (0.05, 0.2)},
}


def bench_fedsoftmax(variant: str = "latest-small", rounds: int = 400, seeds=(0, 1, 2), sweep: bool = False) -> dict:
    """Lesson 04: the softmax recommender centralised, by FedSGD and by FedAvg (sampled and full softmax),
    the round chosen on validation, tested once under both protocols; bytes per form; the leak; round speed.

    With ``sweep``, instead: the validation sweep of :data:`SOFTMAX_SWEEP` (seed 0) that chose the presets.
    """
    import numpy as np

    from helpers import fedsoftmax as fs
    from helpers import lessons
    from helpers.progress import progress

    data, split, evaluator = lessons.movielens_ranking(variant)
    base = {"benchmark": "fedsoftmax", "dataset": data.name, "clients": len(split.positives), "items": split.n_items,
            "split": "per user by time: last interaction test, the one before validation, the rest train",
            "protocols": fs.PROTOCOLS, "rounds": rounds}
    if sweep:
        return {**base, "sweep": _softmax_sweep(split, evaluator, rounds)}
    popular = {protocol: evaluator.popularity("test", protocol) for protocol in fs.PROTOCOLS}
    methods = lessons.softmax_methods(split, evaluator, rounds, forms=("sampled", "full"))
    report = {**base, "seeds": list(seeds), "most_popular_test": popular, "methods": {}}
    for name, run in methods.items():
        runs = [run(seed) for seed in progress(seeds, name)]                   # progress on stderr
        summary = {protocol: {metric: {"mean": float(np.mean([r.test[protocol][metric] for r in runs])),
                                       "std": float(np.std([r.test[protocol][metric] for r in runs]))}
                              for metric in ("HR@10", "NDCG@10")} for protocol in fs.PROTOCOLS}
        entry = {"test": summary, "chosen_round_or_epoch": [r.best_round for r in runs],
                 "seconds_per_run": round(float(np.mean([r.seconds for r in runs])), 1)}
        if runs[0].history.reports:
            entry["mb_up_per_client_per_round"] = float(np.mean([r.bytes_up / len(r.trained) / 1e6
                                                                 for r in runs[0].history.reports]))
        entry["hr10_over_most_popular"] = summary["full"]["HR@10"]["mean"] / popular["full"]["HR@10"]
        report["methods"][name] = entry
    central = report["methods"]["centralised"]["test"]["full"]["HR@10"]["mean"]
    for name, entry in report["methods"].items():
        entry["hr10_relative_to_centralised"] = entry["test"]["full"]["HR@10"]["mean"] / central - 1
    report["leak"] = _softmax_leak(split)
    report["speed"] = _softmax_speed(split)
    return report


def _softmax_sweep(split, evaluator, rounds: int) -> list:
    """Every setting of :data:`SOFTMAX_SWEEP`: the validation HR@10 of its chosen round (seed 0)."""
    import itertools

    from helpers import fedcore as fc
    from helpers import fedsoftmax as fs
    from helpers import lessons
    from helpers.metrics import trailing_mean
    from helpers.progress import progress

    results = []
    for method, grid in SOFTMAX_SWEEP.items():
        for values in progress(list(itertools.product(*grid.values())), f"{method} settings"):
            setting = dict(zip(grid, values))
            if method == "centralised":
                run = fs.train_centralised(split, evaluator, lessons.SOFTMAX_DIM,
                                           **{**lessons.SOFTMAX_CENTRAL, **setting})
            else:
                if method == "FedSGD":
                    config = fc.FedConfig.fedsgd(lessons.SOFTMAX_FEDSGD["clients_per_round"],
                                                 setting["client_lr"] * setting["server_lr"], setting["client_lr"],
                                                 lessons.SOFTMAX_FEDSGD["l2"])
                else:
                    config = lessons.softmax_fedavg(**setting)
                run = fs.run_federated(split, evaluator, config, rounds, "sampled", lessons.SOFTMAX_NEGATIVES,
                                       lessons.SOFTMAX_DIM)
            chosen = float(trailing_mean(run.history.valid_hr, 5)[run.best_round])
            results.append({"method": method, **setting, "chosen": run.best_round, "valid_hr10_mean_of_5": chosen})
    return results


def _softmax_leak(split) -> dict:
    """Precision and recall of each attack on one round's updates of each form (lesson 04's presets)."""
    from helpers import fedcore as fc
    from helpers import fedsoftmax as fs
    from helpers import lessons

    config = lessons.softmax_fedavg()
    state, store = fs.init_state(split, lessons.SOFTMAX_DIM)
    clients = fc.uniform(fs.SoftmaxFederation(split).client_ids, config, 0).reporting
    leaks = {}
    for form in fs.FORMS:
        task = fs.SoftmaxFederation(split, form, lessons.SOFTMAX_NEGATIVES)
        updates = task.train_clients(state.params, fs.UserVectors(store.user_vec.copy()), clients, config, 0)
        leaks[form] = {attack: fs.leak(updates, split, attack) for attack in fs.ATTACKS}
    return leaks


def _softmax_speed(split) -> dict:
    """Seconds per round (the fastest of several) of the vectorised and the per-client reference update
    at K = 50, and of the vectorised one at K = 50, 200 and all clients (sampled and full softmax)."""
    import time

    from helpers import fedcore as fc
    from helpers import fedsoftmax as fs
    from helpers import lessons

    def seconds(task, config, algorithm=fc.FEDAVG, repeats=5):
        """The fastest of ``repeats`` rounds after a warm-up (TensorFlow's first call): the least
        disturbed by whatever else the machine runs, as ``timeit`` reports."""
        state, store = fs.init_state(split, lessons.SOFTMAX_DIM)
        state, _ = fc.run_round(state, task, store, config, algorithm)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            state, _ = fc.run_round(state, task, store, config, algorithm)
            times.append(time.perf_counter() - start)
        return min(times)

    speed = {}
    for form in ("sampled", "full"):
        task = fs.SoftmaxFederation(split, form, lessons.SOFTMAX_NEGATIVES)
        vectorised = seconds(task, lessons.softmax_fedavg())
        reference = seconds(task, lessons.softmax_fedavg(), fc.Algorithm(client_update=fs.reference_training), 2)
        scaling = {str(k): round(seconds(task, lessons.softmax_fedavg(clients_per_round=k), repeats=2), 3)
                   for k in (50, 200, len(task.client_ids))}
        speed[form] = {"k50_vectorised_s": round(vectorised, 4), "k50_reference_s": round(reference, 3),
                       "speedup": round(reference / vectorised, 1), "vectorised_s_by_clients_per_round": scaling}
    return speed


def _cifar_source_report(data, source, pretrained) -> dict:
    """What both CIFAR benchmarks say about the data and the source model."""
    return {"dataset": data.build_name, "dataset_sha256": data.build,
            "images": {"train": int(len(data.x_train)), "test": int(len(data.x_test))},
            "source": {"classes": source.class_names, "train_images": int(len(source.x_train)),
                       "test_images": int(len(source.x_test)), "test_accuracy": pretrained.test_accuracy,
                       "epochs": len(pretrained.curve), "from_cache": pretrained.cached,
                       "training_seconds": round(pretrained.seconds, 1)}}


def bench_transfer(budgets=(10, 50, 250), seeds=(0, 1)) -> dict:
    """Lesson 05: source accuracy, and validation and test accuracy of methods (a)–(d) at each label
    budget on lesson 05's target task (:func:`helpers.lessons.cifar_target`: validation images held
    out of the training images, on which the lesson chooses; test images read once per run)."""
    from helpers import lessons
    from helpers import vision_transfer as vt
    from helpers.data import load_cifar10

    data = load_cifar10()
    source, pretrained = lessons.cifar_source(data, progress=False)
    target = lessons.cifar_target(data)
    runs = vt.run_grid(pretrained.extractor, target, list(vt.METHODS), list(budgets), list(seeds), progress=False)
    stats = runs.groupby(["per_class", "method"])[["valid_accuracy", "accuracy"]].agg(["mean", "std"])
    return {
        "benchmark": "transfer", **_cifar_source_report(data, source, pretrained),
        "target": {"classes": target.class_names, "train_images_available": int(len(target.x_train)),
                   "validation_images": int(len(target.x_valid)), "test_images": int(len(target.x_test))},
        "steps_per_budget": {str(b): vt.target_steps(5 * b) for b in budgets}, "seeds": list(seeds),
        "target_accuracy": {
            str(int(budget)): {method: {split: {"mean": _number(row[(column, "mean")]), "std": _number(row[(column, "std")])}
                                        for split, column in (("validation", "valid_accuracy"), ("test", "accuracy"))}
                               for (per_class, method), row in stats.iterrows() if per_class == budget}
            for budget in sorted(stats.index.get_level_values("per_class").unique())},
    }


def bench_privacy(rounds: int = 100) -> dict:
    """Lesson 10: leak precision/recall, the ε anchor, RMSE at three ε, attacks with and without defences."""
    import numpy as np

    from helpers import fedcore as fc
    from helpers import federated as fl
    from helpers import lessons
    from helpers import privacy as pv
    from helpers import security as sec

    data, federation = lessons.movielens_federation()
    train, config, dim = federation.train, lessons.mf_config(), lessons.EMBEDDING_DIM
    state, store, _ = fl.train_federated(federation, config, 20, dim=dim)
    clients = fc.uniform(federation.client_ids, config, state.round).reporting
    updates = fl.local_training(federation, state.params, store, clients, config, state.round)
    leak = np.mean([pv.precision_recall(pv.reconstruct_items(pv.dense_update(updates, k, data.n_items)),
                                        federation.client_data(c)[0]) for k, c in enumerate(updates.clients)], axis=0)
    n = len(federation.client_ids)
    q, delta = 50 / n, 1 / n**1.1
    report = {"benchmark": "privacy", "dataset": data.name, "rounds": rounds,
              "leak_dense_updates": {"precision": float(leak[0]), "recall": float(leak[1])},
              "epsilon_anchor_sigma1.2_q120of3383_T100_delta1e-5": {
                  a: pv.epsilon(1.2, 120 / 3383, 100, 1e-5, a) for a in ("rdp", "pld")},
              "dp_fedavg": [], "attacks": []}
    for sigma in (0.5, 1.0, 2.0):
        dp = pv.DPConfig(0.1, sigma, q * n)
        history = fl.train_federated(federation, config, rounds, dim=dim, algorithm=pv.dp_fedavg(dp, q))[2]
        report["dp_fedavg"].append({"sigma": sigma, "clip_norm": 0.1, "q": q, "delta": delta,
                                    "epsilon_rdp": pv.epsilon(sigma, q, rounds, delta, "rdp"),
                                    "test_rmse": history.test_rmse[-1]})
    counts = train.groupby("item_idx").size()
    target = int(counts[counts == 2].index[0])
    for attack in ("scale", "push"):
        for aggregator in sec.AGGREGATORS:
            threat = sec.Threat(attacker_share=0.1, attack=attack, target_item=target, aggregator=aggregator, clip_norm=0.1)
            s, st, history = fl.train_federated(federation, config, rounds, dim=dim, algorithm=sec.threatened(threat))
            report["attacks"].append({"attack": attack, "aggregator": aggregator, "attacker_share": 0.1,
                                      "test_rmse": history.test_rmse[-1],
                                      "target_hit_rate": sec.hit_rate(s, st, federation, target)})
    return report


def bench_crossdomain(source: str = "movie", seeds=(0, 1, 2)) -> dict:
    """Lesson 06: every cold-start method at β = 20/50/80% (book is used if movie is unreachable)."""
    import pandas as pd

    from helpers import cross_domain as cd
    from helpers.data import load_douban

    used, source_data = cd.choose_source(preferred=source, fallback="book")
    domains = cd.align(source_data, load_douban("music"))
    rows = []
    for seed in seeds:
        params = cd.train_domain_mf(domains.source, domains.n_users, domains.n_source_items, 16, 20, seed)
        for beta in (0.2, 0.5, 0.8):
            rows += cd.evaluate_methods(domains, beta, seed, dim=16, epochs=20, source_params=params)
    stats = pd.DataFrame(rows).groupby(["beta", "method"])[["MAE", "RMSE"]].agg(["mean", "std"])
    return {
        "benchmark": "crossdomain", "source_domain_used": used, "target_domain": "music", "seeds": list(seeds),
        "users": {"all": domains.n_users, "source": int(domains.source["user"].nunique()),
                  "target": int(domains.target["user"].nunique()), "overlap": int(len(domains.overlap))},
        "results": {f"beta={beta}": {method: {f"{m}_{s}": float(stats.loc[(beta, method), (m, s)])
                                              for m in ("MAE", "RMSE") for s in ("mean", "std")}
                                     for method in cd.METHODS} for beta in (0.2, 0.5, 0.8)},
    }


def bench_fedcrossdomain(source: str = "movie", seeds=(0, 1, 2), betas=(0.2, 0.5, 0.8), central: bool = True) -> dict:
    """The federated cross-domain cold start (:mod:`helpers.fedcrossdomain`, preset
    :func:`helpers.lessons.fed_cold_start_settings`): every method's RMSE, MAE, HR@10 and NDCG@10 on
    the cold users' hidden music at each β and each number of ratings already on the device (mean,
    standard error and values over ``seeds``); the paired per-seed differences of the federated
    mappings (linear, MLP) against target-only MF and against lesson 06's centralised mapping of the
    same kind, and lesson 08's pairs decided by the course's 95 % rule
    (:func:`helpers.findings.decide_pairs`); rounds and the mappings' server rates chosen on validation, MB up per client per round
    and seconds per round of each part; what one client's mapping upload reveals (each kind). Douban book is the source when movie is unreachable."""
    import numpy as np

    from helpers import cross_domain as cd
    from helpers import fedcrossdomain as fx
    from helpers import findings, lessons
    from helpers.data import load_douban

    used, source_data = cd.choose_source(preferred=source, fallback="book")
    domains = cd.align(source_data, load_douban("music"))
    settings = lessons.fed_cold_start_settings()
    runs = fx.run_grid(domains, settings, betas, seeds, central=central)

    def summary(values) -> dict:
        values = np.asarray(values, dtype=np.float64)
        se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None
        return {"mean": round(float(values.mean()), 4), "standard_error": None if se is None else round(se, 4),
                "values": [round(float(v), 4) for v in values]}

    pairs = [(plain, other) for plain, _, centralised in fx.MAPPING_METHODS.values()
             for other in ("fed_tgt", "fed_bias") + ((centralised,) if central else ())] + [("fed_map_mlp", "fed_map")]

    def decided_at_95(beta, k) -> dict:
        """Lesson 08's pairs under the course's rule (seeds and a bootstrap over cold users, Holm)."""
        verdicts = {}
        for metric, higher, statistic in (("RMSE", False, "rmse"), ("HR@10", True, "mean")):
            frame = {m: [runs[beta, seed]["scores"][k][m][metric] for seed in seeds] for m in fx.METHODS
                     if m in runs[beta, seeds[0]]["scores"][k]}
            units = {m: fx.unit_values(runs, beta, k, m, metric, seeds) for m in frame}
            verdicts[metric] = {f"{d.a} - {d.b}": {"difference": round(d.difference, 4), "p_after_holm": round(d.p, 4),
                                                   "winner": d.winner}
                                for d in findings.decide_pairs(frame, pairs, higher, units, statistic)}
        return verdicts

    results = {}
    for beta in betas:
        per_k = {}
        for k in settings.revealed:
            scores = [runs[beta, seed]["scores"][k] for seed in seeds]
            methods = {method: {metric: summary([s[method][metric] for s in scores]) for metric in scores[0][method]}
                       for method in scores[0]}
            paired = {}
            for plain, _, centralised in fx.MAPPING_METHODS.values():
                paired[f"{plain} - fed_tgt"] = {m: summary([s[plain][m] - s["fed_tgt"][m] for s in scores])
                                                for m in ("RMSE", "HR@10")}
                if central:
                    paired[f"{plain} RMSE / {centralised} RMSE - 1"] = summary(
                        [s[plain]["RMSE"] / s[centralised]["RMSE"] - 1 for s in scores])
            per_k[f"revealed={k}"] = {"methods": methods, "paired_over_seeds": paired,
                                      "decided_at_95": decided_at_95(beta, k),
                                      "test_ratings": [runs[beta, seed]["test_ratings"][k] for seed in seeds]}
        first = runs[beta, seeds[0]]
        results[f"beta={beta}"] = {"cold_users": first["cold_users"], **per_k,
                                   "rounds_chosen_on_validation": {seed: runs[beta, seed]["rounds"] for seed in seeds},
                                   "mapping_server_rates_chosen_on_validation":
                                       {seed: runs[beta, seed]["server_rates"] for seed in seeds}}
    first = runs[betas[0], seeds[0]]
    return {"benchmark": "fedcrossdomain", "source_domain_used": used, "target_domain": "music", "seeds": list(seeds),
            "users": {"all": domains.n_users, "overlap": int(len(domains.overlap))},
            "settings": dataclasses.asdict(settings), "methods": fx.METHODS,
            "mb_up_per_client_per_round": {part: round(mb, 5) for part, mb in first["mb_up_per_client"].items()},
            "seconds_per_round": {part: round(sec, 4) for part, sec in first["seconds_per_round"].items()},
            "leakage_of_one_mapping_upload": first["leakage"], "results": results}


def _number(value):
    """A JSON-safe number: None for missing (NaN, pd.NA), int for whole numbers, else float."""
    import pandas as pd

    if value is None or pd.isna(value):
        return None
    return int(value) if float(value).is_integer() else float(value)


def bench_fltl(alphas=(0.1, 1.0, 100.0), rounds: int = 30, mf_rounds: int = 200,
               target_accuracy: float = 0.6) -> dict:
    """Lessons 07 and 09: per α, from scratch and from the pre-trained extractor (whose round 1 sets the head
    from class means; FedAvg, 20 clients, K = 10, E = 2): rounds to a target accuracy and accuracy
    after round 1 on the clients' validation images, the round chosen on them and its test accuracy;
    RMSE and MB uploaded per compression method."""
    from helpers import compression as cp
    from helpers import federated_vision as fv
    from helpers import lessons
    from helpers.data import load_cifar10

    data = load_cifar10()
    source, pretrained = lessons.cifar_source(data, progress=False)
    target = lessons.federated_target(data)
    experiment = fv.FLTLExperiment(target, pretrained.extractor, rounds=rounds, target_accuracy=target_accuracy,
                                   **lessons.CIFAR_FEDERATION)
    sweep = experiment.sweep(list(alphas), progress=False)

    _, federation = lessons.movielens_federation(validation=True)
    curves = cp.compare_uploads(federation, cp.comparison_runs(lessons.mf_config()), rounds=mf_rounds, progress=False)
    target_rmse = round(1.02 * min(curves["FedAvg, float32"].valid_rmse), 4)   # read on validation, as the lesson does
    table = cp.upload_table(curves, target_rmse, on="valid_rmse")
    return {
        "benchmark": "fltl", **_cifar_source_report(data, source, pretrained),
        "federated_target": {"images_dealt": int(len(target.x_train)), "test_images": int(len(target.x_test)),
                             "clients": lessons.CIFAR_FEDERATION["n_clients"],
                             "validation_share_per_client": fv.VALIDATION_FRACTION},
        "movielens": "latest-small",
        "fedavg": {"rounds": rounds, "clients_per_round": 10, "local_epochs": 2, "target_accuracy": target_accuracy},
        "per_alpha": {f"{a:g}": {row.init: {"rounds_to_target_on_validation": _number(row.rounds_to_target),
                                            "chosen_round": int(row.chosen_round),
                                            "valid_accuracy_after_round_1":
                                                round(experiment.run(a, row.init)[1].valid_accuracy[1], 4),
                                            "test_accuracy_at_chosen_round": round(row.test_accuracy, 4),
                                            "drift_B2": round(row.drift, 2)}
                                for row in sweep[sweep["alpha"] == a].itertuples()} for a in alphas},
        "pretrained_round_1": "the head set from the clients' class means (no gradient step)",
        "compression": {"rounds": mf_rounds, "target_rmse": target_rmse, "target_read_on": "validation ratings",
                        "runs": {label: {"final_test_rmse": _number(row["final test RMSE"]),
                                         "mb_uploaded": _number(row["MB uploaded"]),
                                         "mb_uploaded_to_target": _number(row["MB up to target"])}
                                 for label, row in table.iterrows()}},
    }


WIDGET_BUDGET = {"median": 2.0, "max": 5.0}  # seconds a panel may take to answer a change
_TIME_PANELS = ("import json\nfrom helpers.widgets import time_panels\n"
                "print('PANEL_TIMES ' + json.dumps(time_panels()))")


def bench_widgets(lessons=None, fast: bool = True, timeout: int = 3600, folder=None) -> dict:
    """Run each lesson notebook with control panels in a fresh kernel (fast mode unless
    ``fast`` is False), then time every panel it showed with :func:`helpers.widgets.time_panels`
    (its default redrawn, every control moved in turn, then the browser check's sequence of moves,
    each kept, as a person meets them; after the notebook's own warm-up). The 2 s budget of a
    move lives here; the browser check only fails a panel that does not answer within a minute.

    Args:
        lessons: notebook name prefixes ("03", "06", ...); None: every notebook that shows a panel.
        folder: where the notebooks are (default: the course's ``notebooks/``).
        timeout: seconds each notebook, its panel timing included, may run
            (:func:`helpers.runtimes.run_notebook` stops it there with the kernel's stack).
    """
    from pathlib import Path

    import nbformat

    from helpers.paths import course_root
    from helpers.runtimes import run_notebook
    from helpers.widgets import lessons_with_panels

    folder = Path(folder) if folder else course_root() / "notebooks"
    names = [name for name in lessons_with_panels(folder)
             if lessons is None or any(name.startswith(prefix) for prefix in lessons)]
    if not names:
        raise ValueError(f"no lesson notebook with control panels matches {lessons}")
    panels = []
    for name in names:
        notebook = nbformat.read(folder / name, as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(_TIME_PANELS))
        seconds = run_notebook(notebook, folder, fast, timeout, deadline=timeout, name=name)
        outputs = "".join(o.get("text", "") for o in notebook.cells[-1].outputs if o.get("output_type") == "stream")
        line = next(l for l in outputs.splitlines() if l.startswith("PANEL_TIMES "))
        for panel in json.loads(line.removeprefix("PANEL_TIMES ")):
            panels.append({"lesson": name, **panel})
        print(f"{name}: {seconds:.0f} s", file=sys.stderr)
    within = [p["median"] <= WIDGET_BUDGET["median"] and p["max"] <= WIDGET_BUDGET["max"] for p in panels]
    return {"mode": "fast" if fast else "full", "budget_seconds": WIDGET_BUDGET, "panels": panels,
            "panels_within_budget": f"{sum(within)} of {len(panels)}", "all_within_budget": all(within),
            "slowest": max(panels, key=lambda p: p["max"])["panel"] if panels else None}


def bench_flower(nodes: int = 4, rounds: int = 10) -> dict:
    """Lesson 11: lesson 03's FedAvg on Flower (a SuperLink and ``nodes`` SuperNodes on this
    machine) and in this process, same seeds, users and settings; RMSE, seconds and MB per
    round of both, and whether every Flower process exited."""
    from helpers import federated as fl
    from helpers import flower_deploy as fd
    from helpers import lessons

    _, federation = lessons.movielens_federation()
    config, dim = lessons.mf_config(), lessons.EMBEDDING_DIM
    settings = fd.RunSettings(rounds=rounds, config=config, dim=dim, min_nodes=nodes)
    with fd.Deployment(federation, nodes) as flower:
        result = flower.run(settings)
    left = flower.processes_left()
    history = fl.train_federated(federation, config, rounds, dim=dim)[2]
    return {"benchmark": "flower", "nodes": nodes, "users": len(federation.client_ids), "config": dataclasses.asdict(config),
            "dim": dim, "status": result.status, **fd.side_by_side(result, history),
            "nodes_answered": result.nodes_answered, "all_processes_exited": not left}


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
    federated.add_argument("--dropout", type=float, default=0.0,
                           help="share of asked clients that never report, in [0, 1) (default 0)")
    fedsoftmax = commands.add_parser("fedsoftmax", help="lesson 04: the softmax recommender federated, ranked")
    fedsoftmax.add_argument("--variant", choices=["latest-small", "100k"], default="latest-small")
    fedsoftmax.add_argument("--rounds", type=int, default=400)
    fedsoftmax.add_argument("--seeds", type=int, default=3)
    fedsoftmax.add_argument("--sweep", action="store_true", help="the validation sweep behind lesson 04's presets")
    transfer = commands.add_parser("transfer", help="lesson 05: CIFAR-10 source → target, methods (a)–(d)")
    transfer.add_argument("--seeds", type=int, default=2)
    crossdomain = commands.add_parser("crossdomain", help="lesson 06: cold-start cross-domain methods")
    crossdomain.add_argument("--source", choices=["movie", "book"], default="movie")
    fedcross = commands.add_parser("fedcrossdomain", help="federated cross-domain cold start: book/movie → music")
    fedcross.add_argument("--source", choices=["movie", "book"], default="movie")
    fedcross.add_argument("--seeds", type=int, default=3)
    privacy = commands.add_parser("privacy", help="lesson 10: leak, ε, DP utility, attacks and defences")
    privacy.add_argument("--rounds", type=int, default=100)
    fltl = commands.add_parser("fltl", help="lessons 07 and 09: FedAvg from scratch vs pre-trained per α; compression")
    fltl.add_argument("--rounds", type=int, default=30)
    flower = commands.add_parser("flower", help="lesson 11: the same FedAvg on Flower processes vs in-process")
    flower.add_argument("--nodes", type=int, default=4)
    flower.add_argument("--rounds", type=int, default=10)
    panels = commands.add_parser("widgets", help="every lesson's control panels: seconds to answer a change")
    panels.add_argument("--lessons", nargs="*", help="notebook prefixes, e.g. 03 06 (default: every lesson with panels)")
    panels.add_argument("--full", action="store_true", help="run the notebooks in full mode (default: COURSE_FAST=1)")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # downloads and notices go to stderr: stdout is the JSON only
        report = _run(args)
    print(json.dumps(report, indent=2))


def _run(args) -> dict:
    commands = {
        "softmax": lambda: bench_softmax(args.variant),
        "gd": lambda: bench_gd(args.passes),
        "federated": lambda: bench_federated(args.variant, args.rounds, args.dropout),
        "fedsoftmax": lambda: bench_fedsoftmax(args.variant, args.rounds, tuple(range(args.seeds)), args.sweep),
        "transfer": lambda: bench_transfer(seeds=tuple(range(args.seeds))),
        "crossdomain": lambda: bench_crossdomain(args.source),
        "fedcrossdomain": lambda: bench_fedcrossdomain(args.source, tuple(range(args.seeds))),
        "privacy": lambda: bench_privacy(args.rounds),
        "fltl": lambda: bench_fltl(rounds=args.rounds),
        "widgets": lambda: bench_widgets(args.lessons, fast=not args.full),
        "flower": lambda: bench_flower(args.nodes, args.rounds),
    }
    return commands[args.command]()


if __name__ == "__main__":
    main()
