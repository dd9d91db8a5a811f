"""One vector per word from a frozen transformer's layer k (and, optionally, lower layers beside it): the only
place that runs the encoder.

Any Hugging Face encoder or decoder works (hub name, local directory, or the offline default). The model is
truncated after layer k, so layers above it are never loaded or computed.
"""
import hashlib
import logging
from functools import cached_property, lru_cache
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from spacy.util import registry

from ..batching import padded_batches
from .bundle import Q4_WEIGHTS, load_q4
from . import characters

logger = logging.getLogger(__name__)

POOLINGS = ("first", "mean", "last")
PRECISIONS = ("fp32", "int8")
UNKNOWN_CHARACTERS = ("transliterate", "keep")
#: Padded pieces per forward pass, whatever the batch size: bounds memory when windows are long.
MAX_BATCH_PIECES = 2048
#: Pieces encoded together (their windows sorted by length); hidden states are held for one such group at a time.
MAX_ENCODE_PIECES = 32768
#: Pieces kept per word: bounds the cost of junk "words" (3,000 characters of one script); in the UD test sets
#: 4 words of 1.27 million have more (URLs), and the vector comes from the first piece(s) anyway.
MAX_WORD_PIECES = 64
_BARE_SPACE = "▁Ġ "  # SentencePiece / byte-level BPE word-boundary markers

#: What the encoder gives for one sentence: word vectors (n_words x width) and the sentence's root vector.
SentenceVectors = Tuple[np.ndarray, np.ndarray]


def resolve_model(name: str) -> str:
    """A loadable path or hub name: the offline default is built on first use (then cached), dirs are kept."""
    from .offline import OFFLINE_NAME, build_offline_encoder

    if name == OFFLINE_NAME:
        return str(build_offline_encoder())
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def truncated_model_dir(name: str, layer: int) -> Path:
    """A model directory whose config stops after `layer` layers (weights linked, not copied).

    For tools that always read the top layer (spacy-transformers' listeners): pointing them here makes "the top
    layer" the layer this package reads, so a baseline built with them sees the same vectors.
    """
    import json

    from ..paths import cache_dir

    source = Path(resolve_model(name))
    if not source.is_dir():
        raise ValueError(f"{name}: truncation needs a local model directory")
    target = cache_dir() / "encoders" / f"{source.name}-L{layer}"
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((source / "config.json").read_text())
    config["num_hidden_layers"] = layer
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for file in source.iterdir():
        link = target / file.name
        if file.name != "config.json" and not link.exists():
            link.symlink_to(file.resolve())
    return target


@lru_cache(maxsize=4)
def _load(path: str, layer: int, precision: str = "fp32"):
    """Tokenizer + model truncated to `layer` layers (shared by every encoder with the same path, layer, precision)."""
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{path}: encoder-decoder models are not supported; use an encoder or a decoder-only model")
    n_layers = config.num_hidden_layers
    if not 0 <= layer <= n_layers:
        raise ValueError(f"{path} has {n_layers} layers; layer must be in 0..{n_layers}, got {layer}")
    config.num_hidden_layers = layer
    if (Path(path) / Q4_WEIGHTS).is_file():  # the offline default saved inside a pipeline: 4-bit blocks
        tokenizer, model = load_q4(Path(path))
        return tokenizer, (_quantized(model) if precision == "int8" else model)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the unused weights of layers above k are expected
    try:
        # low_cpu_mem_usage: weights go straight into place (peak memory ~ one copy of the model, not two)
        model = AutoModel.from_pretrained(path, config=config, torch_dtype=torch.float32, low_cpu_mem_usage=True)
        tokenizer = AutoTokenizer.from_pretrained(path)
        try:
            tokenizer(["a"], is_split_into_words=True)
        except Exception:  # byte-level BPE (GPT-2 style) needs a prefix space to take pre-split words
            tokenizer = AutoTokenizer.from_pretrained(path, add_prefix_space=True)
    finally:
        transformers.logging.set_verbosity(verbosity)
    model.eval()
    if precision == "int8":
        model = _quantized(model)
    return tokenizer, model


def _quantized(model):
    """Dynamic int8 quantisation of the linear layers: ~1.7x faster matrix products on CPUs without bf16 units."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's eager quantisation announces its move to torchao
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class FrozenEncoder:
    """Turns sentences (lists of words) into word vectors at one hidden layer of a frozen model.

    name (str): a hub name, a local model directory, or "offline:multilingual-e5-small".
    layer (int): the hidden_states index to read (0 = embeddings); the model is cut after it.
    pooling (str): "first" subword (the paper's; a bare "▁" first piece is skipped), "mean" of the pieces (the
        default config's: the endings count too) or "last" (the natural choice for decoder-only models, whose first
        piece has not seen the word).
    batch_size (int): windows per forward pass (sorted by length).
    max_length (int): window size in pieces; 0 = the model's own limit. Longer sentences are covered by
        overlapping windows and each piece takes its vector from the window where it is most central.
    precision (str): "fp32", or "int8" = dynamic quantisation of the linear layers (faster on CPU; see the
        README's speed table for what it costs in accuracy).
    extra_layers (Sequence[int]): lower layers whose vectors are concatenated after layer k's (free: the model
        computes them anyway). Not used by default: layer 4 beside 6 helped the languages near the sources and cost
        the distant ones (README, levers table).
    unknown_characters (str): "transliterate" (characters the tokenizer cannot read become ones it can:
        characters.py) or "keep" (they reach the model as its unknown piece, as published).
    """

    def __init__(self, name: str, layer: int, pooling: str = "first", batch_size: int = 32, max_length: int = 0,
                 precision: str = "fp32", extra_layers: Sequence[int] = (), unknown_characters: str = "transliterate"):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if unknown_characters not in UNKNOWN_CHARACTERS:
            raise ValueError(f"unknown_characters must be one of {UNKNOWN_CHARACTERS}, got {unknown_characters!r}")
        if any(not 0 <= k < layer for k in extra_layers):
            raise ValueError(f"extra_layers must be below layer {layer} (the model is cut after it), got {list(extra_layers)}")
        self.name, self.layer, self.pooling, self.precision = name, layer, pooling, precision
        self.extra_layers = tuple(int(k) for k in extra_layers)
        self.batch_size, self.max_length = batch_size, max_length
        self.unknown_characters = unknown_characters

    @property
    def settings(self) -> dict:
        """What the vectors depend on besides the model files (saved with weights and features, checked on load)."""
        settings = {"name": self.name, "layer": self.layer, "pooling": self.pooling}
        if self.unknown_characters != "keep":
            settings["unknown_characters"] = self.unknown_characters
        return {**settings, "extra_layers": list(self.extra_layers)} if self.extra_layers else settings

    @cached_property
    def path(self) -> str:
        """Where the model loads from (resolved once: the offline default is checked or built here)."""
        return resolve_model(self.name)

    @property
    def tokenizer(self):
        return _load(self.path, self.layer, self.precision)[0]

    @property
    def model(self):
        return _load(self.path, self.layer, self.precision)[1]

    def use_files(self, path: Path) -> None:
        """Read the model from `path` (an encoder saved inside a pipeline) instead of resolving `name`."""
        self.__dict__["path"] = str(path)
        self.__dict__.pop("config", None)

    @cached_property
    def config(self):
        """The model's config (read once; no weights are loaded for it; the offline default's is known by heart)."""
        from transformers import AutoConfig, BertConfig

        from .offline import CONFIG, OFFLINE_NAME

        if self.name == OFFLINE_NAME and "path" not in self.__dict__:  # no build needed to know its shape
            return BertConfig(**CONFIG)
        return AutoConfig.from_pretrained(self.path)

    @property
    def width(self) -> int:
        """The vector size (the model's, times the layers read)."""
        return (getattr(self.config, "hidden_size", None) or self.config.n_embd) * (1 + len(self.extra_layers))

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size: with the width, what tells one model from another."""
        return self.config.vocab_size

    @property
    def fingerprint(self) -> str:
        """Identifies what this encoder computes, for cache keys: model files, layer and pooling."""
        path = Path(self.path)
        digest = hashlib.sha256(f"{self.name}|{self.layer}|{self.pooling}|v2".encode())  # v2: MAX_WORD_PIECES
        if self.extra_layers:
            digest.update(f"|extra{self.extra_layers}".encode())
        if self.precision != "fp32":
            digest.update(self.precision.encode())
        if self.unknown_characters != "keep":
            digest.update(f"|{self.unknown_characters}-v{characters.VERSION}".encode())
        if path.is_dir():
            for file in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
                stat = file.stat()
                digest.update(f"{file.name}:{stat.st_size}".encode())
                if file.suffix == ".json":
                    digest.update(file.read_bytes())
        return digest.hexdigest()[:16]

    def __call__(self, sentences: Sequence[Sequence[str]]) -> List[SentenceVectors]:
        return self.encode(sentences)

    def encode(self, sentences: Sequence[Sequence[str]]) -> List[SentenceVectors]:
        """Word vectors (n x width, float32) and a root vector (the start token's state) per sentence.

        Sentences go through in groups of at most MAX_ENCODE_PIECES pieces: the hidden states kept at once stay
        bounded however many (or however long) the sentences are.
        """
        pieces = [self._pieces(words) for words in sentences]
        vectors: List[SentenceVectors] = []
        group: List[int] = []
        size = 0
        for s, (ids, _) in enumerate(pieces):
            if group and size + len(ids) > MAX_ENCODE_PIECES:
                vectors += self._encode_group([pieces[i] for i in group])
                group, size = [], 0
            group.append(s)
            size += len(ids)
        return vectors + (self._encode_group([pieces[i] for i in group]) if group else [])

    def _encode_group(self, pieces: List[Tuple[List[int], List[List[int]]]]) -> List[SentenceVectors]:
        tokenizer, model = self.tokenizer, self.model
        prefix, suffix = self._special_pieces()
        window = self._window_size(len(prefix) + len(suffix))
        # Every (sentence, window start) becomes one model input; sort them by length for cheap padding.
        jobs = [(s, start) for s, (ids, _) in enumerate(pieces) for start in _window_starts(len(ids), window)]
        jobs.sort(key=lambda job: min(window, len(pieces[job[0]][0]) - job[1]))
        states = {}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        lengths = [len(prefix) + min(window, len(pieces[s][0]) - start) + len(suffix) for s, start in jobs]
        with torch.inference_mode():
            for rows in padded_batches(lengths, self.batch_size, MAX_BATCH_PIECES):
                batch = jobs[rows.start : rows.stop]
                inputs = [prefix + pieces[s][0][start : start + window] + suffix for s, start in batch]
                width = max(map(len, inputs))
                ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(inputs), width), dtype=torch.long)
                for row, seq in enumerate(inputs):
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                layers = [out.hidden_states[k] for k in (self.layer, *self.extra_layers)]
                hidden = torch.cat(layers, dim=-1).float().numpy()
                for row, (s, start) in enumerate(batch):
                    states[s, start] = hidden[row, : len(inputs[row])]
        return [
            self._sentence_vectors(ids, words_of, states, s, window, len(prefix))
            for s, (ids, words_of) in enumerate(pieces)
        ]

    # -- pieces ---------------------------------------------------------------------------------------------

    def _special_pieces(self) -> Tuple[List[int], List[int]]:
        """The special ids the tokenizer puts around a sequence ([CLS] ... [SEP], <s> ... </s>, or nothing)."""
        enc = self.tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
        ids, word_ids = enc["input_ids"], enc.word_ids()
        first = word_ids.index(0)
        last = len(word_ids) - 1 - word_ids[::-1].index(0)
        return ids[:first], ids[last + 1 :]

    def _window_size(self, n_special: int) -> int:
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 512)
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # position ids start after the padding index
        if 0 < self.tokenizer.model_max_length < limit:
            limit = self.tokenizer.model_max_length
        if self.max_length:
            limit = min(limit, self.max_length)
        if limit - n_special < 2:
            raise ValueError(f"max_length {limit} leaves no room for words beside {n_special} special tokens")
        return limit - n_special

    def _pieces(self, words: Sequence[str]) -> Tuple[List[int], List[List[int]]]:
        """Piece ids of a sentence and, per word, the positions of the pieces that represent it."""
        tokenizer = self.tokenizer
        clean = [w if w.strip() else (tokenizer.unk_token or "_") for w in words]
        enc = tokenizer(clean, is_split_into_words=True, add_special_tokens=False, verbose=False)
        ids, word_ids = enc["input_ids"], enc.word_ids()
        unk = tokenizer.unk_token_id
        if self.unknown_characters == "transliterate" and unk is not None and unk in ids:
            with_unk = {word_ids[p] for p, piece in enumerate(ids) if piece == unk}  # (a blank word is "<unk>" itself)
            unreadable = [k in with_unk and word != tokenizer.unk_token for k, word in enumerate(clean)]
            stand_ins = characters.readable_words(clean, tokenizer, unreadable)
            if stand_ins != clean:  # read again, each unreadable word by its stand-in ("<unk>" if nothing is left)
                return self._pieces(stand_ins)
        if len(ids) > MAX_WORD_PIECES:  # a word's first MAX_WORD_PIECES pieces only (junk "words" cost no more)
            kept = [pos for pos, n in enumerate(_piece_numbers(word_ids)) if n < MAX_WORD_PIECES]
            ids, word_ids = [ids[p] for p in kept], [word_ids[p] for p in kept]
        positions: List[List[int]] = [[] for _ in words]
        for pos, w in enumerate(word_ids):
            if w is not None:
                positions[w].append(pos)
        missing = [w for w, pos in enumerate(positions) if not pos]
        if missing:  # a word the tokenizer drops entirely (e.g. a lone control character) still needs a vector
            for w in missing:
                clean[w] = tokenizer.unk_token or "_"
            return self._pieces(clean)
        tokens = tokenizer.convert_ids_to_tokens(ids)
        chosen = []
        for pos in positions:
            informative = [p for p in pos if tokens[p].strip(_BARE_SPACE)] or pos
            if self.pooling == "first":
                chosen.append(informative[:1])
            elif self.pooling == "last":
                chosen.append(pos[-1:])
            else:
                chosen.append(informative)
        return ids, chosen

    def _sentence_vectors(self, ids, words_of, states, s, window, n_prefix) -> SentenceVectors:
        starts = _window_starts(len(ids), window)
        if len(starts) == 1:
            piece_states = states[s, 0][n_prefix : n_prefix + len(ids)]
        else:
            piece_states = np.empty((len(ids), states[s, 0].shape[1]), dtype=np.float32)
        for p in range(len(ids) if len(starts) > 1 else 0):  # each piece from the window where it is most central
            start = min((st for st in starts if st <= p < st + window), key=lambda st: abs(p - st - window / 2))
            piece_states[p] = states[s, start][n_prefix + p - start]
        words = np.stack([piece_states[pos].mean(axis=0) for pos in words_of])
        root = states[s, 0][0] if n_prefix else words.mean(axis=0)
        return words, root.astype(np.float32)


def _piece_numbers(word_ids: Sequence[Optional[int]]) -> List[int]:
    """For each piece, how many pieces of the same word come before it (0 for special pieces)."""
    seen: dict = {}
    numbers = []
    for w in word_ids:
        numbers.append(seen.get(w, 0) if w is not None else 0)
        if w is not None:
            seen[w] = seen.get(w, 0) + 1
    return numbers


def _window_starts(n: int, window: int) -> List[int]:
    """Starts of windows of `window` pieces covering n pieces, each overlapping the next by half a window."""
    if n <= window:
        return [0]
    stride = max(1, window // 2)
    starts = list(range(0, n - window, stride))
    return starts + [n - window]


@registry.architectures("spacy-concept-align.FrozenEncoder.v1")
def build_frozen_encoder(
    name: str, layer: int, pooling: str = "first", batch_size: int = 32, max_length: int = 0, precision: str = "fp32",
    extra_layers: Sequence[int] = (), unknown_characters: str = "transliterate",
) -> FrozenEncoder:
    """Registered as spacy-concept-align.FrozenEncoder.v1: the encoder block of a concept_align config."""
    return FrozenEncoder(name, layer, pooling=pooling, batch_size=batch_size, max_length=max_length,
                         precision=precision, extra_layers=extra_layers, unknown_characters=unknown_characters)
