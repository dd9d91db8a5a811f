"""The aligner: maps a language's word (or relation) vectors onto the shared prototypes of one concept inventory.

SharedProjection is shared by all languages; a language may add a small linear adaptor (identity at birth) on top. Prototypes are
the source languages' class means, carried into the concept space by a learned linear prototype map.
"""
import copy
from typing import Optional

import torch
from torch import nn

from .concepts import class_means, class_sums, distance_logits


class TokenDropout(nn.Module):
    """Drops whole token vectors (rows), as the original code's SharedDropout does on flattened inputs."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.bernoulli(torch.full((x.shape[0], 1), 1 - self.p, device=x.device))
        return x * keep / (1 - self.p)


class SharedProjection(nn.Module):
    """The shared aligner body: Linear -> LeakyReLU(0.2) -> dropout -> Linear (Xavier-normal, zero bias)."""

    def __init__(self, width: int, hidden: int, dim: int, dropout: float = 0.33, token_dropout: bool = False):
        super().__init__()
        self.inner, self.outer = nn.Linear(width, hidden), nn.Linear(hidden, dim)
        self.dropout = TokenDropout(dropout) if token_dropout else nn.Dropout(dropout)
        for layer in (self.inner, self.outer):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(nn.functional.leaky_relu(self.inner(x), 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.hidden(x))


class LowRankDelta(nn.Module):
    """x -> B(A x): a rank-r correction beside a shared linear layer (B starts at zero, so nothing changes at
    birth); a language's own first layer at a fraction of a copy's size."""

    def __init__(self, n_in: int, n_out: int, rank: int):
        super().__init__()
        self.down, self.up = nn.Linear(n_in, rank, bias=False), nn.Linear(rank, n_out)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @property
    def in_features(self) -> int:
        return self.down.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class LanguageAdaptor(nn.Module):
    """One language's corrections, each starting where the zero-shot model is, so a new language begins at the
    zero-shot solution: its own copy of SharedProjection's output layer, a linear map after it (identity at birth; the original
    few-shot method trains only this), and a shift of the prototypes (zero unless refined from its examples).
    With a whole treebank of the language, it also gets its own first layer (`own_inner`): a copy of SharedProjection's, or a
    low-rank correction beside it.
    """

    def __init__(self, outer: nn.Linear, n_classes: int):
        super().__init__()
        dim = outer.out_features
        self.inner: Optional[nn.Module] = None
        self.outer = copy.deepcopy(outer)
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()
        self.register_buffer("prototype_shift", torch.zeros(n_classes, dim))

    def own_inner(self, phi: "SharedProjection", extra_inputs: int = 0, rank: int = 0) -> None:
        """Give the language its own first layer (trained on its own treebank), reading `extra_inputs` more features
        after the vector, starting as SharedProjection's: a rank-`rank` correction beside it, or (rank 0) a whole copy.
        """
        width, hidden = phi.inner.in_features, phi.inner.out_features
        if rank:
            self.inner = LowRankDelta(width + extra_inputs, hidden, rank).to(phi.inner.weight.device)
            return
        inner = nn.Linear(width + extra_inputs, hidden).to(phi.inner.weight.device)
        with torch.no_grad():
            inner.weight.zero_()
            inner.weight[:, :width].copy_(phi.inner.weight)
            inner.bias.copy_(phi.inner.bias)
        self.inner = inner

    @property
    def inner_rank(self) -> int:
        return self.inner.down.out_features if isinstance(self.inner, LowRankDelta) else 0

    def hidden(self, x: torch.Tensor, phi: "SharedProjection") -> torch.Tensor:
        """SharedProjection's hidden layer, through the language's own first layer when it has one."""
        if self.inner is None:
            return phi.hidden(x)
        if isinstance(self.inner, LowRankDelta):
            return phi.dropout(nn.functional.leaky_relu(phi.inner(x[:, : phi.inner.in_features]) + self.inner(x), 0.2))
        return phi.dropout(nn.functional.leaky_relu(self.inner(x), 0.2))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Concept-space coordinates from SharedProjection's hidden layer."""
        return self.linear(self.outer(hidden))


class ConceptAligner(nn.Module):
    """SharedProjection + prototype map + per-language adaptors for one inventory (17 UPOS, or 37 relations).

    width (int): encoder vector size. hidden, dim (int): SharedProjection's hidden and output (concept space) sizes.
    n_classes (int): size of the inventory. dropout (float), token_dropout (bool): see SharedProjection.
    """

    def __init__(self, width: int, hidden: int, dim: int, n_classes: int, dropout: float = 0.33,
                 token_dropout: bool = False):
        super().__init__()
        self.dim = dim
        self.phi = SharedProjection(width, hidden, dim, dropout, token_dropout)
        self.prototype_map = nn.Linear(width, dim, bias=False)
        nn.init.xavier_normal_(self.prototype_map.weight)
        self.adaptors = nn.ModuleDict()
        self.register_buffer("source_means", torch.zeros(n_classes, width))
        self.register_buffer("valid", torch.zeros(n_classes, dtype=torch.bool))

    @property
    def languages(self):
        return sorted(self.adaptors.keys())

    def set_prototypes(self, vectors: torch.Tensor, labels: torch.Tensor, min_count: int = 1) -> None:
        """Source prototypes = class means of (source-language) vectors; rarer classes are never predicted."""
        means, valid = class_means(vectors.float(), labels.long(), len(self.valid), min_count)
        self.source_means.copy_(means)
        self.valid.copy_(valid)

    def prototypes(self) -> torch.Tensor:
        """The source prototypes in the concept space (n_classes x dim)."""
        return self.prototype_map(self.source_means)

    def add_language(self, lang: str) -> LanguageAdaptor:
        """The adaptor of `lang`, created as the identity if it does not exist yet."""
        if lang not in self.adaptors:
            self.adaptors[lang] = LanguageAdaptor(self.phi.outer, len(self.valid)).to(self.source_means.device)
        return self.adaptors[lang]

    def extra_inputs(self, lang: Optional[str]) -> int:
        """How many features beyond the vector `lang`'s own first layer reads (0 for SharedProjection's)."""
        adaptor = self.adaptors[lang] if lang in self.adaptors else None
        return 0 if adaptor is None or adaptor.inner is None else adaptor.inner.in_features - self.phi.inner.in_features

    def embed(self, x: torch.Tensor, lang: Optional[str] = None) -> torch.Tensor:
        """Concept-space coordinates of vectors; through `lang`'s adaptor when it has one."""
        if lang not in self.adaptors:
            return self.phi(x)
        adaptor = self.adaptors[lang]
        return adaptor(adaptor.hidden(x, self.phi))

    def logits(self, x: torch.Tensor, lang: Optional[str] = None, prototypes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Class scores -||A_lang SharedProjection(x) - P_c||^2 (P: the source prototypes, shifted for `lang`, unless given)."""
        protos = self.language_prototypes(lang) if prototypes is None else prototypes
        return distance_logits(self.embed(x, lang), protos, self.valid)

    def support_prototypes(self, z: torch.Tensor, labels: torch.Tensor, shrink: float) -> torch.Tensor:
        """Prototypes re-estimated from a labelled support set (prototypical networks), shrunk towards the source.

        P'_c = (n_c * mean_c(z) + shrink * P_c) / (n_c + shrink); a class absent from the support keeps P_c.
        """
        sums, counts = class_sums(z, labels, len(self.valid))
        counts = counts.unsqueeze(1)
        source = self.prototypes()
        return torch.where(counts > 0, (sums + shrink * source) / (counts + shrink).clamp(min=1e-6), source)

    def language_prototypes(self, lang: Optional[str] = None) -> torch.Tensor:
        """The prototypes `lang` is classified against: the source ones, shifted by its adaptor."""
        protos = self.prototypes()
        return protos + self.adaptors[lang].prototype_shift if lang in self.adaptors else protos
