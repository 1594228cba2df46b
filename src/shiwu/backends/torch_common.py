"""What the four torch backends (torch, torchscript, compile, ipex) share: running a network
built by ``models.embedding.with_outputs`` (or a trace of it) for logits and embedding."""

from __future__ import annotations

import threading

import numpy as np
import torch

from ..models.outputs import split_outputs
from . import BatchedRun

SCRIPTED_NO_EMBEDDING = ("a TorchScript file cannot be hooked for its features in torch; "
                         "--backend onnxruntime or openvino find them in its graph")


class TorchRun(BatchedRun):
    dtype = torch.float32

    def _use(self, spec, module) -> None:
        self.spec = spec
        self.module = module
        self.fixed_batch = spec.fixed_batch
        self.has_embedding = bool(spec.embedding_layer)
        if spec.file_kind == "torchscript":
            self.no_embedding_reason = SCRIPTED_NO_EMBEDDING
        self._lock = threading.Lock()

    def _infer(self, batch: np.ndarray, embedding: bool):
        with self._lock, torch.inference_mode(), torch.autocast(
                "cpu", dtype=self.dtype, enabled=self.dtype != torch.float32):
            logits, features = split_outputs(self.module(torch.from_numpy(batch)), self.spec)
            return (logits.float().numpy(),
                    features.float().numpy() if embedding and features is not None else None)
