"""Batches whose padded size is bounded: what keeps memory flat when a few inputs are very long."""
from typing import Iterator, Sequence


def padded_batches(costs: Sequence[int], size: int, budget: int) -> Iterator[range]:
    """Consecutive index ranges of at most `size` items, each with (largest cost) x (items) <= `budget`.

    costs: what one item costs once padded to the batch's longest (pieces for the encoder, n x (n + 1) arc scores
    for the parser); an item over budget on its own still gets a batch of one. Sort items by cost first to waste
    little on padding.
    """
    start, largest = 0, 0
    for i, cost in enumerate(costs):
        if i > start and (i - start == size or max(largest, cost) * (i - start + 1) > budget):
            yield range(start, i)
            start, largest = i, 0
        largest = max(largest, cost)
    if start < len(costs):
        yield range(start, len(costs))
