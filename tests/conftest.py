"""Shared fixtures: tiny models load once per session; the network can be blocked."""

import os
import socket

import pytest

os.environ.setdefault("LAB_DTYPE", "float32")  # tolerances assume fp32; test_models checks bf16 itself

import lab


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the random tiny GPT-2, on CPU."""
    return lab.models.load("tiny-gpt2", device="cpu", verbose=False)


@pytest.fixture(scope="session")
def examples():
    """12 rows of the bundled training set, for the tiny trainers of ``tests/tiny.py``."""
    from lab.data import load_examples

    return load_examples("bundled", "train", limit=12)


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails at once, as on a machine without internet."""

    def refuse(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    lab.runtime.hub.hub_reachable.cache_clear()
    yield
    lab.runtime.hub.hub_reachable.cache_clear()
