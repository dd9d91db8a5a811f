"""Word-order typology of about 8,000 languages, so that a language nothing was learned about still gets the word
order of the meta-training languages most like it (ConceptDecoder.word_order_prior).

The data (`data/typology.npz`) are the 103 syntax features of URIEL (Littell et al., 2017: "S_SVO", "S_ADPOSITION_
BEFORE_NOUN", ...), completed by kNN where a language lacks them, as lang2vec 1.1.2 ships them (its
`feature_predictions.npz`; CC BY-SA 4.0), bit-packed, with lang2vec's ISO 639-1 -> 639-3 map. `build` rewrites it.
"""
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

TYPOLOGY_FILE = Path(__file__).parent / "data" / "typology.npz"


@lru_cache(maxsize=1)
def _table() -> Tuple[Dict[str, int], np.ndarray, Dict[str, str]]:
    with np.load(TYPOLOGY_FILE, allow_pickle=False) as data:
        codes, names = [str(c) for c in data["codes"]], len(data["names"])
        features = np.unpackbits(data["features"], axis=1)[:, :names].astype(np.float32)
        letters = dict(zip(map(str, data["letters_from"]), map(str, data["letters_to"])))
    return {code: i for i, code in enumerate(codes)}, features, letters


def syntax_features(lang: Optional[str]) -> Optional[np.ndarray]:
    """The language's URIEL syntax features (0/1), by ISO 639-1 or 639-3 code ("wo", "wol"); None if unknown."""
    if not lang:
        return None
    index, features, letters = _table()
    code = lang.split("_")[0].lower()
    row = index.get(letters.get(code, code))
    return None if row is None else features[row]


def nearest(target: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Rows of `candidates` (languages x features) most like `target`: fewest differing features, best first."""
    distance = np.abs(candidates - target[None, :]).mean(1)
    return np.argsort(distance, kind="stable")[:k]


def build(lang2vec_data: Path, output: Path = TYPOLOGY_FILE) -> None:
    """Write `output` from lang2vec's data folder (`feature_predictions.npz`, `letter_codes.json`)."""
    with np.load(Path(lang2vec_data) / "feature_predictions.npz", allow_pickle=True) as data:
        names = [str(f) for f in data["feats"]]
        syntax = [i for i, name in enumerate(names) if name.startswith("S_")]
        values = data["data"][:, syntax, 0]
        codes = np.array([str(code) for code in data["langs"]])
    letters = json.loads((Path(lang2vec_data) / "letter_codes.json").read_text())
    np.savez_compressed(output, codes=codes, names=np.array([names[i] for i in syntax]),
                        features=np.packbits(values >= 0.5, axis=1),
                        letters_from=np.array(list(letters)), letters_to=np.array(list(letters.values())))
