"""The UI's example questions come from the indexed corpus (qa.ui.example_questions): its titles, or the name a
document's opening repeats most; the shipped seeds keep their curated questions."""

from __future__ import annotations

import shutil

from qa.ui import SEED_EXAMPLES, SEEDS, corpus_examples, example_questions
from tests.conftest import fake_settings
from tests.fakes import HashEmbedder, ScriptedGenerator

ORCHARD = "Hillside Orchard\n\nThe Hillside orchard grows forty kinds of apples on the slopes above Ledbury.\n"
GLACIERS = "# Glaciers of the Alps\n\nThe Aletsch glacier is the largest glacier in the Alps.\n"
KEEPER = (
    "The keeper of the lamp at Dunmore Head wrote every evening. Storms reached Dunmore Head in March.\n"
    "In 1990 the lamp at Dunmore Head was automated, and the Board of Lights sold the cottage.\n"
)


def test_a_title_or_the_repeated_name_makes_the_question():
    questions = example_questions([("orchard.txt", ORCHARD), ("glaciers.md", GLACIERS), ("keeper.txt", KEEPER)])
    assert questions == [
        'What is "Hillside Orchard" about?',
        'What is "Glaciers of the Alps" about?',
        "What do the documents say about Dunmore Head?",
    ]


def test_at_most_limit_questions_none_twice_and_none_without_a_subject():
    docs = [(f"{n}.txt", ORCHARD) for n in range(3)] + [("x.txt", "all lower case, no name here.\n")]
    docs += [(f"t{n}.md", f"# Chapter {n}\n\ntext\n") for n in range(6)]
    questions = example_questions(docs, limit=3)
    assert questions == [
        'What is "Hillside Orchard" about?',
        'What is "Chapter 0" about?',
        'What is "Chapter 1" about?',
    ]
    assert example_questions([]) == []


def test_a_sentence_or_a_breadcrumb_is_not_a_title():
    crumbs = "Home » USA » U.S. pushes MKO\n\nThe Obama administration said Albania would take MEK members.\n"
    crumbs += "Officials in Albania agreed.\n"
    assert example_questions([("a.txt", crumbs)]) == ["What do the documents say about Albania?"]
    skip = "Skip to main content\n\nThe mayor of Ledbury opened the fair; Ledbury Fair ran for a week in Ledbury.\n"
    assert example_questions([("c.html", skip)]) == ["What do the documents say about Ledbury?"]
    assert example_questions([("b.txt", KEEPER)]) == ["What do the documents say about Dunmore Head?"]


def test_the_ui_asks_about_what_is_indexed_and_keeps_the_curated_seed_questions(tmp_path):
    from qa.api import Assistant

    (tmp_path / "corpus").mkdir()
    for name, text in {"orchard.txt": ORCHARD, "glaciers.md": GLACIERS + "More.\n" * 300}.items():
        (tmp_path / "corpus" / name).write_text(text, encoding="utf-8")
    assistant = Assistant(fake_settings(tmp_path), generator=ScriptedGenerator(), embedder=HashEmbedder())
    assistant.ingest()
    # the larger document first
    assert corpus_examples(assistant) == ['What is "Glaciers of the Alps" about?', 'What is "Hillside Orchard" about?']
    assistant.store.close()

    seeds = tmp_path / "seeds"
    shutil.copytree(SEEDS, seeds / "corpus")
    assistant = Assistant(fake_settings(seeds), generator=ScriptedGenerator(), embedder=HashEmbedder())
    assistant.ingest()
    assert corpus_examples(assistant) == SEED_EXAMPLES
    assistant.store.close()
