"""Moving model weights between torch modules and the wire's named numpy tensors.

Only floating-point state travels (parameters and float buffers such as BatchNorm
statistics); integer bookkeeping buffers (``num_batches_tracked``) stay local.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn


def floating_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {
        k: v.detach().to("cpu", torch.float32).contiguous().numpy()
        for k, v in floating_state(model).items()
    }


@torch.no_grad()
def load_numpy_state(model: nn.Module, tensors: Mapping[str, np.ndarray]) -> None:
    state = floating_state(model)
    with warnings.catch_warnings():
        # The wire's arrays are read-only views of the received payload; torch warns about
        # wrapping them, but they are only ever the source of a copy here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name, target in state.items():
            target.copy_(torch.from_numpy(np.asarray(tensors[name])).reshape(target.shape))
