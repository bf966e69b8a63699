"""SHREC'17 retrieval metrics on small rankings worked out by hand (the arithmetic is in the comments).

Conventions checked: the list of a query is every object predicted in its class, ranked by that class's
probability (ties by index), the query included; R (the denominator of recall and AP) is the number
of objects of the query's true class in the set; DCG(x) = x_1 + sum_{k>=2} x_k / log2(k).
"""

from __future__ import annotations

import numpy as np
import pytest

from graphsphere.experiments.shapes.retrieval import (
    classification_scores, evaluate_retrieval, query_metrics, retrieval_lists, shrec17_scores)

L3 = np.log2(3)  # 1.58496...

# Case A: two classes, ties in the ranking.
PROBS_A = np.array([[.8, .2], [.8, .2], [.7, .3], [.4, .6], [.4, .6]])
LABELS_A = np.array([0, 1, 0, 1, 1])


def test_lists_with_ties():
    # predicted: 0, 0, 0, 1, 1; class 0 by p0: .8 (0), .8 (1), .7 (2): the tie 0/1 goes to the lower index
    lists = retrieval_lists(PROBS_A)
    assert [l.tolist() for l in lists] == [[0, 1, 2]] * 3 + [[3, 4]] * 2


def test_case_a_by_hand():
    r = evaluate_retrieval(retrieval_lists(PROBS_A), LABELS_A)
    q = r["per_query"]
    # q0 (class 0, R = 2), list [0, 1, 2], relevant [1, 0, 1]:
    #   P = 2/3, R = 2/2 = 1, F1 = 2 (2/3)(1) / (2/3 + 1) = 0.8, AP = (1/1 + 2/3) / 2 = 5/6,
    #   DCG = 1 + 0 + 1/log2(3), IDCG = 1 + 1/log2(2) = 2
    # q1 (class 1, R = 3), same list, relevant [0, 1, 0]:
    #   P = 1/3, R = 1/3, F1 = 1/3, AP = (1/2) / 3 = 1/6, DCG = 1/log2(2) = 1, IDCG = 1 + 1 + 1/log2(3)
    # q2 = q0. q3, q4 (class 1, R = 3), list [3, 4], relevant [1, 1]:
    #   P = 1, R = 2/3, F1 = 2 (2/3) / (5/3) = 0.8, AP = (1 + 1) / 3 = 2/3, NDCG = 2 / (2 + 1/log2(3))
    np.testing.assert_allclose(q["P@N"], [2 / 3, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(q["R@N"], [1, 1 / 3, 1, 2 / 3, 2 / 3])
    np.testing.assert_allclose(q["F1@N"], [.8, 1 / 3, .8, .8, .8])
    np.testing.assert_allclose(q["mAP"], [5 / 6, 1 / 6, 5 / 6, 2 / 3, 2 / 3])
    idcg3 = 2 + 1 / L3
    np.testing.assert_allclose(q["NDCG"], [(1 + 1 / L3) / 2, 1 / idcg3, (1 + 1 / L3) / 2, 2 / idcg3, 2 / idcg3])
    # micro: means over the 5 queries
    #   P = (2/3 + 1/3 + 2/3 + 1 + 1) / 5 = 11/15;  R = (1 + 1/3 + 1 + 2/3 + 2/3) / 5 = 11/15
    #   F1 = (0.8 + 1/3 + 0.8 + 0.8 + 0.8) / 5;      mAP = (5/6 + 1/6 + 5/6 + 2/3 + 2/3) / 5 = 19/30
    micro = r["micro"]
    assert micro["P@N"] == pytest.approx(11 / 15) and micro["R@N"] == pytest.approx(11 / 15)
    assert micro["F1@N"] == pytest.approx((3.2 + 1 / 3) / 5) and micro["mAP"] == pytest.approx(19 / 30)
    # macro: class 0 (q0, q2): P 2/3, R 1, F1 0.8, AP 5/6
    #        class 1 (q1, q3, q4): P (1/3 + 2) / 3 = 7/9, R (1/3 + 4/3) / 3 = 5/9,
    #                              F1 (1/3 + 1.6) / 3, AP (1/6 + 4/3) / 3 = 1/2
    #   -> P (2/3 + 7/9) / 2 = 13/18, R (1 + 5/9) / 2 = 7/9, mAP (5/6 + 1/2) / 2 = 2/3
    macro = r["macro"]
    assert macro["P@N"] == pytest.approx(13 / 18) and macro["R@N"] == pytest.approx(7 / 9)
    assert macro["F1@N"] == pytest.approx((0.8 + (1 / 3 + 1.6) / 3) / 2) and macro["mAP"] == pytest.approx(2 / 3)
    assert r["per_class"][1]["mAP"] == pytest.approx(0.5)


def test_tie_order_matters():
    # had the tie gone to object 1, q0's list would be [1, 0, 2], relevant [0, 1, 1], AP (1/2 + 2/3) / 2
    swapped = [np.array([1, 0, 2])] * 3 + [np.array([3, 4])] * 2
    assert evaluate_retrieval(swapped, LABELS_A)["per_query"]["mAP"][0] == pytest.approx(7 / 12)


# Case B: class 2 is never predicted, so no object is ever retrieved as class 2.
PROBS_B = np.array([[.9, .1, 0], [.7, .3, 0], [.6, .3, .1], [.2, .8, 0]])
LABELS_B = np.array([0, 0, 2, 1])


def test_class_never_predicted():
    # predicted 0, 0, 0, 1. class-0 list by p0: [0, 1, 2]; class 1: [3]
    r = evaluate_retrieval(retrieval_lists(PROBS_B), LABELS_B)
    q = r["per_query"]
    # q0, q1 (class 0, R = 2): relevant [1, 1, 0]: P 2/3, R 1, F1 0.8, AP (1 + 1)/2 = 1, NDCG (1 + 1)/2 = 1
    # q2 (class 2, R = 1): relevant [0, 0, 1]: P 1/3, R 1, F1 2 (1/3) / (4/3) = 0.5, AP (1/3) / 1,
    #    NDCG = (1/log2(3)) / 1
    # q3 (class 1, R = 1): [3]: all 1
    np.testing.assert_allclose(q["P@N"], [2 / 3, 2 / 3, 1 / 3, 1])
    np.testing.assert_allclose(q["F1@N"], [.8, .8, .5, 1])
    np.testing.assert_allclose(q["mAP"], [1, 1, 1 / 3, 1])
    np.testing.assert_allclose(q["NDCG"], [1, 1, 1 / L3, 1])
    # macro over the three true classes: mAP (1 + 1 + 1/3) / 3
    assert r["macro"]["mAP"] == pytest.approx(7 / 9)
    # classification: class 0 F1 2*2/(3+2) = 0.8, class 1 F1 1, class 2 F1 0 (never predicted);
    #   macro (0.8 + 1 + 0)/3 = 0.6, weighted by support (2, 1, 1): (1.6 + 1 + 0)/4 = 0.65
    s = shrec17_scores(PROBS_B, LABELS_B)
    assert s["accuracy"] == 0.75 and s["f1_macro"] == pytest.approx(0.6) and s["f1_weighted"] == pytest.approx(0.65)


def test_empty_list_without_the_query():
    lists = retrieval_lists(PROBS_B, include_query=False)
    assert [l.tolist() for l in lists] == [[1, 2], [0, 2], [0, 1], []]
    q = evaluate_retrieval(lists, LABELS_B)["per_query"]
    # q0 [1, 2], relevant [1, 0], R = 2 (the query counts in its class): P 1/2, R 1/2, F1 1/2, AP (1/1)/2
    # q2 [0, 1]: nothing relevant -> 0; q3: empty list -> 0 everywhere
    np.testing.assert_allclose(q["P@N"], [.5, .5, 0, 0])
    np.testing.assert_allclose(q["R@N"], [.5, .5, 0, 0])
    np.testing.assert_allclose(q["mAP"], [.5, .5, 0, 0])
    np.testing.assert_allclose(q["NDCG"], [1 / 2, 1 / 2, 0, 0])  # DCG 1, IDCG 1 + 1


def test_perfect_classifier_scores_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 40)
    probs = rng.uniform(0, 0.2, (40, 4))
    probs[np.arange(40), labels] += 0.5  # right class always on top, in varying order
    s = shrec17_scores(probs, labels)
    assert s["accuracy"] == 1 and s["f1_weighted"] == 1 and s["f1_macro"] == 1
    for avg in ("micro", "macro"):
        assert s[avg] == pytest.approx({"P@N": 1, "R@N": 1, "F1@N": 1, "mAP": 1, "NDCG": 1})


def test_distance_rankings_by_hand():
    desc = np.array([[0, 0], [3, 0], [1, 0], [0, 5], [0, 7]], dtype=float)
    lists = retrieval_lists(PROBS_A, ranking="distance", descriptors=desc, metric="euclidean")
    # same members as by probability, ordered by distance to the query:
    # q0 from (0,0): 0 (0), 2 (1), 1 (3); q1 from (3,0): 1, 2 (2), 0 (3); q2 from (1,0): 2, 0 (1), 1 (2)
    # q3 from (0,5): 3, 4; q4 from (0,7): 4, 3
    assert [l.tolist() for l in lists] == [[0, 2, 1], [1, 2, 0], [2, 0, 1], [3, 4], [4, 3]]
    q = evaluate_retrieval(lists, LABELS_A)["per_query"]
    # q0 relevant [1, 1, 0]: AP 1; q1 [1, 0, 0]: AP 1/3; q2 [1, 1, 0]: AP 1; q3, q4: AP 2/3
    np.testing.assert_allclose(q["mAP"], [1, 1 / 3, 1, 2 / 3, 2 / 3])
    everything = retrieval_lists(PROBS_A, ranking="all", descriptors=desc, metric="euclidean")
    # q0 from (0,0): 0, 2 (1), 1 (3), 3 (5), 4 (7): relevant [1, 1, 0, 0, 0]: P 2/5, R 1, AP 1
    assert everything[0].tolist() == [0, 2, 1, 3, 4]
    q = evaluate_retrieval(everything, LABELS_A)["per_query"]
    assert (q["P@N"][0], q["R@N"][0], q["mAP"][0]) == pytest.approx((0.4, 1, 1))


def test_whole_set_ranking_ap_matches_scikit_learn():
    """Ranking the whole set, every relevant object is retrieved, so AP is scikit-learn's average precision."""
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 30)
    desc = rng.standard_normal((30, 5)) + labels[:, None]
    lists = retrieval_lists(np.ones((30, 3)), ranking="all", descriptors=desc, metric="euclidean")
    ap = evaluate_retrieval(lists, labels)["per_query"]["mAP"]
    dist = np.linalg.norm(desc[:, None] - desc[None], axis=2)
    expected = [metrics.average_precision_score(labels == labels[q], -dist[q]) for q in range(30)]
    np.testing.assert_allclose(ap, expected, rtol=1e-12)


def test_cosine_distance():
    desc = np.array([[1, 0], [10, 1], [0, 1], [-1, 0.1]], dtype=float)
    lists = retrieval_lists(np.ones((4, 2)), ranking="all", descriptors=desc)
    # cosine distances from (1, 0): 0, 1 - 10/sqrt(101) = 0.005, 1, 1 + 1/sqrt(1.01) = 1.995
    assert lists[0].tolist() == [0, 1, 2, 3]


def test_cutoff_truncates_lists_and_relevant_count():
    # Case A, q1 with cutoff 2: list [0, 1], relevant [0, 1], R = min(3, 2) = 2: P 1/2, R 1/2, AP (1/2)/2
    lists = retrieval_lists(PROBS_A, cutoff=2)
    assert lists[1].tolist() == [0, 1]
    q = evaluate_retrieval(lists, LABELS_A, cutoff=2)["per_query"]
    assert (q["P@N"][1], q["R@N"][1], q["mAP"][1]) == pytest.approx((0.5, 0.5, 0.25))


def test_duplicates_are_dropped():
    # [0, 0, 1] counts as [0, 1]: relevant [1, 0], P 1/2 (not 2/3)
    r = evaluate_retrieval([np.array([0, 0, 1]), np.array([1])], np.array([0, 1]))
    assert r["per_query"]["P@N"][0] == 0.5


def test_query_metrics_directly():
    # [1, 0, 1] with R = 4: P 2/3, R 1/2, F1 2(1/3)/(7/6) = 4/7, AP (1 + 2/3)/4 = 5/12,
    # NDCG (1 + 1/log2(3)) / (1 + 1 + 1/log2(3) + 1/log2(4))
    m = query_metrics([True, False, True], 4)
    assert m == pytest.approx({"P@N": 2 / 3, "R@N": 0.5, "F1@N": 4 / 7, "mAP": 5 / 12,
                               "NDCG": (1 + 1 / L3) / (2.5 + 1 / L3)})
    with pytest.raises(ValueError, match="n_relevant"):
        query_metrics([True], 0)


def test_classification_scores_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 200)
    predicted = np.where(rng.uniform(size=200) < 0.6, labels, rng.integers(0, 6, 200))  # class 5: only predicted
    s = classification_scores(predicted, labels)
    assert s["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert s["f1_weighted"] == pytest.approx(metrics.f1_score(labels, predicted, average="weighted"))
    assert s["f1_macro"] == pytest.approx(metrics.f1_score(labels, predicted, average="macro"))


def test_bad_input():
    with pytest.raises(ValueError, match="ranking must be"):
        retrieval_lists(PROBS_A, ranking="nearest")
    with pytest.raises(ValueError, match=r"descriptors must be an \[n=5"):
        retrieval_lists(PROBS_A, ranking="distance", descriptors=np.ones((4, 2)))
    with pytest.raises(ValueError, match="one list per object"):
        evaluate_retrieval([np.array([0])], LABELS_A)
    with pytest.raises(ValueError, match="outside 0..1"):
        evaluate_retrieval([np.array([0, 5]), np.array([1])], np.array([0, 1]))
    with pytest.raises(ValueError, match="metric must be"):
        retrieval_lists(PROBS_A, ranking="all", metric="manhattan")
