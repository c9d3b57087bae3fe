"""The annotators' guidelines: read from `--guidelines` files, and what the page shows for the comparison on screen.

A guidelines file is Markdown for one task (or every task). Parts that apply to one kind of comparison go under a
heading that starts with *Pairs* or *Rankings* (any level, e.g. `### Pairs (two captions)`): such a section, up to
the next heading of its level or above, is shown only with comparisons of that kind; everything else always. The
page then adds what every button and key means, for the kind on screen.

Light on purpose (no Gradio, no task modules imported): `vrlhf label` checks its flags with it before the app loads.
"""

from __future__ import annotations

import re
from pathlib import Path

from vrlhf.config import read_text_file
from vrlhf.errors import LabelError

MAX_CHARS = 100_000
KINDS = ("pairs", "rankings")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")

HOW_TO = {"pairs": """### Buttons and keys: two candidates
Look at the input first, then at the candidates: pick the one that is the better output **for this input**.

- **A better [1]**, **B better [2]**: that candidate is better, even if only a little. Most comparisons have a winner.
- **Tie [3]**: both are about equally good, or equally flawed. Use it when you really cannot choose.
- **Both bad [0]**: neither is acceptable (wrong, unreadable, unrelated to the input). No preference is recorded.
""", "rankings": """### Buttons and keys: three or four candidates (a ranking)
Look at the input first, then rank the candidates from the best output **for this input** to the worst.

- Press the candidates **best first**: **A [1]**, **B [2]**, **C [3]**, **D [4]** (the letter above each one). The
  ranking so far is shown under them; the last one is implied, so 3 candidates take 2 presses and 4 take 3.
- There is **no tie** in a ranking: when two are equally good, put either first; the others still count.
- **All bad [0]**: none is acceptable (wrong, unreadable, unrelated to the input). No preference is recorded.
- **Undo [U]** takes back your last pick, so a slip costs one key.
"""}
HOW_TO_COMMON = """
- **Skip [S]**: you cannot judge this one (you are unsure what the input shows). It goes to another annotator.
- **Undo [U]**: takes back your last vote (or your last pick in a ranking) and shows that comparison again.
- **Comment** and **Flag**: a note for the project lead (a broken image, an offensive output, a comparison that makes
  no sense); it is saved with your next vote or skip. Enter or Esc in the comment box brings the keys back.
- **Marks (optional)**: where a candidate is clearly wrong, click or tap that spot before you vote. On an image the
  square of the grid under your click is shaded; on a caption the word is struck through. Click it again to remove
  it. Marks go with your vote (key or button), on the candidate you marked; Skip drops them and Undo takes them back
  with the vote. Nothing to mark? Just vote: a vote without marks is still one key.
- Click the input to enlarge it; a candidate image has its own **enlarge** button (a click on the image marks it).
  Click again or press Esc to close. **G** opens and closes these guidelines.
- Each comparison is reserved for you while it is on screen; the timer above it shows for how long. When it runs out
  your vote still counts unless someone else has taken the comparison meanwhile. A page left alone for a few minutes
  pauses and gives its reservations back; any key or click goes on.
"""


def kind_of(k: int) -> str:
    """The kind of a comparison of `k` candidates: "pairs" or "rankings"."""
    return "pairs" if k == 2 else "rankings"


def for_kind(text: str, kind: str) -> str:
    """`text` without the sections meant for the other kind (headings starting with Pairs / Rankings)."""
    out, skipping = [], None  # skipping: the level of the other kind's heading we are inside
    for line in text.splitlines():
        heading = HEADING.match(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2).strip().lower()
            if skipping is not None and level <= skipping:
                skipping = None
            starts = next((k for k in KINDS if title.startswith(k)), None)
            if skipping is None and starts is not None and starts != kind:
                skipping = level
        if skipping is None:
            out.append(line)
    return "\n".join(out)


def guidelines_markdown(task: str | None, k: int, guidelines: dict[str | None, str]) -> str:
    """What the guidelines panel shows for a `k`-candidate comparison of `task`: the project's guidelines (per task,
    else for every task) for that kind, then what every button and key means."""
    text = guidelines.get(task) or guidelines.get(None)
    if text is None:
        text = ("*This project has no written guidelines"
                + (f" for {task}" if task else "") + ": ask your project lead what counts as better.*")
    kind = kind_of(k)
    return for_kind(text, kind).strip() + "\n\n---\n\n" + HOW_TO[kind] + HOW_TO_COMMON


def task_names() -> list[str]:
    """The tasks `vrlhf.tasks` holds, read from their sources (a task module declares NAME): importing them would
    load torch and transformers, seconds before a mistyped flag could be refused."""
    import vrlhf.tasks

    folder = Path(vrlhf.tasks.__file__).parent
    sources = {p.stem: p for p in folder.glob("*.py")} | {p.parent.name: p for p in folder.glob("*/__init__.py")}
    return sorted(name for name, p in sources.items() if not name.startswith("_")
                  and re.search(r"^NAME\b", p.read_text(encoding="utf-8"), re.M))


def load_guidelines(specs: list[str]) -> dict[str | None, str]:
    """`--guidelines` values: `FILE.md` (every task) or `TASK=FILE.md`; {task or None: Markdown}. A missing, empty
    or oversized file, an unknown task or a task given twice is a one-line error naming it."""
    out: dict[str | None, str] = {}
    known = None
    for spec in specs:
        task, sep, path = spec.partition("=")
        if not sep or not task.isidentifier():
            task, path = None, spec
        else:
            known = known or task_names()
            if task not in known:
                raise LabelError(f"--guidelines {spec}: no task {task!r} (tasks: {', '.join(known)})")
        if task in out:
            raise LabelError(f"--guidelines: {'task ' + task if task else 'a file for every task'} given twice")
        text = read_text_file(path, "--guidelines", 4 * MAX_CHARS)  # a regular file, size-checked before reading
        if not text.strip():
            raise LabelError(f"--guidelines {path}: the file is empty")
        if len(text) > MAX_CHARS:
            raise LabelError(f"--guidelines {path}: {len(text)} characters; guidelines take at most {MAX_CHARS}")
        out[task] = text
    return out
