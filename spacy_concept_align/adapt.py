"""Few-shot adaptation: a new language from a handful of annotated sentences, in seconds.

As in Xu et al. (2023, few-shot variant): new language-specific parameters, fit on the K support sentences with
everything shared frozen. Beyond the original, each a setting so it can be measured:
- `train`: "outer" fine-tunes the language's own copy of Phi's output layer (measured better: more capacity than
  the original's r x r map, kept near its start by `anchor_weight`); "linear" trains only the original's map;
- `refine_prototypes`: prototypes re-estimated from the support set, shrunk towards the source ones (prototypical
  networks; the same estimator meta-training optimises for);
- `adapt_arcs`: a copy of the arc scorer fine-tuned lightly on the support trees, so heads adapt too.
Nothing in the model changes if adaptation fails: the new parts are built aside and swapped in at the end.
"""
import copy
import logging
import time
from dataclasses import dataclass
from typing import Dict

import torch

from .aligner import LanguageAdaptor
from .features import FeatureSet
from .model import ConceptParser, _known, tensor

logger = logging.getLogger(__name__)


@dataclass
class AdaptSettings:
    train: str = "outer"  # "outer" (Phi's output layer, per language) or "linear" (the original's r x r adaptor)
    steps: int = 100
    lr: float = 0.001
    anchor_weight: float = 0.1  # pull the trained parameters towards their start (the zero-shot solution)
    refine_prototypes: bool = True
    shrink: float = 5.0
    adapt_arcs: bool = True
    arc_steps: int = 30
    arc_lr: float = 1e-4
    min_sentences: int = 5  # fewer works, with a warning


def check_support(features: FeatureSet, settings: AdaptSettings) -> None:
    """Refuse support sets that cannot teach anything; warn about very small ones."""
    if len(features) == 0 or not ((features.upos >= 0).any() or (features.heads >= 0).any()):
        raise ValueError("Adaptation needs annotated sentences (UPOS and/or heads + relations); none were given")
    if len(features) < settings.min_sentences:
        logger.warning("Adapting from only %d sentence(s); %d or more give steadier results",
                       len(features), settings.min_sentences)


def adapt_language(net: ConceptParser, support: FeatureSet, lang: str, settings: AdaptSettings = AdaptSettings()) -> Dict[str, float]:
    """Fit `lang`'s adaptors (and arc scorer) on the support set; replace any previous ones for `lang`.

    RETURNS (Dict[str, float]): seconds taken and final losses.
    """
    check_support(support, settings)
    start = time.perf_counter()
    was_training = net.training
    net.eval()  # no dropout: the shared parts are frozen, only the new adaptors learn
    words = tensor(support.words)
    relations = tensor(support.relation_vectors())
    upos = _known(tensor(support.upos, torch.long), net.pos.valid)
    deprels = _known(tensor(support.deprels, torch.long).masked_fill(tensor(support.heads < 0, torch.bool), -1),
                     net.rel.valid)
    report = {}
    adaptors = {}
    for name, aligner, x, y in (("pos", net.pos, words, upos), ("rel", net.rel, relations, deprels)):
        adaptor = LanguageAdaptor(aligner.phi.outer, len(aligner.valid))
        if (y >= 0).any():
            report[f"{name}_loss"] = _fit_adaptor(aligner, adaptor, x[y >= 0], y[y >= 0], settings)
        adaptors[name] = adaptor
    arcs = None
    if settings.adapt_arcs and (support.heads >= 0).any():
        arcs, report["arc_loss"] = _fit_arcs(net, support, settings)
    # Swap the new parts in only now: a failure above leaves the model as it was.
    net.pos.adaptors[lang], net.rel.adaptors[lang] = adaptors["pos"], adaptors["rel"]
    if arcs is not None:
        net.language_arcs[lang] = arcs
    elif lang in net.language_arcs:
        del net.language_arcs[lang]
    net.train(was_training)
    report["seconds"] = time.perf_counter() - start
    return report


def _fit_adaptor(aligner, adaptor: LanguageAdaptor, x: torch.Tensor, y: torch.Tensor, settings: AdaptSettings) -> float:
    """Refine the prototypes from the support set first (in the zero-shot space), then fit the adaptor towards them.

    Refining after fitting measured worse: the adaptor had already pulled the support words onto the source
    prototypes, and re-estimating the prototypes from those words undid part of what it learned.
    """
    if settings.train not in ("outer", "linear"):
        raise ValueError(f"AdaptSettings.train must be 'outer' or 'linear', got {settings.train!r}")
    with torch.no_grad():
        hidden = aligner.phi.hidden(x)  # Phi's first layer is frozen: compute it once
        source = aligner.prototypes()
        target = aligner.support_prototypes(adaptor(hidden), y, settings.shrink) if settings.refine_prototypes else source
        adaptor.prototype_shift.copy_(target - source)
    params = list((adaptor.outer if settings.train == "outer" else adaptor.linear).parameters())
    start = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    loss = torch.tensor(0.0)
    for _ in range(settings.steps):
        logits = -torch.cdist(adaptor(hidden), target).pow(2).masked_fill(~aligner.valid, -1e9)
        loss = torch.nn.functional.cross_entropy(logits, y)
        anchor = settings.anchor_weight * sum((p - p0).pow(2).sum() for p, p0 in zip(params, start))
        optimizer.zero_grad()
        (loss + anchor).backward()
        optimizer.step()
    return float(loss.detach())


def _fit_arcs(net: ConceptParser, support: FeatureSet, settings: AdaptSettings):
    arcs = copy.deepcopy(net.arcs)
    arcs.eval()  # fine-tune without dropout: a few small steps from the multilingual scorer
    optimizer = torch.optim.Adam(arcs.parameters(), lr=settings.arc_lr)
    loss = torch.tensor(0.0)
    for _ in range(settings.arc_steps):
        loss = net.arc_loss(arcs, support)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return arcs, float(loss.detach())
