"""Tiny random transformers built on the spot, for fast plumbing tests (never for accuracy claims)."""
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, PreTrainedTokenizerFast

CORPUS = [
    "The cat sat on the mat .", "Le chat est assis sur le tapis .", "Der Hund schläft im Haus .",
    "Nit ñépp danuy juddu , yam ci tawfeex ak ci sañ-sañ .", "Кошка сидит на ковре .", "猫はマットの上に座った。",
] * 20


def build_tiny_bert(path: Path, layers: int = 3, width: int = 32) -> Path:
    """A SentencePiece-style (Metaspace) unigram tokenizer + random BERT: bare "▁" pieces do occur."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", model_max_length=64)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * width, max_position_embeddings=64, pad_token_id=1)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def build_tiny_gpt2(path: Path, layers: int = 3, width: int = 32) -> Path:
    """A byte-level BPE tokenizer + random decoder-only GPT-2 (no [CLS]: the root vector falls back)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", model_max_length=64)
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=width, n_layer=layers, n_head=2, n_positions=64)
    GPT2Model(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path
