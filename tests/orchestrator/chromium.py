"""Headless Debian Chromium driven over the DevTools protocol (aiohttp's websocket client, which
Ray's dashboard already installs): open a page, wait until the single-page app has rendered what
a test looks for, read the rendered DOM's text, take a screenshot."""

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1600,1000",
)


class Chromium:
    """One headless Chromium with one page; a context manager that ends the browser on exit.

    Example:
        >>> with Chromium() as browser:
        ...     browser.open("http://127.0.0.1:5000/#/experiments/1/runs")
        ...     browser.wait_for("document.body.innerText.includes('baseline')")
        ...     browser.screenshot(Path("runs.png"))
    """

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.loop = asyncio.new_event_loop()
        self.next_id = 0
        self.loop.run_until_complete(self._connect(Path(self.profile) / "DevToolsActivePort"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.loop.run_until_complete(self.session.close())
        self.loop.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str) -> None:
        """Load `url` afresh, as a new tab would (a single-page app keeps its state when only the
        #fragment changes); returns once loading started: use `wait_for` after."""
        self._call("Page.navigate", url="about:blank")
        self._call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable results only)."""
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        """Poll `expression` until it is truthy and return its value; None if it never was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        return None

    def text(self) -> str:
        """The rendered page's visible text."""
        return self.evaluate(_BODY_TEXT) or ""

    def frame_texts(self) -> list[str]:
        """The visible text of each iframe in the page; sandboxed ones (another origin) included."""
        return self.loop.run_until_complete(self._frame_texts())

    def wait_for_frame_text(self, needle: str, timeout: float = 60.0) -> str | None:
        """Poll the page's iframes until one shows `needle`; return that frame's text, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [text for text in self.frame_texts() if needle in text]
            if found:
                return found[0]
            time.sleep(0.25)
        return None

    def mouse_move(self, x: float, y: float) -> None:
        """Move the mouse to (x, y) in CSS pixels of the viewport, as a person hovering there."""
        self._call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the page as rendered now."""
        path.write_bytes(base64.b64decode(self._call("Page.captureScreenshot", format="png")["data"]))
        return path

    async def _frame_texts(self):
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            targets = await response.json(content_type=None)
        texts = []
        for target in targets:
            if target["type"] == "iframe":
                async with self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                    result = await _call(socket, 1, "Runtime.evaluate", expression=_BODY_TEXT, returnByValue=True)
                    texts.append(result["result"].get("value") or "")
        return texts

    async def _connect(self, port_file):
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{CHROMIUM} did not open its DevTools port")
            await asyncio.sleep(0.1)
        self.port = port_file.read_text().splitlines()[0]
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as response:
            targets = await response.json(content_type=None)
        page = next(target for target in targets if target["type"] == "page")
        self.socket = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self._send("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)

    def _call(self, method, **params):
        return self.loop.run_until_complete(self._send(method, **params))

    async def _send(self, method, **params):
        self.next_id += 1
        return await _call(self.socket, self.next_id, method, **params)


_BODY_TEXT = "document.body ? document.body.innerText : ''"


async def _call(socket, call_id, method, **params):
    await socket.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
    while True:  # events arrive between answers: skip them
        message = json.loads((await socket.receive()).data)
        if message.get("id") == call_id:
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            return message["result"]
