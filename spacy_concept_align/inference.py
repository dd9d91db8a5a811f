"""Running a torch module for its outputs only, wherever the project does (prediction, the tag parser's reading, the
alignability study's transforms)."""
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def inference(module: nn.Module):
    """No gradients and no dropout for the duration; the module's previous mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)
