"""SHREC'17 retrieval metrics and classification scores (NumPy only).

The SHREC'17 protocol as DeepSphere (Defferrard et al. 2020) and the spherical CNNs it compares with
ran it: every object of the evaluated set is a query; its *retrieved list* is every object predicted
in the same class as the query (the query itself included), ranked by that class's probability,
highest first (:func:`retrieval_lists`, ``ranking="probability"``). A retrieved object is *relevant*
when its true class is the query's true class. The list is cut at 1000 objects and duplicates are
dropped, as the official evaluator does.

Per query, with L the list (N = len(L)), rel_k = 1 when the k-th object is relevant, and R the
number of objects of the query's true class in the evaluated set (the "oracle" list, also cut at
1000), the official evaluator (its 2017 version, where mAP and NDCG are normalised by R) defines:

* P@N = (sum_k rel_k) / N,  R@N = (sum_k rel_k) / R,  F1@N = 2 P R / (P + R)  (0 when P + R = 0);
* AP = (sum over relevant ranks k of P@k) / R;
* NDCG = DCG(rel) / DCG(oracle), DCG(x) = x_1 + sum_{k >= 2} x_k / log2(k); the oracle is R ones.

An empty list (possible only with ``include_query=False``) scores 0 everywhere.
**Micro** averages are means over all queries; **macro** averages are means, over the classes that
have queries, of the per-class means over their queries (the official "macroALL"). The paper's F1
column is another thing: scikit-learn's support-weighted F1 of the classification
(:func:`classification_scores`).

Variants (``ranking=``): ``"distance"`` keeps the same list but orders it by the distance between
the network outputs (``descriptors``, default the probabilities) of the query and of each object,
nearest first, as Esteves et al.'s SHREC'17 scripts order theirs; ``"all"`` retrieves the whole set
ordered by that distance (a pure nearest-neighbour retrieval, no classification involved). Ties are
broken by object index, so results are deterministic.

Example
-------
>>> import numpy as np
>>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
>>> labels = np.array([0, 0, 1, 1])
>>> scores = shrec17_scores(probs, labels)
>>> round(scores["accuracy"], 4), round(scores["micro"]["P@N"], 4), round(scores["macro"]["mAP"], 4)
(0.75, 0.6667, 0.6042)
"""

from __future__ import annotations

import numpy as np

__all__ = ["CUTOFF", "retrieval_lists", "query_metrics", "evaluate_retrieval", "classification_scores",
           "shrec17_scores", "METRICS"]

#: The official evaluator only reads the first 1000 objects of a list (and of the oracle).
CUTOFF = 1000

#: The per-query metrics, named as in the official evaluator's summary.
METRICS = ("P@N", "R@N", "F1@N", "mAP", "NDCG")


def _pairwise_distances(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        unit = x / np.where(norms > 0, norms, 1.0)
        return np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    if metric == "euclidean":
        sq = np.sum(x ** 2, axis=1)
        return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def retrieval_lists(probabilities, *, ranking: str = "probability", descriptors=None, metric: str = "cosine",
                    include_query: bool = True, cutoff: int = CUTOFF) -> list[np.ndarray]:
    """The retrieved list (object indices, best first) of every query.

    Parameters
    ----------
    probabilities : array [n, classes]
        The network's class scores (probabilities or logits: only their order within a column and
        the argmax matter); the predicted class is the argmax.
    ranking : {"probability", "distance", "all"}
        See the module docstring.
    descriptors : array [n, d], optional
        What distances are measured between (default: ``probabilities``).
    metric : {"cosine", "euclidean"}
    include_query : bool
        Keep the query in its own list (as the SHREC'17 submissions did).
    cutoff : int
        Longest list kept.

    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    >>> [l.tolist() for l in retrieval_lists(probs)]      # 0, 1, 3 are predicted class 0; 2 class 1
    [[0, 3, 1], [0, 3, 1], [2], [0, 3, 1]]
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"probabilities must be an [n, classes] array, got shape {p.shape}")
    n = len(p)
    predicted = p.argmax(axis=1)
    index = np.arange(n)
    if ranking not in ("probability", "distance", "all"):
        raise ValueError(f"ranking must be 'probability', 'distance' or 'all', got {ranking!r}")
    if ranking != "probability":
        d = np.asarray(descriptors if descriptors is not None else p)
        if d.ndim != 2 or len(d) != n:
            raise ValueError(f"descriptors must be an [n={n}, d] array, got shape {d.shape}")
        distances = _pairwise_distances(d, metric)
    lists = []
    for q in range(n):
        if ranking == "all":
            members = index
            order = np.lexsort((members, distances[q, members]))
        else:
            members = index[predicted == predicted[q]]
            key = -p[members, predicted[q]] if ranking == "probability" else distances[q, members]
            order = np.lexsort((members, key))  # by key, ties by index
        ranked = members[order]
        if not include_query:
            ranked = ranked[ranked != q]
        lists.append(ranked[:cutoff])
    return lists


def query_metrics(relevant, n_relevant: int) -> dict[str, float]:
    """P@N, R@N, F1@N, AP (as "mAP") and NDCG of one retrieved list.

    Parameters
    ----------
    relevant : array of bool [N]
        Whether each retrieved object, in rank order, is relevant.
    n_relevant : int
        R, the number of relevant objects in the evaluated set.

    >>> m = query_metrics([True, False, True], n_relevant=4)
    >>> m["P@N"], m["R@N"], round(m["mAP"], 4)   # AP = (1/1 + 2/3) / 4
    (0.6666666666666666, 0.5, 0.4167)
    """
    rel = np.asarray(relevant, dtype=bool)
    if n_relevant < 1:
        raise ValueError("n_relevant must be >= 1: the query's own class has at least the query")
    if rel.size == 0:
        return dict.fromkeys(METRICS, 0.0)
    hits = np.cumsum(rel)
    precision = hits[-1] / rel.size
    recall = hits[-1] / n_relevant
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    ap = float(np.sum(hits[rel] / (np.flatnonzero(rel) + 1))) / n_relevant
    weights = 1.0 / np.log2(np.maximum(np.arange(1, max(rel.size, n_relevant) + 1), 2))  # ranks 1, 2: 1
    ndcg = float(np.sum(weights[:rel.size][rel])) / float(np.sum(weights[:n_relevant]))
    return {"P@N": float(precision), "R@N": float(recall), "F1@N": float(f1), "mAP": ap, "NDCG": ndcg}


def evaluate_retrieval(lists, labels, *, cutoff: int = CUTOFF) -> dict:
    """Score retrieved lists against the true classes.

    Returns a dict with ``"micro"`` and ``"macro"`` (metric -> value, as in :data:`METRICS`),
    ``"per_class"`` (true class -> metric -> mean over that class's queries) and ``"per_query"``
    (metric -> array over queries).

    >>> r = evaluate_retrieval([np.array([0, 1]), np.array([1, 0]), np.array([2])], np.array([5, 5, 7]))
    >>> r["micro"]["P@N"], r["macro"]["P@N"], sorted(r["per_class"])
    (1.0, 1.0, [5, 7])
    """
    labels = np.asarray(labels)
    n = len(labels)
    if len(lists) != n:
        raise ValueError(f"{len(lists)} lists for {n} labelled objects: give one list per object")
    classes, counts = np.unique(labels, return_counts=True)
    size = dict(zip(classes.tolist(), np.minimum(counts, cutoff).tolist()))
    per_query = {m: np.empty(n) for m in METRICS}
    for q, retrieved in enumerate(lists):
        retrieved = np.asarray(retrieved, dtype=np.int64)[:cutoff]
        if retrieved.size and (retrieved.min() < 0 or retrieved.max() >= n):
            raise ValueError(f"list {q} holds an index outside 0..{n - 1}")
        _, first = np.unique(retrieved, return_index=True)  # duplicates dropped, first occurrence kept
        retrieved = retrieved[np.sort(first)]
        scores = query_metrics(labels[retrieved] == labels[q], size[labels[q].item()])
        for m in METRICS:
            per_query[m][q] = scores[m]
    per_class = {c: {m: float(per_query[m][labels == c].mean()) for m in METRICS} for c in classes.tolist()}
    micro = {m: float(per_query[m].mean()) for m in METRICS}
    macro = {m: float(np.mean([per_class[c][m] for c in per_class])) for m in METRICS}
    return {"micro": micro, "macro": macro, "per_class": per_class, "per_query": per_query}


def classification_scores(predicted, labels) -> dict[str, float]:
    """Accuracy, macro F1 and support-weighted F1 (scikit-learn's ``f1_score(average="weighted")``,
    the paper's F1 column) of a classification; a class never predicted has F1 0.

    >>> s = classification_scores([0, 0, 1, 0], [0, 0, 1, 1])
    >>> s["accuracy"], round(s["f1_macro"], 4), round(s["f1_weighted"], 4)
    (0.75, 0.7333, 0.7333)
    """
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.ndim != 1:
        raise ValueError(f"predicted and labels must be 1-D of the same length, got {predicted.shape}, {labels.shape}")
    # as scikit-learn: every class seen in either; a class only predicted has support 0
    classes = np.union1d(labels, predicted)
    support = np.array([np.sum(labels == c) for c in classes])
    f1 = []
    for c in classes:
        tp = np.sum((predicted == c) & (labels == c))
        n_pred, n_true = np.sum(predicted == c), np.sum(labels == c)
        f1.append(2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0)  # = 2PR/(P+R)
    f1 = np.array(f1)
    return {"accuracy": float(np.mean(predicted == labels)), "f1_macro": float(f1.mean()),
            "f1_weighted": float(np.sum(f1 * support) / support.sum())}


def shrec17_scores(probabilities, labels, *, ranking: str = "probability", descriptors=None,
                   metric: str = "cosine", include_query: bool = True, cutoff: int = CUTOFF) -> dict:
    """Everything the paper's table needs, from the network's outputs on the evaluated set.

    Returns ``{"accuracy", "f1_macro", "f1_weighted", "micro": {...}, "macro": {...}, "per_class": {...}}``
    with the retrieval metrics of :func:`evaluate_retrieval` on the lists of :func:`retrieval_lists`.

    >>> probs = np.eye(3)[[0, 0, 1, 2, 2]]                  # a perfect classifier
    >>> s = shrec17_scores(probs, [0, 0, 1, 2, 2])
    >>> s["accuracy"], s["micro"], s["macro"]["mAP"]
    (1.0, {'P@N': 1.0, 'R@N': 1.0, 'F1@N': 1.0, 'mAP': 1.0, 'NDCG': 1.0}, 1.0)
    """
    p = np.asarray(probabilities)
    labels = np.asarray(labels)
    if len(labels) != len(p):
        raise ValueError(f"{len(p)} outputs for {len(labels)} labels")
    lists = retrieval_lists(p, ranking=ranking, descriptors=descriptors, metric=metric,
                            include_query=include_query, cutoff=cutoff)
    retrieval = evaluate_retrieval(lists, labels, cutoff=cutoff)
    out = classification_scores(p.argmax(axis=1), labels)
    out.update({k: retrieval[k] for k in ("micro", "macro", "per_class")})
    return out
