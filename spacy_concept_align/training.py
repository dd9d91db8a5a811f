"""Meta-training: episodes of one language at a time, on cached frozen features, into a concept_align pipeline.

Faithful to Xu et al. (2023): frozen encoder, fixed source class means as prototypes, a shared aligner trained on
monolingual episodes, model selection on held-out validation languages. Better where the original is weak, each
change a setting so the original stays reachable (configs/original.cfg):
- the support set is used: query words are also classified against prototypes re-estimated from the support set
  (shrunk towards the source ones), which is what few-shot adaptation does at test time (`support_loss_weight`);
- dropout drops units, not whole token vectors (`token_dropout` in the model block);
- queries never overlap their support (`disjoint_queries`).
The arc scorer is trained in the same loop, on the same episodes.
"""
import itertools
import logging
import math
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import spacy
import torch
from confection import Config
from spacy.language import Language
from spacy.util import registry
from thinc.api import Model, fix_random_seed
from wasabi import Printer

from .architecture import get_decoder_layer
from .corpus import TRAIN_SPLITS, TreebankFile, choose_file, list_treebanks
from .decoder import ConceptDecoder, Support, concept_loss
from .encoders import FrozenEncoder
from .feature_cache import extract_features
from .features import FeatureSet

logger = logging.getLogger(__name__)


@dataclass
class EpisodeSettings:
    n_support: int = 10
    n_query: int = 30
    disjoint_queries: bool = True
    max_length: int = 128  # longer sentences are left out of episodes, as in the original


def load_pools(langs: Sequence[str], encoder: FrozenEncoder, max_sentences: int, data_dir: Optional[Path] = None,
               splits: Sequence[str] = TRAIN_SPLITS, progress: bool = True) -> Dict[str, FeatureSet]:
    """Cached features of each language's pool file."""
    pools = {}
    for lang in langs:
        tb = choose_file(lang, splits, data_dir)
        pools[lang] = extract_features(tb.path, encoder, max_sentences=max_sentences, progress=progress)
        logger.info("%s: %s (%d sentences)", lang, tb.path.name, len(pools[lang]))
    return pools


class EpisodeSampler:
    """Monolingual episodes: a support set and a query set of sentences from one language's pool."""

    def __init__(self, pools: Dict[str, FeatureSet], settings: EpisodeSettings, seed: int = 0):
        self.pools, self.settings = pools, settings
        self.rng = random.Random(seed)
        self.usable = {lang: [s for s in range(len(f)) if 0 < f.offsets[s + 1] - f.offsets[s] <= settings.max_length]
                       for lang, f in pools.items()}

    def sample(self, lang: str) -> Tuple[FeatureSet, FeatureSet]:
        ids = self.usable[lang]
        k = min(self.settings.n_support, len(ids) // 2)
        support = self.rng.sample(ids, k)
        chosen = set(support)
        rest = [i for i in ids if i not in chosen] if self.settings.disjoint_queries else ids
        query = self.rng.sample(rest, min(self.settings.n_query, len(rest)))
        return self.pools[lang].select(support), self.pools[lang].select(query)


@registry.schedules("spacy-concept-align.one_cycle.v1")
def one_cycle(start: float, peak: float, end: float, total_steps: int, warmup: float = 0.05) -> Iterator[float]:
    """Cosine from `start` to `peak` over the first `warmup` fraction of the steps, then cosine to `end` (torch's
    OneCycleLR, for learning rates and Adam's beta1). total_steps = 0 in a config: meta-training fills it in."""
    peak_step = max(1.0, warmup * total_steps - 1)
    for step in itertools.count():
        if step <= peak_step:
            a, b, pct = start, peak, step / peak_step
        else:
            a, b, pct = peak, end, min(1.0, (step - peak_step) / max(1.0, total_steps - 1 - peak_step))
        yield b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)


def episode_scores(decoder_layer: Model, support: FeatureSet, query: FeatureSet, support_loss_weight: float,
                   shrink: float):
    """The training scores of one episode on the shared (zero-shot) path, and the callback for their gradients."""
    return decoder_layer.begin_update((replace(query, lang=None), Support(support, support_loss_weight, shrink)))


@torch.no_grad()
def validation_score(decoder: ConceptDecoder, pools: Dict[str, FeatureSet]) -> Dict[str, float]:
    """Zero-shot accuracy on validation languages: UPOS, relations on gold heads, greedy heads (no tree decoding)."""
    decoder.eval()
    totals = {"pos": [], "rel": [], "arc": []}
    for features in pools.values():
        from .decoder import tensor

        upos = decoder.pos.logits(tensor(features.words)).argmax(-1).numpy()
        totals["pos"].append(np.mean(upos == features.upos))
        rels = decoder.rel.logits(tensor(features.relation_vectors())).argmax(-1).numpy()
        totals["rel"].append(np.mean(rels == features.deprels))
        words, roots, mask = decoder._padded(features)
        heads = decoder.arcs(words, roots, mask).argmax(-1)[mask].numpy()
        totals["arc"].append(np.mean(heads == features.heads))
    decoder.train()
    scores = {name: float(np.mean(values)) for name, values in totals.items()}
    scores["score"] = float(np.mean(list(scores.values())))
    return scores


def language_lists(langs: dict) -> dict:
    """The [languages] block with "en,de" strings (as project vars pass them) turned into lists."""
    return {key: value.split(",") if key in ("source", "train", "validation") and isinstance(value, str) else value
            for key, value in langs.items()}


def training_features(langs: dict, encoder: FrozenEncoder, data_dir: Optional[Path] = None, progress: bool = True):
    """Cached features of the meta-training pools and the validation languages' dev splits."""
    pools = load_pools(langs["train"], encoder, langs["max_train_sentences"], data_dir, progress=progress)
    val_pools = load_pools(langs["validation"], encoder, langs["max_validation_sentences"], data_dir,
                           splits=("dev",), progress=progress)
    return pools, val_pools


def meta_train(config: Config, data_dir: Optional[Path] = None, progress: bool = True) -> Tuple[Language, dict]:
    """Build and meta-train a concept_align pipeline from a meta-training config (see configs/default.cfg).

    Each episode is one update of the component's model: the decoder's training scores, the one loss
    (decoder.concept_loss), the optimizer of [training.optimizer]. RETURNS the pipeline and a report.
    """
    cfg = config.interpolate()
    langs, train, model_cfg = language_lists(cfg["languages"]), cfg["training"], cfg["model"]
    seed = int(train["seed"])
    fix_random_seed(seed)  # random, numpy and torch
    nlp = spacy.blank("xx")
    pipe = nlp.add_pipe("concept_align", config={"min_count": train["min_count"], "model": model_cfg})
    decoder, decoder_layer = pipe.decoder, get_decoder_layer(pipe.model)
    start = time.perf_counter()
    pools, val_pools = training_features(langs, pipe.encoder, data_dir, progress)
    features_seconds = time.perf_counter() - start

    decoder.set_prototypes(FeatureSet.concat([pools[lang] for lang in langs["source"]]), int(train["min_count"]))
    decoder.set_relation_table(FeatureSet.concat(list(pools.values())))  # used if model.relation_table_weight > 0
    decoder.set_sources(pools)  # for languages named but never seen (model.word_order_weight, source_tagger_weight)
    if decoder.arcs.tags is not None:
        decoder.fit_tag_parser(pools)  # ... and their heads from tags (model.tag_parser_weight)
    sampler = EpisodeSampler(pools, EpisodeSettings(train["n_support"], train["n_query"],
                                                    train["disjoint_queries"]), seed)
    episodes = [lang for lang in langs["train"] for _ in range(train["episodes_per_language"])]
    steps = len(episodes) * train["epochs"]
    optimizer = registry.resolve({"optimizer": _with_total_steps(train["optimizer"], steps)})["optimizer"]
    printer = Printer(no_print=not progress)
    best, history = (-1.0, None), []
    train_start = time.perf_counter()
    for epoch in range(train["epochs"]):
        sampler.rng.shuffle(episodes)
        running = []
        for lang in episodes:
            support, query = sampler.sample(lang)
            scores, backprop = episode_scores(decoder_layer, support, query, train["support_loss_weight"],
                                              train["shrink"])
            loss, d_scores = concept_loss(scores)
            backprop(d_scores)
            if train.get("max_grad_norm"):  # one norm over all parameters, as torch's clip_grad_norm_
                torch.nn.utils.clip_grad_norm_(decoder.parameters(), train["max_grad_norm"])
            decoder_layer.finish_update(optimizer)
            optimizer.step_schedules()
            running.append(loss)
        scores = validation_score(decoder, val_pools)
        history.append({"epoch": epoch, "loss": float(np.mean(running)), **scores})
        printer.row([epoch, f"{np.mean(running):.3f}", f"{scores['pos']:.3f}", f"{scores['rel']:.3f}",
                     f"{scores['arc']:.3f}", f"{time.perf_counter() - train_start:.0f} s"],
                    widths=(5, 7, 7, 7, 7, 8))
        if scores["score"] > best[0]:
            best = (scores["score"], {k: v.clone() for k, v in decoder.state_dict().items()})
    decoder.load_state_dict(best[1])
    decoder.eval()
    pipe.cfg["meta"] = {key: langs[key] for key in ("source", "train", "validation", "max_train_sentences")}
    report = {"features_seconds": features_seconds, "train_seconds": time.perf_counter() - train_start,
              "steps": steps, "best_validation": best[0], "history": history}
    printer.good(f"meta-training: {steps} episodes in {report['train_seconds']:.0f} s "
                 f"(+ {features_seconds:.0f} s features); best validation score {best[0]:.3f}")
    return nlp, report


def _with_total_steps(block: dict, steps: int) -> dict:
    """The optimizer block with every schedule's `total_steps = 0` set to the run's number of steps."""
    if isinstance(block, dict):
        return {k: steps if k == "total_steps" and v == 0 else _with_total_steps(v, steps) for k, v in block.items()}
    return block


def in_language_files(data_dir: Optional[Path] = None, min_sentences: int = 100,
                      only: Optional[Sequence[str]] = None) -> Dict[str, List[TreebankFile]]:
    """Per language with enough annotated data: the files it is specialised on (the treebank with the largest train
    split, else the largest dev split; its train and dev splits both where it has both; never a test split)."""
    files = list_treebanks(data_dir)
    result = {}
    for lang in sorted({tb.lang for tb in files}):
        if only and lang not in only:
            continue
        try:
            pool = choose_file(lang, ("train", "dev"), data_dir)
        except KeyError:
            continue
        same = {tb.split: tb for tb in files if tb.treebank == pool.treebank}
        pools = [same[split] for split in ("train", "dev") if split in same]
        if sum(tb.sentences for tb in pools) >= min_sentences:
            result[lang] = pools
    return result


def specialise(nlp: Language, data_dir: Optional[Path] = None, min_sentences: int = 100,
               only: Optional[Sequence[str]] = None, settings=None, progress: bool = True,
               workers: int = 1) -> Dict[str, dict]:
    """Give every language with annotated data (>= `min_sentences` in its train and dev splits) its own adaptation,
    trained on all of it (train and dev splits): in-language quality where data exists, zero-shot for every other
    language. No test split is read here: `evaluate --in-language` scores the adaptations on them.

    workers (int): languages adapted at once, each in its own process with one torch thread (0 = one per CPU core,
        at most 4). Adaptation is seeded per language, so the result is the same for any number of workers.
    RETURNS (Dict[str, dict]): per language, what it was trained on and seconds (also in the pipeline's meta,
        "in_language").
    """
    pipe = nlp.get_pipe("concept_align")
    files = in_language_files(data_dir, min_sentences, only)
    jobs = [(lang, pools, settings, progress) for lang, pools in files.items()]
    results = per_language(pipe, _specialise_language, jobs, workers,
                           cost=lambda job: sum(tb.sentences for tb in job[1]))
    report = pipe.cfg.setdefault("meta", {}).setdefault("in_language", {})
    for lang, entry, parts in results:
        pipe.decoder.set_language_parts(lang, parts)
        report[lang] = entry
    pipe._warned_langs.clear()
    return report


def per_language(pipe, function: Callable, jobs: List[tuple], workers: int = 1,
                 cost: Optional[Callable[[tuple], float]] = None) -> list:
    """`function(pipe, *job)` for every job, in the jobs' order: here, or in `workers` forked processes (one torch
    thread each; 0 = one per CPU core, at most 4) that start from this pipeline, nothing pickled to them. The
    costliest jobs (by `cost`) start first, so no worker is left with a long one at the end."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(workers or min(cores, 4), len(jobs))
    if workers <= 1:
        return [function(pipe, *job) for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: -cost(jobs[i]) if cost else 0)
    global _WORKER_PIPE
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        try:
            _WORKER_PIPE = pipe
            futures = {i: pool.submit(_in_worker, function, jobs[i]) for i in order}
            return [futures[i].result() for i in range(len(jobs))]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # one failure: the queued jobs are not run
            raise
        finally:
            _WORKER_PIPE = None


_WORKER_PIPE = None


def _in_worker(function: Callable, job: tuple):
    torch.set_num_threads(1)
    return function(_WORKER_PIPE, *job)


def _specialise_language(pipe, lang: str, pools: List[TreebankFile], settings,
                         progress: bool) -> Tuple[str, dict, tuple]:
    """One language's adaptation on its pools: (lang, report entry, its new parts)."""
    from .adapt import adapt_language
    from .corpus import read_conllu

    features = FeatureSet.concat([extract_features(tb.path, pipe.encoder, progress=progress) for tb in pools])
    forms = [word for tb in pools for sentence in read_conllu(tb.path) for word in sentence.words]
    start = time.perf_counter()
    adapt_language(pipe.decoder, features, lang, settings, forms)
    entry = {"treebank": pools[0].treebank, "split": "+".join(tb.split for tb in pools), "sentences": len(features),
             "words": features.n_words, "seconds": round(time.perf_counter() - start, 1)}
    logger.info("%s: %s %s (%d sentences) in %.0f s", lang, entry["treebank"], entry["split"], len(features),
                entry["seconds"])
    return lang, entry, pipe.decoder.language_parts(lang)
