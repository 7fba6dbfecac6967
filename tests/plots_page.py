"""`dvc plots show` rendered in a real browser: headless Chromium (Debian's `chromium`) opens DVC's
own HTML page, with the Vega scripts served from tests/browser/ instead of a CDN (no network here),
and reports what each chart drew."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

SCRIPTS = Path(__file__).parent / "browser"  # vega, vega-lite, vega-embed: the versions DVC's page asks for

# Runs after DVC's page scripts: draw with SVG, so the marks can be counted, then list every chart.
PROBE = """
<script>
const drawn = [];
const embed = window.vegaEmbed;
window.vegaEmbed = (el, spec) => {
  const values = ((spec || {}).data || {}).values || [];
  drawn.push(embed(el, spec, {renderer: "svg", actions: false}).then(
    () => ({id: el, values: values.length,
            marks: document.querySelectorAll(el + " svg g.role-mark path").length}),
    (err) => ({id: el, values: values.length, marks: 0, error: String(err)})));
};
window.addEventListener("load", async () => {
  const charts = await Promise.all(drawn);
  const images = [...document.querySelectorAll("img")].map((img) => ({id: img.src, width: img.naturalWidth}));
  const out = document.createElement("pre");
  out.id = "dvc-check";
  out.hidden = true;
  out.textContent = JSON.stringify({charts, images});
  document.body.prepend(out);
});
</script>
"""


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def localise(index: Path) -> None:
    """Point DVC's page at the local Vega scripts, and wrap `vegaEmbed` with the probe."""
    page = index.read_text()
    for name in ("vega", "vega-lite", "vega-embed"):
        page = re.sub(
            rf'src="https://cdn\.jsdelivr\.net/npm/{name}@([\d.]+)"',
            lambda m, n=name: f'src="{(SCRIPTS / f"{n}@{m.group(1)}.min.js").as_uri()}"',
            page,
        )
    index.write_text(page.replace("</head>", PROBE + "</head>", 1))


def render(index: Path, screenshot: Path | None = None, timeout: int = 120) -> dict:
    """Open ``index`` in headless Chromium; the probe's findings: {charts: [...], images: [...]}."""
    browser = chromium()
    assert browser, "no chromium on PATH (Debian: apt-get install chromium)"
    localise(index)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=20000", "--window-size=1280,4000"]  # fmt: skip
    dom = subprocess.run(
        [*flags, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=timeout, check=True
    ).stdout
    found = re.search(r'<pre id="dvc-check"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, f"the page never finished drawing: {dom[-500:]}"
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", index.as_uri()], capture_output=True, timeout=timeout)
    return json.loads(html.unescape(found.group(1)))
