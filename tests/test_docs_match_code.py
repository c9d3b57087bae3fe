"""docs/ARCHITECTURE.md says what the code does: no stage names a task (the default task is vrlhf.tasks.DEFAULT_TASK,
the demo runs every task module), and the oracle contract it lists is the one `get_oracle` checks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from vrlhf.tasks import ORACLE_CONTRACT, task_names

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def stage_files() -> list[Path]:
    files = [p for package in ("labeler", "reward_model", "tuner", "loop", "vrlhf")
             for p in (ROOT / package).rglob("*.py")]
    return sorted(p for p in files if "vrlhf/tasks" not in p.as_posix())


def branches_on_a_task_name(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines where a task's name is a value: compared (==, !=, in), a dict's key, a default, an argument."""
    def named(node) -> bool:
        return isinstance(node, ast.Constant) and node.value in names

    return sorted({node.lineno for node in ast.walk(tree) if named(node)})


def test_the_stages_never_branch_on_a_task_name():
    assert "never branch on a task's name" in ARCHITECTURE
    names = set(task_names())
    assert {"captioning", "colorization"} <= names
    found = [f"{path.relative_to(ROOT)}:{line}" for path in stage_files()
             for line in branches_on_a_task_name(ast.parse(path.read_text()), names)]
    assert found == [], f"a stage compares a task's name (put the difference in the task contract): {found}"
    assert branches_on_a_task_name(ast.parse('if task == "captioning": pass\nx = {"colorization": 1}'), names) == [
        1, 2]


def test_the_oracle_contract_in_the_docs_is_the_one_get_oracle_checks():
    paragraph = ARCHITECTURE[ARCHITECTURE.index("The oracle modules"):].split("\n\n")[0]
    documented = set(re.findall(r"`(\w+)\(", paragraph))
    assert documented == set(ORACLE_CONTRACT), documented ^ set(ORACLE_CONTRACT)
