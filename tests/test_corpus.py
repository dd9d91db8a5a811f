"""CoNLL-U in and out on real UD treebanks: round trips, the original-lines writer, text, errors, the manifest, the reader."""
from pathlib import Path

import pytest
import spacy
from spacy.training import Example
from spacy.util import registry
from spacy.vocab import Vocab

from spacy_concept_align.corpus import (
    LANG_ATTR,
    CoNLLUError,
    TreebankFile,
    find_treebank,
    list_treebanks,
    read_conllu,
    read_docs,
    write_conllu,
)
from spacy_concept_align.labels import DEPRELS, UPOS, universal_deprel
from spacy_concept_align.paths import ud_dir

# Diverse whole files: multiword tokens (ca, fr, de, en), empty nodes (en_ewt dev, sv_talbanken dev), scripts without
# spaces (ja), right-to-left (ar), a low-resource language with many MWTs (wo).
ROUND_TRIP = [
    ("ca_ancora", "test"), ("fr_gsd", "dev"), ("de_gsd", "dev"), ("en_ewt", "dev"), ("sv_talbanken", "dev"),
    ("ja_gsd", "dev"), ("ar_pud", "test"), ("wo_wtb", "dev"),
]
# The same checks on the samples in tests/data (a few sentences each, chosen to hold MWTs and empty nodes too): the
# fast tier; the whole treebanks are marked slow.
ROUND_TRIP_SAMPLES = ["fr_gsd", "en_ewt", "sv_talbanken", "ja_gsd", "ar_pud", "wo_wtb"]


def _files(samples, whole):
    """Parameters: ("sample", treebank) for tests/data samples, ("shared", code, split) for whole files (slow)."""
    return [pytest.param(("sample", tb), id=f"{tb}-sample") for tb in samples] + [
        pytest.param(("shared", code, split), id=f"{code}-{split}", marks=pytest.mark.slow) for code, split in whole]


@pytest.fixture
def corpus_file(sample_file, ud_file):
    def get(which):
        return sample_file(which[1]) if which[0] == "sample" else ud_file(which[1], which[2])

    return get


def _columns(sentence):
    return [(w, u, h, d) for w, u, h, d in zip(sentence.words, sentence.upos, sentence.heads, sentence.deprels)]


def _lines_of_kind(path: Path, kind: str):
    lines = path.read_text(encoding="utf-8").splitlines()
    if kind == "mwt":
        return [l for l in lines if l and l.split("\t")[0].replace("-", "").isdigit() and "-" in l.split("\t")[0]]
    if kind == "empty":
        return [l for l in lines if l and "." in l.split("\t")[0] and not l.startswith("#")]
    raise ValueError(kind)


@pytest.mark.slow
def test_round_trip_files_cover_mwt_and_empty_nodes(ud_file):
    """The files below really exercise multiword tokens and empty nodes (else the round trips prove less)."""
    assert _lines_of_kind(ud_file("ca_ancora", "test"), "mwt")
    assert _lines_of_kind(ud_file("wo_wtb", "dev"), "mwt")
    assert _lines_of_kind(ud_file("en_ewt", "dev"), "empty")
    assert _lines_of_kind(ud_file("sv_talbanken", "dev"), "empty")


def test_samples_cover_mwt_and_empty_nodes(sample_file):
    """The samples the fast tier round-trips hold multiword tokens and empty nodes too."""
    for treebank in ("fr_gsd", "wo_wtb", "en_ewt"):
        assert _lines_of_kind(sample_file(treebank), "mwt"), treebank
    for treebank in ("en_ewt", "sv_talbanken"):
        assert _lines_of_kind(sample_file(treebank), "empty"), treebank
    assert "UnidicInfo=,＝,=,=" in sample_file("ja_gsd").read_text(encoding="utf-8")  # a MISC value holding "="


@pytest.mark.parametrize("which", _files(ROUND_TRIP_SAMPLES, ROUND_TRIP))
def test_round_trip(which, corpus_file, tmp_path):
    """read_docs -> write_conllu (no originals) -> read_conllu keeps FORM, UPOS, HEAD and the universal DEPREL."""
    path = corpus_file(which)
    code = which[1]
    gold = read_conllu(path)
    docs = read_docs(path, Vocab(), n_sents=7)
    assert sum(len(doc) for doc in docs) == sum(map(len, gold))
    out = tmp_path / f"{code}-out.conllu"
    write_conllu(docs, out)
    back = read_conllu(out)
    assert len(back) == len(gold)
    for original, written in zip(gold, back):
        assert _columns(written) == _columns(original)
        assert written.spaces[:-1] == original.spaces[:-1]
    # The writer's own files carry no multiword-token ranges: one syntactic word per line.
    assert not _lines_of_kind(out, "mwt")


def _expected_with_originals(text: str, keep_comment=lambda line: True) -> str:
    """What writing gold docs over their originals must give: the input, with DEPREL subtypes stripped, the
    enhanced DEPS column emptied on word lines, UPOS outside the 17 tags as X; every other line untouched."""
    result = []
    for line in text.splitlines():
        columns = line.split("\t")
        if line.startswith("#") and not keep_comment(line):
            continue
        if not line.startswith("#") and len(columns) == 10 and columns[0].isdigit():
            deprel = universal_deprel(columns[7])
            columns[7] = deprel if deprel in DEPRELS else "dep"
            columns[3] = columns[3] if columns[3] in UPOS else "X"
            columns[8] = "_"
            line = "\t".join(columns)
        result.append(line)
    return "\n".join(result).strip("\n")


def _write_gold_over_originals(path: Path, out: Path) -> str:
    sentences = read_conllu(path)
    groups = [sentences[i : i + 5] for i in range(0, len(sentences), 5)]
    vocab = Vocab()
    write_conllu([read_docs_group(vocab, group) for group in groups], out, originals=groups)
    return out.read_text(encoding="utf-8")


# These files' comments are all "# key = value" lines (checked by the test itself).
@pytest.mark.parametrize("which", _files(["en_ewt", "ar_pud", "wo_wtb", "sv_talbanken", "fr_gsd"], [
    ("en_ewt", "dev"), ("ar_pud", "test"), ("wo_wtb", "dev"), ("sv_talbanken", "dev"), ("fr_gsd", "dev")]))
def test_write_with_originals_keeps_the_file(which, corpus_file, tmp_path):
    """With originals, the file's own lines survive (comments, MWT ranges, empty nodes, LEMMA, XPOS, FEATS, MISC)."""
    path, code = corpus_file(which), which[1]
    text = path.read_text(encoding="utf-8")
    assert all(" = " in line for line in text.splitlines() if line.startswith("#"))
    written = _write_gold_over_originals(path, tmp_path / "out.conllu")
    assert written.strip("\n") == _expected_with_originals(text)
    if code in ("wo_wtb", "fr_gsd"):
        assert _lines_of_kind(tmp_path / "out.conllu", "mwt") == _lines_of_kind(path, "mwt")
    if code in ("en_ewt", "sv_talbanken"):
        assert _lines_of_kind(tmp_path / "out.conllu", "empty") == _lines_of_kind(path, "empty")


@pytest.mark.parametrize("which", _files(["ja_gsd"], [("ca_ancora", "test"), ("ja_gsd", "dev")]) + [
    pytest.param(("free-form", "fr_gsd"), id="fr_gsd-sample-free-form-comments")])
def test_write_with_originals_keeps_every_other_byte(which, corpus_file, sample_file, tmp_path):
    """Free-form comments (ca_ancora's "# orig_file_sentence 001#1"; in the fast tier, the same kind added to the
    fr_gsd sample) and MISC values holding "=" (ja_gsd's "UnidicInfo=,＝,=,=,...") survive: only UPOS, HEAD, DEPREL
    and DEPS of word lines are rewritten."""
    if which[0] == "free-form":
        text = sample_file(which[1]).read_text(encoding="utf-8")
        path = tmp_path / "fr_gsd-free-form.conllu"
        path.write_text(text.replace("\n# text = ", "\n# orig_file_sentence 001#1\n# text = "), encoding="utf-8")
        assert "# orig_file_sentence 001#1\n" in path.read_text(encoding="utf-8")
    else:
        path = corpus_file(which)
    written = _write_gold_over_originals(path, tmp_path / "out.conllu")
    assert written.strip("\n") == _expected_with_originals(path.read_text(encoding="utf-8"))
    assert _lines_of_kind(tmp_path / "out.conllu", "mwt") == _lines_of_kind(path, "mwt")


def read_docs_group(vocab, group):
    from spacy_concept_align.corpus import sentences_to_doc

    return sentences_to_doc(vocab, group, "xx")


def test_write_with_originals_writes_the_docs_annotation(sample_file, tmp_path):
    """The replaced columns come from the Doc (not the originals): change a POS, a head and a relation."""
    path = sample_file("en_ewt")
    sentences = read_conllu(path)[:3]
    doc = read_docs_group(Vocab(), sentences)
    # Sentence 1: make every word's POS "X" and attach the last word (punctuation) to the first word as "dep".
    first = doc[: len(sentences[0])]
    for token in first:
        token.pos_ = "X"
    doc[len(first) - 1].head = doc[0]
    doc[len(first) - 1].dep_ = "dep"
    out = tmp_path / "edit.conllu"
    write_conllu([doc], out, originals=[sentences])
    back = read_conllu(out)
    assert back[0].upos == ["X"] * len(first)
    assert back[0].heads[-1] == 1 and back[0].deprels[-1] == "dep"
    assert back[0].heads[:-1] == sentences[0].heads[:-1]
    assert _columns(back[1]) == _columns(sentences[1]) and _columns(back[2]) == _columns(sentences[2])


def test_write_with_originals_does_not_change_the_originals(sample_file, tmp_path):
    """Writing over originals must not edit them: they can be written again (or evaluated) afterwards."""
    path = sample_file("en_ewt")
    sentences = read_conllu(path)[:4]
    before = [list(s.lines) for s in sentences]
    doc = read_docs_group(Vocab(), sentences)
    for token in doc:
        token.pos_ = "X"
    write_conllu([doc], tmp_path / "a.conllu", originals=[sentences])
    assert [list(s.lines) for s in sentences] == before


@pytest.mark.parametrize("which", _files(["en_ewt", "ja_gsd", "ar_pud"],
                                          [("en_ewt", "dev"), ("ja_gsd", "dev"), ("ar_pud", "test")]))
def test_doc_text_equals_text_metadata(which, corpus_file):
    """SpaceAfter=No (and MWT ranges) give the sentence's `# text` for every sentence of the treebank."""
    path = corpus_file(which)
    sentences = read_conllu(path)
    docs = read_docs(path, Vocab(), n_sents=1)
    assert len(docs) == len(sentences)
    mismatches = [s.line for s, doc in zip(sentences, docs) if doc[:].text != _text_comment(s)]
    assert mismatches == []


def _text_comment(sentence) -> str:
    return next(line[len("# text = "):] for line in sentence.lines if line.startswith("# text = "))


def test_mwt_spaces_inside_and_after_the_range(tmp_path):
    """Words of a multiword token are joined; the range's SpaceAfter applies after its last word."""
    text = (
        "# text = Vamos al mercado.\n"
        "1\tVamos\tir\tVERB\t_\t_\t0\troot\t_\t_\n"
        "2-3\tal\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "2\ta\ta\tADP\t_\t_\t4\tcase\t_\t_\n"
        "3\tel\tel\tDET\t_\t_\t4\tdet\t_\t_\n"
        "4\tmercado\tmercado\tNOUN\t_\t_\t1\tobl:arg\t_\tSpaceAfter=No\n"
        "5\t.\t.\tPUNCT\t_\t_\t1\tpunct\t_\t_\n\n"
        "# text = del,\n"
        "1-2\tdel\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No\n"
        "1\tde\tde\tADP\t_\t_\t2\tcase\t_\t_\n"
        "2\tel\tel\tPRON\t_\t_\t0\troot\t_\t_\n"
        "3\t,\t,\tPUNCT\t_\t_\t2\tpunct\t_\t_\n\n"
    )
    path = tmp_path / "es_test-ud-test.conllu"
    path.write_text(text, encoding="utf-8")
    doc = read_docs(path, Vocab(), n_sents=2)[0]
    assert [t.text for t in doc] == ["Vamos", "a", "el", "mercado", ".", "de", "el", ","]
    assert [t.whitespace_ for t in doc] == [" ", "", " ", "", " ", "", "", " "]
    assert doc.text == "Vamos ael mercado. deel, "
    assert [s.text for s in doc.sents] == ["Vamos ael mercado.", "deel,"]
    assert doc._.get(LANG_ATTR) == "es"
    assert [t.dep_ for t in doc][:5] == ["ROOT", "case", "det", "obl", "punct"]


# ---------------------------------------------------------------------------------------------------------------
# Errors name the file and line

GOOD = (
    "# sent_id = 1\n"
    "# text = A b c\n"
    "1\tA\ta\tDET\t_\t_\t2\tdet\t_\t_\n"
    "2\tb\tb\tNOUN\t_\t_\t0\troot\t_\t_\n"
    "3\tc\tc\tNOUN\t_\t_\t2\tnmod\t_\t_\n"
    "\n"
)


def _broken(tmp_path, line3: str = None, heads=None) -> Path:
    """Two sentences; the second one (lines 7-11) is edited."""
    second = GOOD.splitlines()
    if heads is not None:
        for i, head in enumerate(heads):
            cols = second[2 + i].split("\t")
            cols[6] = head
            second[2 + i] = "\t".join(cols)
    if line3 is not None:
        second[3] = line3
    path = tmp_path / "xx_bad-ud-test.conllu"
    path.write_text(GOOD + "\n".join(second) + "\n\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "edit,line,fragment",
    [
        ({"line3": "2\tb\tb\tNOUN\t_\t_\t0\troot\t_"}, 10, "10 tab-separated columns, found 9"),
        ({"heads": ["2", "x", "2"]}, 10, "HEAD must be a non-negative integer"),
        ({"heads": ["2", "0", "4"]}, 11, "HEAD 4 is out of range"),
        ({"heads": ["2", "2", "2"]}, 10, "word 2 is its own head"),
        ({"heads": ["3", "0", "1"]}, 9, "cycle"),
        ({"heads": ["2", "-1", "2"]}, 10, "HEAD must be a non-negative integer"),
    ],
    ids=["columns", "non-integer-head", "out-of-range-head", "self-head", "cycle", "negative-head"],
)
def test_errors_name_file_and_line(tmp_path, edit, line, fragment):
    path = _broken(tmp_path, **edit)
    with pytest.raises(CoNLLUError) as info:
        read_conllu(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message
    assert info.value.path == str(path) and info.value.line == line


def _second_sentence_lines(tmp_path, lines) -> Path:
    """GOOD, then a second sentence (from line 7) made of `lines`."""
    path = tmp_path / "xx_bad-ud-test.conllu"
    path.write_text(GOOD + "\n".join(lines) + "\n\n", encoding="utf-8")
    return path


WORDS = GOOD.splitlines()[2:5]
RANGE = "\t".join(["{}", "Ab"] + ["_"] * 8)


@pytest.mark.parametrize(
    "lines,line,fragment",
    [
        ([RANGE.format("1-4")] + WORDS, 7, "multiword token 1-4 ends after the last word (3)"),
        ([RANGE.format("1-1")] + WORDS, 7, "multiword token 1-1 must span at least two words"),
        ([RANGE.format("2-3")] + WORDS, 7, "multiword token 2-3 must be followed by word 2"),
        (WORDS[:1] + [RANGE.format("1-2")] + WORDS[1:], 8, "multiword token 1-2 must be followed by word 1"),
        ([RANGE.format("1-2"), WORDS[0], RANGE.format("2-3")] + WORDS[1:], 9, "overlaps 1-2"),
        ([RANGE.format("a-b")] + WORDS, 7, "invalid multiword token ID"),
        (WORDS + [RANGE.format("3-4")], 10, "multiword token 3-4 ends after the last word"),
        ([WORDS[0].replace("DET", "DETERMINER")] + WORDS[1:], 7, "UPOS 'DETERMINER' is not one of the 17 UD tags"),
        ([WORDS[0].replace("\tdet\t", "\tdeterminer:x\t")] + WORDS[1:], 7, "DEPREL 'determiner:x' is not"),
    ],
    ids=["range-past-end", "range-of-one", "range-not-followed", "range-after-its-word", "overlapping-ranges",
         "range-not-numbers", "range-at-the-end", "unknown-upos", "unknown-deprel"],
)
def test_more_errors_name_file_and_line(tmp_path, lines, line, fragment):
    path = _second_sentence_lines(tmp_path, lines)
    with pytest.raises(CoNLLUError) as info:
        read_conllu(path)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n  \n", "# just a comment\n\n"], ids=["empty", "blank", "comments-only"])
def test_a_file_without_sentences_is_an_error(tmp_path, text):
    path = tmp_path / "xx_empty-ud-test.conllu"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CoNLLUError, match="holds no sentences|no word lines") as info:
        read_conllu(path)
    assert str(info.value).startswith(f"{path}:1: ")


@pytest.mark.parametrize("variant", ["bom", "crlf", "no-final-newline", "all-three"])
def test_tolerated_variants_read_like_the_clean_file(tmp_path, variant):
    """Documented tolerance: a UTF-8 byte-order mark, Windows line ends and a missing final newline."""
    clean = tmp_path / "clean-ud-test.conllu"
    clean.write_text(GOOD + GOOD, encoding="utf-8")
    text = GOOD + GOOD
    if variant in ("bom", "all-three"):
        text = "\ufeff" + text
    if variant in ("crlf", "all-three"):
        text = text.replace("\n", "\r\n")
    if variant in ("no-final-newline", "all-three"):
        text = text.rstrip()
    other = tmp_path / "variant-ud-test.conllu"
    other.write_bytes(text.encode("utf-8"))
    read = lambda path: [(s.words, s.spaces, s.upos, s.heads, s.deprels, s.line) for s in read_conllu(path)]
    assert read(other) == read(clean)


def test_good_file_reads(tmp_path):
    path = _broken(tmp_path)
    sentences = read_conllu(path)
    assert [s.heads for s in sentences] == [[2, 0, 2], [2, 0, 2]]
    assert [s.line for s in sentences] == [1, 7]


def test_cycle_not_through_the_first_word(tmp_path):
    """A cycle 2 -> 3 -> 2 beside a proper root: reported on a line of the cycle."""
    path = _broken(tmp_path, heads=["0", "3", "2"])
    with pytest.raises(CoNLLUError, match="cycle") as info:
        read_conllu(path)
    assert info.value.line in (10, 11)
    assert str(info.value).startswith(f"{path}:{info.value.line}: ")


def test_unreadable_files(tmp_path):
    missing = tmp_path / "nope-ud-test.conllu"
    with pytest.raises(CoNLLUError) as info:
        read_conllu(missing)
    assert str(missing) in str(info.value) and "cannot read" in str(info.value)
    bad = tmp_path / "xx_latin1-ud-test.conllu"
    bad.write_bytes(GOOD.replace("A\ta", "\xc9\t\xe9").encode("latin-1"))
    with pytest.raises(CoNLLUError) as info:
        read_conllu(bad)
    assert str(bad) in str(info.value) and "cannot read" in str(info.value)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------------------------
# Atomic writing

def test_failed_write_leaves_nothing_behind(sample_file, tmp_path):
    path = sample_file("en_ewt")
    sentences = read_conllu(path)[:3]
    doc = read_docs_group(Vocab(), sentences)
    out_dir = tmp_path / "out"
    out = out_dir / "pred.conllu"
    with pytest.raises(ValueError, match="tokens but its original sentences have"):
        write_conllu([doc], out, originals=[sentences[:2]])  # originals do not match the doc
    assert not out.exists()
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_failed_write_keeps_the_previous_file(sample_file, tmp_path):
    path = sample_file("en_ewt")
    sentences = read_conllu(path)[:3]
    doc = read_docs_group(Vocab(), sentences)
    out = tmp_path / "pred.conllu"
    out.write_text("previous\n", encoding="utf-8")

    def docs():
        yield doc
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_conllu(docs(), out)
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.conllu"]


# ---------------------------------------------------------------------------------------------------------------
# The data directory

def test_list_treebanks_on_the_real_manifest():
    root = ud_dir()
    everything = list_treebanks()
    assert all(isinstance(tb, TreebankFile) and tb.path.exists() for tb in everything)
    assert all(tb.path.is_relative_to(root) for tb in everything)
    tests = list_treebanks(split="test")
    assert tests and {tb.split for tb in tests} == {"test"}
    assert {tb.split for tb in everything} == {"train", "dev", "test"}
    wo = [tb for tb in everything if tb.treebank == "wo_wtb"]
    assert {tb.split for tb in wo} == {"train", "dev", "test"}
    for tb in wo:
        assert tb.lang == "wo" and tb.path.name == f"wo_wtb-ud-{tb.split}.conllu"
        assert len(read_conllu(tb.path)) == tb.sentences
    # Rows whose file is missing from the snapshot are skipped, not returned.
    assert not any(tb.treebank == "en_ewt" and tb.split == "train" for tb in everything)


def test_find_treebank_by_code_and_language():
    assert find_treebank("wo_wtb", "test").path.name == "wo_wtb-ud-test.conllu"
    assert find_treebank("wo", "test").treebank == "wo_wtb"
    # By language: the largest treebank of that language with the split (en_ewt test beats en_pud test).
    english = [tb for tb in list_treebanks(split="test") if tb.lang == "en"]
    assert len(english) >= 2
    assert find_treebank("en", "test") == max(english, key=lambda tb: tb.words)
    assert find_treebank("en_pud", "test").treebank == "en_pud"
    with pytest.raises(KeyError, match="en_ewt"):
        find_treebank("en_ewt", "train")
    with pytest.raises(KeyError):
        find_treebank("zz_none", "test")


# ---------------------------------------------------------------------------------------------------------------
# The registered reader

def test_registered_reader_yields_unannotated_predicted_docs(sample_file):
    path = sample_file("wo_wtb")
    make_reader = registry.readers.get("spacy-concept-align.UDCorpus.v1")
    reader = make_reader(path=path, n_sents=4, limit=10)
    nlp = spacy.blank("xx")
    examples = list(reader(nlp))
    gold = read_conllu(path)[:10]
    assert len(examples) == 3 and all(isinstance(eg, Example) for eg in examples)
    assert [t.text for eg in examples for t in eg.reference] == [w for s in gold for w in s.words]
    for eg in examples:
        predicted, reference = eg.predicted, eg.reference
        assert [t.text for t in predicted] == [t.text for t in reference]
        assert predicted.text == reference.text
        assert [s.start for s in predicted.sents] == [s.start for s in reference.sents]
        assert not predicted.has_annotation("POS") and not predicted.has_annotation("DEP")
        assert reference.has_annotation("POS") and reference.has_annotation("DEP")
        assert predicted._.get(LANG_ATTR) == "wo"
    assert sum(len(list(eg.reference.sents)) for eg in examples) == 10


def test_registered_reader_on_a_directory(tmp_path, sample_file):
    for code in ("wo_wtb", "ja_gsd"):
        src = sample_file(code)
        (tmp_path / src.name).symlink_to(src)
    reader = registry.readers.get("spacy-concept-align.UDCorpus.v1")(path=tmp_path, n_sents=5, limit=5)
    examples = list(reader(spacy.blank("xx")))
    assert [eg.predicted._.get(LANG_ATTR) for eg in examples] == ["ja", "wo"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No .conllu files"):
        registry.readers.get("spacy-concept-align.UDCorpus.v1")(path=tmp_path / "empty")
