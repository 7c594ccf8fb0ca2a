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
    """The floating-point entries of ``model.state_dict()``: aliases of its own tensors."""
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


def state_to_numpy(
    model: nn.Module, state: Mapping[str, torch.Tensor] | None = None
) -> dict[str, np.ndarray]:
    """The floating state as float32 numpy arrays (views of CPU float32 tensors, no copy).

    ``state``: ``floating_state(model)`` from earlier, to skip walking the module tree.
    """
    return {
        k: v.detach().to("cpu", torch.float32).contiguous().numpy()
        for k, v in (floating_state(model) if state is None else state).items()
    }


@torch.no_grad()
def load_numpy_state(
    model: nn.Module,
    tensors: Mapping[str, np.ndarray],
    state: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Copy ``tensors`` into the model's floating state (``state``: as in state_to_numpy)."""
    with warnings.catch_warnings():
        # The wire's arrays are read-only views of the received payload; torch warns about
        # wrapping them, but they are only ever the source of a copy here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        pinned = False
        for name, target in (floating_state(model) if state is None else state).items():
            source = torch.from_numpy(np.asarray(tensors[name])).reshape(target.shape)
            if target.is_cuda:
                # Through page-locked memory: the copy to the GPU runs as DMA, asynchronously.
                source = source.pin_memory()
                pinned = True
            target.copy_(source, non_blocking=target.is_cuda)
        if pinned:
            torch.cuda.synchronize()  # the pinned sources must outlive their copies
