"""Headless Chromium driven over the Chrome DevTools protocol, straight from Python (websockets):
no browser download, no npm. The system Chromium (Debian's `chromium`) is launched with a fresh
profile, the autoplay policy off and a fake audio output, and one page is driven by
`Runtime.evaluate` (awaiting promises) and `Page.*` commands."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

__all__ = ["Browser", "find_chromium", "BrowserError"]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream", "--window-size=1100,1000", "--remote-debugging-port=0"]


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """$NUTQ_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    if os.environ.get("NUTQ_CHROMIUM"):
        return os.environ["NUTQ_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Browser:
    def __init__(self, binary: str, profile: Path, timeout: float = 30.0):
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = profile.parent / "chromium.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"chromium did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self._id = 0
        self.console: list[str] = []  # console messages and uncaught exceptions, for failure reports
        self.call("Runtime.enable")
        self.call("Page.enable")

    def call(self, method: str, wait_s: float = 30.0, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {wait_s} s; console:\n" + "\n".join(self.console[-30:]))
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg["result"]
            self._event(msg)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled":
            self.console.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                               for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            self.console.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description')}")
        elif method == "Page.loadEventFired":
            self._loaded = True

    def goto(self, url: str, timeout: float = 30.0) -> None:
        self._loaded = False
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not self._loaded:
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not load within {timeout} s")
            self._event(json.loads(self.ws.recv(timeout=deadline - time.monotonic())))

    def evaluate(self, expression: str, timeout: float = 60.0):
        """The value of a JS expression (a promise is awaited); a thrown error raises BrowserError."""
        r = self.call("Runtime.evaluate", wait_s=timeout + 5, expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(f"{d.get('exception', {}).get('description') or d.get('text')}; console:\n"
                               + "\n".join(self.console[-30:]))
        return r["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self._log.close()
