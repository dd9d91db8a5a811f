"""Encoders: the offline default build and frozen word vectors from any Hugging Face model."""
from .frozen import FrozenEncoder, SentenceVectors, build_frozen_encoder, resolve_model, truncated_model_dir
from .offline import OFFLINE_NAME, build_offline_encoder, offline_model_dir

__all__ = [
    "FrozenEncoder", "SentenceVectors", "build_frozen_encoder", "resolve_model", "truncated_model_dir",
    "OFFLINE_NAME", "build_offline_encoder", "offline_model_dir",
]
