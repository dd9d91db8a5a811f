"""Baseline (c): the usual spaCy route. A transformer + morphologizer + parser trained with `spacy train` on the same
source languages, on the same frozen encoder cut at the same layer, then applied zero-shot to unseen languages.
"""
import logging
from pathlib import Path
from typing import Optional, Sequence

from spacy.tokens import DocBin
from spacy.vocab import Vocab

from ..corpus import choose_file, read_docs, read_conllu, sentences_to_doc, unannotated
from ..encoders import truncated_model_dir
from ..scoring import Labels

logger = logging.getLogger(__name__)


def prepare_corpus(output: Path, train_langs: Sequence[str], validation_langs: Sequence[str], max_train: int,
                   max_validation: int, data_dir: Optional[Path] = None) -> tuple:
    """DocBins of the source pools (train) and the validation languages' dev splits, as concept_align uses them."""
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, langs, limit, splits in (("train", train_langs, max_train, ("train", "dev", "test")),
                                       ("dev", validation_langs, max_validation, ("dev",))):
        docs = DocBin(store_user_data=True)
        for lang in langs:
            for doc in read_docs(choose_file(lang, splits, data_dir).path, Vocab(), n_sents=10, limit=limit):
                docs.add(doc)
        docs.to_disk(output / f"{name}.spacy")
        paths.append(output / f"{name}.spacy")
    return tuple(paths)


def train_baseline(output: Path, train_langs: Sequence[str], validation_langs: Sequence[str], encoder: str,
                   layer: int, max_train: int = 500, max_validation: int = 100, max_steps: int = 600, *,
                   config: Path, data_dir: Optional[Path] = None) -> Path:
    """Prepare data and the truncated encoder, run `spacy train` with `config` (the project's
    configs/spacy_baseline.cfg); RETURNS the model-best directory."""
    from spacy.cli.train import train

    train_path, dev_path = prepare_corpus(output / "corpus", train_langs, validation_langs, max_train,
                                          max_validation, data_dir)
    overrides = {"paths.train": str(train_path), "paths.dev": str(dev_path), "training.max_steps": max_steps,
                 "training.optimizer.learn_rate.total_steps": max_steps,
                 "paths.transformer": str(_initialized_transformer(output / "transformer", encoder, layer))}
    train(config, output, overrides=overrides)
    return output / "model-best"


def _initialized_transformer(path: Path, encoder: str, layer: int) -> Path:
    """A pipeline holding only the (frozen) transformer, initialised: spaCy does not initialise frozen components,
    so the baseline config sources it from here."""
    import spacy

    nlp = spacy.blank("xx")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy-transformers.TransformerModel.v3", "name": str(truncated_model_dir(encoder, layer)),
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96},
        "tokenizer_config": {"use_fast": True}}})
    nlp.initialize()
    nlp.to_disk(path)
    return path


def predict_treebank(nlp, path: Path) -> tuple:
    """Gold labels (as a label-only FeatureSet) and the spaCy pipeline's UPOS, heads and relations, per word."""
    sentences = read_conllu(path)
    docs = (unannotated(sentences_to_doc(nlp.vocab, [s])) for s in sentences)
    return (Labels.of_sentences(sentences), *Labels.of_docs(nlp.pipe(docs, batch_size=64)).arrays)
