"""The learned parts together: a UPOS aligner, a relation aligner and an arc scorer, over frozen word vectors.

Everything here works on FeatureSets (no spaCy, no encoder), so the pipe, meta-training, few-shot adaptation and
evaluation share one implementation of prediction and loss.
"""
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .aligner import ConceptAligner, TokenDropout
from .arcs import BiaffineArcScorer, decode_batch, pad_batch
from .batching import padded_batches
from .features import FeatureSet
from .inference import inference
from .concepts import as_one_layer, fit_linear, relation_vectors
from .consistency import joint_decode
from .labels import DEPRELS, ROOT_ID, UPOS
from .lexicon import (OFFSET_BUCKETS, LanguagePriors, Lexicon, PriorsByLanguage, PriorWeights, arc_context, arc_counts,
                      relation_log_prior, relation_table)
from .tag_parser import TYPOLOGY_FEATURES, TagParser, train_tag_parser
from .typology import nearest, syntax_features


def tensor(array: np.ndarray, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(np.asarray(array), dtype=dtype)  # a copy: cached features are read-only memory maps


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise probabilities from log-scores (n x classes)."""
    return np.exp(scores - np.logaddexp.reduce(scores, axis=1, keepdims=True))


@dataclass
class Support:
    """A meta-training episode's support set: its sentences, the weight of the query loss against prototypes
    re-estimated from them, and how strongly those are shrunk towards the source prototypes."""

    features: FeatureSet
    weight: float
    shrink: float


#: Per loss term: logits (..., classes), targets (same shape without the last axis; -1 = not counted), weight.
Scores = Dict[str, Tuple[torch.Tensor, torch.Tensor, float]]


def concept_loss(scores: Scores) -> Tuple[float, Dict[str, torch.Tensor]]:
    """The one training loss (the pipe's update and meta-training both use it): the weighted sum of each term's
    mean cross-entropy over its counted targets. RETURNS the loss and its gradient with respect to each logits."""
    leaves = {name: logits.detach().requires_grad_() for name, (logits, _, _) in scores.items()}
    total = torch.zeros(())
    for name, (logits, targets, weight) in scores.items():
        counted = targets.reshape(-1) >= 0
        if counted.any():
            rows = leaves[name].reshape(-1, logits.shape[-1])[counted].float()
            total = total + weight * nn.functional.cross_entropy(rows, targets.reshape(-1)[counted])
    if not torch.isfinite(total):
        raise ValueError(f"concept_align: the training loss is not finite ({total.item()})")
    if total.requires_grad:
        total.backward()
    return float(total.detach()), {name: leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                          for name, leaf in leaves.items()}


def known_labels(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Labels with -1 wherever the class is unknown or has no prototype."""
    return torch.where((labels >= 0) & valid[labels.clamp(min=0)], labels, torch.full_like(labels, -1))


#: Arc features a language's own relation layer reads beside the vectors: dependent UPOS (17), head UPOS or root
#: (18), head to the right (1), log distance (1).
STRUCTURE_FEATURES = len(UPOS) + len(UPOS) + 1 + 2


def arc_structure(upos: np.ndarray, heads: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per word: one-hot UPOS (zeros if unknown), one-hot head UPOS (or root), head to the right, log distance."""
    n, n_upos = len(heads), len(UPOS)
    upos, heads = np.asarray(upos, np.int64), np.maximum(np.asarray(heads, np.int64), 0)
    out = np.zeros((n, STRUCTURE_FEATURES), np.float32)
    head_upos, right = arc_context(np.maximum(upos, 0), heads, offsets, n_upos)
    known = upos >= 0
    out[np.flatnonzero(known), upos[known]] = 1
    out[np.arange(n), n_upos + head_upos] = 1
    out[:, -2] = right
    start = np.repeat(np.asarray(offsets[:-1], np.int64), np.diff(offsets))
    out[:, -1] = np.where(heads > 0, np.log1p(np.abs(heads - (np.arange(n) - start + 1))), 0)
    return out


def relation_features(words: np.ndarray, features: FeatureSet, heads: np.ndarray, upos: np.ndarray,
                      structure: bool = False, dependent: bool = False) -> np.ndarray:
    """h(head) - h(dependent) on `words` (the vectors, or the vectors in context), then optionally the dependent's
    vector and the arc's structure (`arc_structure`)."""
    differences = relation_vectors(words, features.roots, features.offsets, np.maximum(heads, 0))
    if not structure:
        return differences
    parts = [differences, words] if dependent else [differences]
    return np.concatenate([*parts, arc_structure(upos, heads, features.offsets)], axis=1)


class ConceptDecoder(nn.Module):
    """POS by nearest UPOS prototype, heads by a biaffine scorer + spanning tree, relations by nearest relation
    prototype of h(head) - h(dependent) on the predicted heads.
    """

    def __init__(self, width: int, pos_hidden: int = 256, pos_dim: int = 32, rel_hidden: int = 384,
                 rel_dim: int = 64, arc_hidden: int = 256, dropout: float = 0.33, token_dropout: bool = False,
                 consistent_labels: bool = True, joint_weight: float = 0.3, arc_context: int = 0,
                 arc_context_input: int = 0, confidence_temperatures: Sequence[float] = (1.0, 1.0),
                 relation_table_weight: float = 0.0, arc_batch_size: int = 64, arc_batch_cells: int = 1_000_000,
                 arc_distance: bool = False, projective: bool = True, word_order_sources: int = 3,
                 word_order_weight: float = 0.3, word_order_relation_weight: float = 0.25,
                 tag_parser_weight: float = 0.3, unnamed_tag_parser_weight: float = 0.15,
                 tag_relation_weight: float = 0.3, source_tagger_weight: float = 0.3):
        super().__init__()
        #: Each meta-training language's arc table (`lexicon.arc_counts`) and relation table (`relation_table`), per
        #: sentence, and its word-order typology (`typology.syntax_features`): a language named but with no priors of
        #: its own gets the mean tables of the `word_order_sources` most like it, the arc table at
        #: `word_order_weight`, the relation table at `word_order_relation_weight` (0 = not used): `word_order_prior`.
        self.word_order_sources, self.word_order_weight = word_order_sources, word_order_weight
        self.word_order_relation_weight = word_order_relation_weight
        self.register_buffer("source_arc_tables", torch.zeros(0, len(UPOS), len(UPOS) + 1, OFFSET_BUCKETS, 2))
        self.register_buffer("source_relation_tables", torch.zeros(0, len(UPOS), len(UPOS) + 1, 2, len(DEPRELS)))
        self.register_buffer("source_typology", torch.zeros(0, 0))
        #: ... and each one's own linear UPOS tagger on the vectors (`fit_linear`): such a language's UPOS scores also
        #: get the mean log-probabilities of the taggers of the same `word_order_sources` languages at
        #: `source_tagger_weight` (0 = not used): `source_tag_scores`.
        self.source_tagger_weight = source_tagger_weight
        self.register_buffer("source_taggers", torch.zeros(0, len(UPOS), width + 1))
        #: Decode trees without crossing arcs (Eisner) rather than any spanning tree (Chu-Liu/Edmonds).
        self.projective = projective
        #: Sentences, and padded (dependent, head) scores, per batch of the arc scorer at prediction: what bounds
        #: its memory (a 300-word tree alone is 90,300 cells).
        self.arc_batch_size, self.arc_batch_cells = arc_batch_size, arc_batch_cells
        #: How much p(relation | dependent UPOS, head UPOS, direction), counted on the meta-training languages,
        #: adds to the zero-shot path's relation scores (a language with its own priors uses its own table).
        self.relation_table_weight = relation_table_weight
        self.register_buffer("relation_table", torch.zeros(len(UPOS), len(UPOS) + 1, 2, len(DEPRELS)))
        #: Softmax temperatures of the tag and head probabilities reported as confidence (fitted on validation
        #: languages: unseen languages make the model over-confident at temperature 1).
        self.confidence_temperatures = tuple(float(t) for t in confidence_temperatures)
        self.width = width
        #: Decode UPOS and relation together over the pairs UD allows (consistency.COMPATIBLE), the relation's
        #: log-probabilities weighted by joint_weight (0: the relation adapts to the tag, never the reverse).
        self.consistent_labels, self.joint_weight = consistent_labels, joint_weight
        self.pos = ConceptAligner(width, pos_hidden, pos_dim, len(UPOS), dropout, token_dropout)
        self.rel = ConceptAligner(width, rel_hidden, rel_dim, len(DEPRELS), dropout, token_dropout)
        self.arcs = BiaffineArcScorer(width, arc_hidden, dropout, arc_distance)
        if arc_context:  # the multilingual arc scorer reads the words through a BiLSTM (arcs.WordContext)
            self.arcs.add_context(arc_context, arc_context_input)
        #: A language named but never seen also gets the heads its tags and typology suggest (tag_parser.py), at
        #: this weight (0 = no tag parser); a language adapted from a few sentences, its own fine-tuned copy's.
        #: A language not named (or whose typology is unknown) can get it too, with the sources' mean typology, at
        #: `unnamed_tag_parser_weight`: validation UAS / LAS 65.65 / 50.41 -> 65.95 / 50.63 at 0.15 (65.83 / 50.52 at
        #: 0.3), the 30 +0.55 / +0.4, for about 2% of the pipeline's words/s (bench).
        self.tag_parser_weight, self.unnamed_tag_parser_weight = tag_parser_weight, unnamed_tag_parser_weight
        #: ... and its relations given the tags and the heads, at `tag_relation_weight` (named or not; tag_parser.py).
        #: Validation dev LAS, named: 54.04 -> 54.15 at 0.15 or 0.3 (54.05 / 53.59 at 0.5 / 1) beside a heads-only
        #: parser; the shipped one, trained with its heads, 54.08 -> 54.20 at 0.3 (the 30: 39.7 -> 39.9). Not named (no
        #: sources' relation table there): 53.16 -> 53.59 / 53.75 / 53.69 / 53.54 at 0.15 / 0.3 / 0.5 / 0.75.
        self.tag_relation_weight = tag_relation_weight
        if tag_parser_weight or unnamed_tag_parser_weight or tag_relation_weight:
            self.arcs.tags = TagParser()
        self.language_arcs = nn.ModuleDict()  # arc scorers fine-tuned for one language (few-shot)
        self.priors = PriorsByLanguage()  # word forms' labels etc. from a language's own sentences

    def set_dropout(self, rate: float) -> None:
        """The dropout rate of every dropout layer (while training; inference never drops)."""
        for module in self.modules():
            if isinstance(module, (nn.Dropout, TokenDropout)):
                module.p = rate

    @property
    def languages(self):
        return self.pos.languages

    def add_language(self, lang: str) -> None:
        """Give `lang` its own (identity-initialised) adaptors in both concept spaces."""
        self.pos.add_language(lang)
        self.rel.add_language(lang)

    def language_parts(self, lang: str) -> tuple:
        """`lang`'s own parts: its UPOS and relation adaptors, its arc scorer and its priors (None where it has none)."""
        return (self.pos.adaptors[lang], self.rel.adaptors[lang], self.language_arcs[lang] if lang in self.language_arcs
                else None, self.priors[lang] if lang in self.priors else None)

    def set_language_parts(self, lang: str, parts: tuple) -> None:
        """Make `parts` (as `language_parts` gives them) `lang`'s own, replacing any it had."""
        self.pos.adaptors[lang], self.rel.adaptors[lang], arcs, priors = parts
        for own, new in ((self.language_arcs, arcs), (self.priors, priors)):
            if new is not None:
                own[lang] = new
            elif lang in own:
                del own[lang]

    def set_relation_table(self, features: FeatureSet) -> None:
        """Count how relations go with the tags they join and their direction, in gold-labelled features."""
        table = relation_table(features.upos, features.heads, features.deprels, features.offsets, len(UPOS), len(DEPRELS))
        self.relation_table.copy_(torch.from_numpy(table))

    def set_sources(self, pools: Dict[str, FeatureSet]) -> None:
        """Keep each gold-labelled language's arc and relation tables, UPOS tagger and typology (languages the
        typology lacks are left out): what a language named but never seen borrows from the languages most like it."""
        known = [(typology, f) for typology, f in ((syntax_features(lang), f) for lang, f in pools.items() if len(f))
                 if typology is not None]
        stack = lambda tables, empty: torch.from_numpy(np.stack(tables).astype(np.float32)) if tables else empty[:0]  # noqa: E731
        self.source_arc_tables = stack([arc_counts(f.upos, f.heads, f.offsets, len(UPOS)) / len(f) for _, f in known],
                                       self.source_arc_tables)
        self.source_relation_tables = stack([relation_table(f.upos, f.heads, f.deprels, f.offsets, len(UPOS),
                                                            len(DEPRELS)) / len(f) for _, f in known],
                                            self.source_relation_tables)
        self.source_typology = stack([typology for typology, _ in known], torch.zeros(0, 0))
        # minibatches of 4,096 words, weight decay 1e-5: about 1 s a language on one core
        taggers = [as_one_layer(fit_linear(f.words, f.upos, len(UPOS), 1e-5, 300, 4096)).numpy()
                   for _, f in known] if self.source_tagger_weight else []
        self.source_taggers = stack(taggers, self.source_taggers)

    def knows_sources(self, lang: Optional[str]) -> bool:
        """Whether the meta-training languages most like `lang` lend it something: their word order
        (`word_order_prior`) or their taggers (`source_tag_scores`). Cheap: a lookup."""
        return bool(self.word_order_weight or self.source_tagger_weight) and self._typology(lang) is not None

    def _typology(self, lang: Optional[str]) -> Optional[np.ndarray]:
        """`lang`'s syntax features when comparable with the sources' (else None)."""
        target = syntax_features(lang) if len(self.source_typology) else None
        return target if target is not None and target.shape[0] == self.source_typology.shape[1] else None

    def _nearest_sources(self, lang: Optional[str]) -> Optional[torch.Tensor]:
        """Rows of the `word_order_sources` meta-training languages most like `lang` (None: unknown or unnamed)."""
        target = self._typology(lang)
        if target is None:
            return None
        return torch.from_numpy(nearest(target, self.source_typology.float().numpy(), self.word_order_sources))

    def source_tag_scores(self, words: np.ndarray, lang: Optional[str],
                          weight: Optional[float] = None) -> Optional[np.ndarray]:
        """`weight` (default `source_tagger_weight`) x the mean UPOS log-probabilities of the taggers of the
        meta-training languages most like `lang` (None when there are none). Validation dev UPOS, zero-shot: 81.69 ->
        81.98 (3 taggers at 0.3; 1 / 5 / 10 taggers 81.94 / 81.85 / 81.84; 3 at 0.15 / 0.6: 81.95 / 81.86); the taggers
        of the specialised languages' whole in-language models instead gave as much (81.98, 10 of them) for ten context
        passes."""
        weight = self.source_tagger_weight if weight is None else weight
        chosen = self._nearest_sources(lang) if weight else None
        if chosen is None or len(self.source_taggers) != len(self.source_typology):
            return None
        taggers = self.source_taggers[chosen].float()  # k x UPOS x (width + 1): weights, then the bias
        scores = torch.einsum("nd,kcd->knc", tensor(words), taggers[:, :, :-1]) + taggers[:, None, :, -1]
        return weight * torch.log_softmax(scores, -1).mean(0).numpy()

    def word_order_prior(self, lang: Optional[str]) -> Optional[LanguagePriors]:
        """Priors of the word order for `lang`: the arc and relation tables of the meta-training languages most like
        it in URIEL's syntax features, as if counted on 500 of their sentences. None when `lang` is unknown or unnamed.
        The relation table at 0 / 0.25 / 0.5 / 1 (with the 3 nearest's arc table at 0.3): LAS 50.84 / 51.35 / 51.05 /
        50.28, UPOS 80.30 / 80.28 / 80.24 / 80.16 (all 26 languages' relation table at 0.25: 51.17).

        Validation languages' dev splits, zero-shot (UAS / LAS): 65.65 / 50.41 without; all 26 languages' table at
        0.15 / 0.3: 65.75 / 50.51, 65.61 / 50.45; the 5 nearest at 0.3: 65.99 / 50.66; the 3 nearest at 0.15 / 0.3 /
        0.5: 66.17 / 50.77, 66.24 / 50.82, 66.01 / 50.67.
        """
        tables = self.source_tables(lang)
        if tables is None:
            return None
        arcs, relations = tables
        return LanguagePriors(Lexicon(len(UPOS)), Lexicon(len(DEPRELS)), relations,
                              PriorWeights(arcs=self.word_order_weight, heads=0.0, table=self.word_order_relation_weight,
                                           tags=self.tag_parser_weight, tag_relations=self.tag_relation_weight),
                              arc_table=arcs)

    def source_tables(self, lang: Optional[str], sentences: float = 500.0) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """The arc and relation tables (`arc_counts`, `relation_table`) of the meta-training languages nearest to
        `lang`, averaged and scaled as if counted on `sentences` sentences; None when `lang` is unknown or unnamed."""
        chosen = self._nearest_sources(lang) if self.word_order_weight else None
        if chosen is None:
            return None
        mean = lambda tables: sentences * tables[chosen].float().mean(0).numpy()  # noqa: E731
        relations = (mean(self.source_relation_tables) if len(self.source_relation_tables) == len(self.source_typology)
                     else np.zeros(self.relation_table.shape, np.float32))
        return mean(self.source_arc_tables), relations

    def fit_tag_parser(self, pools: Dict[str, FeatureSet]) -> None:
        """Train the tag parser on the gold trees of the languages whose typology is known."""
        known = {lang: (f, typology) for lang, f in pools.items() if (typology := syntax_features(lang)) is not None}
        self.arcs.tags = train_tag_parser(known).to(self.arcs.U.device)
        for arcs in self.language_arcs.values():  # languages adapted before keep theirs; others share this one
            if arcs.tags is None:
                arcs.tags = self.arcs.tags

    def tag_parser_typology(self, lang: Optional[str]) -> np.ndarray:
        """`lang`'s syntax features for the tag parser; a language the typology lacks gets the sources' mean."""
        known = syntax_features(lang)
        if known is not None:
            return known
        if len(self.source_typology):
            return self.source_typology.float().mean(0).numpy()
        return np.zeros(TYPOLOGY_FEATURES, np.float32)

    def tag_arc_prior(self, upos: np.ndarray, offsets: np.ndarray, lang: Optional[str], weight: float,
                      reading: Optional[list] = None) -> Optional[List[np.ndarray]]:
        """Per sentence, `weight` x log p(head | tags, typology) from `lang`'s tag parser; None if it has none.
        upos: tag ids, or the tagger's probabilities (words x UPOS; what prediction gives it). reading: the parser's
        `read` of these inputs, if already computed."""
        parser = self.arc_scorer(lang).tags
        if not weight or parser is None:
            return None
        return [weight * p for p in parser.log_probs(upos, offsets, self.tag_parser_typology(lang), reading=reading)]

    def tag_relation_prior(self, upos: np.ndarray, heads: np.ndarray, offsets: np.ndarray, lang: Optional[str],
                           weight: float, reading: Optional[list] = None) -> Optional[np.ndarray]:
        """`weight` x log p(relation | tags, typology, head) from `lang`'s tag parser, words x relations; None if it
        has none (or one saved before it labelled). reading: as `tag_arc_prior`'s."""
        parser = self.arc_scorer(lang).tags
        if not weight or parser is None or parser.relations is None:
            return None
        return weight * parser.relation_log_probs(upos, heads, offsets, self.tag_parser_typology(lang), reading=reading)

    def set_prototypes(self, features: FeatureSet, min_count: int = 1) -> None:
        """Prototypes = class means of gold-labelled source features (UPOS on words, relations on head - dep)."""
        if not (features.upos >= 0).any() or not (features.heads >= 0).any():
            raise ValueError("Prototypes need examples with gold UPOS and heads; none were given")
        self.pos.set_prototypes(tensor(features.words), tensor(features.upos, torch.long), min_count)
        deprels = np.where(features.heads >= 0, features.deprels, -1)
        self.rel.set_prototypes(tensor(features.relation_vectors()), tensor(deprels, torch.long), min_count)

    def forward(self, features: FeatureSet, support: Optional["Support"] = None):
        """Training: the scores of every loss term (`training_scores`). Inference: `predict_with_confidence` on
        the language and forms the features carry (what the Thinc model's predict returns)."""
        if self.training:
            return self.training_scores(features, support)
        return self.predict_with_confidence(features, features.lang, features.forms)

    def training_scores(self, features: FeatureSet, support: Optional["Support"] = None) -> "Scores":
        """Logits and gold targets (-1: not counted) of UPOS, relations (on the gold heads) and heads, for
        `features.lang`; with a support set (meta-training episodes), UPOS and relations also against prototypes
        re-estimated from it (what few-shot adaptation does at test time)."""
        lang = features.lang
        # relations read what they read at prediction (a language's own layer may read context and structure)
        words, relations = tensor(self.pos_inputs(features, lang)), tensor(self.relation_inputs(features, features.heads, features.upos, lang))
        upos = known_labels(tensor(features.upos, torch.long), self.pos.valid)
        deprels = known_labels(tensor(np.where(features.heads >= 0, features.deprels, -1), torch.long), self.rel.valid)
        scores = {"pos": (self.pos.logits(words, lang), upos, 1.0), "rel": (self.rel.logits(relations, lang), deprels, 1.0)}
        if (features.heads >= 0).any():
            arc_words, roots, mask = self._padded(features)
            gold = torch.full(mask.shape, -1, dtype=torch.long)
            for row, (start, end) in enumerate(self._spans(features)):
                gold[row, : end - start] = tensor(features.heads[start:end], torch.long)
            arc_scores = self.arc_scorer(lang)(arc_words, roots, mask, self._sentence_forms(features))
            scores["arc"] = (arc_scores, gold.masked_fill(~mask, -1), 1.0)
        if support is not None and support.weight > 0 and len(support.features):
            s = support.features
            s_deprels = np.where(s.heads >= 0, s.deprels, -1)
            for name, aligner, s_x, s_y, q_x, q_y in (
                    ("pos", self.pos, tensor(s.words), tensor(s.upos, torch.long), words, upos),
                    ("rel", self.rel, tensor(s.relation_vectors()), tensor(s_deprels, torch.long), relations, deprels)):
                refined = aligner.support_prototypes(aligner.embed(s_x), known_labels(s_y, aligner.valid), support.shrink)
                scores[f"{name}_support"] = (aligner.logits(q_x, prototypes=refined), q_y, support.weight)
        return scores

    def inference(self):
        """No gradients and no dropout for the duration; the previous mode is restored after."""
        return inference(self)

    def predict(self, features: FeatureSet, lang: Optional[str] = None,
                forms: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """UPOS ids, heads (0 = root, one root per sentence, always a tree) and relation ids for every word.

        forms: the words' forms; with them, `lang`'s priors (if it has any) are added to the model's scores.
        """
        return self.predict_with_confidence(features, lang, forms)[:3]

    def predict_with_confidence(self, features: FeatureSet, lang: Optional[str] = None,
                                forms: Optional[Sequence[str]] = None) -> Tuple[np.ndarray, ...]:
        """`predict`'s three arrays, then each word's (probability of its tag, probability of its head): n x 2."""
        priors = self.priors.get(lang) if forms is not None else None
        if forms is not None and features.forms is None:  # a language's own arc scorer may read them
            features = replace(features, forms=list(forms))
        with self.inference():
            # a language's own parts read its words in context (computed once here)
            context = self.contextual_words(features, lang) if lang in self.language_arcs else None
            pos_scores = torch.log_softmax(self.pos.logits(tensor(self.pos_inputs(features, lang, context)), lang), -1).numpy()
            own = priors is not None or lang in self.priors
            if priors is not None:
                pos_scores = pos_scores + priors.pos.log_prior(forms, priors.weights)
            upos = pos_scores.argmax(-1)
            # a language named but with no priors of its own (never seen, or seen only through a little raw text):
            # its nearest sources' taggers join the tag decision; the structure below reads the aligner's tags, as
            # validated (the 30 lose 0.4 UAS when it reads these). A language with priors hears them only if its
            # output layer was fitted beside them (PriorWeights.source_tags): added to an adaptation fitted without
            # them, they cost UPOS (validation K=20 -0.75).
            sources_weight = self.priors[lang].weights.source_tags if own else self.source_tagger_weight
            by_sources = self.source_tag_scores(features.words, lang, sources_weight)
            tag_scores = pos_scores if by_sources is None else pos_scores + by_sources
            order = priors if own else self.word_order_prior(lang)
            arc_prior = order.arc_log_prior(upos, features.offsets, forms) if order is not None else None
            tag_weight = (order.weights.tags if order is not None
                          else 0.0 if lang in self.language_arcs else self.unnamed_tag_parser_weight)
            relation_weight = (order.weights.tag_relations if order is not None
                               else 0.0 if lang in self.language_arcs else self.tag_relation_weight)
            # the tag parser reads the tagger's distribution, not just its first guess (tag_parser.py), once for both
            tag_dist = _softmax(pos_scores) if tag_weight or relation_weight else upos
            parser = self.arc_scorer(lang).tags
            reading = (parser.read(tag_dist, features.offsets, self.tag_parser_typology(lang))
                       if parser is not None and (tag_weight or relation_weight) else None)
            by_tags = self.tag_arc_prior(tag_dist, features.offsets, lang, tag_weight, reading)
            if by_tags is not None:
                arc_prior = by_tags if arc_prior is None else [a + b for a, b in zip(arc_prior, by_tags)]
            heads, head_p = self.heads_with_probabilities(features, lang, self.confidence_temperatures[1],
                                                          arc_prior=arc_prior)
            relations = self.relation_inputs(features, heads, upos, lang, context)
            rel_scores = torch.log_softmax(self.rel.logits(tensor(relations), lang), -1).numpy()
        if priors is not None:
            rel_scores = rel_scores + priors.relation_form_prior(forms)
        labels_by_tags = self.tag_relation_prior(tag_dist, heads, features.offsets, lang, relation_weight, reading)
        if labels_by_tags is not None:
            rel_scores = rel_scores + labels_by_tags
        if order is not None and order.weights.table and order.table.any():  # its own relation table, or its sources'
            rel_scores = rel_scores + order.weights.table * order.relation_log_prior(upos, heads, features.offsets)
        elif priors is None and self.relation_table_weight and self.relation_table.any():
            rel_scores = rel_scores + self.relation_table_weight * relation_log_prior(
                self.relation_table.numpy(), upos, heads, features.offsets)
        # The root's label is "root"; no other word may take it.
        is_root = (heads == 0)[:, None]
        rel_scores = np.where(is_root == (np.arange(len(DEPRELS)) == ROOT_ID)[None], rel_scores, -np.inf)
        deprels = rel_scores.argmax(-1)
        if self.consistent_labels:
            upos, deprels = joint_decode(tag_scores, self.joint_weight * rel_scores)
        else:
            upos = tag_scores.argmax(-1)
        # confidence from the experts' weighted geometric mean (a plain sum of log-probabilities is over-confident:
        # word-level ECE on the 30 2.0 -> 6.6 points)
        pooled = tag_scores if by_sources is None else tag_scores / (1 + sources_weight)
        tag_p = _softmax(pooled / self.confidence_temperatures[0])[np.arange(len(upos)), upos]
        return upos, heads, deprels, np.stack([tag_p, head_p], axis=1).astype(np.float32)

    def pos_inputs(self, features: FeatureSet, lang: Optional[str] = None,
                   context: Optional[np.ndarray] = None) -> np.ndarray:
        """What the UPOS aligner reads: the vectors, then, if `lang`'s own first layer reads them, the vectors in
        context (`context`: `contextual_words` if already computed)."""
        if not self.pos.extra_inputs(lang):
            return np.asarray(features.words, np.float32)
        context = self.contextual_words(features, lang) if context is None else context
        return np.concatenate([np.asarray(features.words, np.float32), context], axis=1)

    def relation_inputs(self, features: FeatureSet, heads: np.ndarray, upos: np.ndarray,
                        lang: Optional[str] = None, context: Optional[np.ndarray] = None) -> np.ndarray:
        """What the relation aligner reads: h(head) - h(dependent) (on the words as `lang`'s arc scorer sees them,
        in context if it has a context layer), then, if `lang`'s own first layer reads more, the structure of the
        arc: the dependent's vector, its UPOS, its head's UPOS (or root), direction and log distance.
        """
        extra = self.rel.extra_inputs(lang)
        # Multilingual relations were learned on the vectors; a language's own relation layer on its arc scorer's.
        words = features.words
        if lang in self.language_arcs:
            words = self.contextual_words(features, lang) if context is None else context
        return relation_features(np.asarray(words, np.float32), features, heads, upos, structure=extra > 0,
                                 dependent=extra == self.width + STRUCTURE_FEATURES)

    def contextual_words(self, features: FeatureSet, lang: Optional[str] = None, batch_size: Optional[int] = None,
                         arcs: Optional[BiaffineArcScorer] = None) -> np.ndarray:
        """The word vectors through the context layer of `arcs` (default: `lang`'s arc scorer); the vectors
        themselves when it has none."""
        context = (arcs if arcs is not None else self.arc_scorer(lang)).context
        if context is None:
            return np.asarray(features.words, np.float32)
        out = np.zeros((features.n_words, self.width), np.float32)
        with self.inference():
            batch_size = batch_size or self.arc_batch_size
            for start in range(0, len(features), batch_size):
                ids = range(start, min(start + batch_size, len(features)))
                batch = features.select(ids)
                words, _, mask = self._padded(batch)
                out[features.offsets[ids.start] : features.offsets[ids.stop]] = \
                    context(words, mask, self._sentence_forms(batch))[mask].numpy()
        return out

    def predict_heads(self, features: FeatureSet, lang: Optional[str] = None, batch_size: Optional[int] = None,
                      max_cells: Optional[int] = None) -> np.ndarray:
        """Heads from the arc scorer (`lang`'s own, if it was adapted), decoded into one tree per sentence.

        Batches hold at most `batch_size` sentences and `max_cells` padded (dependent, head) scores (default: the
        decoder's `arc_batch_size` and `arc_batch_cells`).
        """
        return self.heads_with_probabilities(features, lang, batch_size=batch_size, max_cells=max_cells)[0]

    def heads_with_probabilities(self, features: FeatureSet, lang: Optional[str] = None, temperature: float = 1.0,
                                 batch_size: Optional[int] = None, max_cells: Optional[int] = None,
                                 arc_prior: Optional[Sequence[np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """`predict_heads`, and the arc scorer's probability (softmax at `temperature` over the candidate heads) of
        each word's chosen head, from the same scores; `arc_prior` (per sentence, n x n + 1) is added to them."""
        arcs = self.arc_scorer(lang)
        heads = np.zeros(features.n_words, dtype=np.int64)
        probabilities = np.zeros(features.n_words, dtype=np.float32)
        spans = self._spans(features)
        cells = [(end - start) * (end - start + 1) for start, end in spans]
        with self.inference():
            for batch in padded_batches(cells, batch_size or self.arc_batch_size, max_cells or self.arc_batch_cells):
                selected = features.select(batch)
                words, roots, mask = self._padded(selected)
                scores = arcs(words, roots, mask, self._sentence_forms(selected))
                if arc_prior is not None:
                    scores = scores.clone()
                    for row, prior in enumerate(arc_prior[batch.start : batch.stop]):
                        scores[row, : len(prior), : len(prior) + 1] += torch.from_numpy(prior)
                trees = decode_batch(scores, mask, self.projective)
                probs = torch.softmax(scores / temperature, -1)
                for row, ((start, end), tree) in enumerate(zip(spans[batch.start : batch.stop], trees)):
                    heads[start:end] = tree
                    probabilities[start:end] = probs[row, np.arange(end - start), tree].numpy()
        return heads, probabilities

    def arc_loss(self, arcs: BiaffineArcScorer, features: FeatureSet, tagger: Optional[nn.Module] = None,
                 tag_weight: float = 0.0) -> torch.Tensor:
        """Head-selection cross-entropy of `arcs` over the words with a known gold head; with a `tagger` (the words in
        `arcs`' context -> UPOS logits), plus `tag_weight` x its cross-entropy over the words with a known UPOS."""
        words, roots, mask = self._padded(features)
        gold = torch.zeros(mask.shape, dtype=torch.long)
        tags = torch.full(mask.shape, -1, dtype=torch.long)
        for row, (start, end) in enumerate(self._spans(features)):
            gold[row, : end - start] = tensor(features.heads[start:end], torch.long)
            tags[row, : end - start] = tensor(features.upos[start:end], torch.long)
        if arcs.context is not None:
            words = arcs.context(words, mask, self._sentence_forms(features))
        loss = arcs.loss(arcs.score(words, roots, mask), gold.clamp(min=0), mask & (gold >= 0))
        known = mask & (tags >= 0)
        if tagger is not None and known.any():
            loss = loss + tag_weight * nn.functional.cross_entropy(tagger(words[known]), tags[known])
        return loss

    def arc_scorer(self, lang: Optional[str] = None) -> BiaffineArcScorer:
        return self.language_arcs[lang] if lang in self.language_arcs else self.arcs

    @staticmethod
    def _spans(features: FeatureSet):
        return list(zip(features.offsets[:-1], features.offsets[1:]))

    def _sentence_forms(self, features: FeatureSet) -> Optional[List[List[str]]]:
        if features.forms is None:
            return None
        return [features.forms[start:end] for start, end in self._spans(features)]

    def _padded(self, features: FeatureSet):
        sentences = [np.asarray(features.words[a:b], np.float32) for a, b in self._spans(features)]
        return pad_batch(sentences, list(np.asarray(features.roots, np.float32)))
