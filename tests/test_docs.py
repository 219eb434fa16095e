"""The README and docs/ are the manual: its commands exist, every command is in it, first-run
works, every page is reachable from the README, every link resolves, no reference leaves the
repository, and the documented Bundle is one the codec makes and central takes."""

from __future__ import annotations

import json
import re
import subprocess
import zlib
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from edge_agent.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {ROOT / "README.md": README, **DOCS}
MANUAL = "\n".join(PAGES.values())


def commands() -> set[str]:
    root = typer.main.get_command(app)
    names: set[str] = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        if sub:
            names.update(f"{name} {s}" for s in sub)
            if getattr(cmd, "invoke_without_command", False):  # `console` serves; `console cert`
                names.add(name)
        else:
            names.add(name)
    return names


def test_every_command_is_documented_and_has_help() -> None:
    runner = CliRunner()
    for name in sorted(commands()):
        assert f"edge-agent {name}" in MANUAL, f"document `edge-agent {name}` in README or docs/"
        result = runner.invoke(app, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, name


def test_documented_commands_exist() -> None:
    known = commands()
    for page, text in PAGES.items():
        for doc in set(re.findall(r"`edge-agent ([a-z]+(?: [a-z]+)?)", text)):
            assert doc in known or doc.split()[0] in known, f"{page.name} mentions unknown {doc!r}"


def test_first_run_scripts_exist_and_ci_runs_the_readme_test_command() -> None:
    assert "bash scripts/demo" in README and "bash scripts/test" in README
    for script in ("demo", "test", "setup"):
        assert (ROOT / "scripts" / script).is_file()
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_example_config_key_is_documented_in_the_example() -> None:
    from edge_agent.settings import Settings

    text = (ROOT / "config" / "edge-agent.example.toml").read_text()
    for section, model in Settings.model_fields.items():
        if section == "devices":
            continue
        assert f"[{section}]" in text, section
        sub = model.annotation
        fields = getattr(sub, "model_fields", None) or getattr(
            next((a for a in getattr(sub, "__args__", ()) if hasattr(a, "model_fields")), None),
            "model_fields",
            {},
        )
        for key in fields:
            # Keys without a TOML default (None) are shown commented out.
            assert re.search(rf"^(# )?{key} = ", text, re.M), f"{section}.{key} not in the example"


# --- docs/ ------------------------------------------------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    body = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", body, re.M)}


def test_every_docs_page_is_linked_from_the_readme() -> None:
    assert DOCS, "docs/*.md missing"
    for page in DOCS:
        rel = page.relative_to(ROOT).as_posix()
        assert f"]({rel})" in README, f"link {rel} from the README's 'Where to read next'"


def test_every_relative_link_resolves() -> None:
    for page, text in PAGES.items():
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.name}: link to {target} does not resolve"
            if anchor and dest.suffix == ".md":
                found = _anchors(dest.read_text(encoding="utf-8"))
                assert anchor in found, f"{page.name}: no heading #{anchor} in {dest.name}"


def _tracked_text() -> dict[str, str]:
    names = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    texts: dict[str, str] = {}
    for name in filter(None, names):
        try:
            texts[name] = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
    return texts


def test_nothing_points_outside_the_repository() -> None:
    """A clone is complete on its own: no reference to notes kept beside the repository."""
    outside = re.compile(r"(\.\./shared\b|\bshared/[A-Z][A-Z-]*\.md)")
    found = [
        f"{name}:{text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for name, text in _tracked_text().items()
        for m in outside.finditer(text)
    ]
    assert not found, "cite docs/ instead:\n" + "\n".join(found)


def test_protocol_citations_name_existing_sections() -> None:
    page = DOCS[ROOT / "docs" / "protocols.md"]
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", page, re.M))
    assert {"1", "2", "2.4", "5", "6", "9", "10"} <= sections
    cited = re.compile(r"docs/protocols\.md`{0,2}\s*((?:§\d+(?:\.\d+)?(?:,\s*)?)+)")
    for name, text in _tracked_text().items():
        for m in cited.finditer(text):
            for section in re.findall(r"§(\d+(?:\.\d+)?)", m.group(1)):
                assert section in sections, f"{name} cites docs/protocols.md §{section}"


def _documented_bundle() -> dict[str, Any]:
    text = DOCS[ROOT / "docs" / "wire-format.md"]
    blocks = re.findall(r"^```json\n(.*?)^```", text, re.M | re.S)
    assert len(blocks) == 1, "docs/wire-format.md shows one JSON Bundle"
    bundle: dict[str, Any] = json.loads(blocks[0])
    return bundle


def test_the_documented_bundle_is_what_the_codec_makes_and_central_takes() -> None:
    from sync import codec, conformance, fhir
    from tests.sync.test_fhir import check_bundle

    bundle = _documented_bundle()
    check_bundle(bundle)  # R4B models, no empty values, vital-signs profile, conditional requests
    tags = {t["system"]: t["code"] for t in bundle["meta"]["tag"]}
    assert tags[fhir.TAG_SCHEMA] == fhir.SCHEMA, "the example predates the current schema"
    urls = set(conformance.extension_urls(bundle))
    assert urls and urls <= {fhir.EXT_FLAGS, fhir.EXT_DEVICE_TIME, fhir.EXT_CLOCK}, urls
    # Compressed as the documented recipe says, central's decoder takes it.
    deflater = zlib.compressobj(zdict=codec.ZDICT_V3)
    payload = deflater.compress(json.dumps(bundle).encode()) + deflater.flush()
    batch = codec.decode_batch(payload)
    assert batch.unit == tags["urn:mmu:unit"]
    assert len(batch.readings) >= 4
