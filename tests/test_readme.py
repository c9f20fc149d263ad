"""The README's custom-task example runs as printed and learns."""

from __future__ import annotations

import os
import re

from conftest import ROOT


def _example() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("### A new task through the same loop"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_custom_task_trains_and_scores_on_gathered_outputs(tmp_path):
    code = _example().replace('"/tmp/jaxcnn_margin"', repr(str(tmp_path)))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    metrics = namespace["result"].metrics
    assert set(metrics) == {"top1"}  # only the gathered metric: the task has no eval_fn
    assert metrics["top1"] > 0.85  # 200 steps of LeNet-5 on the embedded digits
    assert namespace["config"].task.margin == 0.5
