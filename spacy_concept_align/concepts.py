"""The concept space: class prototypes and classification by distance to them.

A concept (a UPOS tag or a universal relation) is a point: the mean of its examples. A vector is classified by a
softmax over negative squared distances to the prototypes, as in prototypical networks and Xu et al. (2023).
"""
from typing import Tuple

import numpy as np
import torch

#: Large negative logit for classes that cannot be predicted (finite, so gradients stay NaN-free).
MASKED = -1e9


def class_sums(vectors: torch.Tensor, labels: torch.Tensor, n_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sum of the vectors of each class and how many there are (labels < 0 are ignored): the one place class
    statistics are gathered (prototypes, support-set prototypes, raw-text re-estimation, the alignability study)."""
    keep = labels >= 0
    sums = torch.zeros((n_classes, vectors.shape[-1]), dtype=vectors.dtype, device=vectors.device)
    sums.index_add_(0, labels[keep], vectors[keep])
    return sums, torch.bincount(labels[keep], minlength=n_classes).to(vectors.dtype)


def class_means(vectors: torch.Tensor, labels: torch.Tensor, n_classes: int, min_count: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean vector of each class, and which classes have at least `min_count` examples (labels < 0 are ignored).

    RETURNS (Tuple[Tensor, Tensor]): means (n_classes x width, zero rows for absent classes), valid mask (n_classes).
    """
    sums, counts = class_sums(vectors, labels, n_classes)
    means = sums / counts.clamp(min=1).unsqueeze(1)
    return means, counts >= max(min_count, 1)


def distance_logits(points: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """-||x - p_c||^2 for every point and prototype; classes outside `valid` get a large negative logit."""
    logits = -torch.cdist(points, prototypes).pow(2)
    return logits.masked_fill(~valid, MASKED)


def relation_vectors(words: np.ndarray, roots: np.ndarray, offsets: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """h(head) - h(dependent) for every word; a root's head is its sentence's root vector ([CLS]).

    words (N x width), roots (S x width), offsets (S + 1: where each sentence starts in `words`), heads (N, CoNLL-U
    style: 0 = root, k = k-th word of the sentence).
    """
    sentence = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    head_index = offsets[sentence] + heads.astype(np.int64) - 1
    head_vectors = np.where((heads > 0)[:, None], words[np.maximum(head_index, 0)], roots[sentence])
    return head_vectors.astype(np.float32) - words.astype(np.float32)


def fit_linear(x: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float = 1e-3, steps: int = 300,
               batch: int = 0) -> torch.nn.Sequential:
    """A multinomial logistic regression on vectors (labels < 0 ignored), fitted with Adam on standardised inputs:
    (standardise, linear layer). The probe baselines, and each meta-training language's own UPOS tagger
    (`ConceptDecoder.source_tag_scores`). batch: minibatches of this many rows (0 = all of them)."""
    x, y = torch.tensor(np.asarray(x, np.float32)), torch.tensor(np.asarray(y), dtype=torch.long)
    mean, std = x.mean(0), x.std(0) + 1e-6
    with torch.random.fork_rng(devices=[]):  # reproducible, and the caller's random state (meta-training's) kept
        torch.manual_seed(0)
        layer = torch.nn.Linear(x.shape[1], n_classes)
        normalise = torch.nn.Linear(x.shape[1], x.shape[1])
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.01, weight_decay=weight_decay)
    xs = (x - mean) / std
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        rows = torch.randint(0, len(xs), (batch,), generator=generator) if 0 < batch < len(xs) else slice(None)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(xs[rows]), y[rows], ignore_index=-1).backward()
        optimizer.step()
    with torch.no_grad():
        normalise.weight.copy_(torch.diag(1 / std))
        normalise.bias.copy_(-mean / std)
    return torch.nn.Sequential(normalise, layer).eval()


def as_one_layer(model: torch.nn.Sequential) -> torch.Tensor:
    """Two affine layers (as `fit_linear` gives them) as one: classes x (width + 1), the weights, then the bias."""
    normalise, layer = model
    with torch.no_grad():
        return torch.cat([layer.weight @ normalise.weight, (layer.weight @ normalise.bias + layer.bias)[:, None]], 1)
