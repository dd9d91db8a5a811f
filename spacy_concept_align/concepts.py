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
