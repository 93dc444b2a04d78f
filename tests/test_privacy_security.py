"""Lesson 10: leak reconstruction, secure aggregation, DP clipping and accounting, robust aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import fedcore as fc
from helpers import federated as fl
from helpers import privacy as pv
from helpers import security as sec
from test_federated import federation  # noqa: F401  (the planted federation fixture)


@pytest.fixture(scope="module")
def round_updates(federation):
    state, store = fl.init_state(federation, dim=4, seed=0)
    config = fl.FedConfig(8, 1, 4, 0.1, 1.0, l2=0.02)
    clients = fc.uniform(federation.client_ids, config, 0).reporting
    return state, fl.local_training(federation, state.params, store, clients, config, 0)


def test_leak_reconstruction_by_hand():
    updates = fc.Updates(np.array([10, 11]), np.array([2, 1]), np.array([0, 0, 1]), np.array([3, 5, 3]),
                         np.array([[0.1, 0.0, 0.0], [0.0, -0.2, 0.0], [0.3, 0.3, 0.1]], np.float32), np.zeros(2, int))
    dense = pv.dense_update(updates, 0, n_rows=8)
    assert dense.shape == (8, 3)
    assert pv.reconstruct_items(dense).tolist() == [3, 5]
    assert pv.precision_recall([3, 5], [3, 5]) == (1.0, 1.0)
    assert pv.precision_recall([3, 5, 6, 7], [3, 5]) == (0.5, 1.0)
    assert pv.precision_recall([3], [3, 5]) == (1.0, 0.5)


def test_leak_is_exact_on_real_updates(federation, round_updates):
    _, updates = round_updates
    for k, client in enumerate(updates.clients):
        guessed = pv.reconstruct_items(pv.dense_update(updates, k, federation.n_items))
        assert pv.precision_recall(guessed, federation.client_data(client)[0]) == (1.0, 1.0)


def test_quantisation_round_trip():
    values = np.array([-3.5, -1e-6, 0.0, 2.25, 1000.0])
    assert np.abs(pv.dequantise(pv.quantise(values)) - values).max() <= 0.5 / pv.SCALE


@pytest.mark.parametrize("dropped", [[], [0], [2, 4], [1, 2, 3]])
def test_masks_cancel_for_any_surviving_subset(dropped):
    rng = np.random.default_rng(1)
    participants = np.array([0, 1, 2, 3, 4])
    plain = {k: rng.normal(0, 1, 50) for k in participants}
    masked = {k: pv.mask_update(plain[k], k, participants, round_seed=3) for k in participants if k not in dropped}
    expected = sum(plain[k] for k in masked)
    assert np.abs(pv.unmask_sum(masked, participants, round_seed=3) - expected).max() <= len(masked) * 0.5 / pv.SCALE
    single = pv.dequantise(masked[next(iter(masked))])
    assert np.abs(single).mean() > 100  # one masked update alone is noise, far from the real values


def test_the_upper_half_of_the_ring_reads_as_negative():
    """Fixed point mod 2³²: 2³¹ and above are the negative numbers, 2³¹ − 1 the largest positive one."""
    half = pv.MODULUS // 2
    assert pv.dequantise(np.array([half]))[0] == -half / pv.SCALE
    assert pv.dequantise(np.array([half - 1]))[0] == (half - 1) / pv.SCALE
    assert pv.quantise(np.array([-1.0]))[0] == pv.MODULUS - pv.SCALE


def test_a_mask_hides_every_coordinate_separately():
    """Each coordinate gets its own mask value: one offset for the whole update (a scalar mask, or
    the same mask every round) would leave the differences between coordinates in plain sight."""
    participants = np.array([0, 1, 2])
    update = np.random.default_rng(0).normal(0, 1, (4, 6))
    offset = pv.dequantise(pv.mask_update(update, 0, participants, round_seed=3)) - update
    assert offset.shape == update.shape and np.std(offset) > 100
    assert len(np.unique(pv.pair_mask(pv.pair_seed(3, 0, 1), (4, 6)))) == 24
    assert pv.pair_seed(3, 0, 1) == pv.pair_seed(3, 1, 0) != pv.pair_seed(4, 0, 1)
    seeds = {pv.pair_seed(3, a, b) for a in range(12) for b in range(a + 1, 12)}   # 66 pairs: a key space to guess
    assert len(seeds) == 66 and max(seeds) > 2**48
    assert not np.array_equal(pv.mask_update(update, 0, participants, 3), pv.mask_update(update, 0, participants, 4))


def test_clipping_never_exceeds_the_bound(round_updates):
    _, updates = round_updates
    norms = updates.norms()
    for clip in (1e-3, 0.05, 10.0):
        clipped = fc.clip(clip)(updates, None).norms()
        assert (clipped <= clip * (1 + 1e-5)).all()
        small = norms <= clip
        assert np.allclose(clipped[small], norms[small], rtol=1e-5)  # updates inside the ball are untouched


def test_epsilon_anchor_from_tff_tutorial():
    assert pv.epsilon(1.2, 120 / 3383, 100, 1e-5, "rdp") == pytest.approx(1.99, abs=0.01)
    assert pv.epsilon(1.2, 120 / 3383, 100, 1e-5, "pld") == pytest.approx(1.71, abs=0.01)
    assert pv.epsilon(2.4, 120 / 3383, 100, 1e-5) < pv.epsilon(1.2, 120 / 3383, 100, 1e-5)
    # the coarser PLD grid of the course gives the accountant's default ε (1e-4 grid) to within 0.1%
    import dp_accounting
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        50 / 610, dp_accounting.GaussianDpEvent(0.5)), 30)
    fine = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-4)
    fine.compose(event)
    assert pv.epsilon(0.5, 50 / 610, 30, 1e-5, "pld") == pytest.approx(fine.get_epsilon(1e-5), rel=1e-3)
    for bad, reason in [(dict(noise_multiplier=0.0), "noise multiplier"), (dict(sampling_rate=0.0), "sampling rate"),
                        (dict(sampling_rate=1.5), "sampling rate"), (dict(rounds=0), "rounds"),
                        (dict(accountant="moments"), "accountant")]:
        args = dict(noise_multiplier=1.0, sampling_rate=0.1, rounds=10, delta=1e-5) | bad
        with pytest.raises(ValueError, match=reason):
            pv.epsilon(**args)
    assert 0 < pv.epsilon(1.0, 1.0, 1, 1e-5) < pv.epsilon(1.0, 1.0, 2, 1e-5)   # q = 1 and T = 1 are allowed edges


def test_dp_round_is_seeded_and_noisy(federation):
    config = fl.FedConfig(8, 1, 4, 0.1, 1.0, l2=0.02)
    dp = pv.DPConfig(clip_norm=0.1, noise_multiplier=1.0, expected_clients=8)
    first = fl.train_federated(federation, config, 3, dim=4, algorithm=pv.dp_fedavg(dp, 8 / 25))
    again = fl.train_federated(federation, config, 3, dim=4, algorithm=pv.dp_fedavg(dp, 8 / 25))
    assert np.array_equal(first[0].params, again[0].params)
    plain = fl.train_federated(federation, config, 3, dim=4)
    assert np.count_nonzero(fl.item_table(first[0].params)[1]) == federation.n_items  # noise reaches every row
    assert not np.allclose(first[0].params, plain[0].params)
    with pytest.raises(ValueError, match="sampling rate"):
        pv.dp_fedavg(dp, 0.0)


@pytest.mark.parametrize("method", ["median", "trimmed"])
def test_robust_aggregators_equal_the_mean_when_all_updates_agree(method):
    k, d = 5, 4
    values = np.tile(np.array([0.01, 0.01, 0.01, -0.02], np.float32), (2 * k, 1))
    updates = fc.Updates(np.arange(k), np.full(k, 10), np.repeat(np.arange(k), 2), np.tile([1, 4], k), values,
                         np.zeros(k, int))
    assert np.allclose(sec.robust_aggregate(updates, 6, method), fc.weighted_mean(updates, (6, d)))


def test_median_resists_one_outlier_and_median_all_zeroes_rare_items():
    values = np.array([[0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1], [50.0, 50.0]], np.float32)
    updates = fc.Updates(np.arange(5), np.ones(5, int), np.arange(5), np.zeros(5, int), values, np.zeros(5, int))
    assert sec.robust_aggregate(updates, 2, "median")[0, 0] == pytest.approx(0.1)
    assert sec.robust_aggregate(updates, 2, "trimmed", trim=0.2)[0, 0] == pytest.approx(0.1)
    assert fc.weighted_mean(updates, (2, 2))[0, 0] > 10
    rare = fc.Updates(np.arange(5), np.ones(5, int), np.array([0, 1]), np.array([1, 1]),
                      np.ones((2, 2), np.float32), np.zeros(5, int))
    assert not sec.robust_aggregate(rare, 2, "median_all").any()


def test_threat_settings_are_checked():
    for bad in [dict(dropout=1.0), dict(attacker_share=-0.1), dict(attack="nope"), dict(aggregator="max"), dict(trim=0.5)]:
        with pytest.raises(ValueError):
            sec.threatened(sec.Threat(**bad))


def test_dropout_and_attacks_run(federation):
    config = fl.FedConfig(10, 1, 4, 0.1, 1.0, l2=0.02)
    clean = fl.train_federated(federation, config, 15, dim=4)[2]
    dropped = fl.train_federated(federation, config, 15, dim=4, algorithm=sec.threatened(sec.Threat(dropout=0.5)))[2]
    assert dropped.train_rmse[-1] < dropped.train_rmse[0]
    scaled = fl.train_federated(federation, config, 15, dim=4,
                                algorithm=sec.threatened(sec.Threat(attacker_share=0.3, attack="scale")))[2]
    assert scaled.train_rmse[-1] > clean.train_rmse[-1]
    server, store, _ = fl.train_federated(federation, config, 15, dim=4, algorithm=sec.threatened(
        sec.Threat(attacker_share=0.3, attack="push", target_item=7, boost=50)))
    assert 0.0 <= sec.hit_rate(server, store, federation, 7) <= 1.0


def test_noise_for_epsilon_is_the_smallest_sigma_that_meets_the_budget():
    sigma = pv.noise_for_epsilon(2.0, 0.05, 200, 1e-5)
    assert pv.epsilon(sigma, 0.05, 200, 1e-5) <= 2.0 < pv.epsilon(sigma / 1.02, 0.05, 200, 1e-5)
    assert pv.noise_for_epsilon(8.0, 0.05, 200, 1e-5) < sigma  # a looser budget needs less noise
    with pytest.raises(ValueError, match="needs σ >"):
        pv.noise_for_epsilon(1e-4, 1.0, 10_000, 1e-9)
    with pytest.raises(ValueError, match="target ε must be > 0"):
        pv.noise_for_epsilon(0.0, 0.05, 200, 1e-5)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_noise_for_epsilon_answers_for_the_accountant_asked_and_below_sigma_1(accountant):
    """A loose budget (ε = 40) needs σ well under 1: the search must reach down to its lower end, and it
    must ask the accountant it was given (RDP and PLD disagree by more than the tolerance)."""
    sigma = pv.noise_for_epsilon(40.0, 0.05, 50, 1e-5, accountant)
    assert sigma < 1.0
    assert pv.epsilon(sigma, 0.05, 50, 1e-5, accountant) <= 40.0 < pv.epsilon(sigma / 1.02, 0.05, 50, 1e-5, accountant)


def test_defence_table_runs_every_aggregator_condition_and_seed(federation):
    table = sec.defence_table(federation, lambda seed: fl.FedConfig(8, 1, 4, 0.1, 1.0, l2=0.02, seed=seed), rounds=2,
                              dim=4, target_item=3, seeds=(0, 1), progress=False)
    assert len(table) == len(sec.AGGREGATORS) * len(sec.DEFENCE_CONDITIONS) * 2
    assert set(table["condition"]) == set(sec.DEFENCE_CONDITIONS) and set(table["seed"]) == {0, 1}
    assert table["test RMSE"].notna().all() and table["target hit rate"].between(0, 1).all()
    clean = table[(table["aggregator"] == "mean") & (table["condition"] == "clean")]
    _, _, direct = fl.train_federated(federation, fl.FedConfig(8, 1, 4, 0.1, 1.0, l2=0.02, seed=1), 2, dim=4)
    assert np.isclose(clean[clean["seed"] == 1]["test RMSE"].item(), direct.test_rmse[-1])  # no attack = FedAvg
    assert table.groupby("seed")["test RMSE"].nunique().min() > 1  # the attacks change the outcome
    for rmse_value, units in zip(table["test RMSE"], table["test units"]):   # each user's errors pool back to it
        assert units[:, 1].sum() == len(federation.test)
        assert np.sqrt(units[:, 0].sum() / units[:, 1].sum()) == pytest.approx(rmse_value, rel=1e-5)
    for condition, attack in [("scaling attack", dict(attack="scale")), ("push attack", dict(attack="push", target_item=3))]:
        row = table[(table["aggregator"] == "clip") & (table["condition"] == condition) & (table["seed"] == 1)]
        threat = sec.Threat(aggregator="clip", clip_norm=0.1, attacker_share=0.1, seed=1, **attack)  # the defaults
        state, store, history = fl.train_federated(federation, fl.FedConfig(8, 1, 4, 0.1, 1.0, l2=0.02, seed=1), 2,
                                                   dim=4, algorithm=sec.threatened(threat))
        assert row["test RMSE"].item() == pytest.approx(history.test_rmse[-1], rel=1e-6)
        assert row["target hit rate"].item() == sec.hit_rate(state, store, federation, 3)


def test_privacy_utility_plot_draws_error_bars_and_the_baseline():
    import matplotlib.pyplot as plt
    import pandas as pd

    from helpers.plots import plot_privacy_utility

    frontier = pd.DataFrame({"σ": [0.5, 1.0], "ε (RDP)": [20.0, 5.0], "ε (PLD)": [15.0, 4.0],
                             "test RMSE": [0.90, 0.95], "SE": [0.001, 0.002]})
    fig = plot_privacy_utility(frontier, 0.87, "t", baseline_rmse=0.96)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "item biases only" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert sorted(line.get_ydata()[0] for line in ax.get_lines() if len(line.get_ydata()) == 2 and
                  line.get_ydata()[0] == line.get_ydata()[1])[-1] == 0.96  # the baseline's horizontal line
    plt.close(fig)


def test_dp_noise_is_fresh_every_round_and_seeded_by_seed_and_round():
    """The Gaussian mechanism's noise must be new each round (the same noise every round would add up to a
    known offset that the server could subtract), and reproducible from (seed, round)."""
    updates = fc.Updates(np.array([10, 11]), np.array([2, 1]), np.array([0, 0, 1]), np.array([3, 5, 3]),
                         np.array([[0.1, 0.0], [0.0, -0.2], [0.3, 0.3]], np.float32), np.zeros(2, int))
    aggregate = fc.noisy_sum(noise_std=0.5, denominator=4.0, seed=7)
    config = fl.FedConfig(2, 1, 1, 0.1, 1.0)

    def at(round_number):
        context = fc.RoundContext(fc.ServerState(np.zeros((8, 2), np.float32), round_number), None, None, config)
        return aggregate(updates, (8, 2), context).astype(np.float64)

    total = np.zeros((8, 2))
    np.add.at(total, updates.rows, updates.values.astype(np.float64))
    for round_number in (0, 1):
        expected = (total + np.random.default_rng([7, round_number]).normal(0, 0.5, (8, 2))) / 4.0
        assert np.allclose(at(round_number), expected, atol=1e-6)
    assert np.array_equal(at(3), at(3))
    assert np.abs(at(0) - at(1)).min() > 0   # every coordinate gets different noise in another round


def test_noise_for_epsilon_asks_its_own_accountant_at_both_ends_of_the_search():
    """At q = 0.05, T = 50 PLD's ε at σ = 0.3 is under 50 and RDP's over it; at q = 0.5, T = 10 PLD reaches
    ε = 0.048 by σ = 100 and RDP does not."""
    assert pv.noise_for_epsilon(50.0, 0.05, 50, 1e-5, "pld") == 0.3
    assert pv.noise_for_epsilon(50.0, 0.05, 50, 1e-5, "rdp") > 0.3
    assert pv.noise_for_epsilon(0.048, 0.5, 10, 1e-5, "pld") < 100.0
    with pytest.raises(ValueError, match="needs σ >"):
        pv.noise_for_epsilon(0.048, 0.5, 10, 1e-5, "rdp")


def test_dp_fedavg_refuses_impossible_settings_and_clips_then_adds_seeded_noise(federation):
    for clip_norm, sigma in [(0.0, 1.0), (1.0, -0.5), (0.0, -0.5)]:
        with pytest.raises(ValueError, match="clipping norm must be > 0 and noise multiplier ≥ 0"):
            pv.dp_fedavg(pv.DPConfig(clip_norm, sigma, 8), 0.5)
    config = fl.FedConfig(8, 1, 4, 0.5, 1.0)
    state, store = fl.init_state(federation, dim=4, seed=0)
    quiet = pv.DPConfig(clip_norm=1e-3, noise_multiplier=0.0, expected_clients=4)
    new, report = fc.run_round(state, federation, store, config, pv.dp_fedavg(quiet, 0.5))
    assert len(report.trained) and report.update_norms.max() > 1e-3     # the raw updates exceed C …
    change = np.sqrt(((new.params - state.params).astype(np.float64) ** 2).sum())
    assert change <= len(report.trained) * 1e-3 / 4 * (1 + 1e-4)          # … the server sees them clipped
    noisy = [fc.run_round(state, federation, fl.init_state(federation, 4, 0)[1], config,
                          pv.dp_fedavg(pv.DPConfig(1.0, 1.0, 4, seed=s), 0.5))[0].params for s in (0, 0, 1)]
    assert np.array_equal(noisy[0], noisy[1]) and not np.allclose(noisy[0], noisy[2])
    on_clients = pv.dp_fedavg(quiet, 0.5, clipped_by_clients=True)        # the clients clipped: no second clip
    raw, _ = fc.run_round(state, federation, fl.init_state(federation, 4, 0)[1], config, on_clients)
    unclipped = np.sqrt(((raw.params - state.params).astype(np.float64) ** 2).sum())
    assert on_clients.transforms == () and unclipped > len(report.trained) * 1e-3 / 4 * (1 + 1e-4)


def test_precision_and_recall_of_nothing_guessed_or_nothing_true():
    assert pv.precision_recall(np.array([]), np.array([1, 2])) == (1.0, 0.0)
    assert pv.precision_recall(np.array([1]), np.array([])) == (0.0, 1.0)


# ---------------------------------------------------------------- security: attacks and robust aggregation by hand


def random_updates(k=7, n_items=6, width=3, seed=0):
    """k clients, each sending rows for a random subset of n_items items (the last item: nobody)."""
    rng = np.random.default_rng(seed)
    slot, rows = [], []
    for client in range(k):
        chosen = np.flatnonzero(rng.random(n_items - 1) < 0.6)
        slot += [client] * len(chosen)
        rows += list(chosen)
    values = rng.normal(size=(len(rows), width)).astype(np.float32)
    return fc.Updates(np.arange(100, 100 + k), rng.integers(1, 9, k), np.array(slot), np.array(rows), values,
                      np.full(k, 40))


def reference_robust(updates, n_items, method, trim=0.2):
    """Per item: the median (or the mean after cutting ⌊trim·c⌋ values at each end) of the rows sent,
    times the senders' share of all examples; 0 for items nobody sent."""
    share = updates.num_examples / updates.num_examples.sum()
    dense = np.zeros((n_items, updates.values.shape[1]))
    for item in np.unique(updates.rows):
        sent = updates.rows == item
        column = np.sort(updates.values[sent].astype(np.float64), axis=0)
        cut = int(np.floor(trim * len(column)))
        centre = np.median(column, axis=0) if method == "median" else column[cut:len(column) - cut].mean(axis=0)
        dense[item] = centre * share[updates.slot[sent]].sum()
    return dense


@pytest.mark.parametrize("method, trim", [("median", 0.2), ("trimmed", 0.2), ("trimmed", 0.1), ("trimmed", 0.4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_robust_aggregate_is_the_per_item_median_or_trimmed_mean_times_the_senders_share(method, trim, seed):
    updates = random_updates(seed=seed)
    assert {count % 2 for count in np.bincount(updates.rows)[:5]} == {0, 1}  # items sent by an even and an odd number
    got = sec.robust_aggregate(updates, 6, method, trim)
    assert got.dtype == np.float32 and not got[5].any()  # the item nobody sent stays 0
    assert np.allclose(got, reference_robust(updates, 6, method, trim), atol=1e-6)


def test_median_and_trimmed_mean_differ_and_one_client_with_one_example_keeps_its_update():
    values = np.array([[0.0], [1.0], [2.0], [6.0], [10.0]], np.float32)
    updates = fc.Updates(np.arange(5), np.ones(5, int), np.arange(5), np.zeros(5, int), values, np.zeros(5, int))
    assert sec.robust_aggregate(updates, 1, "median")[0, 0] == pytest.approx(2.0)
    assert sec.robust_aggregate(updates, 1, "trimmed", trim=0.2)[0, 0] == pytest.approx(3.0)  # mean of 1, 2, 6
    assert sec.robust_aggregate(updates, 1, "trimmed", trim=0.1)[0, 0] == pytest.approx(3.8)  # ⌊0.5⌋ = 0 cut
    single = fc.Updates(np.arange(1), np.ones(1, int), np.zeros(1, int), np.zeros(1, int), values[3:4],
                        np.zeros(1, int))
    assert sec.robust_aggregate(single, 1, "median")[0, 0] == pytest.approx(6.0)
    with pytest.raises(ValueError, match="'median', 'trimmed' or 'median_all', got 'max'"):
        sec.robust_aggregate(updates, 1, "max")


@pytest.mark.parametrize("k, seed", [(4, 0), (6, 1), (7, 2)])
def test_median_all_is_the_coordinate_median_over_all_sampled_clients_with_zeros(k, seed):
    updates = random_updates(k=k, seed=seed)
    dense = np.zeros((k, 6, 3))
    dense[updates.slot, updates.rows] = updates.values
    got = sec.robust_aggregate(updates, 6, "median_all")
    assert got.dtype == np.float32
    assert np.allclose(got, np.median(dense, axis=0), atol=1e-6)
    half = fc.Updates(np.arange(2), np.ones(2, int), np.array([0]), np.array([0]), np.array([[4.0, -2.0]], np.float32),
                      np.zeros(2, int))  # one of two clients sent item 0: the median is the midpoint with 0
    assert np.allclose(sec.robust_aggregate(half, 1, "median_all"), [[2.0, -1.0]])


def test_threat_settings_name_what_is_wrong_and_allow_the_edges():
    for bad, message in [(dict(dropout=1.0), "dropout share must lie in \\[0, 1\\), got 1.0"),
                         (dict(attacker_share=1.0), "attacker share must lie in \\[0, 1\\), got 1.0"),
                         (dict(attack="nope"), "attack must be one of .*got 'nope'"),
                         (dict(aggregator="max"), "aggregator must be one of .*got 'max'"),
                         (dict(trim=0.5), "trim share must lie in \\[0, 0.5\\), got 0.5")]:
        with pytest.raises(ValueError, match=message):
            sec.Threat(**bad).check()
    sec.Threat(dropout=0.0, attacker_share=0.0, trim=0.0).check()


def test_no_attack_or_no_attacker_leaves_the_updates_alone_and_scaling_flips_only_the_attackers():
    updates = random_updates()
    params = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    assert sec.attack(updates, np.array([1, 2]), sec.Threat(attack="none"), params) is updates
    assert sec.attack(updates, np.array([], int), sec.Threat(attack="push"), params) is updates
    scaled = sec.attack(updates, np.array([2]), sec.Threat(attack="scale", boost=4.0), params)
    bad = updates.slot == 2
    assert np.allclose(scaled.values[bad], -4.0 * updates.values[bad])
    assert np.array_equal(scaled.values[~bad], updates.values[~bad]) and np.array_equal(scaled.rows, updates.rows)


def test_a_push_attack_sends_one_row_toward_the_100_most_popular_items():
    rng = np.random.default_rng(3)
    n_items, d = 150, 3  # more than 100 items, so that "the 100 highest-bias items" is a real choice
    params = rng.normal(size=(n_items, d + 1)).astype(np.float32)
    updates = random_updates(k=5, n_items=n_items, width=d + 1)
    pushed = sec.attack(updates, np.array([0, 3]), sec.Threat(attack="push", target_item=7, boost=5.0), params)
    popular = np.argsort(-params[:, -1])[:100]
    row = np.append(params[popular, :d].mean(axis=0) - params[7, :d], 1.0) * 0.1 * 5.0
    bad = np.isin(pushed.slot, [0, 3])
    assert pushed.values.dtype == np.float32 and np.allclose(pushed.values[bad], row)
    assert sorted(pushed.slot[bad]) == [0, 3] and (pushed.rows[bad] == 7).all()
    honest = ~np.isin(updates.slot, [0, 3])
    assert np.array_equal(pushed.values[~bad], updates.values[honest])
    assert (pushed.num_examples[[0, 3]] == int(np.median(updates.num_examples))).all()
    assert (pushed.upload_bytes[[0, 3]] == fc.row_bytes(d + 1)).all()
    assert np.array_equal(pushed.num_examples[[1, 2, 4]], updates.num_examples[[1, 2, 4]])


def context_at(round_num, params):
    return fc.RoundContext(fc.ServerState(params, round_num), None, None, fl.FedConfig())


def test_the_attackers_are_drawn_by_seed_and_round():
    updates = random_updates(k=10)
    params = np.zeros((6, 3), np.float32)
    threat = sec.Threat(attacker_share=0.3, attack="scale", seed=4)
    first = sec.attack_transform(threat)(updates, context_at(2, params))
    attackers = np.random.default_rng([4, 2]).permutation(10)[:3]
    assert np.array_equal(first.values, sec.attack(updates, attackers, threat, params).values)
    again = sec.attack_transform(threat)(updates, context_at(2, params))
    later = sec.attack_transform(threat)(updates, context_at(3, params))
    assert np.array_equal(first.values, again.values) and not np.array_equal(first.values, later.values)


def test_threatened_clips_for_clip_passes_trim_and_the_robust_aggregator_and_seeds_dropouts():
    updates = random_updates(k=6)
    context = context_at(0, np.zeros((6, 3), np.float32))
    clipping = sec.threatened(sec.Threat(aggregator="clip", clip_norm=0.3))
    clipped = updates
    for transform in clipping.transforms:
        clipped = transform(clipped, context)
    assert clipped.norms().max() <= 0.3 + 1e-6 and updates.norms().max() > 0.3
    assert len(sec.threatened(sec.Threat(aggregator="mean")).transforms) == 1  # the (empty) attack only
    trimmed = sec.threatened(sec.Threat(aggregator="trimmed", trim=0.4))
    assert np.allclose(trimmed.aggregator(updates, (6, 3), context), sec.robust_aggregate(updates, 6, "trimmed", 0.4))
    median = sec.threatened(sec.Threat(aggregator="median"))
    assert np.allclose(median.aggregator(updates, (6, 3), context), sec.robust_aggregate(updates, 6, "median"))
    ids, config = np.arange(40), fl.FedConfig(clients_per_round=20)
    dropping = sec.threatened(sec.Threat(dropout=0.5, seed=3)).sampler
    assert np.array_equal(dropping(ids, config, 1).reporting, fc.with_dropout(fc.uniform, 0.5, 3)(ids, config, 1).reporting)
    assert not np.array_equal(dropping(ids, config, 1).reporting,
                              fc.with_dropout(fc.uniform, 0.5, 0)(ids, config, 1).reporting)


def reference_hit_rate(state, store, federation, item, k=10):
    """Loop over the users who did not rate ``item``: is it among the k best-scored items they did not rate?"""
    item_vec, item_bias = fl.item_table(state.params)
    rated = federation.train.groupby("user_idx")["item_idx"].apply(set).to_dict()
    hits = []
    for user in federation.client_ids:
        if item in rated.get(user, set()):
            continue
        scores = store.user_vec[user] @ item_vec.T + item_bias
        unrated = [i for i in range(federation.n_items) if i not in rated.get(user, set())]
        best = sorted(unrated, key=lambda i: -scores[i])[:k]
        hits.append(item in best)
    return float(np.mean(hits))


def test_hit_rate_counts_the_users_with_the_item_in_their_unrated_top_k(federation):
    state, store, _ = fl.train_federated(federation, fl.FedConfig(8, 1, 4, 0.1, 1.0, l2=0.02), 5, dim=4)
    rates = {item: sec.hit_rate(state, store, federation, item) for item in range(federation.n_items)}
    assert any(0 < rate < 1 for rate in rates.values())
    for item, rate in rates.items():
        assert rate == pytest.approx(reference_hit_rate(state, store, federation, item))
    assert sec.hit_rate(state, store, federation, 3, k=5) == pytest.approx(reference_hit_rate(state, store, federation, 3, 5))
