"""The HTML report renders in a real headless Chromium: no errors, every image decoded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from configspec.store import ProfileStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "profiles"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the page: once loaded, count images that decoded (naturalWidth > 0),
# collect errors, and write a marker into the DOM for --dump-dom to show.
CHECK = """
<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  const m = document.createElement('pre');
  m.id = 'configspec-check';
  m.textContent = 'IMAGES ' + ok.length + '/' + imgs.length + ' ERRORS ' + window.__errors.length;
  document.body.appendChild(m);
});
</script>
"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from configspec.report.build import write_report

    profiles = tmp_path / "profiles"
    shutil.copytree(EXAMPLES, profiles)
    path = write_report(ProfileStore(profiles), tmp_path / "report")
    page = path.read_text()
    n_images = page.count("<img ")
    assert n_images == 4
    checked = path.with_name("checked.html")
    checked.write_text(page.replace("</head>", CHECK + "</head>", 1))
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
        "--virtual-time-budget=5000", "--dump-dom", checked.as_uri(),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"IMAGES {n_images}/{n_images} ERRORS 0" in out.stdout, out.stdout[-500:]
    assert "ConfigSpec report" in out.stdout
