"""The README's "Your own model" example, executed verbatim (extracted from README.md)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import onnxruntime as ort
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Your own model"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds exactly one Python example"
    return blocks[0]


def test_readme_own_model_example_runs(tmp_path, monkeypatch):
    code = _example()
    assert 10 <= len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # a 200-image split is below the margin rule's size
        exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "build/search/mine/plan.json").is_file()
    out = tmp_path / "build/export/mine.onnx"
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(namespace["x"][:8])
    logits = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert logits.shape == (8, 10)
