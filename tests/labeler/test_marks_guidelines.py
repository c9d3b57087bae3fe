"""The guidelines say when to mark, that marks are optional and how to remove one: the page's own help for every
task and kind, and the demo's guidelines for each of their tasks."""

from __future__ import annotations

from labfix import ROOT

from labeler.guides import for_kind, guidelines_markdown, load_guidelines

DEMO = ROOT / "data" / "demo" / "guidelines"


def test_the_page_help_says_how_to_mark_and_unmark_for_pairs_and_rankings():
    for k in (2, 4):
        text = guidelines_markdown("colorization", k, {})
        assert "**Marks (optional)**" in text and "Click it again to remove" in text, k
        assert "a vote without marks is still one key" in text and "**enlarge** button" in text, k


def test_the_demo_guidelines_say_when_to_mark_each_task():
    guides = load_guidelines([f"{task}={DEMO / task}.md" for task in ("captioning", "colorization")])
    when = {"colorization": ("bleeding onto the background", "A wrong colour on a shape"),
            "captioning": ("**false**", "a forgotten shape or a missing detail has no word to mark")}
    for task, text in guides.items():
        for kind in ("pairs", "rankings"):  # the marks section is under neither kind's heading: shown with both
            shown = for_kind(text, kind)
            assert all(words in shown for words in when[task]), (task, kind)
            assert "Marks are optional" in shown and "a second click removes it" in shown, (task, kind)
