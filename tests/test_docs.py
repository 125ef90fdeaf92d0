"""The docs keep up with the code: every setting, subcommand, subcommand option and metric is documented, and
every relative link or image in README.md and docs/*.md points at a file that exists."""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

from vq_benchmark.plugin.cli import build_parser
from vq_benchmark.plugin.settings import SETTINGS
from vq_benchmark.reports.schema import METRICS

ROOT = Path(__file__).resolve().parent.parent
USAGE = ROOT / "docs" / "USAGE.md"
METRICS_MD = ROOT / "docs" / "METRICS.md"
HELP_OPTIONS = {"-h", "--help"}
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^(#{1,6}) (.*)$", re.MULTILINE)


def _mentioned(text: str, name: str) -> bool:
    """`name` occurs as a whole token: not as part of a longer option, variable or identifier."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def _missing(text: str, names: list[str]) -> list[str]:
    return sorted({name for name in names if not _mentioned(text, name)})


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions, "vq-benchmark's parser has no subcommands"
    return {name: sub for action in actions for name, sub in action.choices.items()}


def test_usage_mentions_every_setting() -> None:
    text = USAGE.read_text(encoding="utf-8")
    names = ["--vq-case"]
    for s in SETTINGS:
        names += [s.option, *s.env, s.ini]
    missing = _missing(text, names)
    assert not missing, f"docs/USAGE.md does not mention these settings (option, env or ini names): {missing}"


def _section(text: str, level: int, title: str) -> str | None:
    """The text under the heading `#`*level + title, up to the next heading of that level or higher (headings
    inside code blocks do not count)."""
    blanked = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)  # same offsets, no code
    headings = list(HEADING.finditer(blanked))
    for i, m in enumerate(headings):
        if len(m.group(1)) == level and m.group(2).strip() == title:
            end = next((h.start() for h in headings[i + 1 :] if len(h.group(1)) <= level), len(text))
            return text[m.end() : end]
    return None


def test_usage_documents_every_subcommand_and_its_options() -> None:
    """Each subcommand is in the synopsis at the top of `## The vq-benchmark command` and has its own
    `### name` section there that names each of its options."""
    text = USAGE.read_text(encoding="utf-8")
    subcommands = _subcommands()
    assert {"run", "report", "compare"} <= set(subcommands)
    command = _section(text, 2, "The `vq-benchmark` command")
    assert command is not None, "docs/USAGE.md has no section '## The `vq-benchmark` command'"
    synopsis = HEADING.split(command, maxsplit=1)[0]
    missing = [f"{name} (synopsis)" for name in sorted(subcommands) if not _mentioned(synopsis, f"vq-benchmark {name}")]
    for name, sub in sorted(subcommands.items()):
        section = _section(command, 3, f"`{name}`")
        if section is None:
            missing.append(f"{name} (no '### `{name}`' section)")
            continue
        options = {o for action in sub._actions for o in action.option_strings} - HELP_OPTIONS
        missing += [f"{name} {o}" for o in _missing(section, sorted(options))]
    assert not missing, f"docs/USAGE.md does not document these vq-benchmark subcommands or options: {missing}"


def test_metrics_md_mentions_every_metric() -> None:
    text = METRICS_MD.read_text(encoding="utf-8")
    missing = [m.name for m in METRICS if not re.search(rf"(?<!\w){re.escape(m.name)}(?!\w)", text)]
    assert not missing, f"docs/METRICS.md does not mention these registered metrics: {missing}"


# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows) or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _relative_links(md: Path) -> list[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))  # links inside code blocks are examples, not links
    text = re.sub(r"`[^`\n]*`", "", text)
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", t)]


@functools.cache
def _anchors(md: Path) -> frozenset[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces to `-`, repeats `-1`, `-2`."""
    seen: dict[str, int] = {}
    for m in HEADING.finditer(FENCE.sub("", md.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return frozenset(seen)


def test_relative_links_point_at_files() -> None:
    """Every relative link or image in README.md and docs/*.md names a file that exists, and a `#fragment` into a
    Markdown file names one of its headings."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    checked = 0
    for md in pages:
        for target in _relative_links(md):
            path, _, fragment = target.partition("#")
            path = path.split("?", 1)[0]
            file = md.parent / path if path else md
            checked += 1
            if not file.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and file.suffix == ".md" and fragment not in _anchors(file):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
    assert checked, "no relative link found: the link pattern is broken"
    assert not broken, f"relative links to files or headings that do not exist: {broken}"
