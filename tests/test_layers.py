"""The package's direction: each layer imports only those below it (README's Layout; the contract is in
pyproject.toml's [tool.importlinter]), and no module imports itself back through others, deferred imports
included."""
import subprocess
import sys
from pathlib import Path

import grimp

from helpers import REPO


def test_imports_follow_the_layers():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles():
    graph = grimp.build_graph("tenfold")
    graph.remove_module("tenfold")  # the package root re-exports the API lazily; it is nobody's dependency
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_deferred_import(tmp_path, monkeypatch):
    pkg = tmp_path / "loop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from loop import b\n")
    (pkg / "b.py").write_text("def f():\n    from loop import a\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cycles(grimp.build_graph("loop")) == [["loop.a", "loop.b"]]


def test_every_environment_variable_is_listed_in_one_module():
    """Any TENFOLD_* name the package reads or mentions is one of tenfold/envvars.py's, with its description."""
    import re

    from tenfold import envvars
    listed = {v for k, v in vars(envvars).items() if k.isupper()}
    not_variables = {"TENFOLD_JSON", "TENFOLD_VL"}  # a heredoc marker in the boot script; a C macro
    package = REPO / "tenfold"
    mentioned = {m for p in package.rglob("*.[pc]*") if p.suffix in (".py", ".c")
                 for m in re.findall(r"\bTENFOLD_[A-Z0-9_]+\b", p.read_text())}
    assert mentioned - not_variables <= listed, sorted(mentioned - not_variables - listed)
    assert listed <= mentioned | {envvars.DEBUG}


def test_every_train_setting_is_in_readmes_flag_table():
    """Flags, help and defaults come from TrainConfig; README's table is for people, and must not miss one."""
    import dataclasses

    from tenfold.config import TrainConfig
    readme = (REPO / "README.md").read_text()
    missing = [f.name for f in dataclasses.fields(TrainConfig)
               if f"| `--{f.name.replace('_', '-')}" not in readme]
    assert missing == []


def test_every_table_and_poll_loop_goes_through_its_one_helper():
    """Tables are made by tenfold.tables.table (no columns aligned by hand: two or more width-padded fields on a
    line), and waiting by tenfold.polling.wait_until (no sleep loop of its own); the remote agent, stdlib-only,
    keeps its own."""
    import re

    padded = re.compile(r"\{[^{}]*:[<>^]\d+")
    sleeps = re.compile(r"\btime\.sleep\(")
    hand_made = []
    for path in (REPO / "tenfold").rglob("*.py"):
        if path.name in ("tables.py", "polling.py", "agent.py"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if len(padded.findall(line)) >= 2 or sleeps.search(line):
                hand_made.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert hand_made == []


def test_a_table_lines_up_wide_characters_as_a_terminal_shows_them():
    from wcwidth import wcswidth

    from tenfold.tables import table
    text = table([["ü-ñ 猫", "50.00%", "3/6"], ["dog", "100.00%", "12/12"]], ["class", "accuracy", "correct/total"],
                 "lrr")
    lines = text.splitlines()
    assert len({wcswidth(line) for line in lines}) == 1 and not any(line.endswith(" ") for line in lines)
    assert lines[1].startswith("ü-ñ 猫") and lines[2].endswith("12/12")
