"""Word identity: a type-level prior from a language's annotated sentences.

The frozen encoder's vectors know a word's context but blur its identity, and identity is what decides closed-class
words (articles, copulas, particles, adpositions) in a language the vectors transfer badly to. A Lexicon counts, per
word form, how often it carried each label in the language's annotated sentences, backs off to the lower-cased form,
then to suffixes (for words never seen), and gives smoothed log-probabilities that are added to the model's
log-probabilities (a product of experts, one weight per back-off level).

The same sentences also say how the language orders its words: how often a word of one tag takes a head of another
tag at each offset (`arc_counts`), a prior over heads the frozen vectors transfer badly.
"""
import gzip
import json
from collections import Counter, defaultdict
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

#: Longest suffix used for words never seen in the annotated sentences.
MAX_SUFFIX = 4


@dataclass
class PriorWeights:
    """How much the lexicon counts beside the model (0 = not at all), per back-off level.

    Chosen on the dev splits of wo, ug, cy, mt, te, vi after whole-treebank adaptation on their train splits (mean
    UPOS / LAS): no priors 87.8 / 62.6; these weights 91.6 / 63.6; form 2: 91.5 / 62.5; table weight 0-2 within 0.6 LAS.
    """

    form: float = 1.0  # the form (or its lower-cased form) was seen
    relation_form: Optional[float] = None  # ... for its relations (None: as `form`)
    suffix: float = 0.3  # only a suffix was seen
    table: float = 0.5  # relations: p(relation | dependent UPOS, head UPOS, direction)
    # arcs: log p(arc | dependent UPOS, head UPOS or root, offset), the language's word order, added to the arc
    # scores. Validation languages, K = 5 / 20 / 50 support sentences, 2 seeds, LAS: 49.9 / 52.4 / 54.1 without, 50.8 /
    # 54.3 / 56.4 at 0.3 (UAS +1.2 / +2.2 / +2.6), 50.4 / - / 56.6 at 0.5, - / 54.4 / - at 0.6, - / 53.9 / - at 1
    arcs: float = 0.3
    # heads: log p(head offset | the dependent's form), the word's own way of attaching (seen forms only). Validation,
    # K = 5 / 20 / 50, LAS with the arc table: +0.15 / +0.45 / +0.5 at 0.3 (K=20: +0.3 / +0.45 / +0.35 at 0.15 / 0.3 / 0.6)
    heads: float = 0.3
    # tags: log p(head | the sentence's tags, the language's typology) from the tag parser (tag_parser.py) at this weight
    # (few-shot: AdaptSettings.tag_parser_weight; zero-shot: the decoder's tag_parser_weight)
    tags: float = 0.0
    # tag_relations: log p(relation | the sentence's tags, the typology, the word's head) from the same parser (few-shot:
    # AdaptSettings.tag_relation_weight; zero-shot: the decoder's tag_relation_weight)
    tag_relations: float = 0.0
    # source_tags: the nearest sources' taggers (ConceptDecoder.source_tag_scores) at this weight, for a language whose
    # output layer was fitted beside them (few-shot: AdaptSettings.source_tagger_weight)
    source_tags: float = 0.0
    smoothing: float = 0.5  # pseudo-count spread over the classes (Dirichlet) before normalising


class Lexicon:
    """Label counts per word form for one label inventory (UPOS, or relations) of one language."""

    def __init__(self, n_classes: int, counts: Optional[Dict[str, Dict[int, int]]] = None):
        self.n_classes = n_classes
        self.counts: Dict[str, Dict[int, int]] = counts or {}
        self._lower: Dict[str, np.ndarray] = {}
        self._suffix: Dict[str, np.ndarray] = {}
        self._index()

    @classmethod
    def from_words(cls, forms: Iterable[str], labels: Iterable[int], n_classes: int) -> "Lexicon":
        """Counts of (form, label) pairs; labels < 0 (unknown) are skipped."""
        counts: Dict[str, Counter] = defaultdict(Counter)
        count_words(counts, forms, labels)
        return cls(n_classes, {form: dict(c) for form, c in counts.items()})

    def __len__(self) -> int:
        return len(self.counts)

    def _index(self) -> None:
        lower: Dict[str, np.ndarray] = {}
        suffix: Dict[str, np.ndarray] = {}
        for form, by_label in self.counts.items():
            vector = np.zeros(self.n_classes, np.float32)
            for label, n in by_label.items():
                vector[label] += n
            key = form.lower()
            lower[key] = lower.get(key, 0) + vector
            for k in range(1, min(MAX_SUFFIX, len(key) - 1) + 1):
                suffix[key[-k:]] = suffix.get(key[-k:], 0) + vector
        self._lower, self._suffix = lower, suffix

    def lookup(self, form: str) -> Tuple[Optional[np.ndarray], int]:
        """Label counts for a form and the back-off level they come from (0 form, 1 lower case, 2 suffix, 3 none)."""
        if form in self.counts:
            vector = np.zeros(self.n_classes, np.float32)
            for label, n in self.counts[form].items():
                vector[label] += n
            return vector, 0
        key = form.lower()
        if key in self._lower:
            return self._lower[key], 1
        for k in range(min(MAX_SUFFIX, len(key) - 1), 0, -1):
            if key[-k:] in self._suffix:
                return self._suffix[key[-k:]], 2
        return None, 3

    def log_prior(self, forms: Sequence[str], weights: PriorWeights) -> np.ndarray:
        """weight x log p(label | form) per word (n x n_classes); zero rows where nothing is known."""
        out = np.zeros((len(forms), self.n_classes), np.float32)
        for i, form in enumerate(forms):
            counts, level = self.lookup(form)
            weight = weights.form if level < 2 else weights.suffix
            if counts is None or weight == 0:
                continue
            p = (counts + weights.smoothing / self.n_classes) / (counts.sum() + weights.smoothing)
            out[i] = weight * np.log(p)
        return out

    # -- serialization (plain JSON-ready lists: never pickle) -----------------------------------------------

    def to_json(self) -> List[list]:
        return [[form, [[label, n] for label, n in sorted(by_label.items())]] for form, by_label in self.counts.items()]

    @classmethod
    def from_json(cls, data: List[list], n_classes: int) -> "Lexicon":
        counts = {}
        for form, pairs in data:
            if not isinstance(form, str) or any(not 0 <= int(label) < n_classes for label, _ in pairs):
                raise ValueError(f"lexicon entry {form!r}: labels outside 0..{n_classes - 1}")
            counts[form] = {int(label): int(n) for label, n in pairs}
        return cls(n_classes, counts)


def count_words(counts: Dict[str, Counter], forms: Iterable[str], labels: Iterable[int]) -> None:
    """Add (form, label) pairs to `counts`; labels < 0 (unknown) are skipped."""
    for form, label in zip(forms, labels):
        if label >= 0:
            counts[form][int(label)] += 1


class LanguagePriors:
    """What one language's annotated sentences say beyond the vectors: word forms' tags and relations (Lexicons)
    and how relations go with tags and direction: counts of (dependent UPOS, head UPOS or root, head to the right?,
    relation), so that the label of an arc agrees with the words it joins; and the arc table (`arc_counts`): which
    way, and how far, a word of each tag finds its head.
    """

    def __init__(self, pos: Lexicon, rel: Lexicon, table: np.ndarray, weights: Optional[PriorWeights] = None,
                 arc_table: Optional[np.ndarray] = None, heads: Optional[Lexicon] = None):
        self.pos, self.rel, self.table = pos, rel, np.asarray(table, np.float32)
        self.heads = heads or Lexicon(OFFSET_BUCKETS)  # word forms' head offsets (`head_offset_buckets`)
        self.weights = weights or PriorWeights()
        n_upos = self.table.shape[0]
        #: (candidate pairs, arcs) per (dependent UPOS, head UPOS or root, offset bucket): `arc_counts`
        self.arc_table = (np.zeros((n_upos, n_upos + 1, OFFSET_BUCKETS, 2), np.float32) if arc_table is None
                          else np.asarray(arc_table, np.float32))
        self._arc_log_p = arc_log_probabilities(self.arc_table)

    def arc_log_prior(self, upos: np.ndarray, offsets: np.ndarray,
                      forms: Optional[Sequence[str]] = None) -> Optional[List[np.ndarray]]:
        """Per sentence, for every (dependent, head column) pair (n x n + 1, column 0 = root): `weights.arcs` x log
        p(arc | dependent UPOS, candidate head's UPOS or root, offset), from the words' tags, + `weights.heads` x log
        p(offset | the dependent's form) where the form was seen. None when neither is known or weighted."""
        by_tags = bool(self.weights.arcs and self.arc_table.any())
        by_forms = forms is not None and bool(self.weights.heads and len(self.heads))
        if not (by_tags or by_forms):
            return None
        word_offsets = (self.heads.log_prior(forms, replace(self.weights, form=self.weights.heads, suffix=0.0))
                        if by_forms else None)
        out = []
        for start, end in zip(offsets[:-1], offsets[1:]):
            buckets = offset_buckets(end - start)
            prior = np.zeros(buckets.shape, np.float32)
            if by_tags:
                tags = np.asarray(upos[start:end], np.int64)
                head_tags = np.concatenate([[self.table.shape[0]], tags])
                prior += self.weights.arcs * self._arc_log_p[tags[:, None], head_tags[None, :], buckets]
            if by_forms:
                prior += word_offsets[start:end][np.arange(end - start)[:, None], buckets]
            out.append(prior)
        return out

    @classmethod
    def from_treebank(cls, forms: Sequence[str], upos: np.ndarray, heads: np.ndarray, deprels: np.ndarray,
                      offsets: np.ndarray, n_upos: int, n_rels: int, weights: Optional[PriorWeights] = None):
        """Counts from gold labels (-1 = unknown) of flat words, sentence `offsets` as in a FeatureSet."""
        counts = PriorCounts(n_upos, n_rels)
        counts.add(forms, upos, heads, deprels, offsets)
        return counts.priors(weights)

    def relation_form_prior(self, forms: Sequence[str]) -> np.ndarray:
        """The relation lexicon's log-probabilities (`Lexicon.log_prior`), seen forms at `weights.relation_form`."""
        form = self.weights.form if self.weights.relation_form is None else self.weights.relation_form
        return self.rel.log_prior(forms, replace(self.weights, form=form))

    def relation_log_prior(self, upos: np.ndarray, heads: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """log p(relation | dependent UPOS, head UPOS, direction) per word (n x n_rels), smoothed."""
        return relation_log_prior(self.table, upos, heads, offsets, self.weights.smoothing)

    def to_json(self) -> dict:
        nonzero = np.argwhere(self.table > 0)
        arcs = np.argwhere(self.arc_table > 0)
        return {"pos": self.pos.to_json(), "rel": self.rel.to_json(), "table_shape": list(self.table.shape),
                "table": [[*map(int, index), float(self.table[tuple(index)])] for index in nonzero],
                "arc_table": [[*map(int, index), float(self.arc_table[tuple(index)])] for index in arcs],
                "heads": self.heads.to_json(),
                "weights": vars(self.weights)}

    @classmethod
    def from_json(cls, data: dict) -> "LanguagePriors":
        shape = tuple(data["table_shape"])
        table = np.zeros(shape, np.float32)
        for *index, n in data["table"]:
            table[tuple(index)] = n
        arc_table = np.zeros((shape[0], shape[1], OFFSET_BUCKETS, 2), np.float32)
        for *index, n in data.get("arc_table", []):  # priors saved before arcs were counted have none
            arc_table[tuple(index)] = n
        return cls(Lexicon.from_json(data["pos"], shape[0]), Lexicon.from_json(data["rel"], shape[3]), table,
                   PriorWeights(**data.get("weights", {})), arc_table,
                   Lexicon.from_json(data.get("heads", []), OFFSET_BUCKETS))


class PriorCounts:
    """What LanguagePriors count, added a batch of labelled words at a time (raw text of any size, tagged by the
    model, is read in chunks)."""

    def __init__(self, n_upos: int, n_rels: int):
        self.pos: Dict[str, Counter] = defaultdict(Counter)
        self.rel: Dict[str, Counter] = defaultdict(Counter)
        self.heads: Dict[str, Counter] = defaultdict(Counter)
        self.table = np.zeros((n_upos, n_upos + 1, 2, n_rels), np.float32)
        self.arcs = np.zeros((n_upos, n_upos + 1, OFFSET_BUCKETS, 2), np.float32)

    def add(self, forms: Sequence[str], upos: np.ndarray, heads: np.ndarray, deprels: np.ndarray,
            offsets: np.ndarray) -> None:
        """Flat words' labels (-1 = unknown), sentence `offsets` as in a FeatureSet."""
        upos, heads, deprels = (np.asarray(a, np.int64) for a in (upos, heads, deprels))
        count_words(self.pos, forms, upos)
        count_words(self.rel, forms, np.where(heads >= 0, deprels, -1))
        self.table += relation_table(upos, heads, deprels, offsets, self.table.shape[0], self.table.shape[3])
        self.arcs += arc_counts(upos, heads, offsets, self.table.shape[0])
        count_words(self.heads, forms, head_offset_buckets(heads, offsets))

    def priors(self, weights: Optional[PriorWeights] = None) -> LanguagePriors:
        lexicon = lambda counts, n: Lexicon(n, {form: dict(c) for form, c in counts.items()})  # noqa: E731
        return LanguagePriors(lexicon(self.pos, self.table.shape[0]), lexicon(self.rel, self.table.shape[3]),
                              self.table, weights, self.arcs, lexicon(self.heads, OFFSET_BUCKETS))


def relation_table(upos: np.ndarray, heads: np.ndarray, deprels: np.ndarray, offsets: np.ndarray, n_upos: int,
                   n_rels: int) -> np.ndarray:
    """Counts of (dependent UPOS, head UPOS or root, head to the right?, relation) in gold labels (-1 = unknown)."""
    upos, heads, deprels = (np.asarray(a, np.int64) for a in (upos, heads, deprels))
    rels = np.where(heads >= 0, deprels, -1)
    table = np.zeros((n_upos, n_upos + 1, 2, n_rels), np.float32)
    head_upos, right = arc_context(upos, np.maximum(heads, 0), offsets, n_upos)
    ok = (upos >= 0) & (head_upos >= 0) & (rels >= 0)
    np.add.at(table, (upos[ok], head_upos[ok], right[ok], rels[ok]), 1)
    return table


def relation_log_prior(table: np.ndarray, upos: np.ndarray, heads: np.ndarray, offsets: np.ndarray,
                       smoothing: float = 0.5) -> np.ndarray:
    """log p(relation | dependent UPOS, head UPOS, direction) per word (n x n_rels) from a relation_table."""
    head_upos, right = arc_context(upos, heads, offsets, table.shape[0])
    counts = table[upos, np.maximum(head_upos, 0), right]
    return np.log((counts + smoothing / counts.shape[1]) / (counts.sum(1, keepdims=True) + smoothing))


#: Offset buckets of a (dependent, candidate head) pair: head <= -7, -6..-4, -3, -2, -1, +1, +2, +3, +4..+6, >= +7
#: words away, and the root.
OFFSET_BUCKETS = 11
_BUCKET_OF_OFFSET = np.array([0, 1, 1, 1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 8, 9])  # offsets -7..+7 (0 is never asked)


def offset_buckets(n: int) -> np.ndarray:
    """n x n + 1 offset bucket of every (dependent i, head column j) pair (column 0 = root, j = word j)."""
    offset = np.arange(n + 1)[None, :] - np.arange(1, n + 1)[:, None]
    buckets = _BUCKET_OF_OFFSET[np.clip(offset, -7, 7) + 7]
    buckets[:, 0] = OFFSET_BUCKETS - 1
    return buckets


def head_offset_buckets(heads: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each word's head offset bucket (`offset_buckets`; -1 where the head is unknown)."""
    heads = np.asarray(heads, np.int64)
    start = np.repeat(np.asarray(offsets[:-1], np.int64), np.diff(offsets))
    buckets = _BUCKET_OF_OFFSET[np.clip(heads - (np.arange(len(heads)) - start + 1), -7, 7) + 7]
    return np.where(heads < 0, -1, np.where(heads == 0, OFFSET_BUCKETS - 1, buckets))


def arc_counts(upos: np.ndarray, heads: np.ndarray, offsets: np.ndarray, n_upos: int) -> np.ndarray:
    """Candidate pairs and arcs per (dependent UPOS, head UPOS or root, offset bucket), in gold trees: how the
    language orders heads and dependents (words with unknown tags or heads are skipped)."""
    upos, heads = np.asarray(upos, np.int64), np.asarray(heads, np.int64)
    counts = np.zeros((n_upos, n_upos + 1, OFFSET_BUCKETS, 2), np.float32)
    for start, end in zip(offsets[:-1], offsets[1:]):
        n = end - start
        tags, gold = upos[start:end], heads[start:end]
        head_tags = np.concatenate([[n_upos], tags])
        buckets = offset_buckets(n)
        dep = np.repeat(np.arange(n), n + 1).reshape(n, n + 1)
        col = np.tile(np.arange(n + 1), (n, 1))
        ok = (tags[dep] >= 0) & (head_tags[col] >= 0) & (col != dep + 1) & (gold[dep] >= 0)
        np.add.at(counts, (tags[dep][ok], head_tags[col][ok], buckets[ok], 0), 1)
        arcs = np.flatnonzero((gold >= 0) & (tags >= 0) & (head_tags[np.maximum(gold, 0)] >= 0))
        np.add.at(counts, (tags[arcs], head_tags[gold[arcs]], buckets[arcs, gold[arcs]], 1), 1)
    return counts


def arc_log_probabilities(counts: np.ndarray, strength: float = 2.0) -> np.ndarray:
    """log p(arc | dependent UPOS, head UPOS, offset) from `arc_counts`, each level smoothed towards the next coarser
    one (dependent UPOS and offset, then offset alone) with `strength` pseudo-candidates."""
    candidates, arcs = counts[..., 0], counts[..., 1]
    by_offset = (arcs.sum((0, 1)) + 1e-3) / (candidates.sum((0, 1)) + 1e-2)
    by_dependent = (arcs.sum(1) + strength * by_offset) / (candidates.sum(1) + strength)
    p = (arcs + strength * by_dependent[:, None, :]) / (candidates + strength)
    return np.log(np.clip(p, 1e-6, 1.0)).astype(np.float32)


def arc_context(upos: np.ndarray, heads: np.ndarray, offsets: np.ndarray, n_upos: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per word: its head's UPOS (`n_upos` for the root, -1 if unknown) and whether the head is to its right."""
    upos, heads = np.asarray(upos, np.int64), np.asarray(heads, np.int64)
    start = np.repeat(np.asarray(offsets[:-1], np.int64), np.diff(offsets))
    position = np.arange(len(heads)) - start + 1
    head_upos = np.where(heads > 0, upos[np.maximum(start + heads - 1, 0)], n_upos)
    return head_upos, ((heads > position) & (heads > 0)).astype(np.int64)


class PriorsByLanguage(MutableMapping):
    """Languages' priors, kept packed (gzipped JSON) until a language is first used: loading a pipeline stays fast
    however many languages it knows (unpacking all 45 shipped ones took 6 s)."""

    def __init__(self, packed: Optional[Dict[str, bytes]] = None):
        for lang, data in (packed or {}).items():
            if not isinstance(lang, str) or not isinstance(data, bytes) or not data.startswith(b"\x1f\x8b"):
                raise ValueError(f"the priors of language {lang!r} are not gzipped JSON")
        self._packed: Dict[str, bytes] = dict(packed or {})
        self._open: Dict[str, LanguagePriors] = {}

    def __getitem__(self, lang: str) -> LanguagePriors:
        if lang not in self._open:
            if lang not in self._packed:
                raise KeyError(lang)
            try:
                self._open[lang] = LanguagePriors.from_json(json.loads(gzip.decompress(self._packed[lang])))
            except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
                raise ValueError(f"the priors of language {lang!r} are unreadable ({err})") from None
            del self._packed[lang]
        return self._open[lang]

    def __setitem__(self, lang: str, priors: LanguagePriors) -> None:
        self._packed.pop(lang, None)
        self._open[lang] = priors

    def __delitem__(self, lang: str) -> None:
        if lang not in self:
            raise KeyError(lang)
        self._packed.pop(lang, None)
        self._open.pop(lang, None)

    def __contains__(self, lang: object) -> bool:
        return lang in self._packed or lang in self._open

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._packed, *self._open}))

    def __len__(self) -> int:
        return len({*self._packed, *self._open})

    def packed(self) -> Dict[str, bytes]:
        """Every language's priors as gzipped JSON (reproducible bytes), without unpacking the unused ones."""
        out = dict(self._packed)
        for lang, priors in self._open.items():
            out[lang] = gzip.compress(json.dumps(priors.to_json()).encode("utf-8"), mtime=0)
        return dict(sorted(out.items()))
