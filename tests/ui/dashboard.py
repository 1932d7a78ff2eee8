#!/usr/bin/env python3
"""Drives poolhub's dashboard in a real headless Chromium (playwright for Python).

Usage: dashboard.py BASE_URL [--screenshot FILE]

Shows that the page loads and lists a miner registered through the API, that a status change
reaches the page within 2 s without a reload (and so does a miner registered after the page
loaded), and that the page logs no console errors. Exits 0 when all of that holds.

Chromium comes from the distribution (`apt-get install chromium`); POOLHUB_CHROMIUM names
another binary. playwright's own browser downloads are not used.
"""
import json
import os
import sys
import urllib.request

from playwright.sync_api import sync_playwright


def call(base, path, body=None, token=None):
    req = urllib.request.Request(base + path, method="POST" if body is not None else "GET")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(req, data, timeout=10) as r:
        return json.loads(r.read() or b"null")


def register(base, address, models, slots=4):
    return call(base, "/api/v1/miners/register", {
        "address": address, "endpoint": "http://miner.example.com:8080",
        "capabilities": {"models": models, "gpu_memory": 24576, "max_concurrent_jobs": slots},
        "stake": 1000,
    })["token"]


def status(base, address, token, load, available=True, temp=62):
    call(base, f"/api/v1/miners/{address}/status", {
        "available": available, "current_load": load, "gpu_utilization": 0.4,
        "temperature": temp,
    }, token)


def main():
    base = sys.argv[1].rstrip("/")
    shot = sys.argv[sys.argv.index("--screenshot") + 1] if "--screenshot" in sys.argv else None
    a = "0x" + "a1" * 20
    b = "0x" + "b2" * 20
    c = "0x" + "c3" * 20
    ta = register(base, a, ["llama3.2"])
    tb = register(base, b, ["llama3.2", "mistral"])
    status(base, a, ta, 0)
    status(base, b, tb, 1, temp=84)

    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ.get("POOLHUB_CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-gpu"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        row = f'tr[data-address="{a}"]'
        page.wait_for_selector(row, timeout=5000)
        page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=5000)
        assert page.inner_text(f"{row} td.load") == "0 / 4", page.inner_text(row)

        # A status change reaches the page within 2 s, through the event stream (not the
        # 15 s refresh): available -> unavailable is a status event; the row shows it.
        status(base, a, ta, 3, available=False)
        page.wait_for_function(
            f"""() => {{ const r = document.querySelector('{row}');
                       return r && r.innerText.includes('unavailable')
                           && r.querySelector('td.load').textContent === '3 / 4'; }}""",
            timeout=2000,
        )
        # A miner registered after the page loaded appears within 2 s too.
        tc = register(base, c, ["mistral"])
        page.wait_for_selector(f'tr[data-address="{c}"]', timeout=2000)

        if shot:
            status(base, a, ta, 1)
            status(base, c, tc, 0, temp=71)
            for _ in range(6):
                m = call(base, "/api/v1/match", {"model": "llama3.2", "limit": 2})
                for o in m["miners"][:1]:
                    call(base, "/api/v1/outcomes", {"match_id": m["match_id"], "address": o["address"],
                                                   "success": True, "latency_ms": 850})
            page.wait_for_timeout(2500)
            page.click(row)
            page.wait_for_timeout(500)
            page.screenshot(path=shot, full_page=True)
        browser.close()

    if errors:
        print("console errors:", *errors, sep="\n  ")
        return 1
    print("dashboard ok: loaded, live, updated within 2 s, no console errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
