"""Speed and memory: the pipeline beside the bare encoder and the usual spaCy transformer tagger + parser.

Every case runs in a fresh spawned process with fixed torch threads and a warm-up pass, so the words/s are steady
state and the peak RSS is that case's own. All cases read the same real UD test sentences (several scripts).
"""
import json
import multiprocessing
import platform
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..corpus import UDSentence, find_treebank, read_conllu

#: Test sentences from these languages: Latin, Arabic, Hebrew, Devanagari, Japanese, Greek, Armenian, Hangul.
BENCH_LANGS = ("wo", "ga", "ar", "he", "hi", "ja", "el", "hy", "ug", "ko")


@dataclass(frozen=True)
class Case:
    """One measured configuration.

    system: "encoder" = the full HF model forward pass (the reference), "concept_align" = the pipeline end to end,
        "spacy-trf" = spacy-transformers transformer + tagger + parser on the same (full) encoder.
    batch_size: sentences per forward pass (encoder), encoder windows per forward pass (concept_align), docs per
        nlp.pipe batch (spacy-trf).
    doc_words: 0 = one doc per sentence; N = docs of about N words (sentence boundaries kept).
    precision: "fp32" or "int8" (dynamic quantisation of the encoder's linear layers; concept_align only).
    sort: encoder only: length-sorted batches (concept_align always sorts).
    """

    label: str
    system: str
    threads: int = 2
    n_process: int = 1
    batch_size: int = 32
    doc_words: int = 0
    precision: str = "fp32"
    sort: bool = False


def default_cases(threads: int = 2) -> List[Case]:
    """The reference, the pipeline, the alternative; then processes, batch sizes, document length, precision."""
    base = Case("concept_align", "concept_align", threads)
    return [
        Case("1. bare encoder (full HF model, all layers)", "encoder", threads),
        Case("1b. bare encoder, length-sorted batches", "encoder", threads, sort=True),
        replace(base, label="2. concept_align pipeline"),
        Case("3. spaCy transformer + tagger + parser", "spacy-trf", threads),
        replace(base, label="concept_align, 1 thread", threads=1),
        replace(base, label="concept_align, n_process=2 x 1 thread", threads=1, n_process=2),
        replace(base, label="concept_align, batch 8", batch_size=8),
        replace(base, label="concept_align, batch 128", batch_size=128),
        replace(base, label="concept_align, 2,000-word docs", doc_words=2000),
        replace(base, label="concept_align, int8 encoder", precision="int8"),
    ]


def bench_sentences(data_dir: Optional[Path] = None, langs: Sequence[str] = BENCH_LANGS,
                    max_words: int = 10000) -> List[UDSentence]:
    """About max_words words of UD test sentences, an equal share per language, in corpus order."""
    share, sentences = max_words // len(langs), []
    for lang in langs:
        words = 0
        for sentence in read_conllu(find_treebank(lang, "test", data_dir).path):
            if words >= share:
                break
            sentences.append(sentence)
            words += len(sentence)
    return sentences


def run_benchmark(cases: Sequence[Case], sentences: List[UDSentence], pipeline: Optional[Path] = None,
                  langs: Sequence[str] = BENCH_LANGS) -> dict:
    """Measure each case in its own spawned process; RETURNS machine, cases (with results) and ratios."""
    import spacy

    with tempfile.TemporaryDirectory() as tmp:
        if pipeline is None:  # the shipped default, saved as a user's packaged pipeline would be
            nlp = spacy.blank("xx")
            nlp.add_pipe("concept_align")
            pipeline = Path(tmp) / "pipeline"
            nlp.to_disk(pipeline)
        results = []
        for case in cases:
            result = _in_fresh_process(case, sentences, str(pipeline))
            results.append(dict(asdict(case), **result))
            print(f"{case.label}: {result['words_per_s']:.0f} words/s, peak RSS {result['peak_rss_mb']:.0f} MB",
                  flush=True)
    speed = {}  # each system's first case is its headline (default_cases lists those first)
    for r in results:
        speed.setdefault(r["system"], r["words_per_s"])
    ratios = {}
    if {"encoder", "concept_align"} <= speed.keys():
        ratios["pipeline / bare encoder (2/1)"] = speed["concept_align"] / speed["encoder"]
    if {"concept_align", "spacy-trf"} <= speed.keys():
        ratios["pipeline / spaCy transformer pipeline (2/3)"] = speed["concept_align"] / speed["spacy-trf"]
    return {"machine": machine(), "n_sentences": len(sentences), "n_words": sum(map(len, sentences)),
            "languages": list(langs), "cases": results, "ratios": ratios}


def _in_fresh_process(case: Case, sentences: List[UDSentence], pipeline: str) -> Dict[str, float]:
    """Run `measure` in a new (spawned, non-daemon: it may start workers itself) process."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    # The measuring process itself is spawned (a clean slate); inside it, nlp.pipe(n_process=...) starts its workers
    # the way this platform does by default (fork on Linux), as it would for a user.
    process = context.Process(target=_measure_into,
                              args=(send, case, sentences, pipeline, multiprocessing.get_start_method()))
    process.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:
        status, value = "error", f"the process measuring {case.label!r} died (exit code {process.join() or process.exitcode})"
    process.join()
    if status == "error":
        raise RuntimeError(value)
    return value


def _measure_into(send, case: Case, sentences: List[UDSentence], pipeline: str, start_method: str) -> None:
    import traceback

    multiprocessing.set_start_method(start_method, force=True)
    try:
        send.send(("ok", measure(case, sentences, pipeline)))
    except Exception:
        send.send(("error", f"{case.label}:\n{traceback.format_exc()}"))


def measure(case: Case, sentences: List[UDSentence], pipeline: str) -> Dict[str, float]:
    """In a fresh process: load, warm up on a slice, then time one pass over every sentence."""
    import torch

    torch.set_num_threads(case.threads)
    start = time.perf_counter()
    run = {"encoder": _encoder_runner, "concept_align": _pipeline_runner, "spacy-trf": _spacy_trf_runner}[case.system]
    process = run(case, sentences, pipeline)
    process(sentences[:16])
    load_s = time.perf_counter() - start
    process(sentences[: max(32, len(sentences) // 10)])  # warm-up
    start = time.perf_counter()
    output = process(sentences)
    seconds = time.perf_counter() - start
    words = sum(map(len, sentences))
    result = {"words": words, "seconds": seconds, "words_per_s": words / seconds, "load_s": load_s,
              "peak_rss_mb": _peak_rss_mb()}
    if case.system == "concept_align" and not case.doc_words:
        result.update(_accuracy(sentences, output))
    return result


def _encoder_runner(case: Case, sentences, pipeline):
    """The reference: tokenizer + full model forward, batched as a user would write it."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = _encoder_path(pipeline)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def process(batch):
        batch = sorted(batch, key=len) if case.sort else batch
        with torch.inference_mode():
            for i in range(0, len(batch), case.batch_size):
                words = [s.words for s in batch[i : i + case.batch_size]]
                inputs = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, return_tensors="pt")
                model(**inputs)

    return process


def _encoder_path(pipeline: str) -> str:
    """The full model behind the pipeline's encoder (all its layers): what the reference systems run."""
    from spacy.util import load_config

    from ..encoders.frozen import resolve_model

    config = load_config(Path(pipeline) / "config.cfg")
    return resolve_model(config["components"]["concept_align"]["model"]["encoder"]["name"])


def _docs(nlp, sentences, doc_words: int):
    from ..corpus import sentences_to_doc, unannotated

    if not doc_words:
        return [unannotated(sentences_to_doc(nlp.vocab, [s])) for s in sentences]
    groups, group, words = [], [], 0
    for sentence in sentences:
        group.append(sentence)
        words += len(sentence)
        if words >= doc_words:
            groups.append(group)
            group, words = [], 0
    return [unannotated(sentences_to_doc(nlp.vocab, g)) for g in groups + ([group] if group else [])]


def _pipeline_runner(case: Case, sentences, pipeline):
    import spacy

    nlp = spacy.load(pipeline, config={"components": {"concept_align": {"model": {"encoder": {
        "precision": case.precision, "batch_size": case.batch_size}}}}})

    # One process: nlp.pipe's default batch (1000 docs) gives the encoder a wide pool to length-sort. Several:
    # smaller batches, which spaCy deals out to the workers in turn.
    pipe_batch = nlp.batch_size if case.n_process == 1 else 64

    def process(batch):
        return list(nlp.pipe(_docs(nlp, batch, case.doc_words), batch_size=pipe_batch, n_process=case.n_process))

    return process


def _spacy_trf_runner(case: Case, sentences, pipeline):
    """spacy-transformers on the full encoder, tagger and parser listening to it (weights untrained: speed only)."""
    import spacy
    from spacy.training import Example

    from ..corpus import sentences_to_doc

    listener = {"@architectures": "spacy-transformers.TransformerListener.v1", "grad_factor": 1.0,
                "pooling": {"@layers": "reduce_mean.v1"}}
    nlp = spacy.blank("xx")
    nlp.add_pipe("transformer", config={"model": {
        "@architectures": "spacy-transformers.TransformerModel.v3", "name": _encoder_path(pipeline),
        "get_spans": {"@span_getters": "spacy-transformers.strided_spans.v1", "window": 128, "stride": 96},
        "tokenizer_config": {"use_fast": True}}})
    nlp.add_pipe("tagger", config={"model": {"@architectures": "spacy.Tagger.v2", "tok2vec": listener}})
    nlp.add_pipe("parser", config={"model": {"@architectures": "spacy.TransitionBasedParser.v2", "state_type": "parser",
                                             "extra_state_tokens": False, "hidden_width": 64, "maxout_pieces": 2,
                                             "use_upper": False, "tok2vec": listener}})
    gold = [Example(nlp.make_doc(" ".join(s.words)), sentences_to_doc(nlp.vocab, [s]))
            for s in sentences[:200]]
    for eg in gold:  # the tagger predicts UPOS here
        for token in eg.reference:
            token.tag_ = token.pos_
    nlp.initialize(lambda: gold)

    def process(batch):
        return list(nlp.pipe(_docs(nlp, batch, case.doc_words), batch_size=case.batch_size))

    return process


def _accuracy(sentences: List[UDSentence], docs) -> Dict[str, float]:
    """UPOS, UAS, LAS (CoNLL 2018, as `evaluate` scores them) against the sentences' gold annotation, as fractions."""
    from ..scoring import Labels, conll18_scores

    scores = conll18_scores(Labels.of_sentences(sentences), *Labels.of_docs(docs).arrays)
    return {"pos_acc": scores.upos / 100, "dep_uas": scores.uas / 100, "dep_las": scores.las / 100}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process or of any worker it started (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def machine() -> Dict[str, str]:
    import os

    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(), "torch": torch.__version__}


def markdown_table(result: dict) -> str:
    lines = [f"{result['n_words']} words, {result['n_sentences']} UD test sentences "
             f"({', '.join(result['languages'])}); {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"torch {result['machine']['torch']}", "",
             "| case | threads | words/s | peak RSS (MB) | load + first batch (s) | UPOS | UAS | LAS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["cases"]:
        acc = [f"{100 * r[k]:.1f}" if k in r else "" for k in ("pos_acc", "dep_uas", "dep_las")]
        lines.append(f"| {r['label']} | {r['threads']} | {r['words_per_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['load_s']:.1f} | " + " | ".join(acc) + " |")
    lines += [""] + [f"- {name}: **{value:.2f}x**" for name, value in result["ratios"].items()]
    return "\n".join(lines)


def write_report(result: dict, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "bench.json").write_text(json.dumps(result, indent=2))
    (output / "bench.md").write_text(markdown_table(result) + "\n")
