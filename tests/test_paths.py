"""Data folders are found beside the package, by environment variable, or where a wheel installs them."""
from __future__ import annotations

import sys
from pathlib import Path

from cotbench import paths


def test_checkout_layout_env_override_and_wheel_location(monkeypatch, tmp_path):
    assert paths.data_dir("prompts") == Path(paths.__file__).resolve().parent.parent / "prompts"
    monkeypatch.setenv("COTBENCH_PROMPTS_DIR", str(tmp_path))
    assert paths.data_dir("prompts") == tmp_path
    monkeypatch.delenv("COTBENCH_PROMPTS_DIR")
    assert paths.data_dir("no_such_folder") == Path(sys.prefix) / "share" / "cotbench" / "no_such_folder"
