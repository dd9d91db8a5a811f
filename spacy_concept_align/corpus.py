"""Universal Dependencies in and out: CoNLL-U <-> spaCy Docs, the data directory and its MANIFEST.

Reading keeps what the concept space needs (syntactic words, spaces, UPOS, heads, universal relations, sentence
boundaries) and checks what would silently corrupt a tree (column count, heads, cycles), naming file and line.
"""
import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import conllu
from spacy.language import Language
from spacy.tokens import Doc, Token
from spacy.training import Example
from spacy.util import registry
from spacy.vocab import Vocab

from .chars import clean_form, escape_spaces, is_blank
from .labels import DEPREL_ID, UPOS_ID, to_spacy_dep, universal_deprel
from .paths import ud_dir, write_atomic

#: Doc extension holding the ISO code of the doc's language ("wo", "cy", ...); None = unknown.
LANG_ATTR = "concept_lang"


#: Token / Doc extension: how sure the component is (token: P(tag) x P(head); doc: the mean over its words).
CONFIDENCE_ATTR = "concept_confidence"


def ensure_extensions() -> None:
    """Register the extensions the component reads and sets (idempotent, like spacy-transformers'): the doc's
    language, and the confidence of its words (stored once per doc as `doc._.concept_confidences`, one value per
    token, None for blank tokens)."""
    if not Doc.has_extension(LANG_ATTR):
        Doc.set_extension(LANG_ATTR, default=None)
    if not Doc.has_extension("concept_confidences"):
        Doc.set_extension("concept_confidences", default=None)
        Token.set_extension(CONFIDENCE_ATTR, getter=_token_confidence)
        Doc.set_extension(CONFIDENCE_ATTR, getter=_doc_confidence)


def _token_confidence(token) -> Optional[float]:
    values = token.doc._.concept_confidences
    return values[token.i] if values is not None else None


def _doc_confidence(doc) -> Optional[float]:
    """The expected share of words whose tag and head are both right, if the confidences are calibrated."""
    values = [v for v in (doc._.concept_confidences or []) if v is not None]
    return sum(values) / len(values) if values else None


class InputError(ValueError):
    """Bad input, with the file and line where it was found (line 0: the file as a whole)."""

    def __init__(self, path: Union[str, Path], line: int, message: str):
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path, self.line = str(path), line


class CoNLLUError(InputError):
    """Malformed CoNLL-U, with the file and line where it was found."""


@dataclass
class UDSentence:
    """One sentence as syntactic words (multiword tokens expanded, empty nodes dropped)."""

    words: List[str]
    spaces: List[bool]
    upos: List[str]
    heads: List[int]  # CoNLL-U convention: 0 = root, k = word k (1-based)
    deprels: List[str]  # universal relations, subtypes stripped
    lines: List[str] = field(repr=False)  # the original lines, for writing back the same tokenization
    line: int = 0  # line of the sentence's first line in its file

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class TreebankFile:
    """One split file of one treebank, as listed in MANIFEST.tsv."""

    path: Path
    lang: str
    treebank: str
    split: str
    sentences: int
    words: int
    group: str = ""


def treebank_codes(path: Union[str, Path]) -> tuple:
    """(language, treebank) from a UD file name: "wo_wtb-ud-test.conllu" -> ("wo", "wo_wtb")."""
    treebank = Path(path).name.split("-")[0]
    return treebank.split("_")[0], treebank


# ---------------------------------------------------------------------------------------------------------------
# Reading

def read_conllu(path: Union[str, Path]) -> List[UDSentence]:
    """Read and check a CoNLL-U file. Raises CoNLLUError naming the file and line of the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CoNLLUError(path, 0, f"cannot read file ({err})") from err
    # Tolerated: a byte-order mark, CRLF line ends, no final newline. Not tolerated: a file with no sentence.
    sentences = [_parse_block(path, start, lines) for start, lines in _blocks(text.removeprefix("\ufeff"))]
    if not sentences:
        raise CoNLLUError(path, 1, "the file holds no sentences")
    return sentences


def _blocks(text: str) -> Iterator[tuple]:
    """Sentence blocks as (first line number, lines), split on blank lines."""
    start, lines = 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            yield start, lines
            lines = []
    if lines:
        yield start, lines


def _parse_block(path: Path, start: int, lines: List[str]) -> UDSentence:
    word_lines: List[int] = []
    ranges: List[Tuple[int, int, int]] = []  # multiword tokens: (first word, last word, line)
    for offset, line in enumerate(lines):
        if line.startswith("#"):
            continue
        number = start + offset
        columns = line.split("\t")
        if len(columns) != 10:
            raise CoNLLUError(path, number, f"expected 10 tab-separated columns, found {len(columns)}")
        token_id = columns[0]
        if ranges and ranges[-1][2] == number - 1 and token_id != str(ranges[-1][0]):
            first, last, _ = ranges[-1]
            raise CoNLLUError(path, number - 1, f"multiword token {first}-{last} must be followed by word {first}")
        if "-" in token_id:
            ranges.append(_word_range(path, number, token_id, ranges))
            continue
        if "." in token_id:
            continue
        if not token_id.isdigit():
            raise CoNLLUError(path, number, f"invalid ID {token_id!r}")
        if not columns[6].isdigit():
            raise CoNLLUError(path, number, f"HEAD must be a non-negative integer, found {columns[6]!r}")
        if columns[3] != "_" and columns[3] not in UPOS_ID:
            raise CoNLLUError(path, number, f"UPOS {columns[3]!r} is not one of the 17 UD tags")
        if columns[7] != "_" and universal_deprel(columns[7]) not in DEPREL_ID:
            raise CoNLLUError(path, number, f"DEPREL {columns[7]!r} is not a universal relation (or a subtype)")
        word_lines.append(number)
    if not word_lines:
        raise CoNLLUError(path, start, "sentence has no word lines")
    for first, last, number in ranges:
        if last > len(word_lines) or number == start + len(lines) - 1:
            raise CoNLLUError(path, number, f"multiword token {first}-{last} ends after the last word "
                                            f"({len(word_lines)})")
    try:
        tokens = conllu.parse_token_and_metadata("\n".join(lines) + "\n")
    except conllu.exceptions.ParseException as err:
        raise CoNLLUError(path, start, str(err)) from err
    return _sentence(path, start, tokens, word_lines, lines)


def _word_range(path: Path, number: int, token_id: str, ranges: List[Tuple[int, int, int]]) -> Tuple[int, int, int]:
    """A multiword token's "first-last" ID, checked: at least two words, after any previous range."""
    first, _, last = token_id.partition("-")
    if not (first.isdigit() and last.isdigit()):
        raise CoNLLUError(path, number, f"invalid multiword token ID {token_id!r}")
    if int(last) <= int(first):
        raise CoNLLUError(path, number, f"multiword token {token_id} must span at least two words")
    if ranges and int(first) <= ranges[-1][1]:
        raise CoNLLUError(path, number, f"multiword token {token_id} overlaps {ranges[-1][0]}-{ranges[-1][1]}")
    return int(first), int(last), number


def _sentence(path: Path, start: int, tokens: conllu.TokenList, word_lines: List[int], lines: List[str]) -> UDSentence:
    words, spaces, upos, heads, deprels = [], [], [], [], []
    mwt_end, mwt_space = 0, True
    for token in tokens:
        token_id = token["id"]
        if isinstance(token_id, tuple):
            if token_id[1] == "-":  # multiword token: its words follow; SpaceAfter belongs to the range
                mwt_end, mwt_space = token_id[2], _space_after(token)
            continue  # empty nodes ("8.1") are not part of the basic tree
        if token_id != len(words) + 1:
            raise CoNLLUError(path, word_lines[len(words)], f"word IDs must run 1, 2, ...; found {token_id}")
        words.append(token["form"])
        if token_id < mwt_end:
            spaces.append(False)
        else:
            spaces.append(mwt_space if token_id == mwt_end else _space_after(token))
        upos.append(token["upos"] if token["upos"] in UPOS_ID else "X")
        heads.append(token["head"])
        deprels.append(universal_deprel(token["deprel"] or "dep"))
    n = len(words)
    for i, head in enumerate(heads):
        if head > n:
            raise CoNLLUError(path, word_lines[i], f"HEAD {head} is out of range (the sentence has {n} words)")
        if head == i + 1:
            raise CoNLLUError(path, word_lines[i], f"word {i + 1} is its own head")
    _check_acyclic(path, heads, word_lines)
    deprels = [rel if rel in DEPREL_ID else "dep" for rel in deprels]
    return UDSentence(words, spaces, upos, heads, deprels, lines, start)


def _space_after(token: conllu.Token) -> bool:
    misc = token.get("misc") or {}
    return misc.get("SpaceAfter") != "No"


def _check_acyclic(path: Path, heads: Sequence[int], word_lines: List[int]) -> None:
    state = [0] * (len(heads) + 1)  # 0 = unseen, 1 = on the current path, 2 = reaches the root
    state[0] = 2
    for word in range(1, len(heads) + 1):
        trail = []
        node = word
        while state[node] == 0:
            state[node] = 1
            trail.append(node)
            node = heads[node - 1]
        if state[node] == 1:
            raise CoNLLUError(path, word_lines[node - 1], f"the heads form a cycle through word {node}")
        for visited in trail:
            state[visited] = 2


# ---------------------------------------------------------------------------------------------------------------
# Docs

def sentences_to_doc(vocab: Vocab, sentences: Sequence[UDSentence], lang: Optional[str] = None) -> Doc:
    """One Doc holding several sentences, with gold UPOS, heads and (spaCy-style) relations."""
    ensure_extensions()
    words, spaces, pos, heads, deps = [], [], [], [], []
    for sentence in sentences:
        offset = len(words)
        words += sentence.words
        spaces += sentence.spaces
        pos += sentence.upos
        heads += [offset + (h - 1 if h else i) for i, h in enumerate(sentence.heads)]
        deps += [to_spacy_dep(rel) for rel in sentence.deprels]
    doc = Doc(vocab, words=words, spaces=spaces, pos=pos, heads=heads, deps=deps)
    doc._.set(LANG_ATTR, lang)
    return doc


def read_docs(path: Union[str, Path], vocab: Vocab, n_sents: int = 1, limit: int = 0) -> List[Doc]:
    """Gold Docs from a CoNLL-U file, `n_sents` sentences per Doc, the language taken from the file name."""
    lang, _ = treebank_codes(path)
    sentences = read_conllu(path)
    if limit:
        sentences = sentences[:limit]
    return [sentences_to_doc(vocab, sentences[i : i + n_sents], lang) for i in range(0, len(sentences), n_sents)]


def unannotated(doc: Doc) -> Doc:
    """The same words, spaces and sentences with no annotation: a pipeline's input under gold tokenization."""
    ensure_extensions()
    starts = [bool(t.is_sent_start) for t in doc] if doc.has_annotation("DEP") or doc.has_annotation("SENT_START") else None
    bare = Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc], sent_starts=starts)
    bare._.set(LANG_ATTR, doc._.get(LANG_ATTR))
    return bare


@registry.readers("spacy-concept-align.UDCorpus.v1")
def create_ud_corpus_reader(path: Path, n_sents: int = 10, limit: int = 0) -> Callable[[Language], Iterator[Example]]:
    """A spaCy corpus reader for a CoNLL-U file, or every *.conllu below a directory.

    path (Path): the file or directory.
    n_sents (int): sentences per Doc.
    limit (int): at most this many sentences per file (0 = all).
    RETURNS (Callable[[Language], Iterator[Example]]): the reader spaCy's [corpora] block expects.
    """
    files = sorted(Path(path).rglob("*.conllu")) if Path(path).is_dir() else [Path(path)]
    if not files:
        raise FileNotFoundError(f"No .conllu files at {path}")

    def read(nlp: Language) -> Iterator[Example]:
        for file in files:
            for gold in read_docs(file, nlp.vocab, n_sents=n_sents, limit=limit):
                yield Example(unannotated(gold), gold)

    return read


# ---------------------------------------------------------------------------------------------------------------
# Writing

def doc_to_conllu(doc: Doc, originals: Optional[Sequence[UDSentence]] = None, first_sent: int = 1) -> List[str]:
    """CoNLL-U sentence blocks (each ending in a blank line) for a Doc's predictions.

    Without `originals`, the words are the Doc's non-blank tokens (chars.is_blank): spaces of any kind, zero-width
    and control characters become the `SpacesAfter` / `SpacesBefore` of the words around them, never word lines.
    Sentences are numbered `# sent_id = first_sent, first_sent + 1, ...`.
    With `originals` (the sentences the Doc was read from), their lines are kept byte for byte and only UPOS, HEAD
    and DEPREL (and DEPS, set to "_") of word lines are replaced, so the file's own tokenization (multiword tokens,
    empty nodes), comments and features survive.
    """
    if originals is None:
        return _new_blocks(doc, first_sent)
    n_words = sum(map(len, originals))
    if n_words != len(doc):
        raise ValueError(f"The Doc has {len(doc)} tokens but its original sentences have {n_words} words")
    blocks, offset = [], 0
    has_dep = doc.has_annotation("DEP")
    for original in originals:
        span = doc[offset : offset + len(original)]
        offset += len(original)
        words = iter(span)
        out = []
        for line in original.lines:
            columns = line.split("\t")
            if not line.startswith("#") and columns[0].isdigit():
                token = next(words)
                columns[3] = token.pos_ if token.pos_ in UPOS_ID else "X"
                if has_dep:
                    columns[6] = str(0 if token.head.i == token.i else token.head.i - span.start + 1)
                    columns[7] = universal_deprel(token.dep_) if token.dep_ else "dep"
                columns[8] = "_"
            out.append("\t".join(columns))
        blocks.append("\n".join(out) + "\n\n")
    return blocks


def _new_blocks(doc: Doc, first_sent: int) -> List[str]:
    """Blocks for a Doc with no CoNLL-U of its own: words, the space after each, one tree per sentence."""
    words = [t for t in doc if not is_blank(t.text)]
    after = {}  # token index -> the text between it and the next word (its whitespace and blank tokens)
    for word, following in zip(words, words[1:] + [None]):
        stop = following.i if following is not None else len(doc)
        after[word.i] = word.whitespace_ + "".join(t.text_with_ws for t in doc[word.i + 1 : stop])
    before = doc[: words[0].i].text_with_ws if words else ""
    has_dep = doc.has_annotation("DEP")
    blocks = []
    for sent in doc_sentences(doc):
        sent_words = [t for t in sent if not is_blank(t.text)]
        if not sent_words:
            continue
        ids = {t.i: n for n, t in enumerate(sent_words, start=1)}
        heads = _word_heads(sent_words, ids) if has_dep else {}
        lines, text = [], ""
        for n, token in enumerate(sent_words, start=1):
            form, space = clean_form(token.text) or "_", after[token.i]
            misc = []
            if token.i == words[0].i and before:
                misc.append(f"SpacesBefore={escape_spaces(before)}")
            if not space and token.i != words[-1].i:
                misc.append("SpaceAfter=No")
            elif space and space != " ":
                misc.append(f"SpacesAfter={escape_spaces(space)}")
            text += form + (" " if space else "")
            head, deprel = heads.get(token.i, (None, "_"))
            upos = token.pos_ if token.pos_ in UPOS_ID else ("X" if token.pos_ else "_")
            lines.append("\t".join([str(n), form, "_", upos, "_", "_", "_" if head is None else str(head),
                                    deprel, "_", "|".join(misc) or "_"]))
        header = [f"# sent_id = {first_sent + len(blocks)}", f"# text = {text.rstrip()}"]
        blocks.append("\n".join(header + lines) + "\n\n")
    return blocks


def _word_heads(words: List, ids: dict) -> dict:
    """Token index -> (HEAD, DEPREL) of a sentence's words: one tree, whatever the Doc holds.

    A head that is not one of the words (a blank token, another sentence) is followed up to one; a second root,
    a chain that leaves the sentence and a cycle all end on the first root, as `dep`.
    """
    heads = {t.i: _word_above(t, ids) for t in words}
    root = next((i for i, head in heads.items() if head is None), words[0].i)
    heads = {i: root if head is None else head for i, head in heads.items()}
    for i in heads:
        node, seen = i, set()
        while node != root and node not in seen:
            seen.add(node)
            node = heads[node]
        if node != root:
            heads[i] = root
    result = {}
    for token in words:
        rel = universal_deprel(token.dep_) if token.dep_ else "dep"
        rel = rel if rel in DEPREL_ID and rel != "root" else "dep"
        result[token.i] = (0, "root") if token.i == root else (ids[heads[token.i]], rel)
    return result


def _word_above(token, ids: dict):
    """The nearest word above a token (its head, or its head's head past non-words), None for a root."""
    head, seen = token.head, {token.i}
    while head.i not in ids:
        if head.i in seen or head.head.i == head.i:
            return None
        seen.add(head.i)
        head = head.head
    return None if head.i == token.i else head.i


def doc_sentences(doc: Doc) -> list:
    """The doc's sentences when it has boundaries (sentencizer, gold, a parse), else the whole doc as one."""
    return list(doc.sents) if doc.has_annotation("SENT_START") or doc.has_annotation("DEP") else [doc[:]]


def write_conllu(
    docs: Iterable[Doc], path: Union[str, Path], originals: Optional[Sequence[Sequence[UDSentence]]] = None
) -> int:
    """Write Docs as CoNLL-U as they come, atomically: a failure leaves no half-written file behind.

    RETURNS (int): the number of sentences written.
    """
    n_sents = 0

    def chunks():
        nonlocal n_sents
        for i, doc in enumerate(docs):
            blocks = doc_to_conllu(doc, originals[i] if originals else None, first_sent=n_sents + 1)
            n_sents += len(blocks)
            yield "".join(blocks).encode("utf-8")

    write_atomic(path, chunks())
    return n_sents


# ---------------------------------------------------------------------------------------------------------------
# The data directory

def list_treebanks(data_dir: Optional[Path] = None, split: Optional[str] = None) -> List[TreebankFile]:
    """The split files in a UD data directory: from its MANIFEST.tsv, or found by name (UD_*/*-ud-*.conllu)."""
    root = ud_dir(data_dir)
    result = []
    if (root / "MANIFEST.tsv").exists():
        with open(root / "MANIFEST.tsv", encoding="utf-8") as manifest:
            for row in csv.DictReader(manifest, delimiter="\t"):
                path = root / row["repo"] / row["file"]
                if row["file"] != "-" and path.exists():
                    result.append(TreebankFile(path, row["lang_code"], row["treebank_code"], row["split"],
                                               int(row["sentences"]), int(row["words"]), row.get("group", "")))
    else:  # a plain copy of UD (git clones or the release archive): sizes are counted from the files
        for path in sorted(root.glob("UD_*/*-ud-*.conllu")):
            lang, treebank = treebank_codes(path)
            text = path.read_text(encoding="utf-8")
            words = sum(1 for line in text.splitlines() if line[:1].isdigit() and line.split("\t", 1)[0].isdigit())
            result.append(TreebankFile(path, lang, treebank, path.stem.rsplit("-", 1)[-1],
                                       text.count("\n\n"), words))
    return [tb for tb in result if not split or tb.split == split]


#: The splits a language's data is taken from, in order of preference, to learn from it (never its test split
#: while another exists) and to test on it.
TRAIN_SPLITS, TEST_SPLITS = ("train", "dev", "test"), ("test", "dev", "train")


def choose_file(code: str, splits: Sequence[str] = TRAIN_SPLITS, data_dir: Optional[Path] = None) -> TreebankFile:
    """The one file a treebank ("wo_wtb") or a language ("wo": its largest treebank) contributes: of the first
    split in `splits` that it has."""
    files = list_treebanks(data_dir)
    candidates = [tb for tb in files if tb.treebank == code] or [tb for tb in files if tb.lang == code]
    for split in splits:
        matches = [tb for tb in candidates if tb.split == split]
        if matches:
            return max(matches, key=lambda tb: (tb.words, tb.treebank))
    raise KeyError(f"No {'/'.join(splits)} file for {code!r} in {ud_dir(data_dir)}")


def find_treebank(code: str, split: str, data_dir: Optional[Path] = None) -> TreebankFile:
    """One split of a treebank by its code ("wo_wtb") or by language code ("wo": the largest treebank)."""
    return choose_file(code, (split,), data_dir)
