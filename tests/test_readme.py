"""The README's custom-task example runs as printed and learns."""

from __future__ import annotations

import ast
import os
import re
import shlex

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


# --- every fenced shell command names a real script and real flags -----------------------------

SHELL_FENCES = ("bash", "sh", "shell", "console")


def _sections() -> list[tuple[str, str]]:
    """(heading, text) of each `## ` section of the README."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def _shell_commands() -> list[tuple[str, str, str]]:
    """(section heading, command, the section's prose and comments) for every command line
    of every fenced shell block; continuation lines joined, comments dropped."""
    found = []
    for heading, text in _sections():
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        comments = " ".join(re.findall(r"#.*$", "\n".join(b for _, b in blocks), re.M))
        for fence, body in blocks:
            if fence not in SHELL_FENCES:
                continue
            for line in body.replace("\\\n", " ").splitlines():
                line = re.sub(r"(^|\s)#.*$", "", line).strip()
                if line:
                    found.append((heading, line, prose + " " + comments))
    return found


def _defined_flags(script: str) -> tuple[set[str], set[str], set[str]]:
    """(flag names, boolean flag names, string literals) of experiments/SCRIPT.py and the
    experiments modules it imports, read with ast (nothing imported)."""
    names, bools, strings, todo, seen = set(), set(), set(), [script], set()
    while todo:
        module = todo.pop()
        path = os.path.join(ROOT, "experiments", f"{module}.py")
        if module in seen or not os.path.isfile(path):
            continue
        seen.add(module)
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "experiments":
                todo.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr.startswith("DEFINE_")):
                args = [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
                args += [k.value.value for k in node.keywords
                         if k.arg == "name" and isinstance(k.value, ast.Constant)]
                names.update(args)
                if node.func.attr == "DEFINE_bool" or node.func.attr == "DEFINE_boolean":
                    bools.update(args)
    return names, bools, strings


def _launch_script(words: list[str]) -> tuple[str | None, list[str]]:
    """(experiments script, its arguments) of a ./launch.sh command line (None: no script)."""
    command, rest = words[1], words[2:]
    if command in ("setup", "demo", "test", "help"):
        return None, rest
    if command == "run":
        return rest[0], rest[1:]
    if command == "local-multi":
        return rest[1], rest[2:]
    rest = [w for w in rest if w != "--dry-run"]
    if command == "slurm":
        return rest[0], rest[1:]
    if command == "tpu":
        return rest[2], rest[3:]
    raise AssertionError(f"unknown launch.sh command {command!r}")


def test_every_fenced_command_runs_python_through_launch_sh():
    # `python -m experiments...` fails on a fresh clone (no jax outside .venv): whatever runs
    # Python goes through ./launch.sh; plain shell utilities (unpacking data, regenerating
    # the pins) may stand alone.
    commands = _shell_commands()
    launched = [line for _, line, _ in commands if line.startswith("./launch.sh")]
    assert len(launched) >= 30
    python = re.compile(r"(^|[\s;{(|&])(\S*/)?(python3?|PYTHONPATH=\S*)(\s|$)")
    for heading, line, _ in commands:
        for segment in re.split(r"\s*&&\s*", line):
            if segment.startswith("./launch.sh"):
                continue
            assert not python.search(segment) and "experiments" not in segment, (
                f"{heading}: {segment!r} runs Python outside ./launch.sh")


def test_every_fenced_command_names_a_real_script_and_flags():
    checked = 0
    for heading, line, explained in _shell_commands():
        for segment in re.split(r"\s*&&\s*", line):
            words = shlex.split(segment.replace("[", " ").replace("]", " "))
            if words[0] != "./launch.sh":
                continue
            script, args = _launch_script(words)
            if script is None:
                continue
            assert os.path.isfile(os.path.join(ROOT, "experiments", f"{script}.py")), (
                f"{heading}: {segment!r}: no experiments/{script}.py")
            names, bools, strings = _defined_flags(script)
            for arg in args:
                if arg == "...":
                    continue
                if not arg.startswith("--"):  # a subcommand such as `detect train`
                    assert arg in strings, f"{heading}: {segment!r}: {script} knows no {arg!r}"
                    continue
                flag = arg[2:].split("=", 1)[0]
                known = (flag in names or flag.split(".")[0] in names
                         or (flag.startswith("no") and flag[2:] in bools))
                assert known, f"{heading}: {segment!r}: {script} defines no --{flag}"
                checked += 1
                value = arg.split("=", 1)[1] if "=" in arg else ""
                for placeholder in re.findall(r"(?<![$\w])[A-Z][A-Z_]{1,}\b", value):
                    assert placeholder in explained, (
                        f"{heading}: {segment!r}: placeholder {placeholder} is not explained")
    assert checked >= 40


def test_reproduce_runs_without_workdir(tmp_path):
    # The README's first table command, as written (its default --workdir), from a copy.
    from experiments import reproduce

    assert reproduce.DEFAULT_WORKDIR == "runs/tables"
    paths = reproduce.run("lenet5", str(tmp_path / reproduce.DEFAULT_WORKDIR))
    assert open(paths[0]).read().count("total parameters: 62,006") == 1
