"""The documentation site: its generated reference is current, and it builds offline with no broken link."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
REGENERATE = "python scripts/gen_docs.py"
# An asset the browser fetches by itself (not a link the reader clicks): scripts, styles, images, frames, fonts.
EXTERNAL_ASSET = re.compile(
    r"<(?:script|img|link|iframe|source|video|audio|embed)\b[^>]*\b(?:src|href|srcset)=[\"']?(?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//|@import\s+[\"']?(?:url\()?[\"']?(?:https?:)?//",
    re.IGNORECASE,
)


def _generate(out: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--out", str(out)], cwd=ROOT,
                   check=True, capture_output=True, text=True)


def test_reference_pages_are_current(tmp_path: Path) -> None:
    _generate(tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in sorted(tmp_path.glob("*.md"))}
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted(REFERENCE.glob("*.md"))}
    stale = sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))
    assert not stale, f"docs/reference/ is stale ({', '.join(stale)}): run `{REGENERATE}` and commit the result"


def test_reference_generation_is_deterministic(tmp_path: Path) -> None:
    _generate(tmp_path / "a")
    _generate(tmp_path / "b")
    for page in sorted((tmp_path / "a").glob("*.md")):
        assert page.read_text() == (tmp_path / "b" / page.name).read_text(), page.name


def test_config_reference_covers_every_key() -> None:
    from sln_cli import config

    text = (REFERENCE / "config.md").read_text(encoding="utf-8")
    for section, values in config.to_dict(config.Config()).items():
        for key in values if isinstance(values, dict) else ():
            assert f"`{section}.{key}`" in text, f"{section}.{key} missing: run `{REGENERATE}`"


def test_readme_links_into_the_docs_resolve() -> None:
    """GitHub shows README.md outside the site, so mkdocs cannot check its links: every docs/ page and anchor it
    names must exist (an anchor is the heading's text slugified as the site's table of contents does)."""
    slugify = pytest.importorskip("markdown.extensions.toc").slugify
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(links) >= 10
    for page, anchor in links:
        assert (ROOT / page).is_file(), f"README.md links to {page}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / page).read_text(encoding="utf-8"), re.MULTILINE)
            slugs = {slugify(re.sub(r"[`*]", "", heading), "-") for heading in headings}
            assert anchor in slugs, f"README.md links to {page}#{anchor}, which has no such heading"


def test_site_builds_strict_and_offline(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, env={**_env(), "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (site / "index.html").is_file() and (site / "reference" / "cli" / "index.html").is_file()
    found = [f"{path.relative_to(site)}: {match.group(0)}" for path in sorted(site.rglob("*"))
             if path.suffix in (".html", ".css", ".js") for match in EXTERNAL_ASSET.finditer(path.read_text())]
    assert not found, "the site fetches external assets (it must work offline): " + "; ".join(found[:5])


def test_external_asset_pattern_catches_what_material_would_load() -> None:
    assert EXTERNAL_ASSET.search('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">')
    assert EXTERNAL_ASSET.search('<script src="//cdn.example.org/x.js"></script>')
    assert EXTERNAL_ASSET.search("src: url(https://fonts.gstatic.com/a.woff2)")
    assert not EXTERNAL_ASSET.search('<a href="https://github.com/chenpf1025/SLN">the official code</a>')
    assert not EXTERNAL_ASSET.search('<img src="../images/site.png">')


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
