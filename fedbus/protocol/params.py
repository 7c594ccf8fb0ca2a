"""The flat layout of a model: named tensors <-> one float32 vector of P parameters.

The coordinator keeps the global model as one contiguous float32 vector so aggregation is
one BLAS call over a (K, P) stack and a top-k sparse update can index into it directly.
The layout (names, shapes, offsets, in the model's own order) is the contract between
the two sides: a dense update names the same tensors with the same shapes; a sparse update
indexes the flat vector in this order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]
    offset: int
    size: int


@dataclass(frozen=True)
class ParamLayout:
    slots: tuple[TensorSlot, ...]
    num_params: int

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, np.ndarray]) -> ParamLayout:
        slots: list[TensorSlot] = []
        offset = 0
        for name, array in tensors.items():
            shape = tuple(int(d) for d in array.shape)
            size = math.prod(shape)
            slots.append(TensorSlot(name, shape, offset, size))
            offset += size
        return cls(tuple(slots), offset)

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self.slots]

    def flatten(
        self, tensors: Mapping[str, np.ndarray], out: np.ndarray | None = None
    ) -> np.ndarray:
        """Copy named tensors into one float32 vector (``out`` if given)."""
        flat = np.empty(self.num_params, np.float32) if out is None else out
        for slot in self.slots:
            flat[slot.offset : slot.offset + slot.size] = np.asarray(tensors[slot.name]).reshape(-1)
        return flat

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of ``flat`` shaped as the named tensors (no copy)."""
        return {
            slot.name: flat[slot.offset : slot.offset + slot.size].reshape(slot.shape)
            for slot in self.slots
        }

    def matches(self, tensors: Mapping[str, np.ndarray]) -> str | None:
        """None when ``tensors`` has exactly this layout's names and shapes, else why not."""
        if list(tensors) != self.names:
            missing = set(self.names) - set(tensors)
            extra = set(tensors) - set(self.names)
            if missing or extra:
                return f"tensor names differ (missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]})"
            return "tensor order differs from the model's"
        for slot in self.slots:
            if tuple(tensors[slot.name].shape) != slot.shape:
                return f"tensor {slot.name!r} has shape {tuple(tensors[slot.name].shape)}, expected {slot.shape}"
        return None
