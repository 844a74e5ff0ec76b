"""Streamlit caches around certlib. Keys are explicit content hashes: Streamlit cannot hash modules and hashes
large arrays from a sample, so models and tensors are passed as `_`-prefixed (unhashed) arguments."""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import streamlit as st
import torch

from certlib.models.registry import LoadedModel, load_model
from ui.single_flight import SingleFlight


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def registry_model(key: str, device: str, weights_token: str) -> LoadedModel:
    """A registered model; `weights_token` (path, size, mtime) makes a replaced weights file load afresh."""
    return load_model(key, device=device)


@st.cache_data(show_spinner=False, max_entries=512)
def class_probabilities(_model: LoadedModel, model_token: str, image_token: str, _x: torch.Tensor) -> np.ndarray:
    """Softmax of the model on the prepared image, keyed by (model weights hash, device, image content hash)."""
    return _model.predict_proba(_x)[0].numpy()


class ResultCache:
    """A small process-wide LRU for expensive sampling results, keyed by the complete config tuple.

    Unlike st.cache_data it lets the page show a live progress bar while computing (nothing is replayed on a hit),
    and it is shared by all sessions; the lock keeps concurrent sessions from corrupting it.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key: tuple):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: tuple, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@st.cache_resource
def sampling_results() -> ResultCache:
    return ResultCache()


# Runs being computed, by the same keys as sampling_results(). A plain module object, not st.cache_resource:
# clearing Streamlit's caches must not orphan the sessions waiting for a run in flight.
FLIGHTS = SingleFlight()
