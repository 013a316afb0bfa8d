"""notebooks/analysis.ipynb as a user runs it: `jupyter execute` from the repository root on every
committed result directory and on the fixture set, its cross-check against report.md passing there
and failing on a report that disagrees, and `make notebook` serving it through JupyterLab.

Every run is real: the project's jupyter, a kernel of this venv's Python, the committed result
files, git for which of them are committed, make and an HTTP client against the JupyterLab server.
"""

from __future__ import annotations

import ast
import fcntl
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import termios
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from harness.kinds import KINDS
from harness.records.results import load_results_dir
from harness.site import procs
from tests.harness.test_analysis_support import support
from tests.harness.test_report import SMOKE, copy_results
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "analysis.ipynb"
BIN = Path(sys.executable).parent

# Kernel start-up plus pandas and matplotlib imports on a loaded 2-core host.
CELL_TIMEOUT_S = 300
EXECUTE_TIMEOUT_S = 600
# JupyterLab's start-up took ~60 s on the shared 2-core VM at load 30.
LAB_START_TIMEOUT_S = 240

# README's Jupyter section and the notebook's first cell give exactly these (checked below); the tests
# run the last one as written.
README_EXECUTE = ". .venv/bin/activate && PORTUNUS_RESULTS=results/<run> jupyter execute notebooks/analysis.ipynb"
README_COMMANDS = ["make setup", "make notebook", "make notebook RESULTS=results/<run>", README_EXECUTE]


def jupyter_env(tmp: Path) -> dict[str, str]:
    """This environment with Jupyter's and IPython's per-user directories in tmp (nothing in ~ is
    read or written), without PORTUNUS_RESULTS or RESULTS (each test sets its own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PORTUNUS_RESULTS", "JUPYTER_PATH", "RESULTS")}
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        (tmp / "jupyter-home" / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(tmp / "jupyter-home" / sub)
    return env


def jupyter_execute(tmp: Path, results: str, *extra: str) -> nbformat.NotebookNode:
    """README's headless command, run by a shell from the repository root with `results` for
    results/<run>, plus an --output in tmp (without one, `jupyter execute` saves nothing)."""
    out = tmp / "executed"
    command = README_EXECUTE.replace("results/<run>", shlex.quote(results))
    # The activate script of the venv running these tests: .venv/bin/activate in a checkout made by `make setup`.
    command = command.replace(". .venv/bin/activate", f". {shlex.quote(str(BIN / 'activate'))}")
    command += " " + shlex.join([f"--output={out}", f"--timeout={CELL_TIMEOUT_S}", *extra])
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=jupyter_env(tmp), capture_output=True,
                          text=True, timeout=EXECUTE_TIMEOUT_S)
    assert proc.returncode == 0, f"{command} failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    return nbformat.read(out.with_suffix(".ipynb"), as_version=4)


def outputs(nb: nbformat.NotebookNode) -> tuple[str, int, list[str]]:
    """All text output, how many PNG images were shown, and the errors raised (name: value)."""
    text, images, errors = [], 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                images += "image/png" in out.data
                text.append(out.data.get("text/markdown", "") + out.data.get("text/plain", ""))
            elif out.output_type == "error":
                errors.append(f"{out.ename}: {out.evalue}")
    return "\n".join(text), images, errors


def committed_dirs() -> list[str]:
    return [str(d.relative_to(REPO)) for d in support.committed_run_dirs(REPO)]


def test_notebook_is_committed_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    stale = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not stale, (f"code cells {stale} of {NOTEBOOK} hold outputs: clear them before committing "
                       "(JupyterLab: Edit > Clear Outputs of All Cells, then save)")
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)


def test_every_registered_kind_has_its_section_and_its_cross_check() -> None:
    """The notebook grows with the harness: a kind registered in harness.kinds without a section here
    (a markdown cell with its question, then `show_kind("<kind>")`) or a cross-check fails this."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
                     if not line.startswith("%"))  # IPython magics are not Python
    assigned = {t.id: node.value for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert list(ast.literal_eval(assigned["SECTION_KINDS"])) == list(KINDS), "SECTION_KINDS: KINDS in order"
    checks = assigned["CHECKS"]
    assert isinstance(checks, ast.Dict)
    assert sorted(ast.literal_eval(k) for k in checks.keys if k is not None) == sorted(KINDS), "CHECKS: every kind"
    shown = [(m.group(1), before.source) for before, cell in itertools.pairwise(nb.cells)
             if (m := re.fullmatch(r'show_kind\("(\w+)"\)', cell.source.strip()))]
    assert [kind for kind, _ in shown] == list(KINDS), "one show_kind cell per kind, in the report's order"
    for kind, before in shown:
        assert before.startswith("## ") and "**Question:**" in before, f"the cell before show_kind({kind!r})"


def test_there_is_a_committed_result_directory() -> None:
    assert committed_dirs(), "no committed result directory under results/: the notebook test below runs on none"


@pytest.mark.timeout(EXECUTE_TIMEOUT_S + 60)
@pytest.mark.parametrize("results", committed_dirs())
def test_jupyter_execute_on_every_committed_result_directory(tmp_path: Path, results: str) -> None:
    """The README's command, with a path relative to the repository root, and the cross-check passing."""
    d = REPO / results
    text, images, errors = outputs(jupyter_execute(tmp_path, results))
    assert not errors
    assert f"Results directory: {d}\n  chosen by: PORTUNUS_RESULTS={results}, relative to the repository root" in text
    assert f"Kernel Python: {BIN}" in text
    sets = load_results_dir(d)
    assert f"{len(sets)} result file(s), {sum(len(rs.records) for rs in sets)} measurement(s)" in text
    for rs in sets:  # every file is listed, and shown in its kind's section
        assert rs.path.name in text and f"### {rs.header.experiment} ({rs.header.kind})" in text
    kinds = {rs.header.kind for rs in sets}
    for kind in set(KINDS) - kinds:
        assert f"*No `{kind}` result file in `{d.name}`" in text
    assert images >= len(sets)
    m = re.search(r"Cross-check passed: (\d+) median\(s\) in (\d+) file\(s\) equal (\S+)\.", text)
    assert m, "the cross-check against report.md did not run"
    assert int(m.group(1)) >= len(sets) and int(m.group(2)) == len(sets)
    assert m.group(3) == f"{results}/report.md"
    assert "Not cross-checked" not in text and "Files with no median to compare" not in text


@pytest.mark.timeout(EXECUTE_TIMEOUT_S + 60)
def test_jupyter_execute_on_the_committed_fixture_set(tmp_path: Path) -> None:
    results = str(SMOKE.relative_to(REPO))
    text, images, errors = outputs(jupyter_execute(tmp_path, results))
    assert not errors
    assert f"Results directory: {SMOKE}" in text
    assert "4 result file(s), 52 measurement(s), 0 failed" in text
    assert "| Offered, Mbit/s | `direct` | % |" in text  # the report's tables
    assert "cv_pct" in text and "mbps_per_busy_core" in text  # the two analyses
    assert "One topology in this directory" in text
    assert images == 6  # five report figures + throughput vs CPU
    assert f"Cross-check passed: 27 median(s) in 4 file(s) equal {results}/report.md." in text


@pytest.mark.timeout(EXECUTE_TIMEOUT_S + 60)
def test_other_kinds_render_from_their_summary_and_the_cross_check_fails_on_a_wrong_report(
        tmp_path: Path) -> None:
    """A kind the notebook has no section for (`http`, as a newer harness would write) is shown
    from its summary; a report.md whose sweep cell differs from the measurements fails the check."""
    d = copy_results(tmp_path / "run", only=("sweep",))
    lines = (SMOKE / "headline.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    header.update(kind="http", experiment="http")
    header["config"].update(kind="http", name="http", description="Requests per second through every path.")
    body = [json.loads(x) for x in lines[1:]]
    for line in body:
        if line.get("type") == "measurement":
            line["experiment"] = "http"
    (d / "http.jsonl").write_text("\n".join(json.dumps(x) for x in [header, *body]) + "\n")
    report = subprocess.run([str(BIN / "portunus-bench"), "report", str(d)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    # The report's sweep row at 100 Mbit/s with a `direct` cell that no measurement gave.
    text = (d / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 100 | "))
    cells = row.split(" | ")
    true_value = cells[1]
    cells[1] = "999.9"
    (d / "report.md").write_text(text.replace(row, " | ".join(cells)))

    out, _, errors = outputs(jupyter_execute(tmp_path, str(d), "--allow-errors"))
    assert f"Results directory: {d}\n  chosen by: PORTUNUS_RESULTS={d}\n" in out  # absolute: taken as is
    assert "*No `headline` result file in `run`" in out
    assert "### Kind `http`: `http.jsonl`" in out and "**Question:** Requests per second through every path." in out
    assert "This version of the report has no section for kind `http`" in out  # its report section
    assert "throughput_mbps_median" in out  # its summary as a table
    assert len(errors) == 1 and errors[0].startswith("AssertionError: ")
    assert errors[0].endswith(
        f"disagrees with the medians computed here:\nsweep.jsonl: `direct` at 100 Mbit/s: computed {true_value}, "
        "report.md says 999.9")
    assert re.search(r"http\.jsonl\s+http\s+5", out)  # the fallback table was compared too


@pytest.fixture
def kernel_of_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running this interpreter (the project venv), found before any user-wide spec."""
    spec = tmp_path / "jupyter" / "kernels" / "portunus-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Portunus (test)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "portunus-test"


@pytest.mark.timeout(CELL_TIMEOUT_S + 60)
def test_the_default_is_the_newest_committed_run(kernel_of_this_python: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """PORTUNUS_RESULTS unset: the notebook's first cell picks what `make notebook` opens."""
    monkeypatch.delenv("PORTUNUS_RESULTS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells = nb.cells[:first + 1]
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_of_this_python,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text, _, _ = outputs(nb)
    newest = REPO / committed_dirs()[-1]
    assert f"Results directory: {newest}\n  chosen by: PORTUNUS_RESULTS not set: the newest committed run" in text
    cli = subprocess.run([sys.executable, "notebooks/analysis_support.py", "resolve"], cwd=REPO,
                         capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.strip() == committed_dirs()[-1]



# ---------------------------------------------------------------- make notebook


def _listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses of pid's network namespace listening on a TCP port (/proc/PID/net/tcp{,6})."""
    found = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def _request(url: str, token: str | None = None, body: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET (or POST a JSON body) with the token in the Authorization header."""
    headers = {"Authorization": f"token {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _copy_terminal(master: int, log: Path) -> None:
    """Everything written to the terminal, into log (a full pty would block JupyterLab's writes)."""
    with open(log, "ab") as sink:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal has exited
                return
            if not chunk:
                return
            sink.write(chunk)
            sink.flush()


def _controlling_terminal() -> None:
    """In the child, after setsid: stdin (the pty) becomes its controlling terminal, so ^C signals it."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.timeout(LAB_START_TIMEOUT_S + 180)
def test_make_notebook_serves_the_notebook_on_localhost_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`make notebook` on a terminal, as a user types it: JupyterLab on 127.0.0.1 with the newest
    committed run, the notebook served through its HTTP API with the printed token (refused without),
    a session opened on it (its kernel: the venv's Python in notebooks/, with the run), then one Ctrl-C on the terminal stops make, JupyterLab and
    the kernel (anything left is stopped by PID and fails the test)."""
    port = free_port()
    log = tmp_path / "make-notebook.log"
    log.touch()
    master, slave = os.openpty()
    make = subprocess.Popen(["make", "-s", "notebook", f"NOTEBOOK_PORT={port}"], cwd=REPO,
                            env=jupyter_env(tmp_path), stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=_controlling_terminal)
    os.close(slave)
    reader = threading.Thread(target=_copy_terminal, args=(master, log), daemon=True)
    reader.start()
    tree: list[int] = []
    try:
        url = re.compile(rf"(http://127\.0\.0\.1:{port}/lab/tree/notebooks/analysis\.ipynb)\?token=(\w+)")
        deadline = time.monotonic() + LAB_START_TIMEOUT_S
        while not (m := url.search(log.read_text(errors="replace"))):
            assert make.poll() is None, f"make notebook exited {make.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no URL with a token after {LAB_START_TIMEOUT_S} s:\n{log.read_text()}"
            time.sleep(0.5)
        # The recipe execs jupyter lab: it is make's only child.
        lab = [p for p in procs.descendants(make.pid)
               if procs.parse_ppid(Path(f"/proc/{p}/stat").read_text()) == make.pid]
        assert len(lab) == 1, lab
        cmdline = Path(f"/proc/{lab[0]}/cmdline").read_bytes().split(b"\0")
        assert any(a.endswith(b"jupyter-lab") for a in cmdline), cmdline
        environ = Path(f"/proc/{lab[0]}/environ").read_bytes().split(b"\0")
        assert f"PORTUNUS_RESULTS={committed_dirs()[-1]}".encode() in environ
        assert _listening_addresses(lab[0], port) == {"0100007F"}  # 127.0.0.1 only

        page, token = m.group(1), m.group(2)
        assert _request(f"{page}?token={token}")[0] == 200
        api = f"http://127.0.0.1:{port}/api"
        assert _request(f"{api}/contents/notebooks/analysis.ipynb")[0] == 403
        status, body = _request(f"{api}/contents/notebooks/analysis.ipynb", token)
        assert status == 200
        served = json.loads(body)
        assert served["type"] == "notebook" and served["path"] == "notebooks/analysis.ipynb"
        on_disk = nbformat.read(NOTEBOOK, as_version=4)
        assert [c["source"] for c in served["content"]["cells"]] == [c.source for c in on_disk.cells]

        # What opening the notebook in JupyterLab does: a session, whose kernel runs in notebooks/.
        status, body = _request(f"{api}/sessions", token, {"path": "notebooks/analysis.ipynb", "type": "notebook",
                                                          "name": "analysis.ipynb", "kernel": {"name": "python3"}})
        assert status == 201, body
        deadline = time.monotonic() + LAB_START_TIMEOUT_S
        while len(tree := procs.descendants(make.pid)) < 2:  # jupyter lab and the kernel it started
            assert time.monotonic() < deadline, f"no kernel process under make: {tree}"
            time.sleep(0.5)
        kernel = [p for p in tree if p != lab[0]]
        assert len(kernel) == 1, tree
        assert Path(f"/proc/{kernel[0]}/cwd").resolve() == REPO / "notebooks"
        argv0 = Path(f"/proc/{kernel[0]}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert Path(argv0).parent == BIN, argv0  # the project's venv, whose harness the notebook imports
        assert f"PORTUNUS_RESULTS={committed_dirs()[-1]}".encode() in Path(f"/proc/{kernel[0]}/environ").read_bytes()

        os.write(master, b"\x03")  # Ctrl-C: the terminal signals its foreground process group
        assert procs.wait_exit(make, 60.0), f"make notebook still running 60 s after Ctrl-C:\n{log.read_text()}"
        deadline = time.monotonic() + 30
        while (left := [p for p in tree if procs.pid_alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"left running after Ctrl-C: {left}"
    finally:
        procs.stop_pids([p for p in [*tree, *procs.descendants(make.pid)] if procs.pid_alive(p)])
        if not procs.wait_exit(make, 30.0):
            os.kill(make.pid, signal.SIGKILL)
            make.wait()
        reader.join(10)  # ends once no process holds the terminal
        os.close(master)
    assert "Shutting down 1 kernel" in log.read_text(errors="replace")


def test_make_notebook_refuses_a_results_directory_that_is_not_one(tmp_path: Path) -> None:
    """RESULTS reaches the notebook's resolver: a wrong one stops before JupyterLab starts, exit 2."""
    bad = subprocess.run(["make", "-s", "notebook", "RESULTS=results/nope"], cwd=REPO,
                         env=jupyter_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2, bad
    assert f"{REPO}/results/nope is not a directory (PORTUNUS_RESULTS=results/nope" in bad.stderr
    assert "JupyterLab on" not in bad.stdout


def test_readme_and_notebook_give_the_commands_tested_here() -> None:
    """README's Jupyter section and the notebook's first cell: exactly the commands the tests above run."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Jupyter analysis\n"):]
    section = section[:section.index("\n## ", 1)]
    intro = nbformat.read(NOTEBOOK, as_version=4).cells[0].source
    for text in (section, intro):
        block = re.search(r"```sh\n(.*?)```", text, flags=re.S)
        assert block is not None
        commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
        assert commands == README_COMMANDS
