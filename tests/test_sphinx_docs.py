"""The documentation site builds with Sphinx, warnings as errors, and holds together.

The build is the README's command; the checks are what a reader would notice:
the API reference covers the public names, the front page leads to every page,
and no link inside the site points at a missing file or anchor.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 240


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built once for this module."""
    out = tmp_path_factory.mktemp("html")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-6000:]
    assert "WARNING" not in build.stderr, build.stderr[-6000:]
    return out


def ids(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text()))


def links(page: Path) -> list[str]:
    return re.findall(r'\b(?:href|src)="([^"]+)"', page.read_text())


@pytest.mark.timeout(300)
def test_the_api_reference_documents_every_public_name(site: Path) -> None:
    import parallel_kernel

    documented = ids(site / "api.html")
    public = {f"parallel_kernel.{name}" for name in parallel_kernel.__all__}
    assert public <= documented, sorted(public - documented)
    assert {
        "parallel_kernel.Pool.submit",
        "parallel_kernel.Pool.map",
        "parallel_kernel.Pool.connect",
        "parallel_kernel.Pool.shutdown",
        "parallel_kernel.TaskFuture.cancel",
        "parallel_kernel.TaskFuture.interrupt",
        "parallel_kernel.serialize.pack_apply",
        "parallel_kernel.serialize.unpack_result",
        "parallel_kernel.serialize.SerializationError",
        "parallel_kernel.kernel.ParallelKernel",
        "parallel_kernel.kernel.ParallelKernel.engine_id",
        "parallel_kernel.kernel.ParallelKernel.exec_lines",
        "parallel_kernel.kernel.ParallelKernel.abort_capacity",
        "parallel_kernel.kernel.ParallelKernelApp.task_port",
        "parallel_kernel.kernelspec.install",
        "parallel_kernel.kernelspec.uninstall",
    } <= documented


@pytest.mark.timeout(300)
def test_the_api_reference_shows_docstrings_and_trait_help(site: Path) -> None:
    text = re.sub(r"<[^>]+>", "", (site / "api.html").read_text())
    assert "Schedule fn(*args, **kwargs) on an engine and return its future" in text
    # traits are documented by their help and how to set them, not as TraitType objects
    assert "Integer id of this engine in a pool" in text
    assert "--ParallelKernel.engine_id=" in text
    assert "traitlets.traitlets" not in text


@pytest.mark.timeout(300)
def test_the_front_page_leads_to_every_page(site: Path) -> None:
    sources = {p.stem for p in DOCS.iterdir() if p.suffix in (".md", ".rst")} - {"index"}
    assert {"installation", "quickstart", "kernel", "pool", "scaling", "api"} <= sources
    assert {"protocol", "performance", "reliability"} <= sources
    targets = {link.split("#")[0] for link in links(site / "index.html")}
    missing = {name for name in sources if f"{name}.html" not in targets}
    assert not missing, f"index.html does not link {sorted(missing)}"


@pytest.mark.timeout(300)
def test_every_link_inside_the_site_resolves(site: Path) -> None:
    pages = sorted(site.glob("*.html"))
    anchors = {page.name: ids(page) for page in pages}
    broken = []
    for page in pages:
        for link in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("//"):
                continue  # http:, https:, mailto:, data: ...
            path, _, fragment = unquote(link).partition("#")
            path = path.split("?")[0]
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif (
                fragment
                and target.suffix == ".html"
                and fragment not in anchors.get(target.name, ids(target))
            ):
                broken.append(f"{page.name}: {link} (no such anchor)")
    assert not broken, "\n".join(broken)


@pytest.mark.timeout(300)
def test_the_data_files_the_pages_cite_are_in_the_site(site: Path) -> None:
    for page, name in [
        ("performance.html", "benchmark-results.json"),
        ("reliability.html", "soak-results.json"),
        ("performance.html", "performance.png"),
    ]:
        cited = [link for link in links(site / page) if link.endswith(name)]
        assert cited, f"{page} does not link {name}"
        for link in cited:
            copy = site / link
            assert copy.read_bytes() == (DOCS / name).read_bytes(), link
