"""The report opened in a real browser: headless Chromium renders its tables and decodes
its images. Skips, saying so, when Chromium is not installed (Debian packages
``chromium`` and ``chromium-driver``; ``.ci/run`` installs them)."""

import html
import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

from gaussmix.report import Report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

#: Appended to a copy of the page: after `load`, write what the browser rendered into the
#: DOM, which --dump-dom then prints.
PROBE = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images).map(function (image) {
    return {complete: image.complete, width: image.naturalWidth, height: image.naturalHeight,
            shown: image.getBoundingClientRect().width};
  });
  var tables = Array.from(document.querySelectorAll("table")).map(function (table) {
    return {rows: table.querySelectorAll("tbody tr").length,
            cells: table.querySelectorAll("td").length,
            height: table.getBoundingClientRect().height};
  });
  var warnings = Array.from(document.querySelectorAll("p.warning, tr.warning td"))
    .map(function (element) { return getComputedStyle(element).backgroundColor; });
  var probe = document.createElement("pre");
  probe.id = "gaussmix-probe";
  probe.textContent = JSON.stringify({images: images, tables: tables, warnings: warnings});
  document.body.appendChild(probe);
});
</script>"""

#: The fill of the test figure and the warning background of the report's style sheet.
FIGURE_RGB = (0, 170, 0)
WARNING_RGB = (253, 232, 232)


@pytest.fixture(scope="module")
def chromium():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless Chromium is not installed (Debian: apt-get install chromium "
        "chromium-driver), so the report was not checked in a browser"
    )


def browse(chromium, tmp_path, *arguments):
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def rendered(chromium, page, tmp_path):
    """What Chromium rendered of ``page``: images, table rows, warning colours."""
    probe_page = page.with_name("probe-" + page.name)
    probe_page.write_text(
        page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    dom = browse(chromium, tmp_path, "--dump-dom", probe_page.as_uri())
    match = re.search(r'<pre id="gaussmix-probe">(.*?)</pre>', dom, re.DOTALL)
    assert match, "the probe did not run: " + dom[-500:]
    return json.loads(html.unescape(match.group(1)))


def png_size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


def test_tables_and_images_render_in_chromium(chromium, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    report = Report("Browser check")
    figure, axis = plt.subplots(figsize=(4, 3))
    axis.add_patch(Rectangle((0.1, 0.1), 0.8, 0.8, color=np.array(FIGURE_RGB) / 255))
    first = report.figure(figure, caption="a green square")
    plt.close(figure)
    report.warning("this warning must show on a red background")
    report.table(
        ["parameter", "EM", "posterior mean", "r_hat"],
        [
            ["means[0]", 0.1, 0.11, 1.0],
            ["means[1]", 3.9, 3.89, 1.02],
            ["weights[0]", 0.5, 0.5, 1.0],
        ],
        flagged=[False, True, False],
    )
    figure, axis = plt.subplots(figsize=(3, 2))
    axis.plot(np.linspace(0, 1, 10), np.linspace(0, 1, 10) ** 2)
    second = report.figure(figure)
    plt.close(figure)
    page = report.write(tmp_path / "report.html")

    seen = rendered(chromium, page, tmp_path)
    assert [(i["width"], i["height"]) for i in seen["images"]] == [
        png_size(first),
        png_size(second),
    ]
    assert all(i["complete"] and i["shown"] > 0 for i in seen["images"])
    assert [(t["rows"], t["cells"]) for t in seen["tables"]] == [(3, 12)]
    assert seen["tables"][0]["height"] > 0
    assert len(seen["warnings"]) == 1 + 4 + 1  # summary line, flagged row's cells, warning
    assert set(seen["warnings"]) == {"rgb({}, {}, {})".format(*WARNING_RGB)}

    # A screenshot: the figure's green and the warnings' red background are on screen.
    import matplotlib.image

    shot = tmp_path / "shot.png"
    browse(
        chromium,
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1000,1200",
        "--hide-scrollbars",
        page.as_uri(),
    )
    pixels = np.round(matplotlib.image.imread(shot)[..., :3] * 255).astype(int)
    assert pixels.std() > 0
    green = np.all(pixels == FIGURE_RGB, axis=-1).sum()
    red = np.all(pixels == WARNING_RGB, axis=-1).sum()
    assert green > 10_000, green
    assert red > 1_000, red


def test_a_command_report_renders_in_chromium(chromium, tmp_path):
    from gaussmix import cli, datasets

    x, _ = datasets.sm1()
    np.save(tmp_path / "sm1.npy", x)
    out = tmp_path / "out"
    # sm1 with two restarts, as in the CLI tests: the fit is compiled once per session.
    argv = ["--quiet", "fit-mixture", str(tmp_path / "sm1.npy"), "--components", "1:2"]
    code = cli.main([*argv, "--n-init", "2", "--out", str(out)])
    assert code == 0
    seen = rendered(chromium, out / "report.html", tmp_path)
    page = (out / "report.html").read_text()
    assert len(seen["images"]) == page.count("<img") == 2
    assert all(i["complete"] and i["width"] > 100 and i["height"] > 100 for i in seen["images"])
    # Selection table (2 rows), EM fit (8 rows), components (2 rows).
    assert [t["rows"] for t in seen["tables"]] == [2, 8, 2]
    assert all(t["height"] > 0 for t in seen["tables"])
