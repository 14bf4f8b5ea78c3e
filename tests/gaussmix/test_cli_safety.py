"""The ``gaussmix`` command keeps a user's files safe: ``--out`` writes a manifest and
never deletes or overwrites a file gaussmix did not write; interrupted runs leave nothing
half-written; operating-system errors and sizes that would exhaust memory end as exit
code 2 with one line; random CSV text never ends in a traceback.

Runs are tiny (40 rows, one column, one component, EM) so that JAX compiles the fit once
for the module; only the signal tests start a process.
"""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaussmix import cli
from gaussmix.cli import fit_mixture, limits, output
from gaussmix.cli.run import Run

EXIT_USAGE = 2
MANIFEST = cli.MANIFEST_NAME
#: What `fit-mixture --components 1 --backend em` writes.
WRITTEN = {"results.json", "report.html", "model.npz", "mixture.png", MANIFEST}


def run_main(capsys, *argv):
    """Run the command in-process; returns (exit code, stderr lines)."""
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line(code, err, match: str):
    assert code == EXIT_USAGE, err
    assert len(err) == 1, err
    assert err[0].startswith("gaussmix") and "Traceback" not in err[0], err[0]
    assert match.lower() in err[0].lower(), err[0]


@pytest.fixture
def data(tmp_path) -> Path:
    """40 rows of one column: two separated groups."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.0, 1.0, 20), rng.normal(6.0, 1.0, 20)])
    path = tmp_path / "data.csv"
    path.write_text("x\n" + "\n".join(repr(float(v)) for v in values) + "\n")
    return path


def fit(capsys, data: Path, out: Path, *extra):
    return run_main(capsys, "--quiet", "fit-mixture", data, "--components", "1", *extra,
                    "--out", out)  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def manifest_names(folder: Path) -> set[str]:
    return {entry["name"] for entry in json.loads((folder / MANIFEST).read_text())["files"]}


def no_temporary_folder(folder: Path) -> bool:
    return not list(folder.parent.glob("**/.gaussmix-*")) and not list(
        folder.parent.glob("**/*.partial")
    )


# -- the user's files ------------------------------------------------------------------


def test_a_project_folder_with_its_own_results_json_is_refused_and_kept(capsys, tmp_path, data):
    """The reported data loss: proj/ held thesis.tex, src/main.py and a results.json."""
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / "thesis.tex").write_text("\\documentclass{article}")
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "results.json").write_text('{"mine": true}')
    before = snapshot(project)
    code, err = fit(capsys, data, project)
    assert_one_line(code, err, "results.json exists and gaussmix did not write it")
    assert "choose another --out" in err[0]
    assert snapshot(project) == before
    assert no_temporary_folder(project)


def test_files_of_the_kinds_gaussmix_writes_survive_beside_its_own(capsys, tmp_path, data):
    """A folder holding the user's my_plot.png and config.json (and code) was replaced."""
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    (out / "my_plot.png").write_bytes(b"\x89PNG mine")
    (out / "config.json").write_text('{"mine": true}')
    (out / "src" / "main.py").write_text("print('mine')\n")
    before = snapshot(out)
    code, err = fit(capsys, data, out)
    assert code == 0, err
    after = snapshot(out)
    assert {name: after[name] for name in before} == before
    assert set(after) == set(before) | WRITTEN
    assert manifest_names(out) == WRITTEN - {MANIFEST}
    assert no_temporary_folder(out)


def test_the_manifest_lists_every_file_with_size_and_hash(capsys, tmp_path, data):
    out = tmp_path / "out"
    code, err = fit(capsys, data, out)
    assert code == 0, err
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == cli.MANIFEST_FORMAT and manifest["version"] == 1
    assert manifest["command"][:2] == ["gaussmix", "--quiet"]
    assert "fit-mixture" in manifest["command"]
    for entry in manifest["files"]:
        content = (out / entry["name"]).read_bytes()
        assert entry["size"] == len(content)
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
    # The names fit-mixture checks before the fit are the names it writes.
    args = cli.build_parser().parse_args(["fit-mixture", "d", "--components", "1", "--out", "o"])
    assert set(fit_mixture.mixture_files(args, n_features=1)) == WRITTEN - {MANIFEST}


def test_a_rerun_replaces_exactly_the_listed_files(capsys, tmp_path, data):
    out = tmp_path / "out"
    code, err = fit(capsys, data, out)
    assert code == 0, err
    # An earlier run's figure gaussmix no longer writes, in a subfolder, listed in the
    # manifest as written then; and a file of the user's.
    (out / "figures").mkdir()
    (out / "figures" / "old.png").write_bytes(b"old figure")
    entries = json.loads((out / MANIFEST).read_text())
    entries["files"].append(
        {
            "name": "figures/old.png",
            "size": 10,
            "sha256": hashlib.sha256(b"old figure").hexdigest(),
        }
    )
    (out / MANIFEST).write_text(json.dumps(entries))
    (out / "notes.txt").write_text("mine")
    code, err = fit(capsys, data, out, "--seed", "1")
    assert code == 0, err
    assert not (out / "figures").exists()  # listed: removed, with its emptied folder
    assert (out / "notes.txt").read_text() == "mine"
    assert {p.name for p in out.iterdir()} == WRITTEN | {"notes.txt"}
    assert json.loads((out / "results.json").read_text())["arguments"]["seed"] == 1


def test_a_listed_file_the_user_changed_makes_the_rerun_refuse(capsys, tmp_path, data):
    out = tmp_path / "out"
    code, err = fit(capsys, data, out)
    assert code == 0, err
    with open(out / "report.html", "a") as file:
        file.write("<!-- my notes -->")
    before = snapshot(out)
    code, err = fit(capsys, data, out)
    assert_one_line(code, err, "report.html was changed since gaussmix wrote it")
    assert snapshot(out) == before
    assert no_temporary_folder(out)


@pytest.mark.parametrize("name", ["../outside.txt", "/OUTSIDE", "link/victim.txt", "a/./b"])
def test_a_planted_manifest_deletes_nothing(capsys, tmp_path, data, name):
    """A manifest listing a file outside the folder (with the right hash) lists nothing."""
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "outside.txt"
    victim.write_text("precious")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "victim.txt").write_text("precious")
    (out / "link").symlink_to(tmp_path / "elsewhere")
    name = name.replace("/OUTSIDE", str(victim))
    entry = {"name": name, "size": 8, "sha256": hashlib.sha256(b"precious").hexdigest()}
    (out / MANIFEST).write_text(
        json.dumps({"format": cli.MANIFEST_FORMAT, "version": 1, "files": [entry]})
    )
    before = snapshot(tmp_path)
    code, err = fit(capsys, data, out)
    assert code == EXIT_USAGE and len(err) == 1, err
    assert snapshot(tmp_path) == before
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"format": "other", "version": 1, "files": []}',
     '{"format": "gaussmix-manifest", "version": 1, "files": [{"name": "a.png"}]}'],
)  # fmt: skip
def test_a_damaged_manifest_lists_nothing_and_is_not_overwritten(tmp_path, text):
    (tmp_path / MANIFEST).write_text(text)
    entries, problem = cli.read_manifest(tmp_path)
    assert entries == {} and problem
    with pytest.raises(cli.UsageError, match="not a manifest gaussmix wrote"):
        with cli.atomic_output(tmp_path, planned=["results.json"]):
            pass
    assert (tmp_path / MANIFEST).read_text() == text


def test_a_file_written_that_was_not_planned_is_checked_before_anything_moves(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(cli.UsageError, match=r"extra\.txt exists and gaussmix did not write it"):
        with cli.atomic_output(out, planned=["results.json"]) as folder:
            (folder / "results.json").write_text("{}")
            (folder / "extra.txt").write_text("gaussmix")
            (out / "extra.txt").write_text("the user's, made during the run")
    assert sorted(p.name for p in out.iterdir()) == ["extra.txt"]
    assert (out / "extra.txt").read_text() == "the user's, made during the run"


def test_subfolders_are_written_and_listed(tmp_path):
    out = tmp_path / "new" / "out"
    with cli.atomic_output(out, command=["gaussmix", "test"]) as folder:
        (folder / "figures").mkdir()
        (folder / "figures" / "a.png").write_bytes(b"a")
        (folder / "results.json").write_text("{}")
    assert manifest_names(out) == {"figures/a.png", "results.json"}
    assert (out / "figures" / "a.png").read_bytes() == b"a"
    assert json.loads((out / MANIFEST).read_text())["command"] == ["gaussmix", "test"]


# -- interrupts ------------------------------------------------------------------------


def start_command(argv, cwd: Path) -> subprocess.Popen:
    """``python -m gaussmix.cli ARGV`` with SIGINT at Python's default (a test runner
    started in the background would pass SIGINT on ignored)."""
    script = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'gaussmix'; runpy.run_module('gaussmix.cli', run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, argv)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def interrupt_when_writing(process: subprocess.Popen, folder: Path, number: int):
    """Send ``number`` once the run's temporary folder exists in ``folder``; returns
    (exit code, stderr lines)."""
    while not list(folder.glob(".gaussmix-*.partial")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    process.send_signal(number)
    _, stderr = process.communicate()
    return process.returncode, stderr.strip().splitlines()


def test_sigterm_during_a_run_leaves_no_folder(tmp_path, data):
    out = tmp_path / "new" / "deeper" / "out"
    process = start_command(["fit-mixture", data, "--components", "1", "--out", out], tmp_path)
    # The run creates out/ (and its parents) with the temporary folder inside.
    while not out.exists():
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    code, err = interrupt_when_writing(process, out, signal.SIGTERM)
    assert code == 143, err
    assert err == [f"gaussmix fit-mixture: interrupted; nothing was written to {out}"]
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_sigint_during_a_rerun_leaves_the_folder_as_it_was(tmp_path, data):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    before = snapshot(out)
    process = start_command(["fit-mixture", data, "--components", "1", "--out", out], tmp_path)
    code, err = interrupt_when_writing(process, out, signal.SIGINT)
    assert code == 130, err
    assert err == [f"gaussmix fit-mixture: interrupted; nothing was written to {out}"]
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_an_interrupt_while_files_move_in_waits_until_all_are_in(tmp_path, monkeypatch):
    """SIGTERM while the files move in is held off; it is raised once the manifest is in,
    marked as arriving after the folder was written."""
    out = tmp_path / "out"
    replace = os.replace

    def replace_and_signal(source, target):
        os.kill(os.getpid(), signal.SIGTERM)
        replace(source, target)

    with output.INTERRUPTS.installed():
        with pytest.raises(KeyboardInterrupt) as raised:
            with cli.atomic_output(out) as folder:
                (folder / "a.txt").write_text("a")
                (folder / "b.txt").write_text("b")
                monkeypatch.setattr(output.os, "replace", replace_and_signal)
    monkeypatch.undo()
    assert raised.value.signal_number == signal.SIGTERM
    assert raised.value.written == out
    assert manifest_names(out) == {"a.txt", "b.txt"}
    assert no_temporary_folder(out)


def test_an_interrupt_while_the_folders_are_made_removes_them(tmp_path, monkeypatch):
    """SIGINT while the output and temporary folders are being created is held off until
    they exist, then raised: the folders this run made are removed (the window the
    subprocess tests above hit only by chance)."""
    out = tmp_path / "new" / "out"
    make_temporary = output.tempfile.mkdtemp

    def make_and_signal(*args, **kwargs):
        folder = make_temporary(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return folder

    monkeypatch.setattr(output.tempfile, "mkdtemp", make_and_signal)
    with output.INTERRUPTS.installed():
        with pytest.raises(KeyboardInterrupt) as raised:
            with cli.atomic_output(out):
                pytest.fail("the block must not run after an interrupt")
    assert raised.value.signal_number == signal.SIGINT
    assert not (tmp_path / "new").exists()


def test_main_restores_the_signal_handlers(capsys, tmp_path, data):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    code, err = fit(capsys, data, tmp_path / "out")
    assert code == 0, err
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_importing_the_command_changes_no_signal_handler():
    script = (
        "import signal; before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]; "
        "import gaussmix.cli; "
        "assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


# -- operating-system errors -----------------------------------------------------------


@pytest.mark.parametrize("where", ["/proc/gaussmix-out", "/proc/self", "/sys/gaussmix-out"])
def test_out_where_no_one_can_write(capsys, data, where):
    if not Path(where).parent.is_dir():
        pytest.skip(f"{Path(where).parent} is absent on this system")
    code, err = fit(capsys, data, where)
    assert_one_line(code, err, "choose a folder you can write")
    assert not Path(where).exists() or where == "/proc/self"


def test_out_in_a_read_only_folder(capsys, tmp_path, data):
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0555 folder; /proc covers this case under root")
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        code, err = fit(capsys, data, parent / "out")
    finally:
        parent.chmod(0o755)
    assert_one_line(code, err, "permission denied")
    assert list(parent.iterdir()) == []


def test_an_unreadable_data_file(capsys, tmp_path, data):
    if os.geteuid() == 0:
        pytest.skip("root reads a file with mode 000")
    data.chmod(0)
    try:
        code, err = fit(capsys, data, tmp_path / "out")
    finally:
        data.chmod(0o644)
    assert_one_line(code, err, "permission denied")


def test_a_fifo_as_data_is_refused_without_opening_it(capsys, tmp_path):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    code, err = fit(capsys, fifo, tmp_path / "out")
    assert_one_line(code, err, "is a FIFO (named pipe), not a regular file")
    assert not (tmp_path / "out").exists()


def test_a_device_as_data_is_refused(capsys, tmp_path):
    code, err = fit(capsys, "/dev/zero", tmp_path / "out")
    assert_one_line(code, err, "character device")


def test_a_full_disk_is_one_line_and_leaves_nothing(capsys, tmp_path, data, monkeypatch):
    def full(self, command, arguments):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / "report.html"))

    monkeypatch.setattr(Run, "finish", full)
    out = tmp_path / "out"
    code, err = fit(capsys, data, out)
    assert_one_line(code, err, "No space left on device")
    assert "free some disk space" in err[0]
    assert not out.exists()


def test_a_programming_error_keeps_its_traceback(capsys, tmp_path, data, monkeypatch):
    def broken(self, command, arguments):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Run, "finish", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="a bug"):
        fit(capsys, data, out)
    assert not out.exists()


# -- sizes and ranges ------------------------------------------------------------------


@pytest.mark.parametrize("components", ["1:1000000000", "1000000000", "999999999:1000000000"])
def test_a_huge_component_range_is_refused_before_anything_is_built(
    capsys, tmp_path, data, components
):
    tracemalloc.start()
    try:
        code, err = run_main(
            capsys, "fit-mixture", data, "--components", components, "--out", tmp_path / "o"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_one_line(code, err, "--components")
    # A tuple of 10**9 integers takes tens of GB; the parser itself takes well under 10 MB.
    assert peak < 10 * 2**20


@pytest.mark.parametrize(
    ("option", "match"),
    [
        (["--seed", "-1"], "must be >= 0"),
        (["--seed", "4294967296"], "at most 4294967295"),
        (["--seed", "9" * 5000], "--seed"),
        (["--n-init", "1000000000"], "at most 1000"),
        (["--num-chains", "1000000"], "at most 1024"),
        (["--num-samples", "1000000000000"], "at most 1000000"),
        (["--num-warmup", "0"], "must be >= 1"),
        (["--components", "1:" + "9" * 5000], "--components"),
    ],
)
def test_numeric_options_have_bounds(capsys, tmp_path, data, option, match):
    code, err = run_main(
        capsys, "fit-mixture", data, "--components", "1", *option, "--out", tmp_path / "o"
    )
    assert_one_line(code, err, match)


def test_peak_options_have_bounds(capsys, tmp_path):
    spectrum = tmp_path / "s.csv"
    spectrum.write_text("t,a\n" + "\n".join(f"{i},{i % 3}" for i in range(20)) + "\n")
    out = tmp_path / "o"
    code, err = run_main(capsys, "fit-peaks", spectrum, "--x", "t", "--y", "a",
                         "--peaks", ",".join(["gaussian"] * 1001), "--out", out)  # fmt: skip
    assert_one_line(code, err, "more than 1000 peaks")
    code, err = run_main(capsys, "fit-peaks", spectrum, "--x", "t", "--y", "a",
                         "--baseline", "1000000000", "--out", out)  # fmt: skip
    assert_one_line(code, err, "polynomial degrees above 20")


@pytest.mark.parametrize(
    ("samples", "chains", "match"),
    [("1", "4", "at least 4 draws per chain"), ("3", "9", "at least 4 draws per chain"),
     ("4", "2", "PSIS-LOO needs at least 25")],
)  # fmt: skip
def test_mcmc_needs_the_draws_its_diagnostics_use(capsys, tmp_path, data, samples, chains, match):
    out = tmp_path / "o"
    code, err = run_main(capsys, "fit-mixture", data, "--components", "1", "--backend", "mcmc",
                         "--num-samples", samples, "--num-chains", chains, "--out", out)  # fmt: skip
    assert_one_line(code, err, match)
    assert not out.exists()


def test_mcmc_at_the_smallest_settings_allowed_runs(capsys, tmp_path, data):
    """One chain of 25 draws: R-hat is undefined for one chain (null), not a crash."""
    out = tmp_path / "o"
    code, err = run_main(capsys, "--quiet", "fit-mixture", data, "--components", "1",
                         "--backend", "mcmc", "--num-warmup", "10", "--num-samples", "25",
                         "--num-chains", "1", "--out", out)  # fmt: skip
    assert code == 0, err
    diagnostics = json.loads((out / "results.json").read_text())["posterior"]["diagnostics"]
    assert diagnostics["num_chains"] == 1 and diagnostics["num_draws"] == 25
    assert diagnostics["max_r_hat"] is None and diagnostics["max_r_hat_parameter"] == ""


def test_draws_that_would_exhaust_memory_are_refused(capsys, tmp_path, data, monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda: 2**30)
    out = tmp_path / "o"
    # 4 chains x 10**6 draws x (3 parameters + 40 pointwise log-likelihoods) x 8 bytes
    # = 1.4 GB before any copy: more than the 1 GiB made available.
    code, err = run_main(capsys, "fit-mixture", data, "--components", "1", "--backend", "mcmc",
                         "--num-samples", "1000000", "--out", out)  # fmt: skip
    assert_one_line(code, err, "GiB of memory, more than the 1.0 GiB available")
    assert not out.exists()


# -- random CSV text -------------------------------------------------------------------

_CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["", "nan", "NA", "-", "inf", "-inf", "1e999", "0x10", "1_000", " 2 "]),
    st.text(max_size=8),
)
_DELIMITERS = st.sampled_from([",", ";", "\t", " "])


@st.composite
def csv_texts(draw) -> str:
    """CSV-like text: random header names, delimiters, quotes, cells, blank lines, a BOM,
    sometimes a very long line."""
    delimiter = draw(_DELIMITERS)
    width = draw(st.integers(1, 4))
    header = draw(st.lists(st.text(min_size=0, max_size=6), min_size=width, max_size=width))
    quote = draw(st.booleans())

    def line(cells):
        return delimiter.join(f'"{c}"' if quote else c for c in cells)

    rows = draw(st.lists(st.lists(_CELLS, min_size=1, max_size=5), max_size=8))
    lines = [line(header), *(line(row) for row in rows)]
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "")
    if draw(st.booleans()):
        lines.append(delimiter.join(["1.5"] * 20_000))
    text = "\n".join(lines)
    return ("\ufeff" if draw(st.booleans()) else "") + text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=csv_texts())
def test_read_table_reads_or_says_what_is_wrong(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_text(text, encoding="utf-8")
    try:
        table = cli.drop_missing(cli.read_table(path), drop=True)
    except cli.UsageError as error:
        assert "\n" not in " ".join(str(error).split()) and str(error)
        return
    assert table.values.ndim == 2 and table.values.shape[1] == len(table.columns)
    assert np.isfinite(table.values).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=csv_texts())
def test_the_command_on_random_text_works_or_says_one_line(tmp_path_factory, text):
    """Through ``main``: the text is read, checked and, when usable, fitted with
    --components 1 (one shape per column count at most, from 1 to 4 columns)."""
    folder = tmp_path_factory.mktemp("run")
    (folder / "data.csv").write_text(text, encoding="utf-8")
    out = folder / "out"
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["--quiet", "fit-mixture", str(folder / "data.csv"), "--components",
                         "1", "--drop-nan", "--out", str(out)])  # fmt: skip
    lines = stderr.getvalue().strip().splitlines()
    if code == 0:
        assert manifest_names(out) == WRITTEN - {MANIFEST}
    else:
        assert code == EXIT_USAGE and len(lines) == 1, lines
        assert lines[0].startswith("gaussmix fit-mixture: error: ") and not out.exists()


_FORMATS = st.sampled_from(["{!r}", "{:.3e}", "{:.17g}", " {} ", '"{}"'])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=40, max_size=40
    ),
    form=_FORMATS,
    bom=st.booleans(),
)
def test_forty_finite_values_in_any_form_fit_or_say_one_line(tmp_path_factory, values, form,
                                                             bom):  # fmt: skip
    """One shape (40, 1): every finite column fits, or the fit says in one line why not
    (all values equal, values past float64's range in the variance)."""
    folder = tmp_path_factory.mktemp("run")
    text = "x\n" + "\n".join(form.format(v) for v in values) + "\n"
    (folder / "data.csv").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    out = folder / "out"
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["--quiet", "fit-mixture", str(folder / "data.csv"), "--components",
                         "1", "--out", str(out)])  # fmt: skip
    lines = stderr.getvalue().strip().splitlines()
    if code == 0:
        assert manifest_names(out) == WRITTEN - {MANIFEST}
    else:
        assert code == EXIT_USAGE and len(lines) == 1, lines
        assert not out.exists()
