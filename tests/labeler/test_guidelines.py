"""Guidelines per kind of comparison (pairs, rankings), the demo's guidelines for both, and a mistyped task refused
before anything heavy is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from labfix import ROOT

from labeler.guides import for_kind, guidelines_markdown, load_guidelines, task_names

GUIDE = """# Captioning
Say what is in the picture.
### Pairs: two captions
- **Tie [3]** when both are equally good.
#### Pairs, hard cases
- a nested pair rule
### Rankings: three or four captions
- no tie: put either first.
## For every comparison
- **Skip [S]** when unsure.
"""


def test_sections_for_the_other_kind_are_left_out():
    pairs, ranks = for_kind(GUIDE, "pairs"), for_kind(GUIDE, "rankings")
    assert "Tie [3]" in pairs and "a nested pair rule" in pairs and "no tie" not in pairs
    assert "no tie" in ranks and "Tie [3]" not in ranks and "a nested pair rule" not in ranks
    for text in (pairs, ranks):  # what is not under a kind's heading is shown with both
        assert "Say what is in the picture." in text and "**Skip [S]** when unsure" in text


def test_the_keys_shown_follow_the_kind_on_screen():
    guides = {"captioning": GUIDE}
    pair, rank = guidelines_markdown("captioning", 2, guides), guidelines_markdown("captioning", 4, guides)
    assert "**Tie [3]**: both are about equally good" in pair and "best first" not in pair
    assert "Press the candidates **best first**" in rank and "**All bad [0]**" in rank and "Tie [3]" not in rank
    assert "no written guidelines for colorization" in guidelines_markdown("colorization", 2, guides)


def test_the_demo_guidelines_cover_pairs_and_rankings_of_every_task():
    folder = ROOT / "data" / "demo" / "guidelines"
    guides = load_guidelines([f"{task}={folder / task}.md" for task in task_names()])
    assert set(guides) == set(task_names()) >= {"captioning", "colorization", "detection"}
    for task, text in guides.items():
        pairs, ranks = for_kind(text, "pairs"), for_kind(text, "rankings")
        assert "Tie [3]" in pairs and "Both bad [0]" in pairs and "best first" not in pairs, task
        assert "best first" in ranks and "no tie" in ranks and "All bad [0]" in ranks, task
        assert "Tie [3]" not in ranks and "Pairs:" not in ranks and "Rankings:" not in pairs, task
        assert "Skip [S]" in pairs and "Skip [S]" in ranks, task


def test_a_mistyped_task_is_refused_before_gradio_or_transformers_load(tmp_path):
    """`vrlhf label --guidelines captionin=...` is one line and exit 2, before the app (Gradio) or any task module
    (torch, transformers) is imported: it took 8.5 s (16 s on a busy machine); now about a third of a second."""
    (tmp_path / "g.md").write_text("Prefer the caption that names every shape.\n")
    probe = ("import json, sys, time; t = time.time(); from vrlhf.cli import main; "
             f"rc = main(['label', '--db', {str(tmp_path / 'x.sqlite')!r}, '--guidelines', "
             f"'captionin={tmp_path / 'g.md'}']); "
             "print(json.dumps([rc, time.time() - t, sorted(m for m in ('gradio', 'transformers', 'torch') "
             "if m in sys.modules)]))")
    start = time.time()
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    wall = time.time() - start
    rc, seconds, heavy = json.loads(run.stdout.strip().splitlines()[-1])
    assert rc == 2 and heavy == [], (rc, heavy, run.stderr)
    assert run.stderr.strip() == ("vrlhf label: --guidelines captionin=" + str(tmp_path / "g.md")
                                  + f": no task 'captionin' (tasks: {', '.join(task_names())})")
    print(f"refused in {seconds:.2f} s in-process, {wall:.2f} s with the interpreter's start")
    assert not (tmp_path / "x.sqlite").exists()  # nothing written


def test_task_names_read_from_sources_match_the_task_registry():
    from vrlhf.tasks import task_names as imported

    assert task_names() == list(imported())
