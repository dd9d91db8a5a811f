"""Few-shot adaptation: a new language from a handful of annotated sentences, in seconds.

As in Xu et al. (2023, few-shot variant): a fresh identity-initialised linear adaptor per concept space, fit on the
K support sentences with everything shared frozen. Beyond the original, each a setting so it can be measured:
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
    steps: int = 100
    lr: float = 0.005
    identity_weight: float = 0.1  # pull the adaptor towards the identity (the zero-shot solution)
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
        adaptor = LanguageAdaptor(aligner.dim, len(aligner.valid))
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
    with torch.no_grad():
        z = aligner.phi(x)  # Phi is frozen: compute it once
        source = aligner.prototypes()
        target = aligner.support_prototypes(z, y, settings.shrink) if settings.refine_prototypes else source
        adaptor.prototype_shift.copy_(target - source)
    optimizer = torch.optim.Adam(adaptor.linear.parameters(), lr=settings.lr)
    eye = torch.eye(aligner.dim)
    loss = torch.tensor(0.0)
    for _ in range(settings.steps):
        logits = -torch.cdist(adaptor(z), target).pow(2).masked_fill(~aligner.valid, -1e9)
        loss = torch.nn.functional.cross_entropy(logits, y)
        penalty = settings.identity_weight * (adaptor.linear.weight - eye).pow(2).sum()
        optimizer.zero_grad()
        (loss + penalty).backward()
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
