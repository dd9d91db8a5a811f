"""Tests for spacy_concept_align.arcs: tree decoding and the biaffine arc scorer.

Fast and self-contained: random score matrices and random "word vectors", no
encoder.
"""

import itertools

import numpy as np
import pytest
import torch

from spacy_concept_align.arcs import (
    BiaffineArcScorer,
    chuliu_edmonds,
    decode_batch,
    decode_tree,
    eisner,
    pad_batch,
)


def is_tree(heads) -> bool:
    """Heads (0 = root, 1-based) form a tree with exactly one root child."""
    heads = np.asarray(heads)
    n = len(heads)
    if n == 0:
        return True
    if heads.min() < 0 or heads.max() > n or np.count_nonzero(heads == 0) != 1:
        return False
    for start in range(1, n + 1):  # every word must reach the root, no cycle
        seen, node = set(), start
        while node != 0:
            if node in seen:
                return False
            seen.add(node)
            node = int(heads[node - 1])
    return True


def is_projective(heads) -> bool:
    """No two arcs cross (the root's arc spans the whole sentence)."""
    spans = [tuple(sorted((dep, head))) for dep, head in enumerate(heads, 1)]
    return not any(a < c < b < d for a, b in spans for c, d in spans)


def tree_score(scores, heads) -> float:
    return float(np.asarray(scores)[np.arange(len(heads)), heads].sum())


def all_single_root_trees(n):
    for heads in itertools.product(range(n + 1), repeat=n):
        if is_tree(heads):
            yield np.array(heads)


def random_tree(rng, n) -> np.ndarray:
    """Random single-root tree: random order, each word attaches to an earlier one."""
    order = rng.permutation(n) + 1
    heads = np.zeros(n, dtype=np.int64)
    for pos, word in enumerate(order):
        heads[word - 1] = 0 if pos == 0 else order[rng.integers(0, pos)]
    assert is_tree(heads)
    return heads


def projective_tree(rng, first, last, heads=None, head=0) -> np.ndarray:
    """Random projective tree over words first..last: a random head whose two sides are subtrees of it."""
    heads = np.zeros(last, dtype=np.int64) if heads is None else heads
    if first <= last:
        word = int(rng.integers(first, last + 1))
        heads[word - 1] = head
        projective_tree(rng, first, word - 1, heads, word)
        projective_tree(rng, word + 1, last, heads, word)
    return heads


def random_scores(rng, n, kind):
    if kind == "normal":
        return rng.normal(size=(n, n + 1))
    if kind == "logprob":
        return np.log(rng.dirichlet(np.ones(n + 1), size=n))
    if kind == "ties":  # few distinct values: lots of ties
        return rng.integers(0, 3, size=(n, n + 1)).astype(float)
    if kind == "rooty":  # ROOT preferred by everybody: many root children
        s = rng.normal(size=(n, n + 1))
        s[:, 0] += 3.0
        return s
    if kind == "neginf":
        s = rng.normal(size=(n, n + 1))
        s[rng.random(size=s.shape) < 0.3] = -np.inf
        return s
    raise ValueError(kind)


KINDS = ["normal", "logprob", "ties", "rooty", "neginf"]


# --------------------------------------------------------------------------
# Tree decoding
# --------------------------------------------------------------------------


def test_is_tree_helper():
    assert is_tree([0])
    assert is_tree([0, 1, 1, 3])
    assert not is_tree([0, 0])  # two roots
    assert not is_tree([2, 1])  # cycle, no root
    assert not is_tree([0, 3, 2])  # cycle off the root


@pytest.mark.parametrize("method", ["penalty", "try_children"])
def test_decode_tree_always_single_root_tree(method):
    rng = np.random.default_rng(1234)
    for case in range(400):
        n = int(rng.integers(1, 61))
        scores = random_scores(rng, n, KINDS[case % len(KINDS)])
        heads = decode_tree(scores, method=method)
        assert heads.shape == (n,) and heads.dtype.kind == "i"
        assert is_tree(heads), (n, heads)


@pytest.mark.parametrize("method", ["penalty", "try_children"])
def test_decode_tree_optimal_vs_brute_force(method):
    rng = np.random.default_rng(7)
    trees = {n: list(all_single_root_trees(n)) for n in range(1, 6)}
    # single-root trees on n words = rooted trees on n labelled nodes = n^(n-1)
    assert [len(trees[n]) for n in range(1, 6)] == [1, 2, 9, 64, 625]
    for case in range(600):
        n = int(rng.integers(1, 6))
        kind = KINDS[case % len(KINDS)]
        scores = random_scores(rng, n, kind)
        if kind == "neginf":  # brute force compares finite totals
            scores[np.isneginf(scores)] = -1e6
        heads = decode_tree(scores, method=method)
        best = max(tree_score(scores, t) for t in trees[n])
        assert is_tree(heads)
        assert tree_score(scores, heads) == pytest.approx(best, abs=1e-9), (scores, heads)


def test_eisner_is_the_best_projective_tree():
    rng = np.random.default_rng(11)
    trees = {n: [t for t in all_single_root_trees(n) if is_projective(t)] for n in range(1, 6)}
    assert len(trees[4]) < 64  # some trees cross: the check has something to exclude
    for case in range(600):
        n = int(rng.integers(1, 6))
        kind = KINDS[case % len(KINDS)]
        scores = random_scores(rng, n, kind)
        if kind == "neginf":
            scores[np.isneginf(scores)] = -1e6
        heads = decode_tree(scores, projective=True)
        assert is_tree(heads) and is_projective(heads), heads
        assert tree_score(scores, heads) == pytest.approx(max(tree_score(scores, t) for t in trees[n]), abs=1e-9)


def test_eisner_always_a_projective_tree_and_never_above_mst():
    rng = np.random.default_rng(5)
    for case in range(200):
        n = int(rng.integers(1, 80))
        scores = random_scores(rng, n, KINDS[case % len(KINDS)])
        heads = eisner(scores)
        assert heads.shape == (n,) and is_tree(heads) and is_projective(heads), (n, heads)
        if np.isfinite(scores).all():
            assert tree_score(scores, heads) <= tree_score(scores, decode_tree(scores)) + 1e-9
    gold = projective_tree(rng, 1, 30)
    assert is_tree(gold) and is_projective(gold)
    scores = np.full((30, 31), -5.0)
    scores[np.arange(30), gold] = 0.0
    assert np.array_equal(eisner(scores), gold)  # a projective tree the scores point at comes back as it is


def test_methods_agree_on_score():
    rng = np.random.default_rng(99)
    for case in range(150):
        n = int(rng.integers(2, 40))
        scores = random_scores(rng, n, KINDS[case % 4])  # finite kinds
        a = decode_tree(scores, method="penalty")
        b = decode_tree(scores, method="try_children")
        assert tree_score(scores, a) == pytest.approx(tree_score(scores, b), abs=1e-9)


def test_argmax_tree_returned_unchanged():
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        gold = random_tree(rng, n)
        scores = rng.normal(size=(n, n + 1))
        scores[np.arange(n), gold] += 10.0  # greedy argmax == gold
        assert np.array_equal(np.argmax(scores, axis=1), gold)
        assert np.array_equal(decode_tree(scores), gold)
    # also when scores are tied everywhere except the gold arcs
    gold = np.array([2, 0, 2, 3])
    scores = np.zeros((4, 5))
    scores[np.arange(4), gold] = 1.0
    assert np.array_equal(decode_tree(scores), gold)


def test_greedy_cycle_is_repaired():
    # words 2 and 3 prefer each other (2<->3 cycle); 1 is the clear root.
    scores = np.full((3, 4), -5.0)
    scores[0, 0] = 0.0  # 1 <- ROOT
    scores[1, 3] = 0.0  # 2 <- 3
    scores[2, 2] = 0.0  # 3 <- 2
    scores[1, 1] = -1.0  # 2 <- 1 is the cheaper way to break the cycle
    greedy = np.argmax(scores, axis=1)
    assert not is_tree(greedy)
    heads = decode_tree(scores)
    assert is_tree(heads)
    assert np.array_equal(heads, [0, 1, 2])


def test_two_roots_are_repaired():
    # greedy: 1 <- ROOT, 3 <- ROOT, 2 <- 1; the best single-root fix re-attaches 3.
    scores = np.full((3, 4), -5.0)
    scores[0, 0] = 0.0
    scores[2, 0] = -0.5
    scores[1, 1] = 0.0
    scores[2, 2] = -1.0  # 3 <- 2 costs 0.5 more than 3 <- ROOT
    greedy = np.argmax(scores, axis=1)
    assert np.count_nonzero(greedy == 0) == 2
    heads = decode_tree(scores)
    assert is_tree(heads)
    assert np.array_equal(heads, [0, 1, 2])
    # unconstrained CLE keeps both roots (the reason the constraint is needed)
    square = np.full((4, 4), -np.inf)
    square[1:] = scores
    assert np.count_nonzero(chuliu_edmonds(square)[1:] == 0) == 2


def test_small_and_degenerate_inputs():
    assert decode_tree(np.zeros((0, 1))).shape == (0,)
    assert np.array_equal(decode_tree(np.array([[-3.0, 5.0]])), [0])
    # n = 2, greedy is the 2-cycle 1 <-> 2: break it where ROOT is cheapest
    assert np.array_equal(decode_tree(np.array([[0.0, -9.0, 5.0], [1.0, 5.0, -9.0]])), [2, 0])
    # n = 2, both prefer ROOT: the one that loses least goes under the other
    assert np.array_equal(decode_tree(np.array([[0.0, -9.0, -2.0], [0.0, -1.0, -9.0]])), [0, 1])
    # all -inf, all tied, all NaN-free: still a tree
    for n in (1, 2, 5, 30):
        assert is_tree(decode_tree(np.full((n, n + 1), -np.inf)))
        assert is_tree(decode_tree(np.zeros((n, n + 1))))
    # -inf arcs are avoided whenever a finite tree exists
    scores = np.full((3, 4), -np.inf)
    scores[0, 0] = scores[1, 1] = scores[2, 2] = -100.0
    scores[1, 0] = 50.0  # a second root would be nicer but still only one root
    heads = decode_tree(scores)
    assert is_tree(heads) and np.isfinite(tree_score(scores, heads))
    with pytest.raises(ValueError):
        decode_tree(np.zeros((3, 3)))


def test_decode_tree_on_long_sentences():
    """Long sentences (speed is measured by `bench`, never asserted here): still one tree, the two methods reach the
    same total (at 100 words), which lies between the best of many random trees and the unconstrained (greedy) maximum; a planted
    tree that greedy already finds comes back unchanged."""
    rng = np.random.default_rng(0)
    for n in (100, 300):
        for kind in ("logprob", "ties", "rooty"):
            scores = random_scores(rng, n, kind)
            heads = decode_tree(scores)
            assert is_tree(heads)
            total = tree_score(scores, heads)
            if n <= 100:  # (try_children runs one decoding per root child: seconds at 300 words with many)
                assert total == pytest.approx(tree_score(scores, decode_tree(scores, method="try_children")), abs=1e-6)
            assert total <= scores.max(axis=1).sum() + 1e-9
            assert total >= max(tree_score(scores, random_tree(rng, n)) for _ in range(20))
        gold = random_tree(rng, n)
        scores = rng.normal(size=(n, n + 1))
        scores[np.arange(n), gold] += 10.0
        assert np.array_equal(decode_tree(scores), gold)


# --------------------------------------------------------------------------
# Biaffine scorer
# --------------------------------------------------------------------------


def make_toy_batch(rng, lengths, width):
    sents = [rng.normal(size=(n, width)).astype(np.float32) for n in lengths]
    roots = [rng.normal(size=width).astype(np.float32) for _ in lengths]
    golds = [random_tree(rng, n) for n in lengths]
    words, root_t, mask = pad_batch(sents, roots)
    gold = torch.full(mask.shape, -1, dtype=torch.long)
    for b, g in enumerate(golds):
        gold[b, : len(g)] = torch.from_numpy(g)
    return words, root_t, mask, gold, golds


def test_pad_batch_shapes():
    rng = np.random.default_rng(0)
    words, roots, mask = pad_batch(
        [rng.normal(size=(3, 8)), rng.normal(size=(5, 8))], [np.ones(8), np.zeros(8)]
    )
    assert words.shape == (2, 5, 8) and words.dtype == torch.float32
    assert roots.shape == (2, 8) and roots.dtype == torch.float32
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [3, 5]
    assert torch.all(words[0, 3:] == 0)


def test_scorer_masks_padding_and_self_loops():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    words, roots, mask, _, _ = make_toy_batch(rng, [2, 6, 4], width=16)
    model = BiaffineArcScorer(16, hidden=32)
    with torch.no_grad():  # non-zero biaffine weights so scores are not uniform
        model.U.normal_()
        model.u.normal_()
    model.eval()
    scores = model(words, roots, mask)
    assert scores.shape == (3, 6, 7)
    for b, n in enumerate(mask.sum(1).tolist()):
        assert torch.all(scores[b, :, n + 1:] <= -1e8)  # padded head columns
        assert torch.all(scores[b, torch.arange(6), torch.arange(6) + 1] <= -1e8)
        allowed = torch.ones(n, n + 1, dtype=torch.bool)
        allowed[torch.arange(n), torch.arange(n) + 1] = False
        assert torch.all(scores[b, :n, : n + 1][allowed] > -1e8)
    for b, heads in enumerate(decode_batch(scores, mask)):
        n = int(mask[b].sum())
        assert len(heads) == n and is_tree(heads) and heads.max() <= n


def test_loss_finite_with_padding_and_gradients_flow():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    words, roots, mask, gold, _ = make_toy_batch(rng, [1, 7, 3], width=12)
    model = BiaffineArcScorer(12, hidden=24)
    scores = model(words, roots, mask)
    loss = model.loss(scores, gold, mask)
    assert torch.isfinite(loss)
    # uniform at init: loss = mean log(#candidate heads) over real tokens
    expected = np.mean([np.log(n) for n in (1, 7, 3) for _ in range(n)])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads)
    assert model.U.grad.abs().sum() > 0 and model.u.grad.abs().sum() > 0
    # a second step through the MLPs is also finite and non-zero
    model.zero_grad()
    with torch.no_grad():
        model.U.normal_(std=0.1)
    model.loss(model(words, roots, mask), gold, mask).backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in model.parameters())
    assert model.dep_mlp[0].weight.grad.abs().sum() > 0


def test_scorer_overfits_toy_trees():
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    lengths = [3, 8, 5, 12, 1, 7]
    words, roots, mask, gold, golds = make_toy_batch(rng, lengths, width=32)
    model = BiaffineArcScorer(32, hidden=64, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss = model.loss(model(words, roots, mask), gold, mask)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    model.eval()
    with torch.no_grad():
        scores = model(words, roots, mask)
    decoded = decode_batch(scores, mask)
    assert len(decoded) == len(golds)
    for heads, g in zip(decoded, golds):
        assert np.array_equal(heads, g)
    # padded positions are never heads: every head index is within the sentence
    for heads, n in zip(decoded, lengths):
        assert heads.max() <= n


def test_decode_batch_ignores_padding_even_if_scored_high():
    n_max = 5
    scores = torch.zeros(2, n_max, n_max + 1)
    scores[:, :, 4:] = 100.0  # padded columns look attractive
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = decode_batch(scores, mask)
    assert len(out[0]) == 3 and out[0].max() <= 3 and is_tree(out[0])
    assert len(out[1]) == 5 and is_tree(out[1])


def test_distance_bias_is_the_same_both_ways_and_can_prefer_short_arcs():
    from spacy_concept_align.arcs import DISTANCE_BUCKETS, _distance_buckets

    buckets = _distance_buckets(70, "cpu")
    words = buckets[:, 1:]
    assert torch.equal(words, words.T)  # |i - j| alone: no direction
    assert (buckets[:, 0] == 0).all() and words[0, 1] == 1 and words[0, 3] == 3 and words[0, 4] == 4
    assert words[0, 7] == 4 and words[0, 8] == 5 and words[0, 69] == DISTANCE_BUCKETS - 1
    model = BiaffineArcScorer(8, hidden=8, dropout=0.0, distance_bias=True)
    assert model.distance is not None and not model.distance.detach().any()  # nothing changes at birth
    with torch.no_grad():
        model.distance[1] = 10.0
    scores = model(torch.randn(1, 6, 8), torch.randn(1, 8), torch.ones(1, 6, dtype=torch.bool))
    heads = scores[0].argmax(-1)  # column j = word j; word i sits in column i + 1
    assert all(abs(int(h) - (i + 1)) == 1 for i, h in enumerate(heads))
    assert BiaffineArcScorer(8, hidden=8).distance is None  # off by default: older weights keep their keys
