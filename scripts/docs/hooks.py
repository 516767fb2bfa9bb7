"""MkDocs hooks of the documentation site (mkdocs.yml). Why a hook and not more files in git:

- **Offline Mermaid.** The theme would load Mermaid from a CDN, which many networks (and these
  machines) cannot reach. The browser build of a pinned Mermaid release is fetched from the npm
  registry with ``npm pack`` on the first build, checked against the pinned integrity hash,
  unpacked under ``build/`` (ignored by git) and shipped with the site.
- **One source.** docs_dir is ``spec/``: the Specification pages are the spec documents
  themselves. The changelog page is made from ``CHANGELOG.md`` at build time.
- **URLs.** The guides (``spec/guide/``) form the top of the site, the specification lives
  under ``spec/``: ``index.html`` is Getting started, ``spec/index.html`` the spec's index.
- **Navigation.** The "Specification" and "State diagrams" sections list every document of
  ``spec/`` and every page of ``spec/diagrams/``, so a new document or a new machine's diagram
  appears with no edit here; diagram pages get the full content width.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

ASSET_DIR = ROOT / "build" / "docs-assets"
"""Where the npm tarballs are unpacked (ignored by git; a fresh clone fetches them again)."""


@dataclass(frozen=True)
class NpmAsset:
    """Files of one pinned npm package that the site ships, checked by the registry's hash."""

    name: str
    version: str
    integrity: str
    files: dict[str, str]
    """Member of the tarball -> path in the site."""

    @property
    def folder(self) -> Path:
        return ASSET_DIR / f"{self.name}-{self.version}"


NPM_ASSETS = (
    # Renders the state diagrams in the browser (the build the theme would load from a CDN).
    NpmAsset(
        "mermaid",
        "11.17.2",
        "sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQxULMa80/qt5gHO73aCleBBg==",
        {
            "package/dist/mermaid.min.js": "assets/mermaid.min.js",
            "package/LICENSE": "assets/mermaid.LICENSE.txt",
        },
    ),
    # Lets the search worker run from file:// (the offline plugin would load it from a CDN).
    NpmAsset(
        "iframe-worker",
        "1.0.4",
        "sha512-roeaaI+Lg1LJNfgpCjoRe/+WzEjy9+Z08LoEvu85MCPbBjwm+qXz8Ag5U05lHa6V1CysZyGzE0SOkAtSUA5q7Q==",
        {
            "package/shim/index.js": "assets/iframe-worker-shim.js",
            "package/LICENSE": "assets/iframe-worker.LICENSE.txt",
        },
    ),
)

OWN_ASSETS = {
    "assets/p2psc-mermaid.js": HERE / "mermaid-init.js",
    "assets/p2psc.css": HERE / "extra.css",
}


def _integrity(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def fetch(asset: NpmAsset) -> dict[str, Path]:
    """Site path -> local file of a pinned npm package; fetched and checked once."""
    local = {site: asset.folder / Path(member).name for member, site in asset.files.items()}
    if all(path.is_file() for path in local.values()):
        return local
    npm = shutil.which("npm")
    if npm is None:
        raise PluginError(f"npm is needed once to fetch {asset.name} (apt-get install npm)")
    download = ASSET_DIR / "npm"
    download.mkdir(parents=True, exist_ok=True)
    spec = f"{asset.name}@{asset.version}"
    done = subprocess.run(
        [npm, "pack", spec, "--json", "--pack-destination", str(download)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise PluginError(f"npm pack {spec} failed: {done.stderr.strip()}")
    tarball = download / json.loads(done.stdout)[0]["filename"]
    if _integrity(tarball) != asset.integrity:
        tarball.unlink()
        raise PluginError(f"{tarball.name}: integrity differs from the pinned one; refused")
    asset.folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        for member, site in asset.files.items():
            source = archive.extractfile(member)
            if source is None:
                raise PluginError(f"{tarball.name} has no {member}")
            local[site].write_bytes(source.read())
    return local


def _title(path: Path) -> str:
    """A spec document's H1, without a trailing "(normative)"-style remark."""
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            return re.sub(r"\s*\([^)]*\)\s*$", "", line[2:]).strip()
    return path.stem


def _spec_pages(docs: Path) -> list[Any]:
    """The spec's index, then its documents in the order the index lists them, then any
    others by name: a new spec document appears in the site by itself."""
    listed = re.findall(r"\]\(([\w-]+\.md)\)", (docs / "README.md").read_text())
    names = [n for n in dict.fromkeys(listed) if (docs / n).is_file()]
    names += sorted(p.name for p in docs.glob("*.md") if p.name not in {*names, "README.md"})
    return [{"Overview": "README.md"}, *({_title(docs / n): n} for n in names)]


def _diagram_pages(docs: Path) -> list[Any]:
    pages = sorted(p for p in (docs / "diagrams").glob("*.md") if p.name != "README.md")
    return [{"Overview": "diagrams/README.md"}, *({p.stem: f"diagrams/{p.name}"} for p in pages)]


_ASSETS: dict[str, Path] = {}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    _ASSETS.clear()
    for asset in NPM_ASSETS:
        _ASSETS.update(fetch(asset))
    _ASSETS.update(OWN_ASSETS)
    polyfills = [p for p in config.extra.get("polyfills", []) if "iframe-worker" not in str(p)]
    config.extra["polyfills"] = [*polyfills, "assets/iframe-worker-shim.js"]
    docs = Path(config.docs_dir)
    generated = {"Specification": _spec_pages(docs), "State diagrams": _diagram_pages(docs)}
    for item in config.nav or []:
        if isinstance(item, dict):
            for section, pages in generated.items():
                if section in item:
                    item[section] = pages
    config.extra_javascript.extend(["assets/mermaid.min.js", "assets/p2psc-mermaid.js"])
    config.extra_css.append("assets/p2psc.css")
    return config


def _move(file: File, dest_uri: str, config: MkDocsConfig) -> None:
    file.dest_uri = dest_uri
    for derived in ("url", "abs_dest_path"):  # cached from the old destination
        file.__dict__.pop(derived, None)
    file.url  # noqa: B018 (recompute now, with the site's URL style)
    file.abs_dest_path = str(Path(config.site_dir) / dest_uri)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for file in list(files):
        if file.src_uri == "guide/index.md":
            _move(file, "index.html", config)
        elif file.is_documentation_page() and not file.src_uri.startswith("guide/"):
            _move(file, f"spec/{file.dest_uri}", config)
    for uri, path in _ASSETS.items():
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    files.append(
        File.generated(config, "guide/changelog.md", abs_src_path=str(ROOT / "CHANGELOG.md"))
    )
    return files


_DIRECTORY_LINK = re.compile(r"\]\((?P<dir>[\w./-]*?/)(?P<anchor>#[\w-]+)?\)")


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri.startswith("diagrams/"):
        page.meta.setdefault("hide", ["toc"])  # the widest column the theme has
    # A link to a folder (GitHub shows its README) goes to that folder's README page.
    here = Path(config.docs_dir, page.file.src_uri).parent

    def to_readme(match: re.Match[str]) -> str:
        folder = match["dir"]
        if "://" in folder or not (here / folder / "README.md").is_file():
            return match.group(0)
        return f"]({folder}README.md{match['anchor'] or ''})"

    return _DIRECTORY_LINK.sub(to_readme, markdown)


_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):<code>~?(?P<name>[\w.]+)</code>")


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Docstrings use Sphinx roles (``:class:`~p2psc.keys.PublicKey```), which mkdocstrings
    leaves as text: show the name as code, as the ``~`` asks (last part only)."""

    def name(match: re.Match[str]) -> str:
        text = match["name"]
        shown = (
            text.rsplit(".", 1)[-1] if match.group(0).split("<code>")[1].startswith("~") else text
        )
        return f"<code>{shown}</code>"

    return _ROLE.sub(name, html)
