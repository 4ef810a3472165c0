"""docs/cli.md is generated from the Typer app: it cannot drift from the real options."""

from __future__ import annotations

import typer.main

from geopix.cli import app
from geopix.cli.docs import REGENERATE, generate
from tests.docs_blocks import ROOT


def test_cli_md_is_the_generated_page() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    assert page == generate(), f"docs/cli.md is out of date with the CLI; regenerate it: {REGENERATE}"


def test_the_page_lists_every_command_and_option() -> None:
    page = generate()
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        subs = cmd.commands.items() if hasattr(cmd, "commands") else [(None, cmd)]
        for sub, c in subs:
            assert f"## geopix {name}{' ' + sub if sub else ''}\n" in page
            for p in c.params:
                for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]:
                    assert opt.startswith("-") is False or f"`{opt}`" in page, (name, opt)
    assert "`--progress`, `--no-progress`" in page
