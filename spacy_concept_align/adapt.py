"""Few-shot adaptation: a new language from a handful of annotated sentences, in seconds.

As in Xu et al. (2023, few-shot variant): new language-specific parameters, fit on the K support sentences with
everything shared frozen. Beyond the original, each a setting so it can be measured:
- `train`: "outer" fine-tunes the language's own copy of SharedProjection's output layer (measured better: more capacity than
  the original's r x r map, kept near its start by `anchor_weight`); "linear" trains only the original's map;
- `refine_prototypes`: prototypes re-estimated from the support set, shrunk towards the source ones (prototypical
  networks; the same estimator meta-training optimises for);
- `adapt_arcs`: a copy of the arc scorer fine-tuned lightly on the support trees, so heads adapt too;
- `priors`: word identity (a Lexicon of the support words' tags and relations, suffixes for unseen words), a
  relation-given-tags table and an arc table (the language's word order by tag pair and offset), added to the
  model's scores at prediction (spacy_concept_align.lexicon).
With a whole treebank (`train = "auto"` and at least `whole_treebank` sentences) the same machinery trains more, in
minibatch epochs ("phi"): the language's own first layers of SharedProjection (rank-r corrections) and output layers,
its own arc scorer reading the words (their vectors and character n-grams) through a small BiLSTM that also learns
their tags, UPOS that reads the words through it too, and relations that read those words and the arc's structure:
in-language quality for every language that has annotated data, at about
0.8 MB per language (half precision).
Nothing in the model changes if adaptation fails: the new parts are built aside and swapped in at the end.
"""
import copy
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .aligner import LanguageAdaptor
from .concepts import class_sums
from .features import FeatureSet
from .labels import DEPRELS, UPOS
from .lexicon import PriorCounts, PriorWeights
from .tag_parser import training_sentences
from .decoder import ConceptDecoder, known_labels, relation_features, tensor

logger = logging.getLogger(__name__)


@dataclass
class AdaptSettings:
    # "outer" (SharedProjection's output layer, per language), "linear" (the original's r x r adaptor), "phi" (SharedProjection's first layer
    # as rank-r corrections + its output layer, in minibatch epochs: for a whole treebank) or "auto" ("phi" from `whole_treebank` sentences on, else "outer")
    train: str = "auto"
    whole_treebank: int = 100
    steps: int = 100
    lr: float = 0.001
    anchor_weight: float = 0.1  # pull the trained parameters towards their start (the zero-shot solution)
    # ... harder with fewer words: the loss is a mean over the support words, so a fixed anchor would trust 40 words
    # as much as 400; it is multiplied by max(1, anchor_words / words) (0 = fixed). Validation languages, 2 seeds, UPOS
    # at K = 5 / 10 / 20: 81.57 / 83.73 / 85.41 fixed; 200: +0.20 / 0 / 0; 400: +0.31 / +0.04 / -0.02; 800: +0.34 /
    # +0.01 / -0.12; 1600: +0.31 / -0.11 / -0.25 (UAS and LAS within 0.05)
    anchor_words: int = 400
    refine_prototypes: bool = True
    shrink: float = 5.0
    adapt_arcs: bool = True
    # the arc scorer's copy, fine-tuned on the support trees. Validation languages, 2 seeds, UAS at K = 5 / 20 / 50
    # (66.94 / 69.28 / 71.50 here): 0 / 10 steps -0.65 / -1.13 and -0.31 / -0.51 (K = 5 / 20); 100 steps -0.08 / -0.20 /
    # +0.03; lr 3e-4 -0.12 / -0.11 / +0.15; lr 1e-3 -1.96 / -2.10 / -1.68
    arc_steps: int = 30
    arc_lr: float = 1e-4
    min_sentences: int = 5  # fewer works, with a warning
    epochs: int = 5  # "phi": passes over the words, in minibatches of `batch_words`
    batch_words: int = 512
    arc_epochs: int = 12  # "phi": passes over the sentences for the arc scorer, minibatches of `batch_sentences`
    # "phi" sizes: measured on the dev splits of wo/ug/cy/mt (UPOS / UAS / LAS, MB per language in fp32):
    # whole copies, BiLSTM 128, MLPs fine-tuned 92.3 / 74.0 / 63.6, 5.2 MB; these defaults 92.0 / 73.9 / 62.6, 1.3 MB
    arc_context: int = 64  # "phi": the arc scorer reads the words through a BiLSTM of this size (0 = none)
    arc_context_input: int = 128  # "phi": the BiLSTM reads the vectors reduced to this size (0 = as they are)
    # "phi": ... and each word's character n-grams, hashed into `arc_char_buckets`, embedded in this size (0 = not),
    # in a BiLSTM of `arc_context_layers`. Dev splits of wo/ug/cy/mt/te/vi, UPOS / UAS / LAS: 91.8 / 75.4 / 63.9 without
    # characters (1 layer, 8 epochs); 91.8 / 76.4 / 64.7 with them (16 x 4096 or 32 x 8192 alike; 12 or 16 epochs:
    # 76.0-76.2 / 64.4-64.5); 2 layers, 12 epochs: 91.8 / 76.7 / 65.1 (32 x 8192: 76.9 / 65.2); one run each.
    arc_chars: int = 16
    arc_char_buckets: int = 4096
    arc_context_layers: int = 2
    arc_train_mlps: bool = False  # "phi": fine-tune the arc scorer's role MLPs too (else they stay shared)
    arc_structure: bool = True  # "phi": relations also read both tags, direction and distance
    arc_dependent: bool = True  # "phi": ... and the dependent's vector
    # "phi": UPOS also reads the words through the language's arc context layer, which learns their tags beside their
    # heads (a tagging loss of `arc_tag_weight`; 0 = heads only). Dev splits of wo/ug/cy/mt/te/vi, UPOS / UAS / LAS:
    # 91.7 / 76.6 / 65.1 without; UPOS reading the context 92.0 / 76.6 / 65.1; + the tagging loss at 0.5 / 1 / 2:
    # 92.1 / 77.1 / 65.6, 92.3 / 77.5 / 66.0, 92.2 / 77.2 / 65.8 (the loss alone: 91.8 / 77.5 / 65.8); one run each
    pos_context: bool = True
    arc_tag_weight: float = 1.0
    # "phi": the weight of the language's arc table (PriorWeights.arcs; `prior_weights` is for fewer sentences). Same dev
    # splits, LAS: 66.0 without, 66.5 / 66.7 / 66.9 / 66.9 / 66.6 at 0.15 / 0.3 / 0.6 / 1 / 1.5 (wo, ug, cy, mt: 0.6 best)
    treebank_arc_prior: float = 0.6
    # "phi": the weight of each word's own head offsets (PriorWeights.heads). Same dev splits, with the arc table:
    # UAS / LAS 78.65 / 66.93 without, 78.87 / 67.17 at 0.3 (projective trees: 78.76 / 67.01 -> 79.00 / 67.25)
    treebank_heads_prior: float = 0.3
    treebank_table_prior: float = PriorWeights.table  # "phi": its relation-given-tags table's weight, as chosen there
    inner_rank: int = 32  # "phi": the language's own first layers as rank-r corrections (0 = whole copies)
    batch_sentences: int = 32
    phi_lr: float = 1e-3
    # Fewer support sentences than this: relations keep the shared model's layer and only their prototypes move
    # (shrunk towards the sources' by `shrink`; priors still apply). Chosen on the validation languages (LAS at K=5 /
    # 10 / 20: 48.8 / 50.8 / 52.4 fitting the layer, 50.0 / 51.4 / 52.4 from 20 on); then, 2 seeds, LAS at K=5 / 10:
    # 51.89 / 54.04 with the shared relations, 52.24 / 54.71 with their prototypes refined (the layer fitted too,
    # anchored by `anchor_words` 1,600 / 6,400: 52.11 / 54.40, 52.25 / 54.64; UPOS within 0.05)
    min_relation_sentences: int = 20
    # Relations train as for a whole treebank (the language's own first layer, reading the arc's structure too:
    # `arc_structure`), whatever `train` says for the rest; false: as `train` says. Validation languages, 2 seeds, LAS
    # at K = 20 / 50: 55.0 / 57.2 -> 56.2 / 58.2, all 13 treebanks gain at K=20 (UPOS within 0.05). From 5 or 10
    # sentences on, the mean gained (+0.2 / +0.5) but 8 and 6 of the 13 lost: relations still wait for 20
    structured_relations: bool = True
    priors: bool = True  # word identity + relation-given-tags table (needs the words' forms)
    # A named language's arc table (its word order) starts from its nearest sources' (ConceptDecoder.source_tables), as
    # if counted on this many sentences, before the support trees are added (0 = the support's counts alone; not for
    # a whole treebank). Validation languages, 2 seeds, UAS / LAS at K = 5 / 10 / 20 over the support alone: 5: +0.21 /
    # +0.20, +0.13 / +0.12, -0.02 / -0.02; 10: +0.20 / +0.17, +0.09 / +0.08, -0.06 / -0.06; 20: +0.16 / +0.15, +0.02 /
    # +0.04, -0.12 / -0.12. Their relation table too (as if 5 / 20 / 50 sentences): LAS +0.05 / -0.21 / -0.41 at K=5
    source_arc_sentences: float = 5.0
    # Fewer than `whole_treebank` sentences: the language's own copy of the tag parser (tag_parser.py), fine-tuned on
    # the support trees (`tag_parser_epochs` passes, minibatches of 8, `tag_parser_lr`) and added to the arc scores at
    # `tag_parser_weight` (PriorWeights.tags). Validation languages, 2 seeds, UAS at K = 5 / 20 / 50: +0.65 / +0.81 /
    # +0.99 (tag_parser.py has the other settings tried)
    tag_parser_weight: float = 0.3
    # ... and its relations given the tags and heads (fine-tuned on the support trees with the heads), added to the
    # relation scores at this weight (PriorWeights.tag_relations). Validation languages, 2 seeds, LAS at K = 5 / 20 / 50
    # from 56.29 / 60.65 / 62.83: 0.15 +0.17 / +0.25 / +0.35, 0.3 +0.19 / +0.37 / +0.53, 0.6 +0.08 / +0.35 / +0.62
    # (Korean loses 0.3-1.8, Afrikaans and Greek gain 0.5-2.2)
    tag_relation_weight: float = 0.3
    # Since it labels, fine-tuning it harder helps (validation, 2 seeds, UAS / LAS at K = 5 / 20 / 50 from 70.26 /
    # 56.65, 72.30 / 61.14, 73.66 / 63.51 at 10 passes, lr 5e-4): lr 1e-3 +0.06 / +0.11, +0.18 / +0.27, +0.08 / +0.18;
    # 20 passes (twice the time) +0.09 / +0.17, +0.12 / +0.28, +0.13 / +0.23
    # A named language's nearest sources' taggers (ConceptDecoder.source_tag_scores, as zero-shot) at this weight,
    # its output layer fitted beside them (their log-probabilities a fixed part of the support words' scores), so it
    # learns what the support adds to them, not in their place (0 = fitted alone; not for a whole treebank), times
    # max(0, 1 - the support's words / `source_tagger_words`) (0: not scaled): what the support shows takes over as
    # it grows. Validation languages, 2 seeds, UPOS at K = 5 / 10 / 20 / 50 from 84.24 / 86.00 / 87.25 / 88.72 (fitted
    # alone; 5 (language, K) cases below the named zero-shot, 3 of them UPOS): 0.3 unscaled +0.20 / -0.06 / -0.12 /
    # -0.24 (Korean -2.6 to -4.0; 8 of 10 gain at K=5); 0.6 unscaled -0.06 / - / -0.70 / -0.91; scaled to 0 at 300 /
    # 600 words +0.18 / -0.02 / -0.03 and +0.19 / +0.01 / 0.00 (LAS +0.03 / +0.07 / +0.08), 2 cases below zero-shot,
    # none of them UPOS. Their weight chosen per language, as the one under which the shared model and they best
    # explain the support's tags, was 0 nearly everywhere (the sum of two experts is sharper than either).
    source_tagger_weight: float = 0.3
    source_tagger_words: int = 600
    tag_parser_epochs: int = 10
    tag_parser_lr: float = 1e-3
    seed: int = 0  # new layers' initialisation and dropout
    # Fewer than `whole_treebank` sentences: the priors' weights. The relation-given-tags table counted on a few trees
    # is sparse: validation languages, 2 seeds, LAS at K = 5 / 10 / 20 / 50 over table weight 0.5: 0 -0.34 / -0.69 /
    # -0.65; 0.15 +0.17 / - / +0.01 / +0.03; 0.25 +0.20 / +0.12 / +0.15 / +0.13; 0.35 +0.15 / - / +0.15 / +0.10; 1 -0.76
    # / -0.75 / -0.70 (UPOS within 0.05). A form's relations say less than its tags (the same word takes other
    # relations elsewhere), so they count less: LAS at K = 5 / 10 / 20 / 50 from 56.79 / 59.21 / 61.49 / 63.69 with
    # `relation_form` 0.4 / 0.25 / 0.1 / 0: +0.14 / +0.13 / +0.23 / -, +0.16 / +0.13 / +0.26 / +0.23, +0.15 / +0.13 /
    # +0.25 / -, +0.14 / +0.11 / +0.24 / - (UPOS within 0.01; `form` itself at 0.6 / 0.4: LAS +0.12 to +0.22, UPOS
    # -0.02 / -0.09 at K=20). "phi" (a whole treebank) keeps it: dev splits of af, el, hu, wo, ug, cy, mt, te, vi after
    # adapting on their train splits, LAS at 1 / 0.5 / 0.25: 71.83 / 72.31 / 72.41 (8 of 9 gain; te -0.15)
    prior_weights: PriorWeights = field(default_factory=lambda: PriorWeights(table=0.25, relation_form=0.25))

    def __post_init__(self):
        if isinstance(self.prior_weights, dict):  # from a config or pipe.adapt(prior_weights={...})
            self.prior_weights = PriorWeights(**self.prior_weights)

    def mode(self, n_sentences: int) -> str:
        if self.train == "auto":
            return "phi" if n_sentences >= self.whole_treebank else "outer"
        if self.train not in ("outer", "linear", "phi"):
            raise ValueError(f"AdaptSettings.train must be 'auto', 'outer', 'linear' or 'phi', got {self.train!r}")
        return self.train


def check_support(features: FeatureSet, settings: AdaptSettings) -> None:
    """Refuse support sets that cannot teach anything; warn about very small ones."""
    if len(features) == 0 or not ((features.upos >= 0).any() or (features.heads >= 0).any()):
        raise ValueError("Adaptation needs annotated sentences (UPOS and/or heads + relations); none were given")
    if len(features) < settings.min_sentences:
        logger.warning("Adapting from only %d sentence(s); %d or more give steadier results",
                       len(features), settings.min_sentences)


def adapt_language(decoder: ConceptDecoder, support: FeatureSet, lang: str, settings: Optional[AdaptSettings] = None,
                   forms: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Fit `lang`'s adaptors (and arc scorer, and priors when the words' `forms` are given) on the support set;
    replace any previous ones for `lang`.

    RETURNS (Dict[str, float]): seconds taken and final losses.
    """
    settings = settings or AdaptSettings()
    check_support(support, settings)
    if forms is not None:
        if len(forms) != support.n_words:
            raise ValueError(f"adapt: {len(forms)} word forms for {support.n_words} words")
        support = replace(support, forms=list(forms))
    with torch.random.fork_rng(devices=[]):  # reproducible, and the caller's random state is left as it was
        torch.manual_seed(settings.seed)
        return _adapt_language(decoder, support, lang, settings)


def _adapt_language(decoder: ConceptDecoder, support: FeatureSet, lang: str,
                    settings: AdaptSettings) -> Dict[str, float]:
    mode = settings.mode(len(support))
    start = time.perf_counter()
    was_training = decoder.training
    decoder.eval()  # no dropout: the shared parts are frozen, only the new adaptors learn
    report: Dict[str, float] = {}
    arcs = None
    if settings.adapt_arcs and (support.heads >= 0).any():
        arcs, report["arc_loss"] = (_fit_arcs_epochs if mode == "phi" else _fit_arcs)(decoder, support, settings)
    tag_weight = relation_weight = 0.0
    if arcs is not None and arcs.tags is not None and mode != "phi" and (settings.tag_parser_weight or
                                                                          settings.tag_relation_weight):
        sentences = training_sentences(support, decoder.tag_parser_typology(lang), max_words=10_000)
        if sentences:
            report["tag_parser_loss"] = arcs.tags.fit(sentences, settings.tag_parser_epochs, settings.tag_parser_lr,
                                                      batch_size=8, seed=settings.seed)
            tag_weight, relation_weight = settings.tag_parser_weight, settings.tag_relation_weight
    context = decoder.contextual_words(support, arcs=arcs) if arcs is not None else None
    words = tensor(support.words)
    if mode == "phi" and settings.pos_context and arcs is not None and arcs.context is not None:
        words = torch.cat([words, tensor(context)], 1)
    upos = known_labels(tensor(support.upos, torch.long), decoder.pos.valid)
    deprels = known_labels(tensor(support.deprels, torch.long).masked_fill(tensor(support.heads < 0, torch.bool), -1),
                     decoder.rel.valid)
    # relations as the language's new parts will see them: on gold heads and tags, through its new arc context
    rel_mode = "phi" if settings.structured_relations else mode
    relations = tensor(relation_features(context if context is not None else decoder.contextual_words(support),
                                         support, support.heads, support.upos,
                                         structure=rel_mode == "phi" and settings.arc_structure,
                                         dependent=settings.arc_dependent))
    sources_weight, by_sources = _sources_beside(decoder, support, lang, settings, mode)
    adaptors = {}
    for name, aligner, x, y in (("pos", decoder.pos, words, upos), ("rel", decoder.rel, relations, deprels)):
        adaptor = LanguageAdaptor(aligner.phi.outer, len(aligner.valid))
        known = y >= 0
        if known.any() and name == "rel" and len(support) < settings.min_relation_sentences:
            _refine_prototypes(aligner, adaptor, x[known][:, : aligner.phi.inner.in_features], y[known], settings)
        elif known.any():
            part_mode = rel_mode if name == "rel" else mode
            if part_mode == "phi":
                report[f"{name}_loss"] = _fit_phi(aligner, adaptor, x[known], y[known], settings)
            else:  # UPOS beside the sources' taggers, if any
                offset = tensor(by_sources)[known] if name == "pos" and by_sources is not None else None
                report[f"{name}_loss"] = _fit_adaptor(aligner, adaptor, x[known], y[known], settings, part_mode, offset)
        adaptors[name] = adaptor
    priors = None
    if settings.priors and support.forms is not None:
        weights = (replace(settings.prior_weights, arcs=settings.treebank_arc_prior, heads=settings.treebank_heads_prior,
                           table=settings.treebank_table_prior)
                   if mode == "phi" else replace(settings.prior_weights, tags=tag_weight, tag_relations=relation_weight,
                                                 source_tags=sources_weight))
        counts = PriorCounts(len(UPOS), len(DEPRELS))
        counts.add(support.forms, support.upos, support.heads, support.deprels, support.offsets)
        sources = decoder.source_tables(lang, settings.source_arc_sentences) if mode != "phi" else None
        if sources is not None and settings.source_arc_sentences:  # the support's word order starts from its sources'
            counts.arcs += sources[0]
        priors = counts.priors(weights)
    # Swap the new parts in only now: a failure above leaves the model as it was.
    decoder.set_language_parts(lang, (adaptors["pos"], adaptors["rel"], arcs, priors))
    decoder.train(was_training)
    report["seconds"] = time.perf_counter() - start
    return report


@dataclass
class UnlabeledSettings:
    """Adaptation to raw text: each class's prototype moves to the mean of the words confidently assigned to it, and
    a language without annotated priors gets word priors from the model's own confident tags and relations (from
    `prior_min_words` words of text on).

    The prototypes take one step of k-means started where they are, on the language's own words, shrunk towards
    where they were; chosen on the validation languages' dev splits (UPOS 80.2 -> 81.0; more steps drifted). The word
    priors are LanguagePriors counted on the words tagged with at least `prior_confidence` (tag, and head for
    relations): a word type's tag in most of its confident contexts becomes a soft vote for its other occurrences.
    Validation languages' dev splits, transductive (UPOS / LAS): 80.3 / 50.0; prototypes 81.0 / 50.6; priors
    81.3 / 50.7; both 81.8 / 51.1 (every one of the 10 languages gains).
    """

    confidence: float = 0.8  # only words the model assigns with at least this probability move a prototype
    shrink: float = 100.0  # pseudo-count of the current prototype
    relations: bool = True  # relation prototypes too, from the predicted trees
    word_priors: bool = True  # word priors from the model's confident predictions (the words' forms are needed)
    # of 0, 0.7, 0.9 (first-piece vectors); re-measured with mean-piece vectors and the head temperature 1.5
    # (validation dev, transductive, UPOS / UAS / LAS): 0.4 / 0.5 / 0.6 / 0.7 / 0.85 with the arc table at 0.15:
    # 82.81 / 68.73 / 55.11, 82.99 / 68.78 / 55.18, 83.02 / 68.79 / 55.20, 82.97 / 68.66 / 55.08, -; at 0.3: 0.5 / 0.6
    # / 0.7 / 0.85: 82.99 / 68.58 / 55.03, 83.02 / 68.44 / 54.98, 82.97 / 68.23 / 54.84, 82.97 / 67.58 / 54.05
    prior_confidence: float = 0.6
    # Counts need repetition: on the validation dev splits cut to 500 / 1,000 / 2,000 / 4,000 words, priors beside the
    # prototypes moved UPOS by -0.1 / -0.2 / +0.2 / +0.4 and LAS by -0.2 / +0.2 / +0.6 / +0.4; with the arc table,
    # at 500 / 1,000 / 2,000 words: UPOS -0.1 / -0.1 / +0.2, UAS -0.6 / +0.6 / +0.7, LAS -0.4 / +0.85 / +1.4
    prior_min_words: int = 1000
    # form 0.3 / 0.6 / 1.0, suffix 0 / 0.3, table 0 / 0.5 tried: UPOS within 0.1 of the best, these the best LAS
    # arcs (the language's word order, counted on the confidently parsed words): 0 / 0.15 / 0.3 / 0.5 gave UAS 65.0 /
    # 66.1 / 66.1 / 65.7, LAS 51.1 / 52.0 / 52.1 / 51.9 (validation dev splits, transductive); heads (the words' own
    # head offsets, PriorWeights' default 0.3) on top: 0.15 / 0.3 gave UAS +0.2 / +0.15, LAS +0.2 / +0.15; the tag
    # parser (the shared one, with the language's typology) on top: 0 / 0.15 / 0.3 gave UAS 66.56 / 66.77 / 66.83, LAS
    # 52.53 / 52.69 / 52.73. Re-measured with mean-piece vectors (one change at a time from these, prior_confidence
    # 0.7): form 0.15 / 0.6 UPOS -0.01 / -0.11, suffix 0 -0.19, table 0.25 LAS +0.07, tags 0.15 / 0.5 LAS -0.06 /
    # -0.11, arcs 0.15 / 0.5 UAS +0.43 / -0.80, LAS +0.24 / -0.53; with prior_confidence 0.5, arcs 0.1 / 0.15 / 0.2:
    # LAS 55.20 / 55.18 / 55.17. The tag parser's relations (as a language named gets them, ConceptDecoder's
    # tag_relation_weight) at 0 / 0.3: 83.22 / 68.79 / 55.18, 83.24 / 68.79 / 55.26
    prior_weights: PriorWeights = field(default_factory=lambda: PriorWeights(form=0.3, suffix=0.3, table=0.5, arcs=0.15,
                                                                             tags=0.3, tag_relations=0.3))

    def __post_init__(self):
        if isinstance(self.prior_weights, dict):  # from a config
            self.prior_weights = PriorWeights(**self.prior_weights)


def adapt_unlabeled(decoder: ConceptDecoder, chunks: Union[FeatureSet, Iterable[FeatureSet]], lang: str,
                    settings: Optional[UnlabeledSettings] = None) -> Dict[str, float]:
    """Fit `lang`'s prototypes to its own unlabeled words (kept with any adaptation `lang` already has) and, if it
    has no word priors from annotated sentences, give it priors from the model's confident predictions.

    chunks: the words' features (with their forms, for the priors), or an iterable of them (raw text of any size, a
    chunk at a time: only sums and counts are kept). Every word is assigned with the model as it was before this call.
    RETURNS (Dict[str, float]): seconds, words used, the share of words confident enough to count, word types given a
    prior.
    """
    settings = settings or UnlabeledSettings()
    start = time.perf_counter()
    aligners = {"pos": decoder.pos, "rel": decoder.rel} if settings.relations else {"pos": decoder.pos}
    sums = {name: torch.zeros_like(aligner.prototypes()) for name, aligner in aligners.items()}
    counts = {name: torch.zeros(len(aligner.valid)) for name, aligner in aligners.items()}
    # what the model tags confidently (-1 elsewhere), for a language without priors of its own
    confident = PriorCounts(len(UPOS), len(DEPRELS)) if settings.word_priors and lang not in decoder.priors else None
    words = 0
    with decoder.inference():
        for features in [chunks] if isinstance(chunks, FeatureSet) else chunks:
            words += features.n_words
            inputs = {"pos": tensor(decoder.pos_inputs(features, lang))}
            heads = None
            if confident is not None and features.forms is not None:
                upos, heads, deprels, confidence = decoder.predict_with_confidence(features, lang, features.forms)
                tag_ok = confidence[:, 0] >= settings.prior_confidence
                arc_ok = tag_ok & (confidence[:, 1] >= settings.prior_confidence)
                confident.add(features.forms, np.where(tag_ok, upos, -1), np.where(arc_ok, heads, -1), deprels,
                              features.offsets)
            if settings.relations:
                upos = decoder.pos.logits(inputs["pos"], lang).argmax(-1).numpy()
                heads = decoder.predict_heads(features, lang) if heads is None else heads
                inputs["rel"] = tensor(decoder.relation_inputs(features, heads, upos, lang))
            for name, aligner in aligners.items():
                confidence, labels = torch.softmax(aligner.logits(inputs[name], lang), -1).max(-1)
                batch_sums, batch_counts = class_sums(aligner.embed(inputs[name], lang),
                                                      labels.masked_fill(confidence < settings.confidence, -1),
                                                      len(aligner.valid))
                sums[name] += batch_sums
                counts[name] += batch_counts
    if words == 0:
        raise ValueError("adapt_unlabeled needs at least one word of text")
    report: Dict[str, float] = {"words": words}
    for aligner in (decoder.pos, decoder.rel):
        aligner.add_language(lang)  # identity adaptors for a new language: its zero-shot solution
    for name, aligner in aligners.items():
        current, n = aligner.language_prototypes(lang), counts[name].unsqueeze(1)
        target = torch.where(n > 0, (sums[name] + settings.shrink * current) / (n + settings.shrink), current)
        aligner.adaptors[lang].prototype_shift.copy_(target - aligner.prototypes())
        report[f"{name}_confident"] = float(counts[name].sum()) / words
    if confident is not None and confident.pos and words >= settings.prior_min_words:
        decoder.priors[lang] = confident.priors(settings.prior_weights)
        report["prior_types"] = len(confident.pos)
    report["seconds"] = time.perf_counter() - start
    logger.info("adapt_unlabeled %s: %d words, %.0f%% confident (UPOS), %.1f s", lang, words,
                100 * report["pos_confident"], report["seconds"])
    return report


def _sources_beside(decoder: ConceptDecoder, support: FeatureSet, lang: str, settings: AdaptSettings, mode: str):
    """The weight of `lang`'s nearest sources' taggers and their weighted scores on the support words (0, None: none)."""
    if not settings.source_tagger_weight or mode == "phi":
        return 0.0, None
    unit = decoder.source_tag_scores(support.words, lang, 1.0)
    if unit is None:
        return 0.0, None
    weight = settings.source_tagger_weight
    if settings.source_tagger_words:  # what the support shows takes over as it grows
        weight *= max(0.0, 1.0 - support.n_words / settings.source_tagger_words)
    return (weight, weight * unit) if weight else (0.0, None)


def _fit_adaptor(aligner, adaptor: LanguageAdaptor, x: torch.Tensor, y: torch.Tensor, settings: AdaptSettings,
                 mode: str, offset: Optional[torch.Tensor] = None) -> float:
    """Refine the prototypes from the support set first (in the zero-shot space), then fit the adaptor towards them.
    `offset`: fixed scores added to the adaptor's (other experts' log-probabilities), so it learns beside them.

    Refining after fitting measured worse: the adaptor had already pulled the support words onto the source
    prototypes, and re-estimating the prototypes from those words undid part of what it learned.
    """
    hidden, target = _refine_prototypes(aligner, adaptor, x, y, settings)
    params = list((adaptor.outer if mode == "outer" else adaptor.linear).parameters())
    start = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    anchor_weight = settings.anchor_weight * max(1.0, settings.anchor_words / len(y))
    loss = torch.tensor(0.0)
    for _ in range(settings.steps):
        logits = -torch.cdist(adaptor(hidden), target).pow(2).masked_fill(~aligner.valid, -1e9)
        loss = torch.nn.functional.cross_entropy(logits if offset is None else logits + offset, y)
        anchor = anchor_weight * sum((p - p0).pow(2).sum() for p, p0 in zip(params, start))
        optimizer.zero_grad()
        (loss + anchor).backward()
        optimizer.step()
    return float(loss.detach())


def _refine_prototypes(aligner, adaptor: LanguageAdaptor, x: torch.Tensor, y: torch.Tensor, settings: AdaptSettings):
    """SharedProjection's hidden layer of the support words (frozen: computed once) and the prototypes to fit towards."""
    with torch.no_grad():
        hidden = aligner.phi.hidden(x)
        source = aligner.prototypes()
        target = aligner.support_prototypes(adaptor(hidden), y, settings.shrink) if settings.refine_prototypes else source
        adaptor.prototype_shift.copy_(target - source)
    return hidden, target


def _fit_phi(aligner, adaptor: LanguageAdaptor, x: torch.Tensor, y: torch.Tensor, settings: AdaptSettings) -> float:
    """A whole treebank: the language's own first layer (`inner_rank` corrections; 0 = a whole copy) and output
    layer of SharedProjection, in minibatch epochs towards refined prototypes.

    Measured on Wolof / Uyghur full training splits (test UPOS): 85.1 / 86.1 against 72.1 / 81.7 for 200 full-batch
    steps of the output layer alone, in a tenth of the time.
    """
    width = aligner.phi.inner.in_features
    _, target = _refine_prototypes(aligner, adaptor, x[:, :width], y, settings)
    adaptor.own_inner(aligner.phi, extra_inputs=x.shape[1] - width, rank=settings.inner_rank)
    params = [*adaptor.inner.parameters(), *adaptor.outer.parameters()]
    optimizer = torch.optim.Adam(params, lr=settings.phi_lr)
    generator = torch.Generator().manual_seed(0)
    loss = torch.tensor(0.0)
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(y), generator=generator).split(settings.batch_words):
            logits = -torch.cdist(adaptor(adaptor.hidden(x[batch], aligner.phi)), target).pow(2)
            loss = torch.nn.functional.cross_entropy(logits.masked_fill(~aligner.valid, -1e9), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return float(loss.detach())


def _fit_arcs_epochs(decoder: ConceptDecoder, support: FeatureSet, settings: AdaptSettings):
    """A whole treebank: the language's own arc scorer, from the multilingual one (+ a context layer), in epochs."""
    arcs = copy.deepcopy(decoder.arcs)
    if settings.arc_context and arcs.context is None:  # a multilingual context layer is fine-tuned, not replaced
        chars = settings.arc_chars if support.forms is not None else 0
        arcs.add_context(settings.arc_context, settings.arc_context_input, chars, settings.arc_context_layers,
                         settings.arc_char_buckets)
    if not settings.arc_train_mlps:
        for param in [*arcs.dep_mlp.parameters(), *arcs.head_mlp.parameters()]:
            param.requires_grad_(False)
    arcs.train()  # dropout on: many epochs over the language's own trees
    # the context layer also learns to tell the words' tags (a head dropped after training)
    tagger = (torch.nn.Linear(decoder.width, len(UPOS)) if settings.arc_tag_weight and arcs.context is not None
              and (support.upos >= 0).any() else None)
    params = [p for p in arcs.parameters() if p.requires_grad] + (list(tagger.parameters()) if tagger else [])
    optimizer = torch.optim.Adam(params, lr=settings.phi_lr)
    order = np.random.default_rng(0)
    loss = torch.tensor(0.0)
    for _ in range(settings.arc_epochs):
        ids = order.permutation(len(support))
        for i in range(0, len(ids), settings.batch_sentences):
            batch = support.select(ids[i : i + settings.batch_sentences])
            loss = decoder.arc_loss(arcs, batch, tagger, settings.arc_tag_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    arcs.eval()
    return arcs, float(loss.detach())


def _fit_arcs(decoder: ConceptDecoder, support: FeatureSet, settings: AdaptSettings):
    arcs = copy.deepcopy(decoder.arcs)
    arcs.eval()  # fine-tune without dropout: a few small steps from the multilingual scorer
    optimizer = torch.optim.Adam(arcs.parameters(), lr=settings.arc_lr)
    loss = torch.tensor(0.0)
    for _ in range(settings.arc_steps):
        loss = decoder.arc_loss(arcs, support)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return arcs, float(loss.detach())
