"""Word-order typology (URIEL syntax features) and the word-order prior it gives languages never seen."""
import numpy as np

from spacy_concept_align.typology import nearest, syntax_features


def test_syntax_features_by_any_code():
    wolof = syntax_features("wo")
    assert wolof is not None and set(np.unique(wolof)) <= {0.0, 1.0} and len(wolof) == 103
    assert np.array_equal(syntax_features("wol"), wolof) and np.array_equal(syntax_features("wo_wtb"), wolof)
    assert syntax_features("xx") is None and syntax_features(None) is None and syntax_features("") is None


def test_nearest_languages_share_word_order():
    sources = ["en", "de", "fr", "es", "ru", "ja", "fa", "hi", "fi", "he"]
    table = np.stack([syntax_features(lang) for lang in sources])
    # Korean (verb-final, postpositions) is nearest Japanese; Spanish nearest the other Romance language
    assert sources[nearest(syntax_features("ko"), table, 1)[0]] == "ja"
    assert sources[nearest(syntax_features("es"), table, 2)[1]] == "fr"
    assert list(nearest(table[0], table, 3))[0] == 0 and len(nearest(table[0], table, 30)) == len(sources)
