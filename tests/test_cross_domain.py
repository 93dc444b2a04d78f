"""Lesson 06: Douban/Last.fm loaders, cold-start protocol, mappings, source fallback."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from helpers import cross_domain as cd
from helpers import download
from helpers import mf
from helpers.data import DataFormatError, RatingsData, load_douban, load_lastfm
from helpers.download import Archive, DataUnavailableError


def serve(tmp_path, monkeypatch, key: str, filename: str, payload: bytes, known_hash: bool = True):
    path = tmp_path / filename
    path.write_bytes(payload)
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    digest = hashlib.sha256(payload).hexdigest() if known_hash else None
    monkeypatch.setitem(download.REGISTRY, key, Archive(filename, path.as_uri(), sha256=digest))


def test_douban_loader_reads_the_published_layout(tmp_path, monkeypatch):
    serve(tmp_path, monkeypatch, "douban-music", "douban_music_ratings.dat", b"2\t3601\t3\n2\t2171\t5\n7\t3601\t4")
    data = load_douban("music")
    assert data.n_users == 2 and data.n_items == 2 and data.ratings["rating"].tolist() == [3.0, 5.0, 4.0]
    assert data.items["title"].tolist() == ["music #2171", "music #3601"]


@pytest.mark.parametrize("payload, problem", [
    (b"1\t2\n3\t4\n", "3 tab-separated columns"),
    (b"1\t2\t3\t4\n", "3 tab-separated columns"),
    (b"1\t2\t6\n", "outside 1"),
    (b"1\t2\t0\n", "outside 1"),
    (b"1\t2\t3.5\n", "whole numbers"),
    (b"1\tabc\t3\n", "non-numeric"),
])
def test_douban_loader_rejects_malformed_files(tmp_path, monkeypatch, payload, problem):
    serve(tmp_path, monkeypatch, "douban-book", "douban_book_ratings.dat", payload)
    with pytest.raises(DataFormatError, match=problem):
        load_douban("book")


def test_douban_movie_is_trusted_on_first_use(tmp_path, monkeypatch, capsys):
    serve(tmp_path, monkeypatch, "douban-movie", "douban_movie_ratings.dat", b"1\t1\t5\n", known_hash=False)
    assert load_douban("movie").n_users == 1
    assert "recorded the sha256" in capsys.readouterr().out


def test_missing_movie_domain_falls_back_with_one_line(capsys):
    def loader(domain):
        if domain == "movie":
            raise DataUnavailableError("douban_movie_ratings.dat is not in the cache …")
        return f"{domain} data"

    assert cd.choose_source("movie", "book", loader=loader) == ("book", "book data")
    message = capsys.readouterr().out.strip()
    assert "\n" not in message and "movie" in message and "book" in message
    assert cd.choose_source("movie", "book", loader=lambda d: f"{d} data") == ("movie", "movie data")


def test_lastfm_scores(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("user_artists.dat", "userID\tartistID\tweight\n1\t10\t100\n1\t11\t10\n1\t12\t1\n2\t10\t5\n")
        archive.writestr("artists.dat", "id\tname\turl\tpictureURL\n10\tA\tu\tp\n11\tB\tu\tp\n")
    serve(tmp_path, monkeypatch, "lastfm-2k", "hetrec2011-lastfm-2k.zip", buffer.getvalue())
    data = load_lastfm()
    first = data.ratings[data.ratings["user_id"] == 1].set_index("item_id")["rating"]
    assert first.tolist() == [5.0, 3.0, 1.0]  # most played → 5, least → 1
    assert data.ratings.loc[data.ratings["user_id"] == 2, "rating"].tolist() == [3.0]
    assert data.items.set_index("item_id").loc[12, "title"] == "(unknown artist)"


def synthetic_domains(seed=0):
    """Two planted domains sharing users (synthetic, for unit tests only): a user's taste
    vector drives their ratings in both."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(0, 1, (60, 2))
    frames = {}
    for name, n_items in (("source", 40), ("target", 30)):
        items = rng.normal(0, 1, (n_items, 2))
        rows = [(u, i, float(np.clip(np.round(3 + taste[u] @ items[i]), 1, 5)))
                for u in range(60) for i in rng.choice(n_items, 12, replace=False)]
        ratings = pd.DataFrame(rows, columns=["user_id", "item_idx", "rating"])
        ratings["user_idx"] = ratings["user_id"]
        frames[name] = RatingsData(name, ratings, pd.DataFrame({"item_id": range(n_items)}))
    return cd.align(frames["source"], frames["target"])


def test_cold_start_split_never_leaks_and_is_seeded():
    domains = synthetic_domains()
    split = cd.cold_start_split(domains, 0.5, seed=3)
    assert len(split.cold) == 30
    assert not split.train["user"].isin(split.cold).any()
    assert set(split.test["user"]) == set(split.cold)
    assert len(split.train) + len(split.test) == len(domains.target)
    assert np.array_equal(split.cold, cd.cold_start_split(domains, 0.5, seed=3).cold)
    for beta in (0.0, 1.0, -0.2):
        with pytest.raises(ValueError, match="β"):
            cd.cold_start_split(domains, beta)


def test_the_validation_split_hides_some_warm_users_and_never_the_cold_ones():
    domains = synthetic_domains()
    split = cd.cold_start_split(domains, 0.5, seed=3)
    valid = cd.validation_split(split, 0.25, seed=3)
    assert len(valid.cold) == round(0.25 * len(split.warm)) and np.isin(valid.cold, split.warm).all()
    assert not np.isin(split.cold, valid.cold).any() and not valid.train["user"].isin(split.cold).any()
    assert not valid.train["user"].isin(valid.cold).any() and set(valid.test["user"]) == set(valid.cold)
    assert len(valid.train) + len(valid.test) == len(split.train)
    assert list(valid.train.columns) == list(valid.test.columns) == list(split.train.columns)
    assert list(valid.train.index) == list(range(len(valid.train)))
    assert np.array_equal(np.sort(np.concatenate([valid.cold, valid.warm])), split.warm)
    assert np.array_equal(valid.cold, cd.validation_split(split, 0.25, seed=3).cold)
    for share in (0.0, 1.0):
        with pytest.raises(ValueError, match=rf"share of warm users must lie in \(0, 1\), got {share}"):
            cd.validation_split(split, share)
    assert len(cd.validation_split(split, 0.001).cold) == 1                       # at least one held out
    assert len(cd.validation_split(split, 0.999).warm) == 1                       # at least one left warm
    two_warm = cd.ColdStartSplit(split.train, split.test, split.cold, split.warm[:2])
    assert len(cd.validation_split(two_warm, 0.5).cold) == 1
    one_warm = cd.ColdStartSplit(split.train, split.test, split.cold, split.warm[:1])
    with pytest.raises(ValueError, match="at least 2 warm users, got 1"):
        cd.validation_split(one_warm)


def test_methods_score_a_given_split_and_return_each_cold_user_s_errors():
    domains = synthetic_domains()
    valid = cd.validation_split(cd.cold_start_split(domains, 0.2, seed=0), 0.2, seed=0)
    rows = cd.evaluate_methods(domains, 0.2, seed=0, dim=2, epochs=5, methods=("bias", "tgt"), split=valid, units=True)
    for row in rows:
        sums = row["units"]
        assert row["cold_users"] == len(valid.cold) and row["test_ratings"] == len(valid.test) == sums[:, 1].sum()
        assert np.sqrt(sums[:, 0].sum() / sums[:, 1].sum()) == pytest.approx(row["RMSE"], rel=1e-6)
    assert "units" not in cd.evaluate_methods(domains, 0.5, seed=0, dim=2, epochs=5, methods=("bias",))[0]


def test_linear_map_starts_at_identity():
    x = np.random.default_rng(0).normal(size=(5, 9)).astype(np.float32)
    assert np.allclose(cd.linear_map(9)(x), x)


def test_methods_run_are_seeded_and_transfer_helps_on_planted_data():
    domains = synthetic_domains()
    first = pd.DataFrame(cd.evaluate_methods(domains, 0.5, seed=0, dim=2, epochs=30))
    again = pd.DataFrame(cd.evaluate_methods(domains, 0.5, seed=0, dim=2, epochs=30))
    pd.testing.assert_frame_equal(first, again)
    rmse = first.set_index("method")["RMSE"]
    assert rmse["map_linear"] < rmse["tgt"] and rmse["finetune"] < rmse["tgt"]
    assert rmse["cmf"] < rmse["tgt"] - 0.1    # one user vector for both domains carries the planted taste


def test_playground_widget_function(capsys):
    from helpers.plots import plot_bars
    from helpers.widgets import show_or_explain

    playground = cd.ColdStartPlayground(synthetic_domains(), epochs=5)
    render = lambda beta, mapping, dim: plot_bars(playground.run(beta, mapping, dim), "t", "RMSE")
    for beta, mapping, dim, message in [(0.0, "map_linear", 4, "β"), (1.0, "map_linear", 4, "β"),
                                        (0.5, "map_nope", 4, "mapping"), (0.5, "map_mlp", 0, "embedding size")]:
        assert show_or_explain(render, beta, mapping, dim) is None
        assert message in capsys.readouterr().out
    assert len(playground.run(0.5, "map_mlp", 4)) == 3
    matplotlib.pyplot.close("all")


def test_playground_caches_every_model_and_matches_a_fresh_evaluation():
    domains = synthetic_domains()
    playground = cd.ColdStartPlayground(domains, epochs=5)
    playground.warm([4], progress=False)
    linear = playground.run(0.5, "map_linear", 4)
    target = playground._target[(0.5, 4)]
    mlp = playground.run(0.5, "map_mlp", 4)                    # the same target MF, only a new mapping
    assert playground._target[(0.5, 4)] is target and len(playground._source) == 1
    assert playground.run(0.5, "map_linear", 4) == linear        # a revisit is a lookup
    fresh = {cd.METHODS[r["method"]]: r["RMSE"]
             for r in cd.evaluate_methods(domains, 0.5, 0, 4, 5, methods=("bias", "tgt", "map_mlp"))}
    assert mlp == pytest.approx(fresh)


def test_warming_every_beta_makes_a_new_beta_reuse_its_target_mf():
    domains = synthetic_domains()
    playground = cd.ColdStartPlayground(domains, epochs=3)
    with pytest.raises(ValueError, match="at_dim"):
        playground.warm([4], betas=[0.3], progress=False)
    playground.warm([4], betas=[0.3, 0.6], at_dim=4, progress=False)
    assert set(playground._target) == {(0.3, 4), (0.6, 4)} and set(playground._source) == {4}
    warmed = playground._target[(0.6, 4)]
    playground.run(0.6, "map_linear", 4)
    assert playground._target[(0.6, 4)] is warmed and len(playground._target) == 2   # nothing retrained


def test_interaction_user_errors_add_up_to_the_rmse():
    rng = np.random.default_rng(1)
    ratings = pd.DataFrame({"user_idx": rng.integers(0, 15, 300), "item_idx": rng.integers(0, 10, 300),
                            "rating": rng.integers(1, 6, 300).astype(np.float32)})
    model = cd.train_interaction(ratings.iloc[:250], 15, 10, dim=4, epochs=1)
    test = ratings.iloc[250:]
    sums = cd.interaction_user_errors(model, test)
    assert sums.shape == (test["user_idx"].nunique(), 2) and sums[:, 1].sum() == len(test)
    assert np.sqrt(sums[:, 0].sum() / sums[:, 1].sum()) == pytest.approx(cd.interaction_rmse(model, test), rel=1e-5)


def test_the_method_bars_start_at_zero():
    import matplotlib.pyplot as plt

    from helpers import plots

    results = pd.DataFrame([{"method": m, "beta": b, "seed": s, "RMSE": 0.85 + 0.01 * s}
                            for m in ("bias", "tgt") for b in (0.2, 0.8) for s in range(3)])
    fig = plots.plot_method_bars(results, "RMSE", {"bias": "bias", "tgt": "TGT"}, "t")
    assert fig.axes[0].get_ylim()[0] == 0 and "mean ± std over seeds" in fig.axes[0].get_ylabel()
    plt.close(fig)


def test_a_cold_users_two_lists_rank_by_the_models_they_name():
    """Lesson 06's side-by-side lists: the user's source ratings best first; 'without transfer' ranks
    by μ + b_i of the target MF (a cold user has no vector), 'with transfer' by the linear map's
    prediction; an album the user rated (hidden) carries its stars."""
    domains = synthetic_domains()
    split = cd.cold_start_split(domains, 0.5, seed=1)
    user = int(split.cold[0])
    history, table = cd.cold_user_lists(domains, 0.5, user, k=5, dim=4, epochs=3, seed=1, target_name="album")
    own = domains.source[domains.source["user"] == user]
    assert len(history) == len(own) and history["rating"].is_monotonic_decreasing
    source = cd.train_domain_mf(domains.source, domains.n_users, domains.n_source_items, 4, 3, 1)
    target = cd.train_domain_mf(split.train, domains.n_users, domains.n_target_items, 4, 3, 1)
    mapping = cd.fit_mapping(source, target, split.warm, "map_linear", 1)
    every = pd.DataFrame({"user": user, "item": np.arange(domains.n_target_items)})
    mapped = cd.predict_mapped(source, target, mapping, np.array([user]), every)
    hidden = split.test[split.test["user"] == user].set_index("item")["rating"]

    def names(order):
        return [f"album #{i}" + (f" (rated {hidden[i]:.0f}★)" if i in hidden.index else "") for i in order[:5]]

    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    assert list(table["without transfer (TGT)"]) == names(np.argsort(-target.item_bias.numpy(), kind="stable"))
    assert list(table["with transfer (linear map)"]) == names(np.argsort(-mapped, kind="stable"))
    everything = cd.cold_user_lists(domains, 0.5, user, k=domains.n_target_items, dim=4, epochs=3, seed=1)[1]
    marked = [name for name in everything["with transfer (linear map)"] if "★" in name]
    assert len(marked) == len(hidden) > 0                 # every hidden rating shows up, once, in a full list
    assert all(name.startswith("music #") for name in everything["without transfer (TGT)"])   # the lesson's default
    with pytest.raises(ValueError, match="not a cold-start user"):
        cd.cold_user_lists(domains, 0.5, int(split.warm[0]), k=5, dim=4, epochs=3, seed=1)


def test_each_method_scores_the_model_it_names_at_the_seed_it_is_given():
    """Every method's RMSE is that of its own predictions, at a non-default seed: the bias baseline
    μ + b_i of the training ratings; TGT and 'f_source + b_target' the target MF with no user vector
    and with the source's user bias; each mapping its fitted map of the cold users' source
    parameters; fine-tuning epochs // 4 epochs of the target MF from every overlapping user mapped."""
    from helpers.metrics import rmse

    domains, seed, dim, epochs = synthetic_domains(), 2, 2, 8
    rows = {r["method"]: r["RMSE"] for r in cd.evaluate_methods(domains, 0.5, seed=seed, dim=dim, epochs=epochs)}
    split = cd.cold_start_split(domains, 0.5, seed)
    test, targets = split.test, split.test["rating"].to_numpy()
    source = cd.train_domain_mf(domains.source, domains.n_users, domains.n_source_items, dim, epochs, seed)
    target = cd.train_domain_mf(split.train, domains.n_users, domains.n_target_items, dim, epochs, seed)
    no_vec, no_bias = np.zeros((domains.n_users, dim)), np.zeros(domains.n_users)
    q, b = target.item_vec.numpy(), target.item_bias.numpy()
    mu_b, b_items = cd.item_bias_baseline(split.train, domains.n_target_items)
    expected = {"bias": mu_b + b_items[test["item"].to_numpy()],
                "tgt": cd._predict(target.mu, no_vec, no_bias, q, b, test),
                "bias_transfer": cd._predict(target.mu, no_vec, source.user_bias.numpy(), q, b, test)}
    maps = {kind: cd.fit_mapping(source, target, split.warm, kind, seed) for kind in ("map_linear", "map_mlp")}
    for kind, mapping in maps.items():
        expected[kind] = cd.predict_mapped(source, target, mapping, split.cold, test)
    start = target.copy()
    mapped = maps["map_linear"](cd.user_parameters(source, domains.overlap)).numpy()
    start.user_vec.scatter_nd_update(domains.overlap[:, None], mapped[:, :dim])
    start.user_bias.scatter_nd_update(domains.overlap[:, None], mapped[:, dim])
    tuned = cd.train_domain_mf(split.train, domains.n_users, domains.n_target_items, dim, epochs // 4, seed,
                               init=start)
    expected["finetune"] = cd._predict(target.mu, tuned.user_vec.numpy(), tuned.user_bias.numpy(),
                                       tuned.item_vec.numpy(), tuned.item_bias.numpy(), test)
    for method, predictions in expected.items():
        assert rows[method] == pytest.approx(rmse(predictions, targets), rel=1e-6), method
    only_finetune = cd.evaluate_methods(domains, 0.5, seed=seed, dim=dim, epochs=epochs, methods=("finetune",))
    assert only_finetune[0]["RMSE"] == pytest.approx(rows["finetune"], rel=1e-6)


def test_a_prediction_is_mu_plus_both_biases_plus_the_dot_product_clipped_to_the_stars():
    test = pd.DataFrame({"user": [0, 1, 2], "item": [0, 1, 0]})
    user_vec, item_vec = np.array([[1.0], [2.0], [-1.0]]), np.array([[0.5], [-0.25]])
    predicted = cd._predict(3.0, user_vec, np.array([0.25, -0.5, 0.0]), item_vec, np.array([0.125, 0.75]), test)
    assert predicted.tolist() == [3.0 + 0.25 + 0.125 + 0.5, 3.0 - 0.5 + 0.75 - 0.5, 3.0 + 0.125 - 0.5]
    clipped = cd._predict(3.0, user_vec * 10, np.zeros(3), item_vec, np.zeros(2), test)
    assert clipped.tolist() == [5.0, 1.0, 1.0]


def test_the_interaction_model_is_mu_plus_biases_plus_g_of_the_elementwise_product():
    model = cd.InteractionModel(6, 4, mu=3.5, dim=3, l2=0.01)
    pairs = np.array([[0, 1], [5, 2], [3, 3]], np.int32)
    predicted = model(pairs).numpy()
    p, q = model.user_vec.embeddings.numpy(), model.item_vec.embeddings.numpy()
    b_u, b_i = model.user_bias.embeddings.numpy()[:, 0], model.item_bias.embeddings.numpy()[:, 0]
    assert not b_u.any() and not b_i.any()                                  # biases start at zero
    assert 0.05 < np.concatenate([p.ravel(), q.ravel()]).std() < 0.2           # vectors ~ N(0, 0.1²)
    model.user_bias.embeddings.assign(np.arange(6, dtype=np.float32)[:, None] / 10)
    model.item_bias.embeddings.assign(-np.arange(4, dtype=np.float32)[:, None] / 20)
    b_u, b_i = np.arange(6) / 10, -np.arange(4) / 20
    g = model.interaction(p[pairs[:, 0]] * q[pairs[:, 1]]).numpy()[:, 0]
    expected = 3.5 + b_u[pairs[:, 0]] + b_i[pairs[:, 1]] + g
    assert model(pairs).numpy() == pytest.approx(expected, abs=1e-6) and predicted.shape == (3,)
    hidden, output = model.interaction.layers
    assert hidden.units == 32 and hidden.activation.__name__ == "relu" and output.units == 1
    penalties = sorted(float(loss) for loss in model.losses)                 # L2 on all four tables
    tables = [model.user_vec, model.item_vec, model.user_bias, model.item_bias]
    assert penalties == pytest.approx(sorted(0.01 * float((t.embeddings.numpy() ** 2).sum()) for t in tables))


def test_a_transferred_interaction_function_is_copied_and_frozen_when_asked():
    rng = np.random.default_rng(2)
    ratings = pd.DataFrame({"user_idx": rng.integers(0, 12, 200), "item_idx": rng.integers(0, 8, 200),
                            "rating": rng.integers(1, 6, 200).astype(np.float32)})
    source = cd.train_interaction(ratings, 12, 8, dim=3, epochs=2, seed=0)
    given = [w.copy() for w in source.interaction.get_weights()]
    frozen = cd.train_interaction(ratings, 12, 8, dim=3, epochs=2, interaction=source.interaction,
                                  freeze_interaction=True, seed=1)
    tuned = cd.train_interaction(ratings, 12, 8, dim=3, epochs=2, interaction=source.interaction, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(source.interaction.get_weights(), given))   # never modified
    assert frozen.interaction is not source.interaction
    assert all(np.array_equal(a, b) for a, b in zip(frozen.interaction.get_weights(), given))
    assert not all(np.array_equal(a, b) for a, b in zip(tuned.interaction.get_weights(), given))
    assert len(tuned.interaction.get_weights()) == len(given)


def test_the_playground_trains_its_own_models_at_its_own_seed():
    domains = synthetic_domains()
    playground = cd.ColdStartPlayground(domains, seed=1, epochs=4)
    scores = playground.run(0.5, "map_linear", 1)                              # size 1 is allowed
    assert isinstance(playground.source(1), cd.mf.MFParams) and playground.source(1) is playground._source[1]
    assert isinstance(playground.target(0.5, 1), cd.mf.MFParams) and set(playground._target) == {(0.5, 1)}
    fresh = {cd.METHODS[r["method"]]: r["RMSE"]
             for r in cd.evaluate_methods(domains, 0.5, 1, 1, 4, methods=("bias", "tgt", "map_linear"))}
    assert scores == pytest.approx(fresh)


def test_the_lesson_s_training_settings_give_these_planted_data_numbers():
    """A regression pin: the learning rates, penalties, batch sizes and widths the lesson trains with
    (a change to any of them changes its numbers, and shows here before a lesson is re-run)."""
    domains = synthetic_domains()
    split = cd.cold_start_split(domains, 0.5, seed=0)
    rows = {r["method"]: r["RMSE"] for r in cd.evaluate_methods(domains, 0.5, seed=0, dim=2, epochs=6,
                                                                 methods=("tgt", "map_mlp"), split=split)}
    ratings = domains.target.rename(columns={"user": "user_idx", "item": "item_idx"})
    model = cd.train_interaction(ratings.iloc[:600], domains.n_users, domains.n_target_items, dim=4, epochs=3)
    pinned = {"tgt": rows["tgt"], "map_mlp": rows["map_mlp"],
              "interaction": cd.interaction_rmse(model, ratings.iloc[600:])}
    assert pinned == pytest.approx({"tgt": 0.956288, "map_mlp": 0.925252, "interaction": 0.943428}, rel=1e-4)


def test_a_domain_mf_starts_from_its_init_its_mean_or_mu_and_its_seed():
    domains = synthetic_domains()
    frame = domains.target
    mean = float(frame["rating"].mean())
    assert cd.train_domain_mf(frame, domains.n_users, domains.n_target_items, 4, 1, seed=0).mu == pytest.approx(mean)
    assert cd.train_domain_mf(frame, domains.n_users, domains.n_target_items, 4, 1, seed=0, mu=0.0).mu == 0.0
    seeded = cd.train_domain_mf(frame, domains.n_users, domains.n_target_items, 4, 2, seed=3)
    by_hand = mf.init_mf(domains.n_users, domains.n_target_items, 4, mean, seed=3)
    data = cd._as_mf_frame(frame)
    mf.train_mf(by_hand, data, data.iloc[:1], batch_size=256, epochs=2, learning_rate=1.0, l2=0.02, seed=3)
    assert mf.max_abs_difference(seeded, by_hand) == 0.0     # the seed reaches both the start and the batch order
    start = mf.init_mf(domains.n_users, domains.n_target_items, 4, mean, seed=5)
    first = start.item_vec.numpy().copy()
    tuned = cd.train_domain_mf(frame, domains.n_users, domains.n_target_items, 4, 1, seed=0, init=start)
    assert tuned is start and not np.array_equal(first, tuned.item_vec.numpy())   # trained from init, in place


def test_each_method_s_row_carries_its_setting_and_its_own_errors(monkeypatch):
    """Lesson 06's tables read beta, seed, MAE and RMSE of each row; the bias baseline is clipped to the
    star scale; CMF trains one MF on both domains' ratings, each centred on its own mean, with μ = 0;
    fine-tuning runs a quarter of the epochs from the mapped start."""
    domains = synthetic_domains()
    split = cd.cold_start_split(domains, 0.5, seed=1)
    calls = []
    real = cd.train_domain_mf

    def recording(frame, n_users, n_items, dim, epochs, seed, mu=None, init=None):
        calls.append({"frame": frame, "n_items": n_items, "epochs": epochs, "mu": mu, "init": init})
        return real(frame, n_users, n_items, dim, epochs, seed, mu=mu, init=init)

    monkeypatch.setattr(cd, "train_domain_mf", recording)
    rows = cd.evaluate_methods(domains, 0.5, seed=1, dim=4, epochs=8, methods=("bias", "cmf", "finetune"), split=split)
    targets = split.test["rating"].to_numpy()
    for row in rows:
        assert row["beta"] == 0.5 and row["seed"] == 1 and row["MAE"] <= row["RMSE"]
        assert 0 < row["MAE"] < 5
    joint = next(c for c in calls if c["n_items"] == domains.n_source_items + domains.n_target_items)
    off = domains.n_source_items
    source_part, target_part = joint["frame"][joint["frame"]["item"] < off], joint["frame"][joint["frame"]["item"] >= off]
    assert abs(source_part["rating"].mean()) < 1e-5 and joint["mu"] == 0.0 and len(joint["frame"].index.unique()) == len(joint["frame"])
    assert len(source_part) == len(domains.source) and len(target_part) == len(split.train)
    tuned = next(c for c in calls if c["init"] is not None)
    assert tuned["epochs"] == 2                               # max(1, 8 // 4)
    mu_b, b_items = cd.item_bias_baseline(split.train, domains.n_target_items)
    raw = mu_b + b_items[split.test["item"].to_numpy()]
    bias_row = next(r for r in rows if r["method"] == "bias")
    assert bias_row["MAE"] == pytest.approx(float(np.mean(np.abs(np.clip(raw, 1.0, 5.0) - targets))))


def test_the_bias_baseline_is_clipped_to_the_star_scale():
    domains = synthetic_domains()
    split = cd.cold_start_split(domains, 0.5, seed=1)
    train = split.train.copy()
    low_item, high_item = split.test["item"].iloc[0], split.test["item"].iloc[1]
    train.loc[train["item"] == low_item, "rating"] = -40.0     # an item far below the scale …
    train.loc[train["item"] == high_item, "rating"] = 40.0     # … and one far above it
    extreme = dataclasses.replace(split, train=train)
    row = cd.evaluate_methods(domains, 0.5, seed=1, dim=4, epochs=1, methods=("bias",), split=extreme)[0]
    mu_b, b_items = cd.item_bias_baseline(train, domains.n_target_items)
    clipped = np.clip(mu_b + b_items[split.test["item"].to_numpy()], 1.0, 5.0)
    assert row["RMSE"] == pytest.approx(float(np.sqrt(np.mean((clipped - split.test["rating"].to_numpy()) ** 2))))
    assert clipped.min() == 1.0 and clipped.max() == 5.0
