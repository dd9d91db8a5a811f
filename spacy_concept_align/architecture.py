"""The component's model, a registered Thinc architecture: Sentences -> frozen word vectors -> the decoder.

    chain(word_vectors: Model[Sentences, FeatureSet],      the frozen encoder (truncation, pooling, windows inside)
          concept_decoder: Model[FeatureSet, ...])          ConceptDecoder in Thinc's PyTorchWrapper_v3

`model.predict(sentences)` gives per word UPOS ids, heads, relation ids and confidences; `model.begin_update`
gives the training scores (decoder.Scores) and a callback taking their gradients (decoder.concept_loss).
The decoder serialises as safetensors + JSON through the wrapper's hooks (weights.py); the encoder is never saved
with the model (its config names it; `save_encoder` bundles it beside the component).
"""
from typing import Any, Sequence, Tuple

import srsly
from spacy.util import registry
from thinc.api import ArgsKwargs, Config, Model, PyTorchWrapper_v3, chain, deserialize_attr, serialize_attr

from .decoder import ConceptDecoder
from .encoders import OFFLINE_NAME, FrozenEncoder
from .features import FeatureSet, Sentences
from .weights import deserialize_decoder, serialize_decoder

# fmt: off
DEFAULT_MODEL_CONFIG = f"""
[model]
@architectures = "spacy-concept-align.TaggerParser.v1"
pos_hidden = 256
pos_dim = 32
rel_hidden = 384
rel_dim = 64
arc_hidden = 256
dropout = 0.33
token_dropout = false
consistent_labels = true
joint_weight = 0.3
confidence_temperatures = [1.5, 1.5]
projective = true
word_order_sources = 3
word_order_weight = 0.3
word_order_relation_weight = 0.25
tag_parser_weight = 0.3
unnamed_tag_parser_weight = 0.15
tag_relation_weight = 0.3
source_tagger_weight = 0.3

[model.encoder]
@architectures = "spacy-concept-align.FrozenEncoder.v1"
name = "{OFFLINE_NAME}"
layer = 6
pooling = "mean"
unknown_characters = "transliterate"
batch_size = 32
max_length = 0
precision = "fp32"
"""
# fmt: on
DEFAULT_MODEL = Config().from_str(DEFAULT_MODEL_CONFIG)["model"]


@registry.architectures("spacy-concept-align.TaggerParser.v1")
def build_tagger_parser(encoder: FrozenEncoder, pos_hidden: int = 256, pos_dim: int = 32, rel_hidden: int = 384,
                        rel_dim: int = 64, arc_hidden: int = 256, dropout: float = 0.33, token_dropout: bool = False,
                        consistent_labels: bool = True, joint_weight: float = 0.3, arc_context: int = 0,
                        arc_context_input: int = 0, confidence_temperatures: Sequence[float] = (1.5, 1.5),
                        relation_table_weight: float = 0.0, arc_batch_size: int = 64,
                        arc_batch_cells: int = 1_000_000, arc_distance: bool = False,
                        projective: bool = True, word_order_sources: int = 3,
                        word_order_weight: float = 0.3, word_order_relation_weight: float = 0.25,
                        tag_parser_weight: float = 0.3, unnamed_tag_parser_weight: float = 0.15,
                        tag_relation_weight: float = 0.3, source_tagger_weight: float = 0.3) -> Model:
    """UPOS, heads and relations of sentences in any language, from frozen word vectors.

    encoder (FrozenEncoder): where word vectors come from (spacy-concept-align.FrozenEncoder.v1).
    pos_hidden, pos_dim, rel_hidden, rel_dim (int): hidden and concept-space sizes of the UPOS / relation aligners.
    arc_hidden (int): the biaffine arc scorer's size. dropout (float): the default dropout rate when training.
    token_dropout (bool): drop whole token vectors, as the original code does, instead of single units.
    consistent_labels (bool): decode UPOS and relation jointly over the pairs UD allows (false: independently).
    joint_weight (float): weight of the relation's log-probabilities in that joint decision.
    arc_context (int): the multilingual arc scorer reads the words through a BiLSTM of this size (0 = none);
        arc_context_input: the vectors reduced to this size before it (0 = as they are).
    confidence_temperatures (Sequence[float]): softmax temperatures of the tag and head probabilities behind
        token._.concept_confidence (the default config's were fitted on the validation languages' dev splits).
    relation_table_weight (float): weight of p(relation | both tags, direction) from the meta-training languages in
        the zero-shot path's relation decision (0 = not used).
    arc_distance (bool): the arc scorer adds a learned bias per dependency length (the same both ways).
    projective (bool): trees without crossing arcs (Eisner's algorithm; false: any spanning tree, Chu-Liu/Edmonds,
        as published). Validation languages' dev splits, zero-shot: UAS 65.0 -> 65.7, LAS 50.0 -> 50.4, all 10 gain.
    word_order_sources, word_order_weight: a language named (`--lang`) that the pipeline has learned nothing about
        gets the word order (arc table) of this many meta-training languages most like it in URIEL's syntax
        features (typology.py), added to its arc scores at this weight (0 = not used);
    word_order_relation_weight: ... and their relation table (p(relation | both tags, direction)) at this weight.
    tag_parser_weight (float): ... and the heads a delexicalised parser gives its tags and typology
        (tag_parser.py), at this weight; unnamed_tag_parser_weight: a language not named (or of unknown typology),
        with the meta-training languages' mean typology, at this weight (both 0 = no tag parser; 0.15 is worth +0.55 UAS
        / +0.4 LAS on the 30 unseen languages, for about 2% of words/s);
    tag_relation_weight (float): ... and the relations that parser gives the tags and heads (named or not).
    source_tagger_weight (float): a language named but never seen also gets the mean UPOS log-probabilities of the
        same `word_order_sources` nearest meta-training languages' own linear taggers, at this weight (0 = not used).
    arc_batch_size, arc_batch_cells (int): at most this many sentences / padded (dependent, head) scores per batch
        of the arc scorer at prediction (memory).
    RETURNS (Model[Sentences, Any]): predict -> (upos, heads, deprels, confidence); begin_update -> decoder.Scores.
    """
    settings = dict(width=encoder.width, pos_hidden=pos_hidden, pos_dim=pos_dim, rel_hidden=rel_hidden,
                    rel_dim=rel_dim, arc_hidden=arc_hidden, dropout=dropout, token_dropout=token_dropout,
                    consistent_labels=consistent_labels, joint_weight=joint_weight, arc_context=arc_context,
                    arc_context_input=arc_context_input, confidence_temperatures=list(confidence_temperatures),
                    relation_table_weight=relation_table_weight, arc_batch_size=arc_batch_size,
                    arc_batch_cells=arc_batch_cells, arc_distance=arc_distance,
                    projective=projective, word_order_sources=word_order_sources,
                    word_order_weight=word_order_weight, word_order_relation_weight=word_order_relation_weight,
                    tag_parser_weight=tag_parser_weight, unnamed_tag_parser_weight=unnamed_tag_parser_weight,
                    tag_relation_weight=tag_relation_weight, source_tagger_weight=source_tagger_weight)
    return chain(word_vectors(encoder), concept_decoder(settings))


# The name the first configs used for the same architecture.
registry.architectures("spacy-concept-align.ConceptAligner.v1")(build_tagger_parser)


def word_vectors(encoder: FrozenEncoder) -> Model[Sentences, FeatureSet]:
    """The frozen encoder as a Thinc layer: one vector per word (+ a root vector per sentence); no gradient."""
    return Model("frozen_word_vectors", _word_vectors_forward, attrs={"encoder": encoder})


def _word_vectors_forward(model: Model, sentences: Sentences, is_train: bool) -> Tuple[FeatureSet, Any]:
    features = FeatureSet.from_vectors(model.attrs["encoder"](sentences.words), lang=sentences.lang)
    features.forms = sentences.forms
    if sentences.upos is not None:
        features.upos, features.heads, features.deprels = sentences.upos, sentences.heads, sentences.deprels
    return features, lambda d_features: None  # frozen: nothing to learn below the vectors


def concept_decoder(settings: dict) -> Model[FeatureSet, Any]:
    """The ConceptDecoder in Thinc's PyTorch wrapper (so Thinc optimizers step it), under a layer whose
    `dropout_rate` (set by spaCy from `drop`) the decoder's dropout follows while training."""
    wrapped = PyTorchWrapper_v3(ConceptDecoder(**settings), convert_inputs=_decoder_inputs,
                                convert_outputs=_decoder_outputs, serialize_model=serialize_decoder,
                                deserialize_model=deserialize_decoder)
    return Model("concept_decoder", _decoder_forward, layers=[wrapped],
                 attrs={"dropout_rate": settings["dropout"], "decoder_settings": settings})


def get_decoder(model: Model) -> ConceptDecoder:
    """The PyTorch module inside a model built by build_tagger_parser."""
    return get_decoder_layer(model).layers[0].shims[0]._model


def get_encoder(model: Model) -> FrozenEncoder:
    return model.layers[0].attrs["encoder"]


def reset_decoder(model: Model) -> ConceptDecoder:
    """Replace the decoder by a freshly initialised one (same settings): what `initialize` from scratch starts from."""
    node = get_decoder_layer(model)
    fresh = ConceptDecoder(**node.attrs["decoder_settings"])
    node.layers[0].shims[0]._model = fresh
    return fresh


def get_decoder_layer(model: Model) -> Model:
    """The Thinc layer holding the decoder (what meta-training updates)."""
    return next(node for node in model.walk() if node.name == "concept_decoder")


def _decoder_forward(model: Model, X: Any, is_train: bool):
    if is_train:
        model.layers[0].shims[0]._model.set_dropout(model.attrs["dropout_rate"])
    return model.layers[0](X, is_train)


def _decoder_inputs(model: Model, X: Any, is_train: bool):
    """A FeatureSet, or (FeatureSet, decoder.Support) for a meta-training episode; no gradient flows back."""
    features, support = (X, None) if isinstance(X, FeatureSet) else X
    return ArgsKwargs(args=(features,), kwargs={"support": support}), lambda d_inputs: None


def _decoder_outputs(model: Model, X_Y: Any, is_train: bool):
    """Predictions pass through as NumPy arrays; training scores stay torch tensors, and their gradients (from
    decoder.concept_loss) go back into torch autograd."""
    _, Y = X_Y
    if not is_train:
        return Y, None

    def backprop(d_scores: dict) -> ArgsKwargs:
        names = [name for name in Y if name in d_scores]
        return ArgsKwargs(args=(tuple(Y[name][0] for name in names),),
                          kwargs={"grad_tensors": tuple(d_scores[name] for name in names)})

    return Y, backprop


@serialize_attr.register(FrozenEncoder)
def _serialize_encoder(_, value: FrozenEncoder, name: str, model: Model) -> bytes:
    """The encoder is named by the config, not saved in the model: its settings, for the record."""
    return srsly.json_dumps(value.settings).encode()


@deserialize_attr.register(FrozenEncoder)
def _deserialize_encoder(current: FrozenEncoder, value: bytes, name: str, model: Model) -> FrozenEncoder:
    return current  # the config built it; the saved settings are checked by the component (weights.check_encoder)
