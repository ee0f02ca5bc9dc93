"""JupyterLab 4 with this kernel, in a real browser, used as a person would.

A JupyterLab server of this environment finds the kernelspec the wheel
installed; Debian's Chromium, headless and driven through Playwright, opens the
Launcher, starts a notebook on the kernel from its card, runs cells that use a
``Pool``, interrupts and restarts the kernel from the notebook's toolbar, and
runs the pool example notebook, whose progress bars and engine figures it
checks as rendered, opens a subshell console on a busy notebook, watches
``%%px`` output stream into a running cell and stops it, and uses the pool's
dashboard.
Screenshots of every step go to ``test-artifacts/jupyterlab/``, together with
the server's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_installed
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "jupyterlab"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DISPLAY_NAME = "Python 3 (parallel)"

# Waits, in milliseconds for Playwright and seconds otherwise, sized for a
# loaded two-core machine.  Every wait has one; none of them is a sleep.
SERVER_START = 90
SERVER_STOP = 30
PAGE_LOAD = 60_000
KERNEL_START = 90_000
POOL_RESULT = 120_000
CELL_RESULT = 30_000
BUSY = 30_000
INTERRUPTED = 10_000
RESTARTED = 60_000


# ---------------------------------------------------------------- the server


@pytest.mark.timeout(10)
def test_chromium_is_installed() -> None:
    """In CI a missing browser fails the run; elsewhere the browser tests are skipped."""
    require_installed(CHROMIUM, "chromium")


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")  # test_chromium_is_installed fails in CI
    return CHROMIUM


def _isolated_environment(home: Path) -> dict[str, str]:
    """The server's environment: the user's Jupyter and IPython files left out.

    Kernelspecs still come from this environment's prefix, where the wheel put
    ours; user settings, workspaces and history stay in ``home``.
    """
    settings = home / "settings"
    notifications = settings / "@jupyterlab" / "apputils-extension"
    notifications.mkdir(parents=True)
    # No "would you like to get news?" toast over the notebook.
    (notifications / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    return {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
    }


def _server_url(process: subprocess.Popen, runtime_dir: Path, log: Path) -> str:
    """The URL of the started server once it answers, from its server-info file."""
    info_file = runtime_dir / f"jpserver-{process.pid}.json"
    deadline = time.monotonic() + SERVER_START
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"JupyterLab exited with status {process.returncode}:\n{log.read_text()[-4000:]}"
            )
        if url is None and info_file.exists():
            with contextlib.suppress(ValueError, KeyError):  # unless still being written
                url = json.loads(info_file.read_text())["url"].rstrip("/")
        if url is not None:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=5) as response:
                    if response.status == 200:
                        return url
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.2)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START} s:\n{log.read_text()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (the server shuts its kernels down), SIGKILL if that hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SERVER_STOP)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(SERVER_STOP)


@pytest.fixture(scope="module")
def lab(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JupyterLab server on a free loopback port, no token or password; its URL."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    home = tmp_path_factory.mktemp("jupyterlab")
    notebooks = home / "notebooks"
    shutil.copytree(ROOT / "examples", notebooks, ignore=shutil.ignore_patterns("*.py"))
    env = _isolated_environment(home)
    log = ARTIFACTS / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                "--port=0",  # the system picks a free port; the server-info file tells it
                "--ServerApp.port_retries=0",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                f"--ServerApp.root_dir={notebooks}",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield _server_url(process, Path(env["JUPYTER_RUNTIME_DIR"]), log)
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, timeout=PAGE_LOAD
        )
        try:
            yield browser
        finally:
            browser.close()


# ---------------------------------------------------------------- the page


class LabPage:
    """The browser page with JupyterLab, and numbered screenshots of one test."""

    def __init__(self, page: Page, test_name: str) -> None:
        self.page = page
        self.test_name = test_name
        self.shots = 0

    def shot(self, step: str) -> None:
        self.shots += 1
        path = ARTIFACTS / f"{self.test_name}-{self.shots:02d}-{step}.png"
        self.page.screenshot(path=str(path), timeout=CELL_RESULT)


@pytest.fixture
def lab_page(lab: str, browser: Browser, request: pytest.FixtureRequest) -> Iterator[LabPage]:
    """JupyterLab freshly loaded (default workspace) with the Launcher open.

    Afterwards: a last screenshot (``-failed`` when the test failed), and every
    kernel the test started is shut down, so tests do not pile up engines.
    """
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(CELL_RESULT)
    context.set_default_navigation_timeout(PAGE_LOAD)
    lab_page = LabPage(context.new_page(), request.node.name)
    failed_before = request.session.testsfailed
    try:
        lab_page.page.goto(f"{lab}/lab?reset", timeout=PAGE_LOAD)
        launcher_card(lab_page.page, "Notebook").wait_for(timeout=PAGE_LOAD)
        yield lab_page
    finally:
        # A failed setup raises through here; a failed test has been counted by now.
        failed = sys.exc_info()[0] is not None or request.session.testsfailed > failed_before
        try:
            lab_page.shot("failed" if failed else "end")
        finally:
            try:
                _shut_down_kernels(lab_page.page, lab)
            finally:
                context.close()


def _shut_down_kernels(page: Page, lab: str) -> None:
    xsrf = {c["name"]: c["value"] for c in page.context.cookies()}.get("_xsrf", "")
    api = page.context.request
    for session in api.get(f"{lab}/api/sessions", timeout=CELL_RESULT).json():
        api.delete(
            f"{lab}/api/sessions/{session['id']}",
            headers={"X-XSRFToken": xsrf},
            timeout=RESTARTED,
        )


def launcher_card(page: Page, category: str) -> Locator:
    return page.locator(f'.jp-LauncherCard[data-category="{category}"][title="{DISPLAY_NAME}"]')


class Notebook:
    """The notebook panel in front, with its toolbar, cells and kernel status."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.panel = page.locator(".jp-NotebookPanel:visible")
        self.cells = self.panel.locator(".jp-Notebook .jp-Cell")
        self.indicator = self.panel.locator(".jp-Notebook-ExecutionIndicator")
        # The status bar's kernel item, e.g. "Python 3 (parallel) | Idle".
        self.kernel_status = page.locator(
            "#jp-main-statusbar .jp-StatusBar-TextItem", has_text=f"{DISPLAY_NAME} | "
        )

    @classmethod
    def open_from_launcher(cls, lab_page: LabPage) -> Notebook:
        launcher_card(lab_page.page, "Notebook").click(timeout=CELL_RESULT)
        notebook = cls(lab_page.page)
        expect(notebook.panel).to_have_count(1, timeout=PAGE_LOAD)
        expect(notebook.cells).to_have_count(1, timeout=PAGE_LOAD)
        notebook.wait_idle(KERNEL_START)
        return notebook

    def wait_idle(self, timeout: float) -> None:
        expect(self.kernel_status).to_have_text(f"{DISPLAY_NAME} | Idle", timeout=timeout)
        expect(self.indicator).to_have_attribute("data-status", "idle", timeout=timeout)

    def toolbar_button(self, name: str) -> Locator:
        return self.panel.locator(f'.jp-NotebookPanel-toolbar [data-jp-item-name="{name}"]')

    def run(self, code: str) -> Locator:
        """Type ``code`` into the last (empty) cell and press Shift+Enter; the cell."""
        index = self.cells.count() - 1
        cell = self.cells.nth(index)
        editor = cell.locator(".cm-content")
        editor.click(timeout=CELL_RESULT)
        self.page.keyboard.type(code)
        expect(editor).to_have_text(code, use_inner_text=True, timeout=CELL_RESULT)
        self.page.keyboard.press("Shift+Enter")
        # Shift+Enter on the last cell appends an empty one for the next run.
        expect(self.cells).to_have_count(index + 2, timeout=CELL_RESULT)
        return cell

    def outputs(self, cell: Locator, count: int, timeout: float) -> Locator:
        """The outputs of ``cell`` once it has run as execution ``count``."""
        expect(cell.locator(".jp-InputArea-prompt")).to_have_text(f"[{count}]:", timeout=timeout)
        return cell.locator(".jp-OutputArea-output")

    def record_kernel_statuses(self) -> None:
        """Start recording every kernel status the toolbar indicator shows."""
        self.page.evaluate(
            """(item) => {
                const status = () =>
                    item.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status;
                window.kernelStatuses = [status()];
                new MutationObserver(() => {
                    const now = status();
                    if (now !== window.kernelStatuses.at(-1)) window.kernelStatuses.push(now);
                }).observe(item, {attributes: true, childList: true, subtree: true});
            }""",
            self.toolbar_button("executionProgress").element_handle(timeout=CELL_RESULT),
        )

    def kernel_statuses(self) -> list[str]:
        return self.page.evaluate("() => window.kernelStatuses")


# ---------------------------------------------------------------- the tests


@pytest.mark.timeout(240)
def test_launcher_shows_the_kernel_with_its_logo(lab_page: LabPage) -> None:
    page = lab_page.page
    lab_page.shot("launcher")
    our_logo = (ROOT / "kernelspec" / "logo-svg.svg").read_bytes()
    for category in ("Notebook", "Console"):
        card = launcher_card(page, category)
        expect(card).to_have_count(1, timeout=CELL_RESULT)
        expect(card.locator(".jp-LauncherCard-label")).to_have_text(
            DISPLAY_NAME, timeout=CELL_RESULT
        )
        logo = card.locator("img")
        expect(logo).to_have_attribute(
            "src", re.compile(r"/kernelspecs/parallel/logo-svg\.svg$"), timeout=CELL_RESULT
        )
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0",
            arg=logo.element_handle(timeout=CELL_RESULT),
            timeout=PAGE_LOAD,
        )
        src = logo.evaluate("img => img.src", timeout=CELL_RESULT)
        response = page.context.request.get(src, timeout=CELL_RESULT)
        assert response.ok, f"{src}: {response.status}"
        assert response.body() == our_logo, f"{src} is not kernelspec/logo-svg.svg"


@pytest.mark.timeout(240)
def test_a_notebook_from_the_launcher_runs_a_pool(lab_page: LabPage) -> None:
    notebook = Notebook.open_from_launcher(lab_page)
    expect(notebook.toolbar_button("kernelName")).to_have_text(DISPLAY_NAME, timeout=CELL_RESULT)
    lab_page.shot("kernel-idle")

    cell = notebook.run(
        "from parallel_kernel import Pool\npool = Pool(2)\npool.submit(pow, 2, 10).result()"
    )
    outputs = notebook.outputs(cell, 1, POOL_RESULT)
    expect(outputs).to_have_text("1024", timeout=CELL_RESULT)
    lab_page.shot("pool-submit")

    cell = notebook.run("list(pool.map(lambda x: x * x, range(6)))")
    outputs = notebook.outputs(cell, 2, POOL_RESULT)
    expect(outputs).to_have_text("[0, 1, 4, 9, 16, 25]", timeout=CELL_RESULT)
    notebook.wait_idle(CELL_RESULT)
    lab_page.shot("pool-map")


@pytest.mark.timeout(240)
def test_interrupt_from_the_toolbar(lab_page: LabPage) -> None:
    notebook = Notebook.open_from_launcher(lab_page)
    cell = notebook.run("from parallel_kernel import Pool\npool = Pool(1)")
    expect(notebook.outputs(cell, 1, POOL_RESULT)).to_have_count(0, timeout=CELL_RESULT)

    cell = notebook.run("import time; time.sleep(120)")
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:", timeout=BUSY)
    expect(notebook.indicator).to_have_attribute("data-status", "busy", timeout=BUSY)
    expect(notebook.kernel_status).to_have_text(f"{DISPLAY_NAME} | Busy", timeout=BUSY)
    lab_page.shot("busy")

    clicked = time.monotonic()
    notebook.toolbar_button("interrupt").click(timeout=CELL_RESULT)
    outputs = notebook.outputs(cell, 2, INTERRUPTED)
    expect(outputs).to_contain_text("KeyboardInterrupt", timeout=INTERRUPTED)
    notebook.wait_idle(INTERRUPTED)
    interrupted_after = time.monotonic() - clicked
    lab_page.shot("interrupted")
    assert interrupted_after < INTERRUPTED / 1000, f"idle {interrupted_after:.1f} s after the click"

    # The kernel, and the pool it started, go on serving.
    cell = notebook.run("pool.submit(pow, 3, 4).result()")
    expect(notebook.outputs(cell, 3, POOL_RESULT)).to_have_text("81", timeout=CELL_RESULT)
    lab_page.shot("after-interrupt")


@pytest.mark.timeout(240)
def test_restart_from_the_toolbar(lab_page: LabPage) -> None:
    page = lab_page.page
    notebook = Notebook.open_from_launcher(lab_page)
    # A kernel with a pool and its engines running, as a notebook that uses one has.
    cell = notebook.run(
        "from parallel_kernel import Pool\npool = Pool(1)\n"
        "before_restart = pool.submit(pow, 41, 1).result()\nbefore_restart + 1"
    )
    expect(notebook.outputs(cell, 1, POOL_RESULT)).to_have_text("42", timeout=CELL_RESULT)
    notebook.wait_idle(CELL_RESULT)

    notebook.record_kernel_statuses()
    notebook.toolbar_button("restart").click(timeout=CELL_RESULT)
    dialog = page.locator(".jp-Dialog")
    expect(dialog.locator(".jp-Dialog-header")).to_have_text("Restart Kernel?", timeout=CELL_RESULT)
    lab_page.shot("restart-dialog")
    dialog.locator("button.jp-mod-accept").click(timeout=CELL_RESULT)
    expect(dialog).to_have_count(0, timeout=CELL_RESULT)
    try:
        page.wait_for_function(
            "() => window.kernelStatuses.includes('restarting')"
            " && window.kernelStatuses.at(-1) === 'idle'",
            timeout=RESTARTED,
        )
    except PlaywrightTimeoutError:
        pytest.fail(
            f"the kernel did not restart to idle within {RESTARTED / 1000:.0f} s; "
            f"statuses shown: {notebook.kernel_statuses()}"
        )
    notebook.wait_idle(RESTARTED)
    lab_page.shot("restarted")

    cell = notebook.run("before_restart")
    outputs = notebook.outputs(cell, 1, CELL_RESULT)
    expect(outputs).to_contain_text(
        "NameError: name 'before_restart' is not defined", timeout=CELL_RESULT
    )

    cell = notebook.run("type(get_ipython().kernel).__name__")
    outputs = notebook.outputs(cell, 2, CELL_RESULT)
    expect(outputs).to_have_text("'ParallelKernel'", timeout=CELL_RESULT)
    lab_page.shot("after-restart")


@pytest.mark.timeout(300)
def test_the_pool_example_notebook_shows_live_progress_bars_and_engine_figures(
    lab_page: LabPage,
) -> None:
    """examples/pool-in-a-notebook.ipynb, opened and run as a whole from the Run menu."""
    page = lab_page.page
    page.locator(".jp-DirListing-item", has_text="pool-in-a-notebook.ipynb").dblclick(
        timeout=CELL_RESULT
    )
    notebook = Notebook(page)
    expect(notebook.panel).to_have_count(1, timeout=PAGE_LOAD)
    notebook.wait_idle(KERNEL_START)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

    code = notebook.panel.locator(".jp-CodeCell")
    last = code.nth(code.count() - 1)
    expect(last.locator(".jp-InputArea-prompt")).to_have_text(
        re.compile(r"\[\d+\]:"), timeout=POOL_RESULT
    )
    notebook.wait_idle(POOL_RESULT)
    lab_page.shot("ran")

    # the map's tqdm bar is a live widget, rendered by JupyterLab, at 100 %
    # (JupyterLab renders only the cells in view: each is scrolled to first)
    mapped = code.filter(has_text="roots = list(pool.map(")
    mapped.scroll_into_view_if_needed()
    bar = mapped.locator(".widget-hprogress .progress-bar")
    expect(bar).to_have_count(1, timeout=CELL_RESULT)
    expect(bar).to_have_class(re.compile("progress-bar-success"), timeout=CELL_RESULT)
    assert bar.evaluate("bar => bar.style.width") == "100%"
    lab_page.shot("progress-bar")
    expect(mapped.locator(".jp-OutputArea-output").first).to_contain_text(
        "map: 100%", timeout=CELL_RESULT
    )
    expect(mapped.locator(".jp-OutputArea-output").last).to_have_text(
        "200 roots, the last 14.107", timeout=CELL_RESULT
    )
    # the engines' figures and prints are outputs of the cell that submitted the tasks
    plotted = code.filter(has_text="def histogram(seed):")
    plotted.scroll_into_view_if_needed()
    figures = plotted.locator(".jp-OutputArea-output img")
    expect(figures).to_have_count(2, timeout=CELL_RESULT)
    assert all(figure.evaluate("img => img.naturalWidth") > 0 for figure in figures.all())
    # each engine's print, prefixed with its engine (JupyterLab shows consecutive prints
    # as one output, so they may share one)
    printed = plotted.locator(".jp-OutputArea-output[data-mime-type*='stdout']")
    for seed in (1, 2):
        expect(printed.filter(has_text=f"seed {seed}: mean")).to_contain_text(
            re.compile(rf"\[engine \d\] seed {seed}: mean"), timeout=CELL_RESULT
        )
    lab_page.shot("figures")


# ---------------------------------------------------------------- subshell consoles
#
# "New Subshell Console for Notebook" opens a console whose requests carry a
# ``subshell_id``: they run in a thread of the notebook's kernel, with the
# notebook's namespace, while the notebook's own cell keeps the main shell busy.
# JupyterLab creates the console's subshell only once the console's own
# connection has had a ``kernel_info_reply``, which it asks for on the shell
# channel; the kernel answers it on its shell channel's thread, so a console
# opened on a notebook that is already busy works too (with ipykernel's own
# routing it would wait for the cell).

SUBSHELL_ANSWER = 20_000  # ms: a console in a subshell answers at once, busy notebook or not
LONG_CELL = 30  # s: the notebook's cell, long enough to read from the console meanwhile


class SubshellConsole:
    """The console "New Subshell Console for Notebook" opened below the notebook."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.panel = page.locator(".jp-ConsolePanel")
        self.prompt = self.panel.locator(".jp-CodeConsole-promptCell .cm-content")
        self.cells = self.panel.locator(".jp-CodeConsole-content .jp-CodeCell")

    @classmethod
    def open_for(cls, notebook: Notebook, subshell_timeout: float = PAGE_LOAD) -> SubshellConsole:
        """Open the console and wait until its subshell exists.

        Until then the console's requests go to the main shell; JupyterLab shows
        no sign of the subshell, its websocket does: ``create_subshell_reply``.
        """
        page = notebook.page
        # from the notebook (its cell editor has the focus): command mode, the command palette
        page.keyboard.press("Escape")
        page.keyboard.press("Control+Shift+C")
        page.locator(".lm-CommandPalette-input").fill("New Subshell Console")
        command = page.locator(
            ".lm-CommandPalette-item", has_text="New Subshell Console for Notebook"
        )
        # the notebook's connection is open already: the new one is the console's
        with page.expect_websocket(
            lambda ws: "/channels" in ws.url, timeout=PAGE_LOAD
        ) as connection:
            command.click(timeout=CELL_RESULT)
        connection.value.wait_for_event(
            "framereceived", predicate=_is_create_subshell_reply, timeout=subshell_timeout
        )
        console = cls(page)
        expect(console.panel).to_have_count(1, timeout=PAGE_LOAD)
        expect(console.prompt).to_have_count(1, timeout=PAGE_LOAD)
        return console

    def run(self, code: str, timeout: float) -> Locator:
        """Run ``code`` at the prompt; its output once shown."""
        index = self.cells.count()
        self.prompt.click(timeout=CELL_RESULT)
        self.page.keyboard.type(code)
        expect(self.prompt).to_have_text(code, use_inner_text=True, timeout=CELL_RESULT)
        self.page.keyboard.press("Shift+Enter")
        output = self.cells.nth(index).locator(".jp-OutputArea-output")
        expect(output).to_have_count(1, timeout=timeout)
        return output


def _is_create_subshell_reply(payload: str | bytes) -> bool:
    """Whether a websocket frame (v1 binary, or legacy JSON) is a create_subshell_reply."""
    marker = '"msg_type":"create_subshell_reply"'
    if isinstance(payload, bytes):
        return marker.encode() in payload.replace(b" ", b"")
    return marker in payload.replace(" ", "")


RUNNING = "[*]:"
RAN = re.compile(r"^\[\d+\]:$")


def start_long_cell(notebook: Notebook) -> Locator:
    """The notebook's cell waiting ``LONG_CELL`` s on a pool task, once shown running."""
    cell = notebook.run(
        f"time.sleep(1); pool.submit(time.sleep, {LONG_CELL}).result()\nmarker = 'set after'"
    )
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(RUNNING, timeout=CELL_RESULT)
    expect(notebook.indicator).to_have_attribute("data-status", "busy", timeout=CELL_RESULT)
    return cell


def prepare(lab_page: LabPage) -> Notebook:
    """A notebook on the kernel with a pool and a global set, idle."""
    notebook = Notebook.open_from_launcher(lab_page)
    cell = notebook.run(
        "import time\nfrom parallel_kernel import Pool\npool = Pool(1)\n"
        "marker = 'set before'\npool.submit(abs, -7).result()"
    )
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("7", timeout=POOL_RESULT)
    notebook.wait_idle(CELL_RESULT)
    return notebook


@pytest.mark.timeout(300)
def test_a_subshell_console_reads_globals_while_the_notebook_runs_a_cell(
    lab_page: LabPage,
) -> None:
    notebook = prepare(lab_page)
    console = SubshellConsole.open_for(notebook)
    # the console's requests run in a subshell thread, not in the main shell
    thread = console.run("import threading; threading.current_thread().name", CELL_RESULT)
    expect(thread).to_have_text(re.compile(r"^'subshell-[0-9a-f-]+'$"), timeout=CELL_RESULT)
    lab_page.shot("console-open")

    cell = start_long_cell(notebook)
    started = time.monotonic()
    read = console.run("marker", SUBSHELL_ANSWER)
    expect(read).to_have_text("'set before'", timeout=CELL_RESULT)
    answered = time.monotonic() - started
    # answered while the notebook's cell still runs
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(RUNNING, timeout=CELL_RESULT)
    assert notebook.indicator.get_attribute("data-status", timeout=CELL_RESULT) == "busy"
    lab_page.shot("console-answered")

    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(RAN, timeout=POOL_RESULT)
    finished = time.monotonic() - started
    notebook.wait_idle(CELL_RESULT)
    assert answered < finished - LONG_CELL / 2, (answered, finished)
    # the same namespace: the cell's later assignment is seen too
    expect(console.run("marker", CELL_RESULT)).to_have_text("'set after'", timeout=CELL_RESULT)
    lab_page.shot("cell-finished")


@pytest.mark.timeout(300)
def test_a_subshell_console_opened_on_a_busy_notebook_answers_at_once(
    lab_page: LabPage,
) -> None:
    """A console opened while the cell runs.

    JupyterLab's console sends ``kernel_info_request`` (no subshell_id) when it
    connects and waits for the reply before ``create_subshell_request`` (after
    3 s it sends its ``execute_request`` anyway, without a subshell_id, which
    would queue behind the cell).
    """
    notebook = prepare(lab_page)
    cell = start_long_cell(notebook)
    try:
        console = SubshellConsole.open_for(notebook, subshell_timeout=SUBSHELL_ANSWER)
        read = console.run("marker", SUBSHELL_ANSWER)
        expect(read).to_have_text("'set before'", timeout=CELL_RESULT)
        expect(cell.locator(".jp-InputArea-prompt")).to_have_text(RUNNING, timeout=CELL_RESULT)
    finally:
        lab_page.shot("busy-console")
        # the cell ends here, not after LONG_CELL s (a KeyboardInterrupt, or its result)
        notebook.toolbar_button("interrupt").click(timeout=CELL_RESULT)
        expect(cell.locator(".jp-InputArea-prompt")).to_have_text(RAN, timeout=KERNEL_START)


# ---------------------------------------------------------------- magics and the dashboard

TICKS = 4  # lines each engine prints in the streaming cell, TICK_GAP seconds apart
TICK_GAP = 1.5


def magics_notebook(lab_page: LabPage) -> Notebook:
    """A notebook with the magics loaded and a pool of 2 engines active (execution 1)."""
    notebook = Notebook.open_from_launcher(lab_page)
    cell = notebook.run(
        "%load_ext parallel_kernel\nfrom parallel_kernel import Pool\npool = Pool(2).activate()"
    )
    expect(notebook.outputs(cell, 1, POOL_RESULT)).to_have_count(0, timeout=CELL_RESULT)
    return notebook


@pytest.mark.timeout(300)
def test_px_output_appears_in_the_cell_while_it_runs(lab_page: LabPage) -> None:
    notebook = magics_notebook(lab_page)
    cell = notebook.run(
        f"%%px\nimport time\nfor i in range({TICKS}): print('tick', i, flush=True); "
        f"time.sleep({TICK_GAP})"
    )
    stdout = cell.locator(".jp-OutputArea-output[data-mime-type*='stdout']")
    expect(stdout.first).to_contain_text("[stdout:0] tick 0", timeout=BUSY)
    expect(stdout.first).to_contain_text("[stdout:1] tick 0", timeout=BUSY)
    # the first lines are in while the cell still runs (its prompt is [*])
    prompt = cell.locator(".jp-InputArea-prompt")
    assert prompt.inner_text(timeout=CELL_RESULT) == "[*]:"
    assert f"tick {TICKS - 1}" not in stdout.first.inner_text(timeout=CELL_RESULT)
    lab_page.shot("px-streaming")
    notebook.outputs(cell, 2, POOL_RESULT)
    for engine in (0, 1):
        expect(stdout.first).to_contain_text(
            f"[stdout:{engine}] tick {TICKS - 1}", timeout=CELL_RESULT
        )
    expect(cell.locator(".jp-OutputArea-output").first).to_contain_text(
        "%px: 2 of 2 engines finished", timeout=CELL_RESULT
    )
    lab_page.shot("px-finished")


@pytest.mark.timeout(300)
def test_the_stop_button_interrupts_a_px_cell(lab_page: LabPage) -> None:
    notebook = magics_notebook(lab_page)
    cell = notebook.run("%px import time; time.sleep(120)")
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:", timeout=BUSY)
    expect(notebook.indicator).to_have_attribute("data-status", "busy", timeout=BUSY)
    lab_page.shot("px-busy")
    clicked = time.monotonic()
    notebook.toolbar_button("interrupt").click(timeout=CELL_RESULT)
    outputs = notebook.outputs(cell, 2, INTERRUPTED)
    expect(outputs.last).to_contain_text("KeyboardInterrupt", timeout=INTERRUPTED)
    notebook.wait_idle(INTERRUPTED)
    assert time.monotonic() - clicked < INTERRUPTED / 1000
    lab_page.shot("px-interrupted")
    # the engines were interrupted too, and serve the next cell at once
    cell = notebook.run("%px print('alive')")
    expect(notebook.outputs(cell, 3, CELL_RESULT).last).to_contain_text(
        "[stdout:1] alive", timeout=CELL_RESULT
    )


@pytest.mark.timeout(300)
def test_the_dashboard_renders_counts_tasks_and_interrupts_an_engine(lab_page: LabPage) -> None:
    notebook = magics_notebook(lab_page)
    cell = notebook.run("pool")
    dashboard = cell.locator(".jp-OutputArea-output .widget-vbox").first
    totals = dashboard.locator(".pk-totals")
    expect(totals).to_contain_text("2 engines (2 idle)", timeout=CELL_RESULT)
    expect(dashboard.locator("button", has_text="interrupt")).to_have_count(2)
    lab_page.shot("dashboard")

    # a map running in the background: the counts move while it runs
    notebook.run("import time\nsquares = pool.map(time.sleep, [0.4] * 20, chunksize=1)")
    expect(totals).to_contain_text(re.compile(r"[1-9]\d* done"), timeout=BUSY)
    first = totals.inner_text()
    expect(totals).to_contain_text("20 done", timeout=POOL_RESULT)
    assert first != totals.inner_text()
    expect(dashboard.locator(".pk-stream rect").first).to_be_attached(timeout=CELL_RESULT)
    lab_page.shot("dashboard-after-map")

    # a cell that waits for a long task; the dashboard's button interrupts its engine
    waiting = notebook.run("pool.submit(time.sleep, 120, engine=1).result()")
    rows = dashboard.locator(".widget-hbox")
    busy_row = rows.filter(has_text="busy")
    expect(busy_row).to_have_count(1, timeout=BUSY)
    expect(busy_row).to_contain_text("engine 1")
    lab_page.shot("dashboard-busy")
    busy_row.locator("button", has_text="interrupt").click(timeout=CELL_RESULT)
    # the waiting cell ends with the engine's traceback (the task was interrupted there:
    # the click was served while the cell waited), and the dashboard says so
    outputs = notebook.outputs(waiting, 4, INTERRUPTED)
    expect(outputs.last).to_contain_text("KeyboardInterrupt", timeout=INTERRUPTED)
    expect(dashboard).to_contain_text("engine 1: interrupted", timeout=CELL_RESULT)
    expect(rows.filter(has_text="engine 1")).to_contain_text("failed 1", timeout=CELL_RESULT)
    lab_page.shot("dashboard-interrupted")
    cell = notebook.run("pool.submit(pow, 2, 5, engine=1).result()")
    expect(notebook.outputs(cell, 5, CELL_RESULT)).to_have_text("32", timeout=CELL_RESULT)
