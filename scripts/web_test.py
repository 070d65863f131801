#!/usr/bin/env python3
"""Runs the web example (target/web/site, built by scripts/web.sh) in headless Chromium and checks what the
page reports: the in-page comparison with the CPU reference passed and the loss fell.

Chromium's WebGPU runs on its bundled SwiftShader adapter when the machine has no GPU. The page is served on
127.0.0.1 (a secure context, which WebGPU requires) and read through ChromeDriver's WebDriver endpoints with
the standard library only; ``--dump-dom`` or ``--screenshot`` would capture the page before it finishes.
A screenshot is kept as target/web/screenshot.png, and the page's report as target/web/result.json.

Usage: web_test.py [--site DIR] [--timeout SECONDS]. Exits 0 when every check passed.
"""

import argparse
import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Keeps Chromium off the network (this machine has none but loopback) and away from any profile.
# --enable-unsafe-webgpu: Linux builds ship WebGPU behind this flag; without it there is no adapter.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1200,1100",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    """The site on 127.0.0.1, in a thread of this process."""
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class WebDriver:
    """The few W3C WebDriver commands this test needs, over HTTP to a chromedriver it starts."""

    def __init__(self, chromedriver, log_path):
        self.port = free_port()
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            # A group of its own, with the browser it starts: closing ends the group, so that a browser whose
            # session could not be deleted (a hung page) does not outlive the test.
            start_new_session=True,
        )
        self.session = None
        # A page whose script never yields (a wait that blocks the main thread) leaves every command hanging:
        # each one gives up after this long instead.
        self.timeout = 30
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.call("GET", "/status").get("ready"):
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"chromedriver did not start (see {log_path})")
            time.sleep(0.1)

    def call(self, method, path, body=None, timeout=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                value = json.loads(detail)["value"]
                detail = f"{value['error']}: {value['message'].splitlines()[0]}"
            raise RuntimeError(f"WebDriver {method} {path.split('/')[-1]}: {e.code} {detail[:2000]}") from None

    def start(self, binary, user_data_dir):
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": binary,
                        "args": CHROMIUM_FLAGS + [f"--user-data-dir={user_data_dir}"],
                    },
                    "goog:loggingPrefs": {"browser": "ALL"},
                    # Navigation returns at once; the loop below waits for the page's own report.
                    "pageLoadStrategy": "none",
                    "timeouts": {"script": 10000, "pageLoad": 60000},
                }
            }
        }
        # Starting the browser is the slow command, on a loaded machine most of all.
        self.session = self.call("POST", "/session", caps, timeout=180)["sessionId"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def script(self, source):
        return self.call("POST", self.s("/execute/sync"), {"script": source, "args": []})

    def console(self):
        try:
            return self.call("POST", self.s("/se/log"), {"type": "browser"})
        except RuntimeError:
            return []

    def close(self):
        try:
            if self.session:
                self.timeout = 10
                self.call("DELETE", self.s(""))
        except (RuntimeError, OSError):
            pass
        finally:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    pass
            self.log.close()


def check(result):
    """The test's own verdict on the page's report: a list of failures, empty when it passed."""
    failures = []
    if not isinstance(result, dict):
        return [f"the page reported no result object: {result!r}"]
    if result.get("status") != "pass":
        failures.append(
            f"the page says {result.get('status')!r}: {result.get('error') or result.get('failures')}"
        )
    checks = result.get("checks") or []
    if not checks:
        failures.append("no step was compared with the CPU reference")
    for c in checks:
        for key in ("grad_err", "loss_err", "param_err"):
            if not (isinstance(c.get(key), (int, float)) and 0 <= c[key] <= 1):
                failures.append(f"step {c.get('step')}: {key} = {c.get(key)} (must be within tolerance, <= 1)")
    losses = result.get("losses") or []
    config = result.get("config") or {}
    if len(losses) != config.get("steps", -2) + 1:
        failures.append(f"{len(losses)} losses for {config.get('steps')} steps")
    elif not losses[-1] < 0.5 * losses[0]:
        failures.append(f"the loss did not fall below half: {losses[0]} -> {losses[-1]}")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default=os.path.join(ROOT, "target/web/site"))
    parser.add_argument("--out", default=os.path.join(ROOT, "target/web"))
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        print("chromium and chromedriver are required (scripts/setup.sh installs them)", file=sys.stderr)
        return 2
    if not os.path.exists(os.path.join(args.site, "pkg", "wgoptim_web_bg.wasm")):
        print(f"{args.site} has no built page: run scripts/web.sh build", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    screenshot = os.path.join(args.out, "screenshot.png")
    result_path = os.path.join(args.out, "result.json")
    for stale in (screenshot, result_path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)

    started = time.monotonic()
    result = None
    status_line = None
    console = []
    problems = []
    with serve(args.site) as url, tempfile.TemporaryDirectory(prefix="wgoptim-chromium-") as profile:
        driver = WebDriver(chromedriver, os.path.join(args.out, "chromedriver.log"))
        try:
            driver.start(chromium, profile)
            driver.call("POST", driver.s("/url"), {"url": url}, timeout=120)
            deadline = time.monotonic() + args.timeout
            last_error = None
            while time.monotonic() < deadline:
                # A slow machine can time a command out now and then; a page that never answers does so
                # until the deadline.
                try:
                    result = driver.script("return window.wgoptimResult || null;")
                except (RuntimeError, OSError) as e:
                    last_error = e
                    continue
                if result is not None:
                    break
                time.sleep(0.25)
            if result is None and last_error is not None:
                raise RuntimeError(f"the page never answered: {last_error}")
            status_line = driver.script("return document.getElementById('status').textContent;")
            png = driver.call("GET", driver.s("/screenshot"))
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(png))
            console = driver.console()
        except (RuntimeError, OSError) as e:
            problems.append(f"driving the browser failed (an unresponsive page?): {e}")
        finally:
            driver.close()
    elapsed = time.monotonic() - started

    print(f"page status ({elapsed:.1f} s): {status_line}")
    if os.path.exists(screenshot):
        print(f"screenshot: {os.path.relpath(screenshot, ROOT)}")
    if result is None:
        failures = problems or [f"the page reported nothing within {args.timeout:.0f} s"]
    else:
        with open(result_path, "w") as f:
            json.dump(result, f, indent=1)
        failures = problems + check(result)
        checks = result.get("checks") or []
        if checks:
            worst = {k: max(c.get(k) or 0 for c in checks) for k in ("grad_err", "loss_err", "param_err")}
            print(
                "worst error / tolerance over the first {} steps: gradient {grad_err:.3f}, loss {loss_err:.3f}, "
                "parameters {param_err:.3f}".format(len(checks), **worst)
            )
    if failures:
        for line in console:
            print(f"console {line.get('level')}: {line.get('message')}")
        for f in failures:
            print(f"FAIL: {f}")
        print("web: 0 passed, 1 failed")
        return 1
    print("web: 1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
