"""Frozen word vectors of whole treebank files, computed once and memory-mapped from the cache.

Training, evaluation and analysis all read features from here, so nothing runs the encoder twice on one file.
Cache key: encoder fingerprint (model files, layer, pooling) + the file's sha256 + the sentence limit.
"""
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Union

import numpy as np

from .corpus import UDSentence, read_conllu, treebank_codes
from .encoders import FrozenEncoder, SentenceVectors
from .features import ARRAYS, FeatureSet
from .paths import cache_dir

logger = logging.getLogger(__name__)


def extract_features(path: Union[str, Path], encoder: FrozenEncoder, max_sentences: int = 0,
                     use_cache: bool = True, progress: bool = True) -> FeatureSet:
    """Features of a CoNLL-U file (its first `max_sentences` sentences; 0 = all), from the cache when present."""
    path = Path(path)
    lang, treebank = treebank_codes(path)
    file_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = cache_dir() / "features" / encoder.fingerprint / f"{path.stem}-{file_hash}-n{max_sentences}"
    if use_cache and (target / "meta.json").exists():
        return _load(target, lang)
    sentences = read_conllu(path)
    if max_sentences:
        sentences = sentences[:max_sentences]
    features = FeatureSet.from_vectors(_encode(encoder, sentences, path.name, progress), sentences, lang)
    # half precision, as cached: a first run, a rerun and a run without the cache compute the same numbers
    features = replace(features, words=features.words.astype(np.float16), roots=features.roots.astype(np.float16))
    if use_cache:
        _save(features, target, {"file": str(path), "treebank": treebank, "encoder": encoder.settings,
                                 "sentences": len(sentences)})
    return features


def _encode(encoder: FrozenEncoder, sentences: List[UDSentence], label: str, progress: bool) -> List[SentenceVectors]:
    from tqdm import tqdm

    chunk = 256
    vectors: List[SentenceVectors] = []
    start, n_words = time.perf_counter(), sum(map(len, sentences))
    with tqdm(total=n_words, desc=f"encoding {label}", unit="w", disable=not progress, leave=False) as bar:
        for i in range(0, len(sentences), chunk):
            batch = sentences[i : i + chunk]
            vectors += encoder([s.words for s in batch])
            bar.update(sum(map(len, batch)))
    seconds = time.perf_counter() - start
    logger.info("%s: %d words in %.1f s (%.0f words/s)", label, n_words, seconds, n_words / max(seconds, 1e-9))
    return vectors


def _save(features: FeatureSet, target: Path, meta: dict) -> None:
    """Write to a temporary folder and rename: a folder without meta.json is never trusted."""
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ARRAYS:
        array = getattr(features, name)
        np.save(tmp / f"{name}.npy", array)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _load(target: Path, lang: str) -> FeatureSet:
    arrays = {name: np.load(target / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    return FeatureSet(lang=lang, **arrays)
