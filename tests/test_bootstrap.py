"""Bootstrap intervals and paired comparisons from per-sample ranks (mclip.eval.bootstrap)."""

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from mclip.eval.bootstrap import generator, interval, language_intervals, paired_comparison
from mclip.eval.ranking import tie_free_scores
from mclip.eval.samples import SampleRanks, metric_spec
from mclip.eval.zeroshot import metrics_from_ranks, true_class_ranks


def _view(ranks, labels=None, ids="same"):
    return SampleRanks(
        ids,
        np.minimum(np.asarray(ranks), 255).astype(np.uint8),
        None if labels is None else np.asarray(labels),
    )


def _random_view(seed, n=500, classes=12, p_hit=0.6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    ranks = np.where(rng.random(n) < p_hit, 0, rng.integers(1, 8, n))
    return _view(ranks, labels)


@pytest.mark.parametrize("seed", range(5))
def test_intervals_contain_the_point_estimate_and_repeat_for_a_seed(seed):
    view = _random_view(seed)
    metrics = {
        "acc@1": float((view.ranks < 1).mean()),
        "acc@5": float((view.ranks < 5).mean()),
        "mean_per_class_recall": metrics_from_ranks(
            torch.from_numpy(view.ranks.astype(np.int64)), torch.from_numpy(view.labels), 12
        )["mean_per_class_recall"],
        "n_images": 500,
    }
    ci = language_intervals(metrics, {"images": view}, 1000, seed=3, task="t", language="de")
    assert set(ci) == {"acc@1", "acc@5", "mean_per_class_recall"}
    for metric, (low, high) in ci.items():
        assert low <= metrics[metric] <= high and high - low > 0.01
    assert ci == language_intervals(metrics, {"images": view}, 1000, 3, "t", "de")
    assert ci != language_intervals(metrics, {"images": view}, 1000, 4, "t", "de")


def test_counting_bootstrap_matches_resampling_indices():
    """The binomial / multinomial shortcut has the distribution of drawing n indices."""
    view = _random_view(0, n=400, classes=10)
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 400, (4000, 400))
    hits = view.ranks == 0
    naive_acc = np.percentile(hits[idx].mean(1), [2.5, 97.5])

    def mpcr(i):
        labels, h = view.labels[i], hits[i]
        support = np.bincount(labels, minlength=10)
        return np.mean(np.bincount(labels[h], minlength=10)[support > 0] / support[support > 0])

    naive_mpcr = np.percentile([mpcr(i) for i in idx], [2.5, 97.5])
    assert interval(view, "acc@1", 4000, generator(0, "a")) == pytest.approx(naive_acc, abs=0.01)
    assert interval(view, "mean_per_class_recall", 4000, generator(0, "b")) == pytest.approx(
        naive_mpcr, abs=0.01
    )


def test_interval_width_shrinks_with_more_samples():
    small = _view(np.r_[np.zeros(18), np.ones(12)])
    large = _view(np.r_[np.zeros(600), np.ones(400)])
    low_s, high_s = interval(small, "acc@1", 1000, generator(0))
    low_l, high_l = interval(large, "acc@1", 1000, generator(0))
    assert high_s - low_s > 3 * (high_l - low_l)


def test_paired_comparison_flags_a_real_difference_and_not_noise():
    rng = np.random.default_rng(0)
    n = 2000
    labels = rng.integers(0, 20, n)
    a = np.where(rng.random(n) < 0.7, 0, 3)
    worse = a.copy()
    worse[(a == 0) & (rng.random(n) < 0.15)] = 3  # B loses 15% of A's hits
    for metric in ("acc@1", "mean_per_class_recall"):
        result = paired_comparison(
            _view(a, labels), _view(worse, labels), metric, 1000, generator(0, metric)
        )
        assert result["significant"] and result["difference"] > 0.08
        assert result["interval"][0] > 0 and result["p_value"] < 0.01
    flagged = 0
    for trial in range(20):  # same model, 1% of samples re-drawn
        noisy = a.copy()
        swap = rng.random(n) < 0.01
        noisy[swap] = np.where(rng.random(swap.sum()) < 0.7, 0, 3)
        flagged += paired_comparison(
            _view(a, labels), _view(noisy, labels), "acc@1", 1000, generator(trial)
        )["significant"]
    assert flagged <= 2
    same = paired_comparison(_view(a, labels), _view(a, labels), "acc@1", 500, generator(0))
    assert same == {"difference": 0.0, "interval": [0.0, 0.0], "p_value": 1.0, "significant": False}


def test_paired_comparison_is_stronger_than_unpaired_intervals():
    """Two models that differ on few samples: their own intervals overlap, the paired test
    still sees the difference (that is what pairing is for)."""
    rng = np.random.default_rng(2)
    a = np.where(rng.random(1500) < 0.6, 0, 2)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:45]] = 2  # 3 points worse, on 45 samples only
    ci_a = interval(_view(a), "acc@1", 1000, generator(0))
    ci_b = interval(_view(b), "acc@1", 1000, generator(0))
    assert ci_b[1] > ci_a[0]  # the unpaired intervals overlap
    assert paired_comparison(_view(a), _view(b), "acc@1", 1000, generator(0))["significant"]


def test_paired_comparison_refuses_different_samples():
    with pytest.raises(ValueError, match="different samples"):
        paired_comparison(_view([0, 1], ids="x"), _view([0, 1], ids="y"), "acc@1", 10, generator(0))


def test_samples_round_trip_through_json_and_cap_ranks():
    view = SampleRanks.build(["a", "b", "c"], torch.tensor([0, 7, 4000]), [2, 70000, 1])
    back = SampleRanks.from_json(view.to_json())
    assert back.ids == view.ids and back.ranks.tolist() == [0, 7, 255]
    assert back.labels.tolist() == [2, 70000, 1]
    assert SampleRanks.build(["a", "c", "b"], [0, 0, 0]).ids != view.ids
    assert metric_spec("acc@5") == ("images", 5) and metric_spec("text_to_image_R@10") == (
        "texts",
        10,
    )
    assert metric_spec("n_images") is None and metric_spec("mean_per_class_recall") == (
        "images",
        None,
    )


@pytest.mark.parametrize("seed", range(4))
def test_true_class_ranks_agree_with_torchmetrics_top_k_on_ties(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, 4, (300, 9), generator=g).float()  # many exact ties
    labels = torch.randint(0, 9, (300,), generator=g)
    ranks = true_class_ranks(logits, labels, chunk=37)
    metrics = metrics_from_ranks(ranks, labels, 9, (1, 3, 5))
    scores = tie_free_scores(logits)  # ties to the lower index
    for k in (1, 3, 5):
        expected = MulticlassAccuracy(num_classes=9, top_k=k, average="micro")(scores, labels)
        assert metrics[f"acc@{k}"] == pytest.approx(expected.item())
    expected_rank = (scores > scores.gather(1, labels[:, None])).sum(1)
    assert torch.equal(ranks, expected_rank)


def test_mean_per_class_recall_without_labels_names_what_is_missing():
    view = SampleRanks.build([f"s{i}" for i in range(8)], [0, 1, 0, 2, 0, 0, 3, 0])
    with pytest.raises(ValueError, match="class labels"):
        interval(view, "mean_per_class_recall", 50, generator(0))
