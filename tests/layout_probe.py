"""Helpers for the report layout tests: render a report page in headless Chromium at a given window size and read
back what a reader sees (where the verdict badges sit, whether the page scrolls sideways, alt text, whether every
``<details>`` opens), and find markdown table cells over a word limit."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

PROBE = """<script>window.addEventListener('load', () => {
  const badges = [...document.querySelectorAll('.verdicts .badge')].map(b => b.getBoundingClientRect().bottom);
  const details = [...document.querySelectorAll('details')];
  const opened = details.map(d => { const before = d.getBoundingClientRect().height; d.open = true;
                                    return d.open && d.getBoundingClientRect().height > before; });
  const out = {height: window.innerHeight, width: window.innerWidth, badges: badges,
               scrollWidth: document.documentElement.scrollWidth,
               images: [...document.images].map(i => i.getAttribute('alt') || ''), details: opened};
  document.body.setAttribute('data-probe', btoa(JSON.stringify(out)));
});</script></body>"""


def probe_layout(page: Path, tmp: Path, width: int = 1280, height: int = 900) -> dict:
    """What a reader sees of ``page`` in a ``width`` x ``height`` window."""
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE))
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--window-size={width},{height}",
                          "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    match = re.search(r'data-probe="([^"]+)"', dom)
    assert match, dom[:500]
    return json.loads(base64.b64decode(match.group(1)))


def long_cells(markdown: str, limit: int = 40) -> list[str]:
    """Every markdown table cell with more than ``limit`` words."""
    cells = [c.strip() for line in markdown.splitlines() if line.startswith("|") for c in line.strip("|").split(" | ")]
    return [c for c in cells if len(c.split()) > limit]


def check_layout(seen: dict, findings: int) -> None:
    assert seen["height"] >= 700 and seen["width"] >= 1200, seen  # a 1280 x 900 window, less the browser frame
    assert len(seen["badges"]) == findings and max(seen["badges"]) <= seen["height"], seen["badges"]
    assert seen["scrollWidth"] <= seen["width"], (seen["scrollWidth"], seen["width"])
    assert all(alt.strip() for alt in seen["images"]), seen["images"]
    assert seen["details"] and all(seen["details"]), seen["details"]
