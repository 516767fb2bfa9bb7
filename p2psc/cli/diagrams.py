"""``p2psc diagrams``: render every machine class into ``spec/diagrams/`` as Mermaid.

Every class listed in :data:`p2psc.machines.MACHINES` gets one page (layout rules:
:mod:`p2psc.statediagram`): every declared transition, stacked labels, folded aborts, a legend.

The diagrams are generated, never hand-edited: ``--check`` exits 1 when a file is stale or
missing, so a test (and CI) notices when a machine changed without its diagram.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p2psc.machines import machine_classes
from p2psc.statediagram import index_page, page

__all__ = ["register", "render_all", "render_machine"]

SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"
"""The specification of the checkout: each page names the section that its machine implements."""
DEFAULT_DIR = SPEC_DIR / "diagrams"


def render_machine(machine_class: type) -> str:
    """Markdown page with the Mermaid ``stateDiagram-v2`` of one machine class."""
    return page(machine_class, SPEC_DIR)


def render_all() -> dict[str, str]:
    """File name -> content for every registered machine."""
    classes = machine_classes()
    pages = {f"{name}.md": render_machine(cls) for name, cls in classes.items()}
    return {"README.md": index_page(classes), **pages}


def _run(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    wanted = render_all()
    if args.check:
        stale = [
            name
            for name, content in wanted.items()
            if not (directory / name).is_file() or (directory / name).read_text() != content
        ]
        if stale:
            print(
                f"stale diagrams in {directory}: {', '.join(sorted(stale))}; "
                "run 'p2psc diagrams' to regenerate",
                file=sys.stderr,
            )
            return 1
        print(f"{len(wanted)} diagrams up to date in {directory}")
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in wanted.items():
        (directory / name).write_text(content)
    print(f"wrote {len(wanted)} diagrams to {directory}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diagrams",
        help="write the Mermaid state diagrams of every machine into spec/diagrams/",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="output folder (%(default)s)")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if any file is stale"
    )
    parser.set_defaults(func=_run)
