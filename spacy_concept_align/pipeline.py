"""The `concept_align` component: UPOS, heads and universal relations for text in any language.

The pipe is thin: the frozen encoder (spacy_concept_align.encoders) gives word vectors, the ConceptParser
(spacy_concept_align.model) turns them into predictions, and this module moves them in and out of Docs.
"""
import copy
import json
import logging
import shutil
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import spacy
import srsly
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from spacy.attrs import DEP, HEAD
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.util import registry
from spacy.vocab import Vocab
from thinc.api import Config, Model, PyTorchWrapper_v2

from .chars import is_blank, is_symbol
from .corpus import LANG_ATTR, doc_sentences, ensure_extensions, unannotated
from .encoders import OFFLINE_NAME, FrozenEncoder
from .encoders.bundle import is_bundle, save_encoder
from .features import FeatureSet
from .labels import DEPREL_ID, DEPRELS, UPOS, UPOS_ID, to_spacy_dep, universal_deprel
from .lexicon import PriorsByLanguage
from .model import ConceptParser
from .scoring import make_concept_scorer  # noqa: F401  (registers the scorer)

logger = logging.getLogger(__name__)

#: The trained default shipped inside the package (aligners, prototypes, arc scorer; not the encoder).
DEFAULT_WEIGHTS = Path(__file__).parent / "data" / "default"
#: Per-language word-form and relation priors beside the weights, when a language has any: {lang: gzipped JSON}.
PRIORS_FILE = "priors.msgpack"
#: Where a component saved with save_encoder = true keeps its encoder (spacy_concept_align.encoders.bundle).
ENCODER_DIR = "encoder"

# fmt: off
DEFAULT_MODEL_CONFIG = f"""
[model]
@architectures = "spacy-concept-align.ConceptAligner.v1"
pos_hidden = 256
pos_dim = 32
rel_hidden = 384
rel_dim = 64
arc_hidden = 256
dropout = 0.33
token_dropout = false
consistent_labels = true
joint_weight = 0.3
confidence_temperatures = [1.5, 1.15]

[model.encoder]
@architectures = "spacy-concept-align.FrozenEncoder.v1"
name = "{OFFLINE_NAME}"
layer = 6
pooling = "first"
batch_size = 32
max_length = 0
precision = "fp32"
"""
# fmt: on
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]


@registry.architectures("spacy-concept-align.ConceptAligner.v1")
def build_concept_aligner(encoder: FrozenEncoder, pos_hidden: int = 256, pos_dim: int = 32, rel_hidden: int = 384,
                          rel_dim: int = 64, arc_hidden: int = 256, dropout: float = 0.33,
                          token_dropout: bool = False, consistent_labels: bool = True,
                          joint_weight: float = 0.3, arc_context: int = 0, arc_context_input: int = 0,
                          confidence_temperatures: Sequence[float] = (1.0, 1.0)) -> Model:
    """The learned parts (UPOS aligner, relation aligner, arc scorer) as one thinc-wrapped torch module.

    encoder (FrozenEncoder): where word vectors come from; kept in model.attrs["encoder"].
    token_dropout (bool): drop whole token vectors, as the original code does, instead of single units.
    consistent_labels (bool): decode UPOS and relation jointly over the pairs UD allows (false: independently).
    joint_weight (float): weight of the relation's log-probabilities in that joint decision.
    arc_context (int): the multilingual arc scorer reads the words through a BiLSTM of this size (0 = none);
        arc_context_input: the vectors reduced to this size before it (0 = as they are).
    confidence_temperatures (Sequence[float]): softmax temperatures of the tag and head probabilities behind
        token._.concept_confidence (the default config's were fitted on the validation languages' dev splits).
    RETURNS (Model): a PyTorchWrapper whose shim holds the ConceptParser, so spaCy's optimizer can step it.
    """
    net = ConceptParser(encoder.width, pos_hidden, pos_dim, rel_hidden, rel_dim, arc_hidden, dropout, token_dropout,
                        consistent_labels, joint_weight, arc_context, arc_context_input, confidence_temperatures)
    model = PyTorchWrapper_v2(net)
    model.attrs["encoder"] = encoder
    return model


@Language.factory(
    "concept_align",
    assigns=["token.pos", "token.dep", "token.head", "token.is_sent_start", "doc.sents", "doc._.concept_confidences"],
    default_config={
        "model": DEFAULT_MODEL,
        "overwrite": True,
        "lang": None,
        "init_weights": "default",
        "save_encoder": False,
        "min_count": 10,
        "scorer": {"@scorers": "spacy-concept-align.scorer.v1"},
    },
    default_score_weights={"pos_acc": 0.5, "dep_las": 0.5, "dep_uas": 0.0, "dep_las_per_type": None},
)
def make_concept_align(nlp: Language, name: str, model: Model, overwrite: bool, lang: Optional[str],
                       init_weights: Optional[str], save_encoder: bool, min_count: int,
                       scorer: Optional[Callable]) -> "ConceptAlign":
    """Create a concept_align component.

    model (Model): from spacy-concept-align.ConceptAligner.v1.
    overwrite (bool): replace existing POS / parse annotation.
    lang (Optional[str]): language used when a doc does not name its own (doc._.concept_lang).
    init_weights (Optional[str]): "default" = the trained default shipped with the package, a path = a saved
        component directory, null = untrained (call nlp.initialize with gold examples, then train). Read on first
        use, unless from_disk (spacy.load) or initialize brings other weights first.
    save_encoder (bool): to_disk also writes the encoder (compact, self-contained), so that the saved pipeline and
        the package built from it load with no network and no cache.
    min_count (int): a class needs this many source examples to get a prototype at initialize.
    """
    pipe = ConceptAlign(nlp.vocab, model, name, overwrite=overwrite, lang=lang, min_count=min_count, scorer=scorer,
                        save_encoder=save_encoder)
    if init_weights:
        path = DEFAULT_WEIGHTS if init_weights == "default" else Path(init_weights)
        if (path / "model.safetensors").exists():
            pipe.pending_weights = path  # read on first use; what they were trained on is known at once
            pipe.cfg["meta"] = srsly.read_json(path / "cfg.json").get("meta", {}) if (path / "cfg.json").is_file() else {}
        else:
            logger.warning("concept_align: no trained weights at %s; the component needs nlp.initialize + training", path)
    return pipe


class ConceptAlign(TrainablePipe):
    """Tags (token.pos), parses (token.head, token.dep) by aligning frozen encoder states to universal concepts."""

    def __init__(self, vocab: Vocab, model: Model, name: str = "concept_align", *, overwrite: bool = True,
                 lang: Optional[str] = None, min_count: int = 10, scorer: Optional[Callable] = None,
                 save_encoder: bool = False):
        ensure_extensions()
        self.vocab, self.model, self.name, self.scorer = vocab, model, name, scorer
        encoder: FrozenEncoder = model.attrs["encoder"]
        self.cfg = {"overwrite": overwrite, "lang": lang, "min_count": min_count, "save_encoder": save_encoder,
                    "encoder": {"name": encoder.name, "layer": encoder.layer, "pooling": encoder.pooling}}
        self._warned_langs: set = set()
        #: Weights to read on first use (the factory's init_weights), unless from_disk or initialize comes first.
        self.pending_weights: Optional[Path] = None

    # -- parts ----------------------------------------------------------------------------------------------

    @property
    def net(self) -> ConceptParser:
        if self.pending_weights is not None:
            path, self.pending_weights = self.pending_weights, None
            self.load_weights(path)
        return self.model.shims[0]._model

    @property
    def encoder(self) -> FrozenEncoder:
        return self.model.attrs["encoder"]

    @property
    def is_initialized(self) -> bool:
        return bool(self.net.pos.valid.any())

    @property
    def languages(self) -> List[str]:
        """Languages with their own adaptor (from meta-training or few-shot adaptation)."""
        return self.net.languages

    # -- prediction -----------------------------------------------------------------------------------------

    def __call__(self, doc: Doc, lang: Optional[str] = None) -> Doc:
        """Annotate one doc; `lang` overrides the doc's and the component's language."""
        self.set_annotations([doc], self.predict([doc], lang=lang))
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128, lang: Optional[str] = None) -> Iterator[Doc]:
        stream = iter(stream)
        while batch := list(islice(stream, batch_size)):
            self.set_annotations(batch, self.predict(batch, lang=lang))
            yield from batch

    def predict(self, docs: Iterable[Doc], lang: Optional[str] = None) -> List[Tuple[np.ndarray, ...]]:
        """Per doc: UPOS ids, heads (doc-relative token indices), relation ids (-1 marks a blank token) and each
        word's confidence (P(tag) x P(head); NaN for blank tokens)."""
        docs = list(docs)
        if not self.is_initialized:
            raise ValueError(f"The {self.name} component has no prototypes yet: load trained weights "
                             "(init_weights = \"default\") or call nlp.initialize with gold examples.")
        results = [_blank_annotation(doc) for doc in docs]
        by_lang: Dict[Optional[str], List[Tuple[int, np.ndarray]]] = {}
        for i, doc in enumerate(docs):
            sentences = _sentence_words(doc)
            if sentences:
                by_lang.setdefault(self._language(doc, lang), []).extend((i, words) for words in sentences)
        for doc_lang, sents in by_lang.items():
            texts = [[docs[i][w].text for w in words] for i, words in sents]
            features = FeatureSet.from_vectors(self.encoder(texts))
            upos, heads, deprels, confidence = self.net.predict_with_confidence(
                features, doc_lang, [w for sent in texts for w in sent])
            for (i, words), start, end, text in zip(sents, features.offsets[:-1], features.offsets[1:], texts):
                doc_upos, doc_heads, doc_rels, doc_confidence = results[i]
                doc_confidence[words] = confidence[start:end].prod(1)
                doc_upos[words] = np.where([is_symbol(w) for w in text], UPOS_ID["SYM"], upos[start:end])
                doc_rels[words] = deprels[start:end]
                sent_heads = heads[start:end]  # 0 = root (a spaCy root is its own head), k = k-th word
                doc_heads[words] = np.where(sent_heads > 0, words[sent_heads - 1], words)
        return results

    def _language(self, doc: Doc, override: Optional[str]) -> Optional[str]:
        """Per-call override, else doc._.concept_lang, else the component's `lang`, else the pipeline's language
        (`spacy.blank("cy")`; silently zero-shot when it has no adaptation); unknown -> zero-shot (None)."""
        lang = override or doc._.get(LANG_ATTR) or self.cfg["lang"]
        if not lang:
            return self.vocab.lang if self.vocab.lang in self.languages else None
        if lang not in self.languages:
            if lang not in self._warned_langs:
                logger.warning("concept_align: no adaptor for language %r; using the zero-shot path", lang)
                self._warned_langs.add(lang)
            return None
        return lang

    def set_annotations(self, docs: Iterable[Doc], predictions: Sequence[Tuple[np.ndarray, ...]]) -> None:
        """Write POS, heads and relations (one tree per sentence; "ROOT" for the root, as spaCy does)."""
        strings = self.vocab.strings
        for doc, (upos, heads, deprels, confidence) in zip(docs, predictions):
            if not len(doc):
                continue
            doc._.concept_confidences = [None if np.isnan(c) else round(float(c), 4) for c in confidence]
            overwrite = self.cfg["overwrite"]
            keep_pos = not overwrite and doc.has_annotation("POS")
            keep_dep = not overwrite and doc.has_annotation("DEP")
            for token, tag in zip(doc, upos):
                if not (keep_pos and token.pos_):
                    token.pos_ = UPOS[tag] if tag >= 0 else "SPACE"
            if keep_dep:
                continue
            array = np.zeros((len(doc), 2), dtype="uint64")
            array[:, 0] = (heads - np.arange(len(doc))).astype("int64").astype("uint64")
            array[:, 1] = [strings.add(to_spacy_dep(DEPRELS[r]) if r >= 0 else "dep") for r in deprels]
            doc.from_array([HEAD, DEP], array)

    # -- training -------------------------------------------------------------------------------------------

    def initialize(self, get_examples: Callable[[], Iterable[Example]], *, nlp: Optional[Language] = None,
                   min_count: Optional[int] = None) -> None:
        """Prototypes from gold examples (the source language(s)); the aligners and arc scorer start fresh.

        get_examples (Callable[[], Iterable[Example]]): gold examples with POS and heads.
        """
        validate_get_examples(get_examples, "ConceptAlign.initialize")
        self.pending_weights = None
        features = self._gold_features(list(get_examples()))
        if features is None or not (features.upos >= 0).any():
            raise ValueError(f"{self.name}.initialize needs gold examples with POS and dependency annotation")
        self.net.set_prototypes(features, min_count or self.cfg["min_count"])

    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None,
               losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """One gradient step on the aligners (for the examples' languages) and the arc scorer."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "ConceptAlign.update")
        by_lang: Dict[Optional[str], List[Example]] = {}
        for eg in examples:
            by_lang.setdefault(self._language(eg.predicted, None), []).append(eg)
        self.net.train()
        for lang, group in by_lang.items():
            features = self._gold_features(group)
            if features is None:
                continue
            loss = sum(self.net.losses(features, lang).values())
            if not torch.isfinite(loss):
                raise ValueError(f"{self.name}: loss is not finite ({loss.item()})")
            loss.backward()
            losses[self.name] += float(loss.item())
        if sgd is not None:
            self.finish_update(sgd)
        return losses

    def adapt(self, examples: Iterable[Union[Example, Doc]], lang: str, **settings) -> Dict[str, float]:
        """Few-shot: teach `lang` from a few gold Examples (or annotated Docs); later docs in `lang` use it.

        examples: K annotated sentences (UD UPOS, heads and universal relations). lang (str): language code.
        settings: fields of spacy_concept_align.adapt.AdaptSettings (steps, lr, refine_prototypes, adapt_arcs, ...).
        RETURNS (Dict[str, float]): seconds taken and final losses. Raises ValueError (model unchanged) on bad input.
        """
        from .adapt import AdaptSettings, adapt_language

        examples = [eg if isinstance(eg, Example) else Example(unannotated(eg), eg) for eg in examples]
        _check_labels(examples)
        gold = self._gold_words(examples) if examples else None
        if gold is None:
            raise ValueError("adapt needs at least one non-empty annotated sentence")
        features, forms = gold
        report = adapt_language(self.net, features, lang, AdaptSettings(**settings), forms)
        self._warned_langs.discard(lang)
        logger.info("concept_align: adapted to %r from %d sentences in %.1f s", lang, len(features), report["seconds"])
        return report

    def adapt_unlabeled(self, texts: Iterable[Union[str, Doc]], lang: str, batch_size: int = 256,
                        **settings) -> Dict[str, float]:
        """Raw text of `lang`, no annotation: its prototypes move to where its own words lie (one k-means step from
        the current ones, confident words only); any earlier adaptation of `lang` is kept.

        texts: strings (split by spaCy's multi-language tokenizer) or Docs, of any number: read in batches.
        settings: fields of spacy_concept_align.adapt.UnlabeledSettings (confidence, shrink, relations).
        """
        from .adapt import UnlabeledSettings, adapt_unlabeled

        tokenizer = spacy.blank("xx").tokenizer

        def chunks():
            stream = iter(texts)
            while batch := list(islice(stream, batch_size)):
                docs = [tokenizer(t) if isinstance(t, str) else t for t in batch]
                words = [[doc[i].text for i in idx] for doc in docs for idx in _sentence_words(doc)]
                if words:
                    yield FeatureSet.from_vectors(self.encoder(words))

        report = adapt_unlabeled(self.net, chunks(), lang, UnlabeledSettings(**settings))
        self._warned_langs.discard(lang)
        return report

    def get_loss(self, examples: Iterable[Example], scores=None) -> Tuple[float, None]:
        """The summed losses of the examples (gradients flow through update, not through this)."""
        with torch.no_grad():
            features = self._gold_features(list(examples))
            return (float(sum(self.net.losses(features).values())) if features else 0.0), None

    def _gold_features(self, examples: List[Example]) -> Optional[FeatureSet]:
        """Encoder features of the examples' predicted docs, labelled from the aligned reference docs."""
        gold = self._gold_words(examples)
        return gold[0] if gold else None

    def _gold_words(self, examples: List[Example]) -> Optional[Tuple[FeatureSet, List[str]]]:
        """The gold features and, in the same order, the words' forms."""
        spans, labels = [], []
        for eg in examples:
            doc = eg.predicted
            if not len(doc):
                continue
            pos = eg.get_aligned("POS", as_string=True)
            heads, deps = eg.get_aligned_parse(projectivize=False)
            if not eg.reference.has_annotation("DEP"):  # no parse: spaCy reports every head as the word itself
                heads = [None] * len(heads)
            sents = _sentence_spans(eg.reference) if len(eg.reference) == len(doc) else _sentence_spans(doc)
            for sent in sents:
                span = doc[sent.start : sent.end]
                spans.append(span)
                for i in range(span.start, span.end):
                    head = heads[i]
                    inside = head is not None and span.start <= head < span.end
                    labels.append((
                        UPOS_ID.get(pos[i] or "", -1),
                        (0 if head == i else head - span.start + 1) if inside else -1,
                        DEPREL_ID.get(universal_deprel(deps[i] or ""), -1) if inside else -1,
                    ))
        if not spans:
            return None
        texts = [[t.text for t in s] for s in spans]
        features = FeatureSet.from_vectors(self.encoder(texts))
        array = np.array(labels, dtype=np.int64).reshape(-1, 3)
        features.upos[:], features.heads[:], features.deprels[:] = array[:, 0], array[:, 1], array[:, 2]
        return features, [form for sentence in texts for form in sentence]

    # -- serialization: safetensors + JSON, never pickle -----------------------------------------------------

    def _state(self) -> Tuple[dict, bytes, dict]:
        net = self.net
        # languages with their own first layers, and how many features beyond the vector each reads
        own_inner = {lang: [net.pos.extra_inputs(lang), net.rel.extra_inputs(lang), net.pos.adaptors[lang].inner_rank]
                     for lang in net.languages if net.pos.adaptors[lang].inner is not None}
        arc_context = {lang: arcs.context.sizes for lang, arcs in net.language_arcs.items() if arcs.context}
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        # A language's arc scorer stores only what it changed; the rest is the shared scorer's, filled in at load.
        arc_shared = {}
        for lang in net.language_arcs:
            prefix = f"language_arcs.{lang}."
            same = [k[len(prefix):] for k in list(state) if k.startswith(prefix)
                    and f"arcs.{k[len(prefix):]}" in state and torch.equal(state[k], state[f"arcs.{k[len(prefix):]}"])]
            for key in same:
                del state[prefix + key]
            if same:
                arc_shared[lang] = same
        cfg = dict(self.cfg, languages=self.languages, arc_languages=sorted(net.language_arcs), own_inner=own_inner,
                   arc_context=arc_context, arc_shared=arc_shared,
                   width=net.width, encoder_vocab=self.encoder.vocab_size)  # "meta": how it was trained
        return cfg, save_tensors(state), net.priors.packed()

    def _set_state(self, cfg: dict, weights: bytes, priors: dict, source: str = "weights") -> None:
        """Check everything first, then load: on any error the component is left as it was."""
        self._check_encoder(cfg, source)
        try:
            tensors = load_tensors(weights)
        except Exception as err:  # safetensors reports a truncated or foreign file as SafetensorError
            raise ValueError(f"{source}: not a readable safetensors file ({err})") from None
        for lang, keys in cfg.get("arc_shared", {}).items():
            tensors.update({f"language_arcs.{lang}.{key}": tensors[f"arcs.{key}"] for key in keys
                            if f"arcs.{key}" in tensors})
        try:
            PriorsByLanguage(priors)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        for net in (copy.deepcopy(self.net), self.net):  # a trial run on a copy, then the real one
            for lang in cfg.get("languages", []):
                net.add_language(lang)
            for lang, (pos_extra, rel_extra, *rank) in cfg.get("own_inner", {}).items():
                net.pos.adaptors[lang].own_inner(net.pos.phi, int(pos_extra), *rank)
                net.rel.adaptors[lang].own_inner(net.rel.phi, int(rel_extra), *rank)
            for lang in cfg.get("arc_languages", []):
                net.language_arcs[lang] = copy.deepcopy(net.arcs)
                if lang in cfg.get("arc_context", {}):
                    net.language_arcs[lang].add_context(*cfg["arc_context"][lang])
            try:
                net.load_state_dict(tensors, strict=True)
            except RuntimeError as err:
                problem = str(err).split("\n\t", 1)[-1].split("\n")[0]
                raise ValueError(f"{source}: the weights do not fit this component ({problem})") from None
            net.priors = PriorsByLanguage(priors)
        self.cfg["meta"] = cfg.get("meta", {})

    def _check_encoder(self, cfg: dict, source: str) -> None:
        """Weights only mean something on the encoder (model, layer, pooling) they were trained with."""
        saved, current = cfg.get("encoder", {}), self.cfg["encoder"]
        problems = [f"{key} {saved[key]!r} (now {current[key]!r})" for key in ("layer", "pooling")
                    if key in saved and saved[key] != current[key]]
        if cfg.get("width") not in (None, self.encoder.width):
            problems.append(f"{cfg['width']}-d vectors (now {self.encoder.width}-d)")
        if cfg.get("encoder_vocab") not in (None, self.encoder.vocab_size):
            problems.append(f"a {cfg['encoder_vocab']}-piece vocabulary (now {self.encoder.vocab_size})")
        if problems:
            raise ValueError(f"{source}: trained on encoder {saved.get('name', '?')!r} with {', '.join(problems)}; "
                             "set [components.concept_align.model.encoder] to the encoder the weights were trained on")
        if saved.get("name", current["name"]) != current["name"]:  # same shape: a copy of the model, or a sibling
            logger.warning("concept_align: weights were trained with encoder %r, now used with %r",
                           saved["name"], current["name"])

    def load_weights(self, path: Union[str, Path]) -> None:
        """Load a component directory written by to_disk (cfg.json + model.safetensors)."""
        path = Path(path)
        missing = [name for name in ("cfg.json", "model.safetensors") if not (path / name).is_file()]
        if missing:
            raise ValueError(f"{path}: not a saved concept_align component (missing {', '.join(missing)})")
        try:
            cfg = srsly.read_json(path / "cfg.json")
        except ValueError as err:
            raise ValueError(f"{path / 'cfg.json'}: not valid JSON ({err})") from None
        priors = {}
        if (path / PRIORS_FILE).is_file():
            try:
                priors = srsly.read_msgpack(path / PRIORS_FILE)
            except (ValueError, OSError) as err:
                raise ValueError(f"{path / PRIORS_FILE}: not a readable msgpack file ({err})") from None
        self._set_state(cfg, (path / "model.safetensors").read_bytes(), priors, str(path / "model.safetensors"))

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """cfg.json, model.safetensors, priors.msgpack and, with save_encoder, the encoder in ENCODER_DIR."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg, weights, priors = self._state()
        srsly.write_json(path / "cfg.json", cfg)
        (path / "model.safetensors").write_bytes(weights)
        if priors:
            srsly.write_msgpack(path / PRIORS_FILE, priors)
        elif (path / PRIORS_FILE).exists():
            (path / PRIORS_FILE).unlink()
        if self.cfg.get("save_encoder"):
            save_encoder(self.encoder, path / ENCODER_DIR)
        elif (path / ENCODER_DIR).exists():
            shutil.rmtree(path / ENCODER_DIR)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "ConceptAlign":
        """Weights from `path`; a saved encoder there (ENCODER_DIR) is used instead of resolving the encoder's name."""
        path = Path(path)
        self.pending_weights = None
        if is_bundle(path / ENCODER_DIR):
            self.encoder.use_files(path / ENCODER_DIR)
        self.load_weights(path)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        cfg, weights, priors = self._state()
        return srsly.msgpack_dumps({"cfg": json.dumps(cfg), "weights": weights, "priors": priors})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "ConceptAlign":
        try:
            data = srsly.msgpack_loads(bytes_data)
            cfg, weights, priors = json.loads(data["cfg"]), data["weights"], data.get("priors", {})
        except Exception as err:
            raise ValueError(f"{self.name}.from_bytes: not a serialized concept_align component ({err})") from None
        self._set_state(cfg, weights, priors, f"{self.name}.from_bytes")
        return self


def _check_labels(examples: Sequence[Example]) -> None:
    """Adaptation examples must speak UD: 17 UPOS tags, universal relations (subtypes are stripped)."""
    bad = set()
    for eg in examples:
        for token in eg.reference:
            if token.pos_ and token.pos_ not in UPOS_ID:
                bad.add(f"POS {token.pos_!r}")
            if token.dep_ and universal_deprel(token.dep_) not in DEPREL_ID:
                bad.add(f"relation {token.dep_!r}")
    if bad:
        raise ValueError(f"Labels outside the UD inventory: {', '.join(sorted(bad))} (expected UD UPOS and "
                         "universal relations; `root` or `ROOT` for the root)")


#: Longer stretches without a sentence boundary are parsed in pieces of this many words, each its own tree: hardly
#: any real sentence is this long, and arc scores and tree decoding grow with the square of the length.
LONGEST_TREE = 300


def _sentence_spans(doc: Doc) -> List[Span]:
    """The doc's sentences (corpus.doc_sentences), cut into pieces of at most LONGEST_TREE words."""
    sents = doc_sentences(doc)
    return [doc[start : min(start + LONGEST_TREE, s.end)] for s in sents for start in range(s.start, s.end, LONGEST_TREE)]


def _sentence_words(doc: Doc) -> List[np.ndarray]:
    """Token indices of each sentence's words (blank tokens left out), at most LONGEST_TREE per tree."""
    result = []
    for sent in doc_sentences(doc):
        words = np.array([t.i for t in sent if not is_blank(t.text)], dtype=np.int64)
        result += [words[start : start + LONGEST_TREE] for start in range(0, len(words), LONGEST_TREE)]
    return result


def _blank_annotation(doc: Doc) -> Tuple[np.ndarray, ...]:
    """What blank tokens get (no tag, no relation: -1), each hanging from the word before it (or after it)."""
    blank = np.array([is_blank(t.text) for t in doc], dtype=bool)
    heads = np.arange(len(doc))
    words = np.flatnonzero(~blank)
    if len(words) and blank.any():
        before = np.searchsorted(words, np.flatnonzero(blank)) - 1
        heads[blank] = words[np.maximum(before, 0)]
    return np.full(len(doc), -1, np.int64), heads, np.full(len(doc), -1, np.int64), np.full(len(doc), np.nan)
