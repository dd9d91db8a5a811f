"""The `concept_align` component: UPOS, heads and universal relations for text in any language.

A thin pipe over its Thinc model (architecture.py): docs.py turns Docs into Sentences of one language, the model
predicts or learns, and the pipe writes predictions into the Docs; weights come from from_disk or initialize.
"""
import json
import logging
import shutil
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import srsly
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Model, set_dropout_rate

from .architecture import DEFAULT_MODEL, get_decoder, get_encoder, reset_decoder
from .corpus import LANG_ATTR, ensure_extensions
from .decoder import ConceptDecoder, concept_loss
from .docs import (LONGEST_TREE, Annotation, annotated_sentences, blank_annotation, by_language, gold_sentences,
                   raw_sentences, scatter, write_annotation)
from .encoders import FrozenEncoder
from .encoders.bundle import is_bundle, save_encoder
from .features import Sentences
from .scoring import make_concept_scorer  # noqa: F401  (registers the scorer)
from .weights import (WEIGHTS_FILE, check_encoder, component_state, load_component_state, read_component,
                      write_component)

logger = logging.getLogger(__name__)

#: The trained default shipped inside the package (the decoder's weights; not the encoder).
DEFAULT_WEIGHTS = Path(__file__).parent / "data" / "default"
#: Where a component saved with save_encoder = true keeps its encoder (spacy_concept_align.encoders.bundle).
ENCODER_DIR = "encoder"


@Language.factory(
    "concept_align",
    assigns=["token.pos", "token.dep", "token.head", "token.is_sent_start", "doc.sents", "doc._.concept_confidences"],
    default_config={"model": DEFAULT_MODEL, "overwrite": True, "lang": None, "save_encoder": False, "min_count": 10,
                    "longest_tree": LONGEST_TREE, "adapt": {}, "adapt_unlabeled": {},
                    "scorer": {"@scorers": "spacy-concept-align.scorer.v1"}},
    default_score_weights={"pos_acc": 0.5, "dep_las": 0.5, "dep_uas": 0.0, "dep_las_per_type": None},
)
def make_concept_align(nlp: Language, name: str, model: Model, overwrite: bool, lang: Optional[str],
                       save_encoder: bool, min_count: int, longest_tree: int, adapt: dict, adapt_unlabeled: dict,
                       scorer: Optional[Callable], init_weights: Optional[str] = None) -> "ConceptTaggerParser":
    """Create a concept_align component (no weights yet: spacy.load, initialize, or the shipped default on first use).

    model (Model): from spacy-concept-align.TaggerParser.v1. overwrite (bool): replace existing POS / parse.
    lang (Optional[str]): language used when a doc does not name its own (doc._.concept_lang).
    save_encoder (bool): to_disk also writes the encoder (compact), so the saved pipeline loads with no network.
    min_count (int): a class needs this many examples to get a prototype at initialize.
    longest_tree (int): longer stretches without a sentence boundary are parsed in pieces of this many words.
    adapt, adapt_unlabeled (dict): defaults for those methods (fields of adapt.AdaptSettings / UnlabeledSettings).
    init_weights: ignored; kept so that pipelines saved by 0.1.0, whose configs set it, still load (weights come
        from from_disk or initialize).
    """
    return ConceptTaggerParser(nlp.vocab, model, name, overwrite=overwrite, lang=lang, save_encoder=save_encoder,
                               min_count=min_count, longest_tree=longest_tree, adapt=adapt,
                               adapt_unlabeled=adapt_unlabeled, scorer=scorer)


class ConceptTaggerParser(TrainablePipe):
    """Tags (token.pos) and parses (token.head, token.dep) by aligning frozen encoder states to universal concepts."""

    def __init__(self, vocab: Vocab, model: Model, name: str = "concept_align", *, overwrite: bool = True,
                 lang: Optional[str] = None, save_encoder: bool = False, min_count: int = 10,
                 longest_tree: int = LONGEST_TREE, adapt: Optional[dict] = None,
                 adapt_unlabeled: Optional[dict] = None, scorer: Optional[Callable] = None):
        ensure_extensions()
        self.vocab, self.model, self.name, self.scorer = vocab, model, name, scorer
        encoder = self.encoder
        self.cfg = {"overwrite": overwrite, "lang": lang, "save_encoder": save_encoder, "min_count": min_count,
                    "longest_tree": longest_tree, "adapt": dict(adapt or {}),
                    "adapt_unlabeled": dict(adapt_unlabeled or {}), "meta": {},
                    "encoder": encoder.settings}
        self._warned_langs: set = set()

    @property
    def decoder(self) -> ConceptDecoder:
        return get_decoder(self.model)

    @property
    def encoder(self) -> FrozenEncoder:
        return get_encoder(self.model)

    @property
    def is_initialized(self) -> bool:
        return bool(self.decoder.pos.valid.any())

    @property
    def languages(self) -> List[str]:
        """Languages with their own adaptation (from meta-training, the treebank or few-shot adaptation)."""
        self._ensure_weights()
        return self.decoder.languages

    def _ensure_weights(self) -> None:
        """A component nothing has loaded or initialised yet uses the shipped default (`add_pipe` just works)."""
        if not self.is_initialized:
            self.initialize(weights="default")

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

    def predict(self, docs: Iterable[Doc], lang: Optional[str] = None) -> List[Annotation]:
        """Per doc: UPOS ids, heads (token indices), relation ids (-1: blank token), confidence (P(tag) x P(head))."""
        docs = list(docs)
        self._ensure_weights()
        results = [blank_annotation(doc) for doc in docs]
        groups = by_language(docs, lambda doc: self._language(doc, lang), self.cfg["longest_tree"])
        for doc_lang, sentences in groups.items():
            texts = [[docs[i][w].text for w in words] for i, words in sentences]
            scatter(results, sentences, texts, self.model.predict(Sentences(texts, doc_lang)))
        return results

    def _language(self, doc: Doc, override: Optional[str]) -> Optional[str]:
        """Per-call override, else doc._.concept_lang, else the component's `lang`, else the pipeline's language
        (`spacy.blank("cy")`; silently zero-shot when it has no adaptation); unknown -> zero-shot: with its code
        when the languages most like it lend it something (`ConceptDecoder.knows_sources`), else None."""
        lang = override or doc._.get(LANG_ATTR) or self.cfg["lang"]
        if not lang:
            return self.vocab.lang if self.vocab.lang in self.languages else None
        if lang not in self.languages:
            # the shared model, with the word order and taggers of the languages most like it where its typology is known
            known_order = self.decoder.knows_sources(lang)
            if lang not in self._warned_langs:
                logger.warning("concept_align: no adaptor for language %r; using the zero-shot path%s", lang,
                               " with the word order and taggers of the languages most like it" if known_order else "")
                self._warned_langs.add(lang)
            return lang if known_order else None
        return lang

    def set_annotations(self, docs: Iterable[Doc], predictions: Iterable[Annotation]) -> None:
        """Write POS, heads and relations (one tree per sentence; "ROOT" for the root, as spaCy does)."""
        for doc, annotation in zip(docs, predictions):
            write_annotation(doc, annotation, self.cfg["overwrite"])

    # -- training -------------------------------------------------------------------------------------------

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, weights: Optional[str] = None,
                   min_count: Optional[int] = None) -> None:
        """Load weights, or start fresh from gold examples.

        weights (Optional[str]): "default" (the shipped default) or a saved component's folder: load it
            ([initialize.components.concept_align] weights = ...). Without weights, gold examples (POS and heads)
            give a fresh decoder whose prototypes are their class means; with neither, the shipped default.
        """
        examples = []
        if get_examples is not None and weights is None:
            validate_get_examples(get_examples, "ConceptTaggerParser.initialize")
            examples = list(get_examples())
        if weights is not None or not examples:
            self.load_weights(DEFAULT_WEIGHTS if weights in (None, "default") else Path(weights))
            return
        groups = gold_sentences(examples, lambda doc: None, self.cfg["longest_tree"])
        if None not in groups or not (groups[None].upos >= 0).any():
            raise ValueError(f"{self.name}.initialize needs gold examples with POS and dependency annotation")
        reset_decoder(self.model).set_prototypes(self.model.layers[0].predict(groups[None]),
                                                 min_count or self.cfg["min_count"])

    def update(self, examples: Iterable[Example], *, drop: float = 0.0, sgd=None,
               losses: Optional[Dict[str, float]] = None) -> Dict[str, float]:
        """One gradient step on the decoder (each example's language's adaptation, or the shared parts)."""
        losses = {} if losses is None else losses
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "ConceptTaggerParser.update")
        set_dropout_rate(self.model, drop)
        for sentences in gold_sentences(examples, lambda doc: self._language(doc, None), self.cfg["longest_tree"]).values():
            scores, backprop = self.model.begin_update(sentences)
            loss, d_scores = self.get_loss(examples, scores)
            backprop(d_scores)
            losses[self.name] += loss
        if sgd is not None:
            self.finish_update(sgd)
        return losses

    def get_loss(self, examples: Iterable[Example], scores) -> Tuple[float, dict]:
        """decoder.concept_loss: the scores carry the examples' gold targets (the model reads them to score
        relations on the gold heads)."""
        return concept_loss(scores)

    def adapt(self, examples: Iterable[Union[Example, Doc]], lang: str, **settings) -> Dict[str, float]:
        """Few-shot: teach `lang` from a few gold Examples (or annotated Docs); later docs in `lang` use it.

        settings: fields of spacy_concept_align.adapt.AdaptSettings (over the component's `adapt` config).
        RETURNS (Dict[str, float]): seconds taken and final losses. Raises ValueError (model unchanged) on bad input.
        """
        from .adapt import AdaptSettings, adapt_language

        sentences = annotated_sentences(examples, lang, self.cfg["longest_tree"])
        self._ensure_weights()
        settings = AdaptSettings(**{**self.cfg["adapt"], **settings})
        report = adapt_language(self.decoder, self.model.layers[0].predict(sentences), lang, settings, sentences.forms)
        self._warned_langs.discard(lang)
        return report

    def adapt_unlabeled(self, texts: Iterable[Union[str, Doc]], lang: str, batch_size: int = 256,
                        **settings) -> Dict[str, float]:
        """Raw text of `lang` (strings or Docs, any number): its prototypes move to where its own words lie (one
        k-means step, confident words only); settings: fields of spacy_concept_align.adapt.UnlabeledSettings."""
        from .adapt import UnlabeledSettings, adapt_unlabeled

        self._ensure_weights()
        chunks = map(self.model.layers[0].predict, raw_sentences(texts, batch_size, self.cfg["longest_tree"]))
        settings = UnlabeledSettings(**{**self.cfg["adapt_unlabeled"], **settings})
        report = adapt_unlabeled(self.decoder, chunks, lang, settings)
        self._warned_langs.discard(lang)
        return report

    # -- serialization: safetensors + JSON, never pickle (weights.py) ---------------------------------------

    def load_weights(self, path: Union[str, Path]) -> None:
        """Load the decoder of a component folder written by to_disk."""
        source = str(Path(path) / WEIGHTS_FILE)
        self.cfg["meta"] = load_component_state(self.decoder, self.encoder, *read_component(path), source=source)
        self._warned_langs.clear()

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> None:
        """cfg.json, model.safetensors, priors.msgpack and, with save_encoder, the encoder in ENCODER_DIR."""
        write_component(path, *component_state(self.decoder, self.encoder, self.cfg))
        if self.cfg.get("save_encoder"):
            save_encoder(self.encoder, Path(path) / ENCODER_DIR)
        elif (Path(path) / ENCODER_DIR).exists():
            shutil.rmtree(Path(path) / ENCODER_DIR)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = tuple()) -> "ConceptTaggerParser":
        """Weights from `path`; a saved encoder there (ENCODER_DIR) is used instead of resolving the encoder's name."""
        if is_bundle(Path(path) / ENCODER_DIR):
            self.encoder.use_files(Path(path) / ENCODER_DIR)
        self.load_weights(path)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        cfg, _, _ = component_state(self.decoder, self.encoder, self.cfg)
        return srsly.msgpack_dumps({"cfg": json.dumps(cfg), "model": self.model.to_bytes()})

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "ConceptTaggerParser":
        try:
            data = srsly.msgpack_loads(bytes_data)
            cfg, model_bytes = json.loads(data["cfg"]), data["model"]
        except Exception as err:
            raise ValueError(f"{self.name}.from_bytes: not a serialized concept_align component ({err})") from None
        check_encoder(cfg, self.encoder, f"{self.name}.from_bytes")
        self.model.from_bytes(model_bytes)
        self.cfg["meta"] = cfg.get("meta", {})
        return self
