"""Retrieval and classification metrics on embedding matrices (pure numpy).

Every function takes L2-normalised float rows (as produced by any
:class:`~clip_ingest.connectors.embedder.Embedder`), so a dot product is a cosine
similarity. Rankings sort by similarity, highest first. Ties are broken by a fixed
pseudo-random order of the candidates (seed 0), never by their position: galleries are
often loaded sorted by class, and breaking ties by position would let a collapsed model
(every vector equal) score far above chance. The order is fixed, so every metric stays
deterministic. Inputs are validated: shapes, label counts and every index.

Numbers are fractions in ``[0, 1]`` (not percentages).
"""

from __future__ import annotations

from typing import Callable, Collection, Iterator, Sequence

import numpy as np

from clip_ingest.connectors.embedder import l2_normalise

DEFAULT_KNN_K = 21
DEFAULT_KNN_TEMPERATURE = 0.1
DEFAULT_RECALL_KS = (1, 5, 10)
QUERY_CHUNK = 1024
"""Queries ranked per block: bounds memory to ``QUERY_CHUNK x n`` similarities."""


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (n, dim) array, got shape {x.shape}")
    return x


def _as_labels(labels: Sequence, n: int, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name} must have one entry per row ({n}), got shape {labels.shape}")
    return labels


TIE_SEED = 0


def _ranking(similarities: np.ndarray) -> np.ndarray:
    """Column indices of each row sorted by similarity, highest first; ties in a fixed
    pseudo-random order of the columns (neutral to how the gallery was sorted)."""
    n = similarities.shape[1]
    tiebreak = np.random.default_rng(TIE_SEED).permutation(n)
    # lexsort sorts by the last key first: similarity descending, then the tie-break rank
    return np.lexsort((np.broadcast_to(tiebreak, similarities.shape), -similarities), axis=1)


def _check_indices(indices: np.ndarray, size: int, name: str) -> np.ndarray:
    """``indices`` as ints, each in ``[0, size)``; a ValueError names the first bad one."""
    indices = np.asarray(indices)
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        if not np.all(np.equal(np.mod(indices, 1), 0)):
            raise ValueError(f"{name} must be integer indices")
    indices = indices.astype(int)
    bad = np.flatnonzero((indices < 0) | (indices >= size))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {indices[bad[0]]} is out of range: there are {size} rows")
    return indices


def _all_vs_all_relevance(
    embeddings: np.ndarray, labels: Sequence, include_query: bool = False
) -> Iterator[np.ndarray]:
    """For blocks of queries: a boolean ``(q, n-1)`` matrix (``(q, n)`` with ``include_query``),
    True where the ranked item is relevant.

    Every image is a query against all *other* images (it is removed from its own ranking),
    or against all images including itself with ``include_query`` (the GPR1200 protocol,
    where the query counts as a relevant item); an item is relevant when it has the query's
    label.
    """
    emb = _as_matrix(embeddings, "embeddings")
    n = emb.shape[0]
    labels = _as_labels(labels, n)
    if n < 2:
        raise ValueError("all-vs-all retrieval needs at least 2 items")
    for start in range(0, n, QUERY_CHUNK):
        queries = np.arange(start, min(start + QUERY_CHUNK, n))
        order = _ranking(emb[queries] @ emb.T)
        if not include_query:
            order = order[order != queries[:, None]].reshape(len(queries), n - 1)
        yield labels[order] == labels[queries, None]


def average_precisions(embeddings: np.ndarray, labels: Sequence, *, include_query: bool = False) -> np.ndarray:
    """Per-query average precision of the all-vs-all rankings (see :func:`mean_average_precision`);
    queries with no other relevant item are left out. Paired statistics use these values."""
    ap_values = []
    for relevant in _all_vs_all_relevance(embeddings, labels, include_query):
        hits = relevant.sum(axis=1)
        ranks = np.arange(1, relevant.shape[1] + 1)
        precision = np.cumsum(relevant, axis=1) / ranks
        ap = (precision * relevant).sum(axis=1)
        ap_values.append(ap[hits > 0] / hits[hits > 0])
    values = np.concatenate(ap_values)
    if values.size == 0:
        raise ValueError("no query has a relevant item: every label is unique")
    return values


def mean_average_precision(embeddings: np.ndarray, labels: Sequence, *, include_query: bool = False) -> float:
    """Image->image mAP over all-vs-all rankings, the query excluded from its own ranking
    (``include_query=True``: kept in it, as GPR1200 and the MCIP paper's tables count it).

    Args:
        embeddings: ``(n, dim)`` L2-normalised rows.
        labels: ``n`` labels; items with equal labels are relevant to each other
            (object ids for instance retrieval, class names for category level).
        include_query: rank the query among the gallery and count it as relevant.

    Returns:
        The mean over queries of average precision (mean of the precision at the
        rank of each relevant item). Queries with no other relevant item are
        skipped; if no query has one, a :class:`ValueError` is raised.
    """
    return float(average_precisions(embeddings, labels, include_query=include_query).mean())


def top1_hits(embeddings: np.ndarray, labels: Sequence) -> np.ndarray:
    """Per query (with another relevant item): whether its nearest other item shares its label."""
    top_hits = []
    for relevant in _all_vs_all_relevance(embeddings, labels):
        has_relevant = relevant.any(axis=1)
        top_hits.append(relevant[has_relevant, 0])
    values = np.concatenate(top_hits)
    if values.size == 0:
        raise ValueError("no query has a relevant item: every label is unique")
    return values.astype(np.float64)


def recall_at_1(embeddings: np.ndarray, labels: Sequence) -> float:
    """Image->image R@1: the fraction of queries whose nearest *other* item shares their label.

    Args and ranking as :func:`mean_average_precision`; queries with no other
    relevant item are skipped the same way.
    """
    return float(top1_hits(embeddings, labels).mean())


def knn_correct(
    train_embeddings: np.ndarray,
    train_labels: Sequence,
    test_embeddings: np.ndarray,
    test_labels: Sequence,
    *,
    k: int = DEFAULT_KNN_K,
    temperature: float = DEFAULT_KNN_TEMPERATURE,
) -> np.ndarray:
    """Per test row: whether weighted k-NN classifies it right (DINO / Schall et al. protocol).

    Each test row votes with its ``k`` most similar training rows, each vote
    weighted ``exp(similarity / temperature)``; the class with the largest summed
    weight wins (ties: the class seen first in ``train_labels`` order).

    Returns:
        ``1.0`` for each test row whose predicted class equals its label, else ``0.0``.
    """
    if k < 1 or temperature <= 0:
        raise ValueError("k must be >= 1 and temperature > 0")
    train = _as_matrix(train_embeddings, "train_embeddings")
    test = _as_matrix(test_embeddings, "test_embeddings")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train and test rows differ in dimension ({train.shape[1]} vs {test.shape[1]})")
    train_labels = _as_labels(train_labels, train.shape[0], "train_labels")
    test_labels = _as_labels(test_labels, test.shape[0], "test_labels")
    classes, first_seen = np.unique(train_labels, return_index=True)
    classes = classes[np.argsort(first_seen)]
    class_of = {c: i for i, c in enumerate(classes.tolist())}
    train_class = np.array([class_of[c] for c in train_labels.tolist()])
    k = min(k, train.shape[0])
    correct = []
    for start in range(0, test.shape[0], QUERY_CHUNK):
        sims = test[start : start + QUERY_CHUNK] @ train.T
        top = _ranking(sims)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1).astype(np.float64)
        # shifting by the row maximum scales a row's weights alike: same vote, no overflow
        weights = np.exp((top_sims - top_sims[:, :1]) / temperature)
        votes = np.zeros((sims.shape[0], len(classes)))
        np.add.at(votes, (np.arange(sims.shape[0])[:, None], train_class[top]), weights)
        predicted = classes[votes.argmax(axis=1)]
        correct.append(predicted == test_labels[start : start + QUERY_CHUNK])
    return np.concatenate(correct).astype(np.float64)


def class_text_embeddings(
    embed_texts: Callable[[Sequence[str]], np.ndarray],
    classnames: Sequence[str],
    templates: Sequence[str],
) -> np.ndarray:
    """Zero-shot classifier weights: per class, the re-normalised mean of its prompt embeddings.

    Args:
        embed_texts: e.g. ``embedder.embed_texts``.
        classnames: human-readable class names.
        templates: prompts with a ``{}``, ``{classname}`` or ``{class}`` slot, e.g.
            ``"a photo of a {class}"``.

    Returns:
        ``(len(classnames), dim)`` L2-normalised rows.
    """
    if not templates:
        raise ValueError("at least one prompt template is needed")
    prompts = [t.format(name, **{"classname": name, "class": name}) for name in classnames for t in templates]
    emb = _as_matrix(embed_texts(prompts), "text embeddings")
    return l2_normalise(emb.reshape(len(classnames), len(templates), -1).mean(axis=1))


def zero_shot_accuracy(
    image_embeddings: np.ndarray, labels: Sequence[int], class_embeddings: np.ndarray
) -> float:
    """Zero-shot classification accuracy: the mean of :func:`zero_shot_correct`."""
    return float(zero_shot_correct(image_embeddings, labels, class_embeddings).mean())


def zero_shot_correct(
    image_embeddings: np.ndarray, labels: Sequence[int], class_embeddings: np.ndarray
) -> np.ndarray:
    """Per image: whether its most similar class row is its label (``1.0``/``0.0``).

    Args:
        image_embeddings: ``(n, dim)`` rows.
        labels: ``n`` class indices into ``class_embeddings``.
        class_embeddings: ``(c, dim)`` rows, e.g. from :func:`class_text_embeddings`.

    Returns:
        ``(n,)`` floats, 1 where the image is classified right.
    """
    images = _as_matrix(image_embeddings, "image_embeddings")
    classes = _as_matrix(class_embeddings, "class_embeddings")
    labels = _check_indices(_as_labels(labels, images.shape[0]), classes.shape[0], "labels")
    predicted = _ranking(images @ classes.T)[:, 0]
    return (predicted == labels).astype(np.float64)


def caption_match_accuracy(
    image_embeddings: np.ndarray, caption_embeddings: np.ndarray, positives: Sequence[Collection[int]]
) -> float:
    """Image->caption R@1 over a pool of distinct captions.

    With class-template captions ("a photo of a {label}") this is zero-shot accuracy; with a
    unique caption per image it is image->text R@1. Model selection uses it on validation
    splits whose captions are any mix of the two.

    Args:
        image_embeddings: ``(n, dim)`` rows.
        caption_embeddings: ``(c, dim)`` rows of the distinct captions.
        positives: for each image, the caption rows that belong to it (at least one).

    Returns:
        The fraction of images whose most similar caption is one of their own.
    """
    images = _as_matrix(image_embeddings, "image_embeddings")
    captions = _as_matrix(caption_embeddings, "caption_embeddings")
    if len(positives) != images.shape[0] or not all(positives):
        raise ValueError("positives needs a non-empty set of caption rows for every image")
    for row in positives:
        _check_indices(np.fromiter(row, dtype=int), captions.shape[0], "positives")
    hits = 0
    for start in range(0, images.shape[0], QUERY_CHUNK):
        best = _ranking(images[start : start + QUERY_CHUNK] @ captions.T)[:, 0]
        hits += sum(int(b) in positives[start + i] for i, b in enumerate(best))
    return hits / images.shape[0]


def _recall_dict(first_hit_rank: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    return {f"R@{k}": float((first_hit_rank < k).mean()) for k in ks}


def text_to_image_recall(
    text_embeddings: np.ndarray,
    image_embeddings: np.ndarray,
    caption_image: Sequence[int],
    ks: Sequence[int] = DEFAULT_RECALL_KS,
) -> dict[str, float]:
    """Text->image Recall@k: a caption scores when its own image is among its ``k`` best images.

    Args:
        text_embeddings: ``(t, dim)`` caption rows.
        image_embeddings: ``(n, dim)`` image rows.
        caption_image: for each caption, the row index of its image.
        ks: cut-offs.

    Returns:
        ``{"R@1": ..., "R@5": ..., ...}`` averaged over captions.
    """
    return _recall_dict(text_to_image_ranks(text_embeddings, image_embeddings, caption_image), ks)


def image_to_text_recall(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    caption_image: Sequence[int],
    ks: Sequence[int] = DEFAULT_RECALL_KS,
) -> dict[str, float]:
    """Image->text Recall@k: an image scores when any of its captions is among its ``k`` best texts.

    Arguments as :func:`text_to_image_recall`; averaged over images (every image
    must have at least one caption).
    """
    return _recall_dict(image_to_text_ranks(image_embeddings, text_embeddings, caption_image), ks)


def text_to_image_ranks(
    text_embeddings: np.ndarray, image_embeddings: np.ndarray, caption_image: Sequence[int]
) -> np.ndarray:
    """Per caption: the 0-based rank of its own image among all images (R@k counts ranks < k)."""
    texts = _as_matrix(text_embeddings, "text_embeddings")
    images = _as_matrix(image_embeddings, "image_embeddings")
    target = _check_indices(_as_labels(caption_image, texts.shape[0], "caption_image"), images.shape[0], "caption_image")
    ranks = []
    for start in range(0, texts.shape[0], QUERY_CHUNK):
        order = _ranking(texts[start : start + QUERY_CHUNK] @ images.T)
        ranks.append((order == target[start : start + QUERY_CHUNK, None]).argmax(axis=1))
    return np.concatenate(ranks)


def image_to_text_ranks(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, caption_image: Sequence[int]
) -> np.ndarray:
    """Per image: the 0-based rank of its best-ranked own caption among all captions."""
    images = _as_matrix(image_embeddings, "image_embeddings")
    texts = _as_matrix(text_embeddings, "text_embeddings")
    owner = _check_indices(_as_labels(caption_image, texts.shape[0], "caption_image"), images.shape[0], "caption_image")
    if set(owner.tolist()) != set(range(images.shape[0])):
        raise ValueError("every image needs at least one caption")
    ranks = []
    for start in range(0, images.shape[0], QUERY_CHUNK):
        queries = np.arange(start, min(start + QUERY_CHUNK, images.shape[0]))
        order = _ranking(images[queries] @ texts.T)
        ranks.append((owner[order] == queries[:, None]).argmax(axis=1))
    return np.concatenate(ranks)


def knn_correct_leave_one_out(
    embeddings: np.ndarray,
    labels: Sequence,
    *,
    k: int = DEFAULT_KNN_K,
    temperature: float = DEFAULT_KNN_TEMPERATURE,
) -> np.ndarray:
    """Per row: whether weighted k-NN over all *other* rows classifies it right.

    The k-NN of :func:`knn_correct` for a set with no separate memory (a user's held-out images):
    every image is classified by its ``k`` nearest other images, never by itself.
    """
    emb = _as_matrix(embeddings, "embeddings")
    labels = _as_labels(labels, emb.shape[0])
    if emb.shape[0] < 2:
        raise ValueError("leave-one-out k-NN needs at least 2 rows")
    correct = []
    for i in range(emb.shape[0]):
        others = np.arange(emb.shape[0]) != i
        correct.append(knn_correct(emb[others], labels[others], emb[i : i + 1], labels[i : i + 1],
                                   k=k, temperature=temperature))
    return np.concatenate(correct)


def text_query_hits(
    text_embeddings: np.ndarray, image_embeddings: np.ndarray, relevant: np.ndarray, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Per text query with at least one relevant image: its average precision over all images and
    whether a relevant image is among its ``k`` best (``relevant[q, i]``: image ``i`` matches
    query ``q``). For captions that several images share (a kind of thing), where the recall of
    one owner image (:func:`text_to_image_recall`) does not apply."""
    texts = _as_matrix(text_embeddings, "text_embeddings")
    images = _as_matrix(image_embeddings, "image_embeddings")
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.shape != (texts.shape[0], images.shape[0]):
        raise ValueError(f"relevant must be (queries, images) = {(texts.shape[0], images.shape[0])}, got {relevant.shape}")
    keep = relevant.any(axis=1)
    order = _ranking(texts[keep] @ images.T)
    ranked = np.take_along_axis(relevant[keep], order, axis=1)
    precision = np.cumsum(ranked, axis=1) / np.arange(1, ranked.shape[1] + 1)
    ap = (precision * ranked).sum(axis=1) / ranked.sum(axis=1)
    return ap.astype(np.float64), ranked[:, :k].any(axis=1).astype(np.float64)
