"""Heads for raw text: a biaffine arc scorer over frozen encoder word vectors,
and decoding of its scores into well-formed dependency trees.

This module deliberately knows nothing about UD relation labels, corpora or
spaCy: it maps word vectors (plus one sentence vector standing in for the
artificial ROOT) to head scores, and head scores to trees. Everything else
(word pooling, labels, Doc writing) lives elsewhere.

Conventions (shared by every function here, and identical to CoNLL-U HEAD):

* a sentence has ``n`` words; score matrices have shape ``(n, n + 1)``;
* row ``i`` (0-based) is the dependent word ``i + 1``;
* column ``0`` is the ROOT, column ``j >= 1`` is word ``j`` (1-based);
* decoded heads are an int array of length ``n`` with ``0`` = ROOT and
  ``k`` = word ``k``.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "BiaffineArcScorer",
    "pad_batch",
    "decode_tree",
    "decode_batch",
    "chuliu_edmonds",
    "eisner",
]

# Large negative *finite* score for impossible arcs (padding, self-loops).
# -inf would make softmax/cross-entropy produce NaN gradients for rows whose
# entries are all masked (padded dependents), a finite value keeps them at 0.
NEG_SCORE = -1e9


def _neg_value(dtype: torch.dtype) -> float:
    """NEG_SCORE, clipped to what ``dtype`` can represent (fp16/bf16)."""
    return max(NEG_SCORE, torch.finfo(dtype).min / 2)


# --------------------------------------------------------------------------
# Scorer
# --------------------------------------------------------------------------


@lru_cache(maxsize=200_000)
def char_ngram_ids(form: str, buckets: int, longest: int = 4) -> Tuple[int, ...]:
    """Hashed ids of a word's character n-grams (1 to `longest` characters of the lower-cased word marked at both
    ends, and the whole marked word), as fastText builds them; crc32, so ids are the same in every process."""
    marked = f"<{form.lower()}>"
    grams = {marked} | {marked[i : i + n] for n in range(1, longest + 1) for i in range(len(marked) - n + 1)}
    return tuple(sorted(zlib.crc32(gram.encode("utf-8")) % buckets for gram in grams))


class CharNgrams(nn.Module):
    """Each word as the mean of its hashed character n-gram embeddings: word identity and affixes, which the frozen
    vectors of a language the encoder barely knows lack (a language's own context layer reads them)."""

    def __init__(self, dim: int, buckets: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(buckets, dim, mode="mean")
        nn.init.normal_(self.embed.weight, std=0.1)

    def forward(self, forms: Optional[Sequence[Sequence[str]]], n: int) -> Tensor:
        """[B, n, dim] for B sentences of forms, padded to n words (zeros at padding)."""
        buckets = self.embed.num_embeddings
        if forms is None:
            raise ValueError("this arc scorer reads the words' characters: pass their forms")
        ids, starts = [], []
        for sentence in forms:
            for i in range(n):
                starts.append(len(ids))
                if i < len(sentence):
                    ids.extend(char_ngram_ids(sentence[i], buckets))
        device = self.embed.weight.device
        out = self.embed(torch.tensor(ids, dtype=torch.long, device=device),
                         torch.tensor(starts, dtype=torch.long, device=device))
        return out.view(len(forms), n, -1)


class WordContext(nn.Module):
    """A BiLSTM over a sentence's word vectors, added to them through a zero-initialised projection: a scorer
    given context starts exactly where it was, and learns what the frozen vectors lack for heads (measured on
    Wolof's training split, test UAS: 70.1 with context against 61.9 without, same epochs).

    With `chars`, the BiLSTM also reads each word's character n-grams (CharNgrams of that size; dev splits of
    wo, ug, cy, mt, te, vi: UAS +1.0, LAS +0.9), so it needs the words' forms.
    """

    def __init__(self, width: int, hidden: int = 128, reduce: int = 0, chars: int = 0, layers: int = 1,
                 char_buckets: int = 4096):
        super().__init__()
        self.reduce = nn.Linear(width, reduce) if reduce else nn.Identity()  # a narrower LSTM input: fewer weights
        self.chars = CharNgrams(chars, char_buckets) if chars else None
        self.lstm = nn.LSTM((reduce or width) + chars, hidden, num_layers=layers, batch_first=True,
                            bidirectional=True, dropout=0.2 if layers > 1 else 0.0)
        self.char_dropout = nn.Dropout(0.2)
        self.project = nn.Linear(2 * hidden, width)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    @property
    def sizes(self) -> list:
        """What `__init__` needs besides the width, to rebuild the layer before loading its weights."""
        chars = (self.chars.embed.embedding_dim, self.chars.embed.num_embeddings) if self.chars is not None else (0, 0)
        return [self.lstm.hidden_size, self.reduce.out_features if isinstance(self.reduce, nn.Linear) else 0,
                chars[0], self.lstm.num_layers, chars[1]]

    def forward(self, words: Tensor, mask: Tensor, forms: Optional[Sequence[Sequence[str]]] = None) -> Tensor:
        inputs = self.reduce(words)
        if self.chars is not None:
            inputs = torch.cat([inputs, self.char_dropout(self.chars(forms, words.shape[1]))], -1)
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=words.shape[1])
        return words + self.project(out)


def _role_mlp(width: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width, hidden), nn.LeakyReLU(0.1), nn.Dropout(dropout)
    )


class BiaffineArcScorer(nn.Module):
    """Dozat & Manning (2017) biaffine arc scorer over frozen word vectors.

    Two small MLPs project each word into a "dependent" and a "head" role
    (separate roles are what lets one vector space express the asymmetric
    head relation). The score of dependent ``i`` taking head ``j`` is::

        s[b, i, j] = dep_i^T U head_j + head_j^T u

    where the second (head-prior) term models how likely a word is to be a
    head at all. The ROOT candidate is the sentence vector (e.g. the [CLS]
    state) passed through the same head MLP, so no ROOT embedding has to be
    learnt and the root choice is conditioned on the actual sentence.

    ``U`` and ``u`` start at zero, so the untrained scorer is uniform over
    heads (as in Dozat's parser); the MLPs still receive gradient through them
    after the first step.
    """

    def __init__(self, width: int, hidden: int = 256, dropout: float = 0.33, distance_bias: bool = False):
        super().__init__()
        self.width = int(width)
        self.hidden = int(hidden)
        #: A learned score per |dependent - head| bucket (1, 2, 3, 4-7, 8-15, ...), the same in both directions: short
        #: dependencies are likelier in every language, whatever its word order (zero at birth).
        self.distance = nn.Parameter(torch.zeros(DISTANCE_BUCKETS)) if distance_bias else None
        self.dep_mlp = _role_mlp(self.width, self.hidden, dropout)
        self.head_mlp = _role_mlp(self.width, self.hidden, dropout)
        self.U = nn.Parameter(torch.zeros(self.hidden, self.hidden))
        self.u = nn.Parameter(torch.zeros(self.hidden))
        self.context: Optional[WordContext] = None
        #: Heads from the tags alone (tag_parser.TagParser), whose log-probabilities the decoder adds to these
        #: scores; kept here so that a language's own arc scorer carries its own fine-tuned copy.
        self.tags: Optional[nn.Module] = None

    def add_context(self, hidden: int = 128, reduce: int = 0, chars: int = 0, layers: int = 1,
                    char_buckets: int = 4096) -> None:
        """Read the words through a (new, identity-at-birth) BiLSTM context layer from now on (arguments: WordContext's)."""
        self.context = WordContext(self.width, hidden, reduce, chars, layers, char_buckets).to(self.U.device)

    @property
    def reads_forms(self) -> bool:
        return self.context is not None and self.context.chars is not None

    def forward(self, words: Tensor, roots: Tensor, mask: Tensor,
                forms: Optional[Sequence[Sequence[str]]] = None) -> Tensor:
        """Score every (dependent, head) pair.

        Args:
            words: ``[B, n, width]`` word vectors, zero (or anything) at padding.
            roots: ``[B, width]`` sentence vectors used as the ROOT candidate.
            mask: ``[B, n]`` bool, True for real words.
            forms: the B sentences' word forms (needed only when the context layer reads characters).

        Returns:
            ``[B, n, n + 1]`` scores; column 0 = ROOT, column ``j`` = word ``j``.
            Padded head columns and self-loops hold a large negative finite
            value so they are never chosen and gradients stay finite.
        """
        if words.dim() != 3:
            raise ValueError(f"words must be [B, n, width], got {tuple(words.shape)}")
        mask = mask.to(dtype=torch.bool, device=words.device)
        if self.context is not None:
            words = self.context(words, mask, forms)
        return self.score(words, roots, mask)

    def score(self, words: Tensor, roots: Tensor, mask: Tensor) -> Tensor:
        """`forward` on words already in context (the context layer's output, if the scorer has one)."""
        B, n, _ = words.shape
        mask = mask.to(dtype=torch.bool, device=words.device)
        candidates = torch.cat([roots.unsqueeze(1), words], dim=1)  # [B, n+1, w]
        dep = self.dep_mlp(words)  # [B, n, h]
        head = self.head_mlp(candidates)  # [B, n+1, h]
        bilinear = torch.einsum("bih,hk,bjk->bij", dep, self.U, head)
        prior = torch.einsum("bjk,k->bj", head, self.u).unsqueeze(1)
        scores = bilinear + prior  # [B, n, n+1]
        if self.distance is not None:
            scores = scores + self.distance[_distance_buckets(n, words.device)]

        neg = _neg_value(scores.dtype)
        head_ok = torch.cat([mask.new_ones(B, 1), mask], dim=1)  # ROOT always ok
        invalid = ~head_ok.unsqueeze(1)  # [B, 1, n+1]
        self_loop = torch.zeros(n, n + 1, dtype=torch.bool, device=words.device)
        idx = torch.arange(n, device=words.device)
        self_loop[idx, idx + 1] = True
        invalid = invalid | self_loop.unsqueeze(0)
        return scores.masked_fill(invalid, neg)

    def loss(self, scores: Tensor, gold_heads: Tensor, mask: Tensor) -> Tensor:
        """Mean head-selection cross-entropy over real (unmasked) words.

        ``gold_heads`` uses CoNLL-U numbering (0 = ROOT, ``k`` = word ``k``),
        which is exactly the column index of ``scores``; values at padded
        positions are ignored (any value, e.g. -1, is fine there).
        """
        mask = mask.to(dtype=torch.bool, device=scores.device)
        if not bool(mask.any()):
            return scores.sum() * 0.0
        rows = scores[mask]  # [T, n+1]
        gold = gold_heads.to(scores.device)[mask].long()
        if bool((gold < 0).any()) or bool((gold >= scores.shape[-1]).any()):
            raise ValueError("gold head index out of range for a real token")
        return F.cross_entropy(rows.float(), gold)


#: Buckets of the distance bias: 1, 2, 3, then powers of two (4-7, 8-15, 16-31, 32-63, 64+); the root has its own.
DISTANCE_BUCKETS = 9


def _distance_buckets(n: int, device) -> Tensor:
    """[n, n + 1] bucket of every (dependent i, head column j): 0 for the root column, else by |i + 1 - j|."""
    position = torch.arange(1, n + 1, device=device)
    distance = (position.unsqueeze(1) - torch.arange(n + 1, device=device).unsqueeze(0)).abs().clamp(min=1)
    buckets = torch.where(distance <= 3, distance, 2 + torch.log2(distance.float()).long())
    buckets = buckets.clamp(max=DISTANCE_BUCKETS - 1)
    buckets[:, 0] = 0
    return buckets


def pad_batch(
    sentences: Sequence[np.ndarray], roots: Sequence[np.ndarray]
) -> Tuple[Tensor, Tensor, Tensor]:
    """Stack ragged per-sentence word matrices into padded float32 tensors.

    Returns ``(words [B, n_max, width], roots [B, width], mask [B, n_max])``;
    padding is zeros, the mask is left-aligned (True for the first ``n_i``).
    """
    if len(sentences) != len(roots):
        raise ValueError(f"{len(sentences)} sentences but {len(roots)} root vectors")
    if not sentences:
        raise ValueError("pad_batch needs at least one sentence")
    mats = [np.asarray(s, dtype=np.float32) for s in sentences]
    width = np.asarray(roots[0]).shape[-1]
    for m in mats:
        if m.ndim != 2 or (m.shape[0] and m.shape[1] != width):
            raise ValueError(f"sentence matrix of shape {m.shape}, expected (n, {width})")
    n_max = max(m.shape[0] for m in mats)
    words = np.zeros((len(mats), n_max, width), dtype=np.float32)
    mask = np.zeros((len(mats), n_max), dtype=bool)
    for b, m in enumerate(mats):
        words[b, : m.shape[0]] = m
        mask[b, : m.shape[0]] = True
    root_arr = np.stack([np.asarray(r, dtype=np.float32).reshape(width) for r in roots])
    return torch.from_numpy(words), torch.from_numpy(root_arr), torch.from_numpy(mask)


# --------------------------------------------------------------------------
# Tree decoding
# --------------------------------------------------------------------------
#
# Internally the decoder works on a square matrix S of shape (n+1, n+1) with
# S[dep, head], node 0 = ROOT (row 0 is unused: ROOT has no head). This is the
# layout of Dozat's / Stanza's ``chuliu_edmonds``.


def _find_cycle(tree: np.ndarray) -> Optional[np.ndarray]:
    """Return the nodes of one cycle in the head array ``tree`` (or None).

    ``tree[d]`` is the head of node ``d``; node 0 is the root (its entry is
    ignored). Each node has one head, so following heads from any node either
    reaches the root or enters a cycle; one O(n) walk finds it.
    """
    n = len(tree)
    state = np.zeros(n, dtype=np.int8)  # 0 unseen, 1 on current path, 2 done
    state[0] = 2
    for start in range(1, n):
        if state[start]:
            continue
        path = []
        node = start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = int(tree[node])
        if state[node] == 1:  # walked back into the current path: a cycle
            return np.array(path[path.index(node):], dtype=np.int64)
        for p in path:
            state[p] = 2
    return None


def chuliu_edmonds(scores: np.ndarray) -> np.ndarray:
    """Maximum spanning arborescence rooted at node 0 (Chu-Liu/Edmonds).

    ``scores`` is square ``(m, m)`` with ``scores[dep, head]``; ``-inf`` marks
    forbidden arcs. Returns ``tree`` with ``tree[d]`` = head of ``d`` and
    ``tree[0] = 0``. The ROOT may get several children here; see
    :func:`decode_tree` for the single-root version.

    Greedy: every node takes its best head. If that has no cycle it is optimal.
    Otherwise contract one cycle C into a metanode, where entering C at node
    ``c`` from head ``h`` costs ``s[c, h] - s[c, tree[c]]`` relative to the
    cycle, solve the smaller problem recursively and expand.
    """
    scores = np.array(scores, dtype=np.float64)
    np.fill_diagonal(scores, -np.inf)
    scores[0] = -np.inf
    scores[0, 0] = 0.0  # ROOT "heads itself" so argmax is well-defined
    tree = np.argmax(scores, axis=1)
    cycle = _find_cycle(tree)
    if cycle is None:
        return tree

    m = len(tree)
    in_cycle = np.zeros(m, dtype=bool)
    in_cycle[cycle] = True
    cycle_locs = np.flatnonzero(in_cycle)
    rest_locs = np.flatnonzero(~in_cycle)  # includes 0 (ROOT) at index 0

    cycle_arc_scores = scores[cycle_locs, tree[cycle_locs]]
    cycle_total = cycle_arc_scores.sum()
    # Arcs entering the cycle: score of the whole cycle after breaking the arc
    # into cycle node c and replacing it by (h -> c). rows: c, cols: h.
    enter = scores[np.ix_(cycle_locs, rest_locs)] - cycle_arc_scores[:, None] + cycle_total
    # Arcs leaving the cycle: rest node d takes some cycle node as head.
    leave = scores[np.ix_(rest_locs, cycle_locs)]
    best_enter = np.argmax(enter, axis=0)  # per outside head: which cycle node
    best_leave = np.argmax(leave, axis=1)  # per outside dep: which cycle head

    k = len(rest_locs)
    sub = np.full((k + 1, k + 1), -np.inf)
    sub[:k, :k] = scores[np.ix_(rest_locs, rest_locs)]
    sub[k, :k] = enter[best_enter, np.arange(k)]  # metanode as dependent
    sub[:k, k] = leave[np.arange(k), best_leave]  # metanode as head
    sub_tree = chuliu_edmonds(sub)

    new_tree = np.empty(m, dtype=np.int64)
    new_tree[cycle_locs] = tree[cycle_locs]
    outside = sub_tree[:k]
    plain = outside < k
    new_tree[rest_locs[plain]] = rest_locs[outside[plain]]
    new_tree[rest_locs[~plain]] = cycle_locs[best_leave[~plain]]
    # The metanode's head: break the cycle at the chosen entry node.
    cycle_head = sub_tree[k]
    entry = best_enter[cycle_head]
    new_tree[cycle_locs[entry]] = rest_locs[cycle_head]
    new_tree[0] = 0
    return new_tree


def _to_square(scores: np.ndarray) -> np.ndarray:
    """(n, n+1) user scores -> (n+1, n+1) ``S[dep, head]`` with finite values.

    User ``-inf``/NaN entries are replaced by a finite floor far below every
    finite score, so any tree using one of them scores below every tree that
    uses none; the decoder therefore always returns *a* tree, and uses
    "impossible" arcs only when nothing else connects the sentence. Structural
    prohibitions (self-loops, arcs into ROOT) stay -inf inside the decoder.
    """
    s = np.array(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != s.shape[0] + 1:
        raise ValueError(f"scores must have shape (n, n+1), got {s.shape}")
    if np.isposinf(s).any():
        raise ValueError("scores contain +inf")
    n = s.shape[0]
    valid = np.ones_like(s, dtype=bool)
    valid[np.arange(n), np.arange(n) + 1] = False  # self-loops are ignored
    finite = np.isfinite(s) & valid
    if finite.any():
        lo, hi = s[finite].min(), s[finite].max()
        floor = lo - (hi - lo + 1.0) * (n + 1)
    else:
        floor = 0.0
    s[~np.isfinite(s)] = floor
    square = np.full((n + 1, n + 1), -np.inf)
    square[1:, :] = s
    np.fill_diagonal(square, -np.inf)
    return square


def _tree_score(square: np.ndarray, tree: np.ndarray) -> float:
    return float(square[np.arange(1, len(tree)), tree[1:]].sum())


def _one_root_by_penalty(square: np.ndarray) -> np.ndarray:
    """Exact single-root MST with a single CLE run.

    Every arborescence has at least one ROOT arc. Subtracting a constant M
    from all ROOT arcs, with M larger than any possible difference between two
    trees' totals, makes every extra ROOT child cost more than it could ever
    gain, so the maximum is the best tree with exactly one ROOT child; and as
    all such trees pay M exactly once, their ranking is unchanged.
    """
    n = square.shape[0] - 1
    finite = square[np.isfinite(square)]
    span = float(finite.max() - finite.min()) if finite.size else 0.0
    penalty = (span + 1.0) * (n + 1)
    penalised = square.copy()
    penalised[1:, 0] -= penalty
    return chuliu_edmonds(penalised)


def _one_root_by_trying_children(square: np.ndarray, tree: np.ndarray) -> np.ndarray:
    """Dozat / Stanza ``chuliu_edmonds_one_root``: one CLE per ROOT child.

    Re-runs CLE with only one of the unconstrained tree's ROOT children
    allowed on ROOT and keeps the best total. Same trees as the penalty method
    in our tests, but up to n CLE runs (seconds at n=300 on tied scores).
    """
    best_score, best_tree = -np.inf, None
    for child in np.flatnonzero(tree[1:] == 0) + 1:
        constrained = square.copy()
        constrained[1:, 0] = -np.inf  # nobody else may attach to ROOT...
        constrained[child, :] = -np.inf
        constrained[child, 0] = square[child, 0]  # ...and child only to ROOT
        cand = chuliu_edmonds(constrained)
        score = _tree_score(square, cand)
        if best_tree is None or score > best_score:
            best_score, best_tree = score, cand
    return best_tree


def eisner(scores: np.ndarray) -> np.ndarray:
    """Best projective single-root tree (Eisner's algorithm, O(n^3), vectorised over each span width).

    ``scores`` as in ``decode_tree``. Spans of width ``w`` from node ``s`` (node 0 = ROOT): complete or incomplete
    (the arc between the ends just added), headed at the left end (``right`` tables) or the right end (``left``).
    Each table is kept indexed by (start, width) and, where a recurrence reads it by its end, by (end, width) too,
    so that every step reads plain slices. The ROOT's complete span may only close at the last word, so exactly one
    word attaches to it.
    """
    arc = _to_square(scores).T  # arc[head, dependent]
    nodes = arc.shape[0]
    n = nodes - 1
    if n <= 1:
        return np.zeros(n, dtype=np.int64)
    right, left, right_end, left_end, inc_right, inc_left, inc_left_end = (np.full((nodes, nodes), -np.inf)
                                                                           for _ in range(7))
    for complete in (right, left, right_end, left_end):
        complete[:, 0] = 0.0  # a span of width 0 is complete and scores nothing
    split = {name: np.zeros((nodes, nodes), dtype=np.int64) for name in ("inc", "left", "right")}
    for width in range(1, nodes):
        m = nodes - width
        rows = np.arange(m)
        halves = right[:m, :width] + left_end[width:, :width][:, ::-1]  # split after s + k, k = 0..width-1
        best = halves.argmax(1)
        inner = halves[rows, best]
        split["inc"][:m, width] = best
        inc_left[:m, width] = inc_left_end[width:, width] = inner + np.diagonal(arc, -width)  # end heads start
        inc_right[:m, width] = inner + np.diagonal(arc, width)  # start heads end
        spans = left[:m, :width] + inc_left_end[width:, 1 : width + 1][:, ::-1]
        best = spans.argmax(1)
        split["left"][:m, width] = best
        left[:m, width] = left_end[width:, width] = spans[rows, best]
        spans = inc_right[:m, 1 : width + 1] + right_end[width:, :width][:, ::-1]
        best = spans.argmax(1)
        closed = spans[rows, best]
        if width < n:
            closed[0] = -np.inf  # the ROOT's one child must cover the whole sentence
        split["right"][:m, width] = best + 1
        right[:m, width] = right_end[width:, width] = closed
    heads = np.zeros(nodes, dtype=np.int64)
    stack = [(True, True, 0, n)]  # (complete?, headed at the start?, start, width)
    while stack:
        complete, at_start, start, width = stack.pop()
        if width == 0:
            continue
        if complete and at_start:
            k = split["right"][start, width]
            stack += [(False, True, start, k), (True, True, start + k, width - k)]
        elif complete:
            k = split["left"][start, width]
            stack += [(True, False, start, k), (False, False, start + k, width - k)]
        else:
            k = split["inc"][start, width]
            if at_start:
                heads[start + width] = start
            else:
                heads[start] = start + width
            stack += [(True, True, start, k), (True, False, start + k + 1, width - k - 1)]
    return heads[1:]


def decode_tree(scores: np.ndarray, method: str = "penalty", projective: bool = False) -> np.ndarray:
    """Best single-root dependency tree for one sentence.

    ``scores`` is ``(n, n+1)`` (row = dependent word, column 0 = ROOT, column
    ``j`` = word ``j``), log-probabilities or raw scores. Returns heads ``(n,)``
    (0 = ROOT, 1-based words) forming a tree: no cycles, every word reachable
    from ROOT, exactly one word attached to ROOT (the UD convention, which
    plain Chu-Liu/Edmonds does not guarantee).

    First the unconstrained Chu-Liu/Edmonds tree; if ROOT got exactly one
    child it is also the best single-root tree (so a greedy argmax that is
    already a single-root tree comes back unchanged). Otherwise the constraint
    is enforced exactly, by default with one more CLE run on ROOT-penalised
    scores (``method="penalty"``), or as in Dozat's parser / Stanza by one CLE
    run per ROOT child (``method="try_children"``), which can take O(n) runs.
    ``projective``: the best tree without crossing arcs instead (``eisner``).
    """
    if method not in ("penalty", "try_children"):
        raise ValueError(f"unknown method {method!r}")
    if projective:
        return eisner(scores)
    square = _to_square(scores)
    n = square.shape[0] - 1
    if n <= 1:
        return np.zeros(n, dtype=np.int64)

    tree = chuliu_edmonds(square)
    if np.count_nonzero(tree[1:] == 0) != 1:
        if method == "penalty":
            tree = _one_root_by_penalty(square)
        else:
            tree = _one_root_by_trying_children(square, tree)
    return tree[1:].astype(np.int64)


def decode_batch(scores: Tensor, mask: Tensor, projective: bool = False) -> List[np.ndarray]:
    """Decode a batch of ``[B, n, n+1]`` scores into one head array per sentence.

    Scores are renormalised with ``log_softmax`` over heads (after masking
    padded columns and self-loops) so that tree totals are sums of
    log-probabilities, which is what the MST objective should maximise.
    Each returned array has the sentence's real length and 1-based heads over
    its real words (positions where ``mask`` is True, in order); ``projective`` as in ``decode_tree``.
    """
    with torch.no_grad():
        scores = scores.detach().float()
        B, n, _ = scores.shape
        mask = mask.to(dtype=torch.bool, device=scores.device)
        head_ok = torch.cat([mask.new_ones(B, 1), mask], dim=1)
        invalid = ~head_ok.unsqueeze(1).expand(B, n, n + 1).clone()
        idx = torch.arange(n, device=scores.device)
        invalid[:, idx, idx + 1] = True
        logp = F.log_softmax(scores.masked_fill(invalid, NEG_SCORE), dim=-1)
        logp = logp.cpu().numpy()
        mask_np = mask.cpu().numpy()
    out: List[np.ndarray] = []
    for b in range(B):
        real = np.flatnonzero(mask_np[b])
        cols = np.concatenate([[0], real + 1])
        out.append(decode_tree(logp[b][np.ix_(real, cols)], projective=projective))
    return out
