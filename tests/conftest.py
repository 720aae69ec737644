"""Shared test setup: offline hub, paths to fixtures and to ../shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may touch the network: the hub libraries read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
SHARED = REPO.parent / "shared"
REAL_TREES = SHARED / "data" / "oasst" / "en_100_tree.jsonl.gz"
REAL_ALPACA = SHARED / "data" / "alpaca" / "alpaca_en_demo.json"
REAL_TOKENIZER = SHARED / "tokenizers" / "gpt-neox-20b"
FIXTURE_TOKENIZER = FIXTURES / "tokenizer"

needs_real_data = pytest.mark.skipif(not REAL_TREES.exists(), reason="../shared real data not present")
needs_real_tokenizer = pytest.mark.skipif(not (REAL_TOKENIZER / "tokenizer.json").exists(), reason="../shared tokenizer not present")
