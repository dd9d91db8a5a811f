"""Which sentences to annotate first: where the model is unsure and the words are frequent but not yet covered.

Greedy: each pick maximises (mean uncertainty of the sentence's words, 1 - confidence) x (log-frequency mass of the
word types it would cover for the first time) / sqrt(length), among sentences of `min_words`-`max_words` words, so
that a person correcting K pre-annotated sentences teaches the model as many frequent, badly known words as possible.
"""
import math
from collections import Counter
from typing import List, Sequence

import numpy as np


def choose_sentences(confidence: Sequence[np.ndarray], forms: Sequence[Sequence[str]], n: int, min_words: int = 5,
                     max_words: int = 25) -> List[int]:
    """Indices of up to `n` sentences, best first.

    confidence: per sentence, each word's confidence (P(tag) x P(head)). forms: per sentence, its words.
    Sentences outside the length range are taken only if too few are inside it.
    """
    types = [{w.lower() for w in sentence} for sentence in forms]
    frequency = Counter(t for sentence in types for t in sentence)
    uncertainty = [float(1 - np.mean(c)) if len(c) else 0.0 for c in confidence]
    fits = [min_words <= len(sentence) <= max_words for sentence in forms]
    covered: set = set()
    chosen: List[int] = []

    def value(i: int) -> float:
        new = sum(math.log1p(frequency[t]) for t in types[i] - covered)
        return uncertainty[i] * (new + 1e-6) / math.sqrt(len(forms[i]))

    for in_range in (True, False):  # the length range first; the others only if it runs out
        candidates = [i for i, ok in enumerate(fits) if ok == in_range and forms[i]]
        while candidates and len(chosen) < n:
            best = max(candidates, key=value)
            chosen.append(best)
            covered |= types[best]
            candidates.remove(best)
    return chosen
