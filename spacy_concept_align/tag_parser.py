"""Heads from tags alone: a small delexicalised parser (McDonald et al., 2011) that reads a sentence's UPOS sequence
and the language's word-order typology (URIEL's syntax features, as in Ammar et al., 2016), trained on the
meta-training languages' gold trees. Its head log-probabilities are added to the arc scorer's, like the arc table
but seeing the whole tag sequence: a named language gets the word order its typology and its tags suggest, and
a few annotated sentences fine-tune it (few-shot), where the trees' shapes are what they teach best.

Validation languages' dev splits (UAS / LAS), decided there:
- zero-shot, language named: 66.25 / 51.38 without; a first parser at weight 0.15 / 0.3 / 0.5 / 1: 66.51 / 51.59,
  66.50 / 51.59, 66.36 / 51.52, 65.44 / 50.84 (without the typology input: 66.31 / 51.46 at 0.15); the shipped one
  at 0.15 / 0.3: 66.57 / 51.62, 66.65 / 51.71 (ConceptDecoder.tag_parser_weight 0.3);
- raw text (the shared parser beside the text's own priors, UnlabeledSettings): 66.56 / 52.53 -> 66.83 / 52.73;
- few-shot, 2 seeds, K = 5 / 20 / 50, the language's copy fine-tuned on the support trees for 10 passes (lr 5e-4)
  at weight 0.3 (AdaptSettings.tag_parser_*): UAS +0.65 / +0.81 / +0.99, LAS +0.48 / +0.70 / +0.87; at 0.6:
  +0.28 / +0.54 / +0.69 UAS; 30 passes at 0.3: +0.45 / +0.70 / +0.75; not fine-tuned at 0.15: +0.37 / +0.18 / +0.14.

It labels too: each word's relation from its own and its head's states and the arc's direction (the relation given
the sentence's tags, where the relation table sees only the two tags), log-probabilities added to the relation
scores (ConceptDecoder.tag_relation_weight, AdaptSettings.tag_relation_weight); few-shot, its copy is fine-tuned at
lr 1e-3 since (AdaptSettings.tag_parser_lr).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureSet
from .inference import inference
from .labels import DEPRELS, UPOS

ROOT_TAG = len(UPOS)  # the tag id of the sentence's root token, read first
TYPOLOGY_FEATURES = 103  # typology.syntax_features


class TagParser(nn.Module):
    """A biaffine head scorer over a 2-layer BiLSTM of tag embeddings (+ the language's typology, projected), and a
    relation classifier over each word's and its head's states (`relations=False`: heads only, as saved before)."""

    def __init__(self, tag_dim: int = 48, hidden: int = 96, mlp: int = 128, label_mlp: int = 96,
                 dropout: float = 0.2, relations: bool = True):
        super().__init__()
        self.tags = nn.Embedding(len(UPOS) + 1, tag_dim)
        self.typology = nn.Linear(TYPOLOGY_FEATURES, tag_dim)
        self.lstm = nn.LSTM(tag_dim, hidden, 2, batch_first=True, bidirectional=True, dropout=dropout)
        self.dep = nn.Sequential(nn.Linear(2 * hidden, mlp), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Sequential(nn.Linear(2 * hidden, mlp), nn.ReLU(), nn.Dropout(dropout))
        self.biaffine = nn.Parameter(torch.zeros(mlp, mlp))
        self.head_bias = nn.Linear(mlp, 1)
        self.relations: Optional[nn.Linear] = None
        if relations:
            self.label_dep = nn.Sequential(nn.Linear(2 * hidden, label_mlp), nn.ReLU(), nn.Dropout(dropout))
            self.label_head = nn.Sequential(nn.Linear(2 * hidden, label_mlp), nn.ReLU(), nn.Dropout(dropout))
            self.direction = nn.Embedding(3, label_mlp)  # the root, a head to the left, to the right
            self.relations = nn.Linear(3 * label_mlp, len(DEPRELS))

    def forward(self, tags: torch.Tensor, lengths: Sequence[int], typology: torch.Tensor) -> torch.Tensor:
        """tags: batch x (n + 1) tag ids, the root tag first, or batch x (n + 1) x (tags + 1) distributions over them
        (read as the expected embedding); RETURNS batch x n x (n + 1) head scores (column 0 = root)."""
        return self.head_scores(self.states(tags, lengths, typology))

    def states(self, tags: torch.Tensor, lengths: Sequence[int], typology: torch.Tensor) -> torch.Tensor:
        """The BiLSTM's states, batch x (n + 1) x 2 hidden (the root's first)."""
        embedded = self.tags(tags) if tags.dtype == torch.long else tags @ self.tags.weight
        x = embedded + self.typology(typology)[:, None, :]
        packed = nn.utils.rnn.pack_padded_sequence(x, list(lengths), batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=tags.shape[1])[0]

    def head_scores(self, states: torch.Tensor) -> torch.Tensor:
        dep, head = self.dep(states[:, 1:]), self.head(states)
        return dep @ self.biaffine @ head.transpose(1, 2) + self.head_bias(head).transpose(1, 2)

    def relation_scores(self, states: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """batch x n x relations, for each word and its head (heads: batch x n, 0 = root; padding any head)."""
        heads = heads.clamp(min=0)
        head_states = torch.gather(states, 1, heads[:, :, None].expand(-1, -1, states.shape[2]))
        dep, head = self.label_dep(states[:, 1:]), self.label_head(head_states)
        position = torch.arange(1, heads.shape[1] + 1, device=heads.device)[None]
        direction = torch.where(heads == 0, 0, torch.where(heads < position, 1, 2))
        return self.relations(torch.cat([dep, head, dep * head + self.direction(direction)], -1))

    def log_probs(self, upos: np.ndarray, offsets: np.ndarray, typology: np.ndarray, batch_size: int = 64,
                  reading: Optional[list] = None) -> List[np.ndarray]:
        """Per sentence, log p(head | the sentence's tags, typology): n x (n + 1), column 0 = root.

        upos: a tag id per word, or (words x UPOS) the tagger's probabilities: the parser then reads each word's
        expected tag embedding, so a word the tagger is unsure of does not commit the heads to its first guess
        (validation dev, zero-shot, language named, UAS / LAS: 66.65 / 51.71 from the argmax tags, 66.85 / 51.82).
        reading: `read`'s result for these inputs, if already computed.
        """
        out: List[Optional[np.ndarray]] = [None] * (len(offsets) - 1)
        for ids, states, lengths, _ in reading or self.read(upos, offsets, typology, batch_size):
            with inference(self):
                scores = _masked(self.head_scores(states), lengths)
            for row, s in enumerate(ids):
                n = lengths[row] - 1
                out[s] = torch.log_softmax(scores[row, :n, : n + 1], -1).numpy()
        return out

    def relation_log_probs(self, upos: np.ndarray, heads: np.ndarray, offsets: np.ndarray, typology: np.ndarray,
                           batch_size: int = 64, reading: Optional[list] = None) -> np.ndarray:
        """log p(relation | the sentence's tags, typology, the word's head), words x relations (`log_probs`' inputs,
        and each word's head, 0 = root)."""
        out = np.zeros((len(upos), len(DEPRELS)), np.float32)
        for _, states, _, spans in reading or self.read(upos, offsets, typology, batch_size):
            padded = torch.zeros((len(spans), states.shape[1] - 1), dtype=torch.long)
            for row, (start, end) in enumerate(spans):
                padded[row, : end - start] = torch.from_numpy(np.asarray(heads[start:end], np.int64))
            with inference(self):
                scores = torch.log_softmax(self.relation_scores(states, padded), -1).numpy()
            for row, (start, end) in enumerate(spans):
                out[start:end] = scores[row, : end - start]
        return out

    def read(self, upos: np.ndarray, offsets: np.ndarray, typology: np.ndarray, batch_size: int = 64) -> list:
        """The sentences' BiLSTM states (no gradients, no dropout), in batches of similar lengths: [(sentence ids,
        states, lengths with the root, word spans)], what `log_probs` and `relation_log_probs` read (computed once
        when both are wanted)."""
        spans = list(zip(offsets[:-1], offsets[1:]))
        order = sorted(range(len(spans)), key=lambda s: spans[s][1] - spans[s][0])  # similar lengths pad little
        out = []
        with inference(self):
            for i in range(0, len(order), batch_size):
                ids = order[i : i + batch_size]
                chunks = [upos[spans[s][0] : spans[s][1]] for s in ids]
                tags, lengths, _ = _batch([(c.argmax(-1) if c.ndim == 2 else c, None) for c in chunks])
                if upos.ndim == 2:
                    tags = _distributions(tags, chunks)
                out.append((ids, self.states(tags, lengths, _typology(typology, len(ids))), lengths,
                            [spans[s] for s in ids]))
        return out

    def fit(self, sentences: Sequence[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], epochs: int, lr: float,
            batch_size: int, noise: float = 0.0, seed: int = 0) -> float:
        """Train on (UPOS, heads, relations, typology) sentences (relations -1 where unknown), the relations on the
        gold heads; with `noise`, that share of tags is replaced at random (the tags it reads at prediction are
        predicted ones). RETURNS the last batch's loss."""
        rng = np.random.default_rng(seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        loss = torch.tensor(0.0)
        self.train()
        for _ in range(epochs):
            order = rng.permutation(len(sentences))
            for i in range(0, len(order), batch_size):
                chosen = [sentences[j] for j in order[i : i + batch_size]]
                tags, lengths, heads = _batch([(_noised(u, noise, rng), h) for u, h, *_ in chosen])
                states = self.states(tags, lengths, torch.from_numpy(np.stack([t for *_, t in chosen])))
                scores = _masked(self.head_scores(states), lengths)
                loss = F.cross_entropy(scores.flatten(0, 1), heads.flatten(), ignore_index=-100)
                if self.relations is not None:
                    gold = torch.full(heads.shape, -100, dtype=torch.long)
                    for row, (_, _, relations, _) in enumerate(chosen):
                        gold[row, : len(relations)] = torch.from_numpy(np.where(relations >= 0, relations, -100))
                    if (gold >= 0).any():
                        loss = loss + F.cross_entropy(self.relation_scores(states, heads).flatten(0, 1),
                                                      gold.flatten(), ignore_index=-100)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.eval()
        return float(loss.detach())


def training_sentences(features: FeatureSet, typology: np.ndarray,
                       max_words: int = 80) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(UPOS, heads, relations, typology) of each sentence of at least 2 and at most `max_words` words whose tags and
    heads are all known (relations: -1 where unknown)."""
    out = []
    typology = np.asarray(typology, np.float32)
    for start, end in zip(features.offsets[:-1], features.offsets[1:]):
        upos, heads = np.asarray(features.upos[start:end], np.int64), np.asarray(features.heads[start:end], np.int64)
        if 1 < end - start <= max_words and (upos >= 0).all() and (heads >= 0).all():
            out.append((upos, heads, np.asarray(features.deprels[start:end], np.int64), typology))
    return out


def train_tag_parser(pools: Dict[str, Tuple[FeatureSet, np.ndarray]], epochs: int = 3, noise: float = 0.2,
                     seed: int = 0) -> TagParser:
    """A TagParser trained on gold trees of several languages ({lang: (features, typology)}), 20% of tags noised.
    Measured with these settings (3 epochs, 64 sentences a batch, lr 2e-3); about 4.5 minutes for 26 x 2,000
    sentences on one CPU thread."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parser = TagParser()
        sentences = [s for features, typology in pools.values() for s in training_sentences(features, typology)]
        if sentences:
            parser.fit(sentences, epochs, lr=2e-3, batch_size=64, noise=noise, seed=seed)
    return parser


def _noised(upos: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    if not noise:
        return upos
    flip = rng.random(len(upos)) < noise
    return np.where(flip, rng.integers(0, len(UPOS), len(upos)), upos)


def _batch(sentences: Sequence[Tuple[np.ndarray, Optional[np.ndarray]]]):
    """Padded tags (root first), lengths (with the root), and gold heads (-100 = padding)."""
    width = max(len(u) for u, _ in sentences) + 1
    tags = torch.full((len(sentences), width), ROOT_TAG, dtype=torch.long)
    heads = torch.full((len(sentences), width - 1), -100, dtype=torch.long)
    for row, (upos, gold) in enumerate(sentences):
        tags[row, 1 : len(upos) + 1] = torch.from_numpy(np.clip(np.asarray(upos, np.int64), 0, len(UPOS) - 1))
        if gold is not None:
            heads[row, : len(gold)] = torch.from_numpy(np.asarray(gold, np.int64))
    return tags, [len(u) + 1 for u, _ in sentences], heads


def _distributions(tags: torch.Tensor, probabilities: Sequence[np.ndarray]) -> torch.Tensor:
    """`_batch`'s padded tags (the root's and padding's kept as they are) with each word's row its tag distribution."""
    out = F.one_hot(tags, len(UPOS) + 1).float()
    for row, p in enumerate(probabilities):
        out[row, 1 : len(p) + 1, : len(UPOS)] = torch.from_numpy(np.asarray(p, np.float32))
    return out


def _masked(scores: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """Padding columns can never be a head."""
    columns = torch.arange(scores.shape[2])[None, None, :] < torch.tensor(lengths)[:, None, None]
    return scores.masked_fill(~columns, -1e9)


def _typology(typology: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(typology, np.float32)).expand(n, -1)
