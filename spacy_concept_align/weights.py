"""The decoder's weights on disk and in bytes: safetensors + JSON (+ msgpack priors), never pickle.

A saved component is a folder: cfg.json (the component's settings, the decoder's structure: which languages have
which parts, and how it was trained), model.safetensors and, when a language has word priors, priors.msgpack.
The same three parts, packed with msgpack, are what the Thinc model's PyTorch wrapper serialises to bytes.
"""
import copy
import json
import logging
from pathlib import Path
from typing import Tuple, Union

import srsly
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .decoder import ConceptDecoder
from .lexicon import PriorsByLanguage
from .tag_parser import TagParser

logger = logging.getLogger(__name__)

WEIGHTS_FILE, CFG_FILE = "model.safetensors", "cfg.json"
#: Per-language word-form and relation priors, when a language has any: {lang: gzipped JSON}.
PRIORS_FILE = "priors.msgpack"


def decoder_state(decoder: ConceptDecoder) -> Tuple[dict, bytes, dict]:
    """The decoder's structure (JSON-able), its tensors (safetensors bytes) and its priors (msgpack-able)."""
    # languages with their own first layers, and how many features beyond the vector each reads
    # (few-shot: relations alone may have one)
    own_inner = {}
    for lang in decoder.languages:
        owners = [a.adaptors[lang] for a in (decoder.pos, decoder.rel) if a.adaptors[lang].inner is not None]
        if owners:
            own_inner[lang] = [decoder.pos.extra_inputs(lang), decoder.rel.extra_inputs(lang), owners[0].inner_rank]
    arc_context = {lang: arcs.context.sizes for lang, arcs in decoder.language_arcs.items() if arcs.context}
    state = {k: v.contiguous() for k, v in decoder.state_dict().items()}
    # A language's arc scorer stores only what it changed; the rest is the shared scorer's, filled in at load (a tag
    # parser left with no keys of its own is known at load to be the shared one: not listed).
    arc_shared = {}
    for lang in decoder.language_arcs:
        prefix = f"language_arcs.{lang}."
        same = [k[len(prefix):] for k in list(state) if k.startswith(prefix)
                and f"arcs.{k[len(prefix):]}" in state and torch.equal(state[k], state[f"arcs.{k[len(prefix):]}"])]
        for key in same:
            del state[prefix + key]
        shared_tags = not any(key.startswith(f"{prefix}tags.") for key in state)
        listed = [key for key in same if not (shared_tags and key.startswith("tags."))]
        if listed:
            arc_shared[lang] = listed
    structure = {"languages": decoder.languages, "arc_languages": sorted(decoder.language_arcs),
                 "own_inner": own_inner, "arc_context": arc_context, "arc_shared": arc_shared, "width": decoder.width}
    return structure, save_tensors(state), decoder.priors.packed()


def load_decoder_state(decoder: ConceptDecoder, structure: dict, weights: bytes, priors: dict,
                       source: str = "weights") -> None:
    """Build and load on a copy, which becomes the decoder once everything fits: on any error the decoder is left
    as it was."""
    try:
        tensors = load_tensors(weights)
    except Exception as err:  # safetensors reports a truncated or foreign file as SafetensorError
        raise ValueError(f"{source}: not a readable safetensors file ({err})") from None
    if "relation_table" not in tensors:  # saved before the decoder had one: no table
        tensors["relation_table"] = torch.zeros_like(decoder.relation_table)
    # saved before the decoder kept its sources' word order: none (one table per meta-training language)
    tensors.setdefault("source_arc_tables", decoder.source_arc_tables[:0])
    tensors.setdefault("source_relation_tables", decoder.source_relation_tables[:0])
    tensors.setdefault("source_typology", torch.zeros(0, 0))
    tensors.setdefault("source_taggers", decoder.source_taggers[:0])  # ... nor their taggers
    # languages whose tag parser is their own (fine-tuned); the others share the multilingual one (one copy in memory)
    own_tags = {lang for lang in structure.get("arc_languages", [])
                if any(key.startswith(f"language_arcs.{lang}.tags.") for key in tensors)}
    for lang, keys in structure.get("arc_shared", {}).items():
        tensors.update({f"language_arcs.{lang}.{key}": tensors[f"arcs.{key}"] for key in keys
                        if f"arcs.{key}" in tensors})
    shared_tags = [key[len("arcs."):] for key in tensors if key.startswith("arcs.tags.")]
    for lang in set(structure.get("arc_languages", [])) - own_tags:  # the shared parser's keys, under its name too
        tensors.update({f"language_arcs.{lang}.{key}": tensors[f"arcs.{key}"] for key in shared_tags})
    try:
        loaded_priors = PriorsByLanguage(priors)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    has_tag_parser = any(key.startswith("arcs.tags.") for key in tensors)  # saved before there was one: none
    labels = "arcs.tags.relations.weight" in tensors  # ... or before it labelled: heads only
    target = copy.deepcopy(decoder)  # built and loaded on a copy, which becomes the decoder once it all fits
    if has_tag_parser != (target.arcs.tags is not None) or (
            has_tag_parser and labels != (target.arcs.tags.relations is not None)):
        target.arcs.tags = TagParser(relations=labels).to(target.arcs.U.device) if has_tag_parser else None
    for lang in structure.get("languages", []):
        target.add_language(lang)
    for lang, (pos_extra, rel_extra, *rank) in structure.get("own_inner", {}).items():
        for name, extra in (("pos", pos_extra), ("rel", rel_extra)):
            # relations keep the shared layer when the treebank was too small for them (min_relation_sentences)
            if any(key.startswith(f"{name}.adaptors.{lang}.inner.") for key in tensors):
                aligner = getattr(target, name)
                aligner.adaptors[lang].own_inner(aligner.phi, int(extra), *rank)
    for name in ("source_arc_tables", "source_relation_tables", "source_typology", "source_taggers"):  # one row per source
        setattr(target, name, torch.empty_like(tensors[name], dtype=getattr(target, name).dtype))
    tags, target.arcs.tags = target.arcs.tags, None  # copied only where a language has its own
    for lang in structure.get("arc_languages", []):
        target.language_arcs[lang] = copy.deepcopy(target.arcs)
        target.language_arcs[lang].tags = copy.deepcopy(tags) if lang in own_tags else tags
        if lang in structure.get("arc_context", {}):
            target.language_arcs[lang].add_context(*structure["arc_context"][lang])
    target.arcs.tags = tags
    try:
        target.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        problem = str(err).split("\n\t", 1)[-1].split("\n")[0]
        raise ValueError(f"{source}: the weights do not fit this component ({problem})") from None
    target.priors = loaded_priors
    decoder.__dict__.update(target.__dict__)  # the checked copy becomes the decoder (same object)


def check_encoder(saved: dict, encoder, source: str) -> None:
    """Weights only mean something on the encoder (model, layer, pooling) they were trained with.

    saved: a saved component's cfg (its "encoder", "width" and "encoder_vocab" entries)."""
    trained_on = saved.get("encoder", {})
    now = encoder.settings
    # each setting, and what a record without it means (a layer or pooling not recorded: taken as the same)
    problems = [f"{key} {trained_on.get(key, unset)!r} (now {now.get(key, unset)!r})"
                for key, unset in (("layer", now["layer"]), ("pooling", now["pooling"]), ("extra_layers", []))
                if trained_on.get(key, unset) != now.get(key, unset)]
    if saved.get("width") not in (None, encoder.width):
        problems.append(f"{saved['width']}-d vectors (now {encoder.width}-d)")
    if saved.get("encoder_vocab") not in (None, encoder.vocab_size):
        problems.append(f"a {saved['encoder_vocab']}-piece vocabulary (now {encoder.vocab_size})")
    if problems:
        raise ValueError(f"{source}: trained on encoder {trained_on.get('name', '?')!r} with {', '.join(problems)}; "
                         "set [components.concept_align.model.encoder] to the encoder the weights were trained on")
    if trained_on.get("name", now["name"]) != now["name"]:  # same shape: a copy of the model, or a sibling
        logger.warning("concept_align: weights were trained with encoder %r, now used with %r",
                       trained_on["name"], now["name"])


def read_component(path: Union[str, Path]) -> Tuple[dict, bytes, dict]:
    """cfg, weights and priors of a component folder written by `write_component`."""
    path = Path(path)
    missing = [name for name in (CFG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        raise ValueError(f"{path}: not a saved concept_align component (missing {', '.join(missing)})")
    try:
        cfg = srsly.read_json(path / CFG_FILE)
    except ValueError as err:
        raise ValueError(f"{path / CFG_FILE}: not valid JSON ({err})") from None
    priors = {}
    if (path / PRIORS_FILE).is_file():
        try:
            priors = srsly.read_msgpack(path / PRIORS_FILE)
        except (ValueError, OSError) as err:
            raise ValueError(f"{path / PRIORS_FILE}: not a readable msgpack file ({err})") from None
    return cfg, (path / WEIGHTS_FILE).read_bytes(), priors


def write_component(path: Union[str, Path], cfg: dict, weights: bytes, priors: dict) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    srsly.write_json(path / CFG_FILE, cfg)
    (path / WEIGHTS_FILE).write_bytes(weights)
    if priors:
        srsly.write_msgpack(path / PRIORS_FILE, priors)
    elif (path / PRIORS_FILE).exists():
        (path / PRIORS_FILE).unlink()


def component_state(decoder: ConceptDecoder, encoder, cfg: dict) -> Tuple[dict, bytes, dict]:
    """What a saved component holds: its cfg with the decoder's structure and the encoder's shape, the weights and
    the priors (the parts of `write_component`)."""
    structure, weights, priors = decoder_state(decoder)
    return dict(cfg, **structure, encoder_vocab=encoder.vocab_size), weights, priors


def load_component_state(decoder: ConceptDecoder, encoder, cfg: dict, weights: bytes, priors: dict,
                         source: str) -> dict:
    """Load a saved component's parts into `decoder` once they are checked to fit `encoder`; RETURNS its meta."""
    check_encoder(cfg, encoder, source)
    load_decoder_state(decoder, cfg, weights, priors, source)
    return cfg.get("meta", {})


def serialize_decoder(decoder: ConceptDecoder) -> bytes:
    """PyTorchWrapper_v3's serialize_model hook: the decoder as msgpack of JSON + safetensors + priors."""
    structure, weights, priors = decoder_state(decoder)
    return srsly.msgpack_dumps({"structure": json.dumps(structure), "weights": weights, "priors": priors})


def deserialize_decoder(decoder: ConceptDecoder, data: bytes, device) -> ConceptDecoder:
    """PyTorchWrapper_v3's deserialize_model hook (the inverse of serialize_decoder)."""
    try:
        msg = srsly.msgpack_loads(data)
        structure, weights, priors = json.loads(msg["structure"]), msg["weights"], msg.get("priors", {})
    except Exception as err:
        raise ValueError(f"not a serialized concept_align decoder ({err})") from None
    load_decoder_state(decoder, structure, weights, priors, "concept_align decoder bytes")
    return decoder
