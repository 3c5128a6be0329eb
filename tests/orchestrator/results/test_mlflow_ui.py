"""The sweep's story in the MLflow UI: deep links (orchestrator.results.mlflow_ui), run descriptions
(orchestrator.results.descriptions), the interactive plot (orchestrator.results.html), and, in headless
Chromium, `accelsweep ui` on a real finished sweep reached through the links it prints."""

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.config.loading import load_spec
from orchestrator.results.descriptions import NOTE_TAG, measure_text, recipe_in_words, trial_description
from orchestrator.results.html import HTML_FILE, tradeoff_html
from orchestrator.results.mlflow_ui import UIError, desktop_browser_available, newest_sweep, serve, sweep_links
from orchestrator.results.publish import log_report
from orchestrator.results.rows import sweep_rows
from orchestrator.tracking.store import find_sweep_run, start_sweep_run
from orchestrator.tracking.tags import EXPERIMENT_KIND_TAG, MODEL_TRAINING, TRIAL_ID_TAG
from tests.orchestrator.chromium import CHROMIUM, Chromium
from tests.orchestrator.conftest import QUICKSTART
from tests.orchestrator.stored_sweep import TRIALS, create_sweep

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (.ci/run installs Debian's)")
PARAMS = {"t0": {"rank": "null", "quant_bits": "32"}, "t1": {"rank": "8", "quant_bits": "8"}, "t2": {"quant_bits": "16"}}


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    """A sqlite store holding an older sweep "demo" (baseline only) and a newer one with TRIALS
    (baseline, r8-q8, q16, a diverged sp90, a failed q2) whose report was logged; returns
    (client, newer parent run)."""
    root = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(tracking_uri=new_mlflow_store(root / "mlflow.db"))
    experiment_id = client.create_experiment("demo", artifact_location=(root / "artifacts").as_uri())
    create_sweep(client, experiment_id, "demo", TRIALS[2:3], start_time=1_000)
    parent_id = create_sweep(client, experiment_id, "demo", TRIALS, start_time=2_000)
    for child in client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"):
        for key, value in PARAMS.get(child.data.tags[TRIAL_ID_TAG], {}).items():
            client.log_param(child.info.run_id, key, value)
    log_report(client, parent_id, sweep_rows(client, client.get_run(parent_id)))
    return client, client.get_run(parent_id)


def test_links_point_at_the_sweep_in_the_model_training_view(store):
    _, parent = store
    run_id, experiment_id = parent.info.run_id, parent.info.experiment_id
    links = sweep_links("http://127.0.0.1:5000", parent)
    base = f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"
    assert list(links) == ["trials", "sweep run", "trade-off plot", "interactive plot"]
    assert all(url.startswith(base) and "workflowType=machine_learning" in url for url in links.values())
    assert f"searchFilter=tags.mlflow.parentRunId%20%3D%20%27{run_id}%27" in links["trials"]
    assert links["sweep run"].startswith(f"{base}/{run_id}?")
    assert links["trade-off plot"].startswith(f"{base}/{run_id}/artifacts/tradeoff.png?")
    assert links["interactive plot"].startswith(f"{base}/{run_id}/artifacts/tradeoff.html?")


def test_newest_sweep_is_the_latest_started(store):
    client, parent = store
    assert newest_sweep(client).info.run_id == parent.info.run_id


def test_newest_sweep_of_an_empty_store(tmp_path, new_mlflow_store):
    assert newest_sweep(MlflowClient(tracking_uri=new_mlflow_store(tmp_path / "empty.db"))) is None


def test_ui_of_an_unknown_sweep_is_a_user_error(store, capsys):
    client, _ = store
    assert main(["ui", "no-such-sweep", "--uri", client.tracking_uri]) == 2
    assert "no sweep named or with run id 'no-such-sweep'" in capsys.readouterr().err


def test_ui_refuses_a_busy_port_in_one_line_before_starting_a_server(store):
    client, _ = store
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UIError) as refused:
            serve(client.tracking_uri, host="127.0.0.1", port=port)
    assert str(refused.value) == f"ui --port {port}: cannot serve on 127.0.0.1:{port}: Address already in use (give another --port)"


def test_sweep_run_experiment_is_tagged_as_model_training(tmp_path, new_mlflow_store):
    client = MlflowClient(tracking_uri=new_mlflow_store(tmp_path / "mlflow.db"))
    spec = load_spec(QUICKSTART)
    client.create_experiment(spec.experiment)  # made before accelsweep tagged experiments
    start_sweep_run(client, spec, QUICKSTART.read_text(), str(tmp_path / "results"))
    assert client.get_experiment_by_name(spec.experiment).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING


def test_recipe_in_words():
    assert recipe_in_words({"rank": "null", "quant_bits": "32", "dropout": "0.0"}) == (
        "no acceleration technique: the dense fp32 model"
    )
    words = recipe_in_words({"quant_bits": "4", "rank": "0.25", "sparsity": "0.5", "precision": "bf16", "mystery": "7"})
    assert words == (
        "low-rank factorisation of the layers to 25% of full rank (where that saves weights); "
        "4-bit quantisation-aware training, deployed with packed 4-bit weights; "
        "magnitude pruning to 50% sparsity; bf16 autocast training; mystery = 7"
    )
    assert recipe_in_words({"grad_compression": "powersgd", "powersgd_rank": "8", "workers": "2"}) == (
        "PowerSGD rank-8 gradient compression; 2 data-parallel (DDP) workers"
    )


def test_a_technique_without_describe_reads_as_its_value(monkeypatch):
    from trainers.techniques import TECHNIQUES

    class Undescribed:  # a technique module written before describe() existed
        def __init__(self, value):
            self.value = value

    monkeypatch.setitem(TECHNIQUES, "undescribed", Undescribed)
    assert recipe_in_words({"rank": "8", "undescribed": "3"}) == (
        "low-rank factorisation of the layers to rank 8 (where that saves weights); undescribed = 3"
    )


def test_measure_text_shows_missing_values_as_a_dash_and_intervals_when_known():
    assert measure_text({}, "latency_b256_ms") == "-"
    assert measure_text({"speedup": 1.5}, "speedup") == "1.50x"
    assert measure_text({"speedup": 1.5, "speedup_low": 1.4, "speedup_high": 1.6}, "speedup") == "1.50x (1.40-1.60x)"
    assert measure_text({"runtime": "onnxruntime"}, "runtime") == "onnxruntime"
    assert measure_text({"size_bytes": 2_500_000}, "size_bytes") == "2.5 MB"  # one formatter: the plot legend said 2.5 MB too


def test_trial_descriptions_say_recipe_row_and_ratios(store):
    client, parent = store
    notes = {row["mode"]: client.get_run(row["run_id"]).data.tags[NOTE_TAG] for row in sweep_rows(client, parent)}
    assert "**r8-q8** (trial t1, finished)" in notes["r8-q8"]
    assert "on the Pareto front" in notes["r8-q8"]
    assert "Recipe: low-rank factorisation of the layers to rank 8 (where that saves weights); 8-bit" in notes["r8-q8"]
    assert "| test accuracy | 0.8800 | drop 0.0200 |" in notes["r8-q8"]
    assert "| latency, batch 1 (median) | 1.0000 ms | speedup 2.00x |" in notes["r8-q8"]  # the table's .4f, with its unit
    assert "| latency, batch 256 (median) | - | |" in notes["r8-q8"]
    assert "| stored size | 1.0 kB | compression 4.00x |" in notes["r8-q8"]
    assert "dense fp32 baseline" in notes["baseline"]
    assert "not on the Pareto front" in notes["q16"]
    assert "Not measured" in notes["sp90"] and "Not measured" in notes["q2"]


def test_trial_description_shows_runtime_and_interval_when_the_report_has_them():
    row = {"mode": "q8", "trial_id": "t9", "status": "finished", "front": "*", "baseline": False,
           "test_accuracy": 0.9, "latency_ms": 1.0, "speedup": 2.0, "speedup_low": 1.8, "speedup_high": 2.2,
           "runtime": "onnxruntime"}
    text = trial_description(row, {"quant_bits": "8"})
    assert "speedup 2.00x (1.80-2.20x)" in text
    assert "| runtime | onnxruntime | |" in text


def test_sweep_description_is_the_report_table(store):
    client, parent = store
    note = client.get_run(parent.info.run_id).data.tags[NOTE_TAG]
    assert note.startswith("**Sweep demo**: 5 trials, 2 on the Pareto front: baseline, r8-q8.")
    assert "| * | r8-q8 | t1 | finished | eager | 0.8800 |" in note
    assert all(f"| {mode} |" in note for mode, *_ in TRIALS)


def test_report_log_rewrites_the_descriptions(store, capsys):
    client, parent = store
    run_id = parent.info.run_id
    client.set_tag(run_id, NOTE_TAG, "stale")
    assert main(["report", run_id, "--uri", client.tracking_uri, "--log"]) == 0
    assert client.get_run(run_id).data.tags[NOTE_TAG].startswith("**Sweep demo**")


def test_tradeoff_html_is_logged_and_self_contained(store, tmp_path):
    client, parent = store
    page = Path(client.download_artifacts(parent.info.run_id, HTML_FILE, str(tmp_path))).read_text()
    assert "<svg" in page and "<script>" in page
    assert not re.search(r"\b(src|href)\s*=|@import|url\(|fetch\(|XMLHttpRequest", page)
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]  # the SVG namespace only
    assert page.count('<g class="trial"') == 3  # measured trials are plotted; diverged and failed are not
    assert all(f"<td>{mode}</td>" in page for mode, *_ in TRIALS)  # every trial is in the table


@needs_chromium
@pytest.mark.browser
def test_tradeoff_html_hover_shows_the_trials_numbers(tmp_path):
    rows = [
        {"mode": "baseline", "trial_id": "t0", "run_id": "a", "status": "finished", "front": "*", "baseline": True,
         "test_accuracy": 0.9, "latency_ms": 2.0, "size_bytes": 4000.0, "speedup": 1.0, "compression": 1.0},
        {"mode": "r8-q8", "trial_id": "t1", "run_id": "b", "status": "finished", "front": "*", "baseline": False,
         "test_accuracy": 0.88, "latency_ms": 1.0, "size_bytes": 1000.0, "accuracy_drop": 0.02,
         "speedup": 2.0, "speedup_low": 1.9, "speedup_high": 2.1, "compression": 4.0, "latency_b256_ms": 0.5},
    ]
    page = tmp_path / HTML_FILE
    page.write_text(tradeoff_html(rows, "demo"))
    with Chromium() as browser:
        browser.open(page.as_uri())
        assert browser.wait_for("document.querySelectorAll('g.trial').length") == 2
        x, y = browser.evaluate(
            "(() => { const box = document.querySelector('g.trial[data-run=\"b\"] circle').getBoundingClientRect();"
            " return [box.x + box.width / 2, box.y + box.height / 2]; })()"
        )
        browser.mouse_move(x, y)
        tip = browser.wait_for("document.getElementById('tip').innerText")
    assert tip.splitlines() == [
        "r8-q8  (trial t1, on the Pareto front)",
        "test accuracy 0.8800, drop 0.0200",
        "latency 1.0000 ms at batch 1, 0.5000 ms at batch 256",
        "size 1.0 kB, - parameters",
        "speedup 2.00x (1.90-2.10x), compression 4.00x",
    ]


@pytest.mark.parametrize(("display", "wayland", "expected"), [(None, None, False), (":0", None, True), (None, "wayland-0", True)])
def test_a_browser_is_opened_only_with_a_display(monkeypatch, display, wayland, expected):
    if not sys.platform.startswith("linux"):
        pytest.skip("the display rule is Linux's")
    for name, value in (("DISPLAY", display), ("WAYLAND_DISPLAY", wayland)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert desktop_browser_available() is expected


@pytest.fixture(scope="module")
def sweep_modes(finished_sweep):
    """The trials' labels of the session's real sweep (`finished_sweep`), as its report lists them."""
    client = finished_sweep.client
    return [row["mode"] for row in sweep_rows(client, find_sweep_run(client, "it-sweep"))]


@needs_chromium
@pytest.mark.browser
@pytest.mark.slow
def test_accelsweep_ui_links_reach_the_trials_and_the_plot(finished_sweep, sweep_modes, tmp_path):
    """`accelsweep ui` in a real subprocess on the session's real sweep, with `mlflow` not on PATH
    (it must fall back to `python -m mlflow`), then each printed link in headless Chromium;
    screenshots in tmp_path."""
    directory, modes = finished_sweep.workdir, sweep_modes
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "DISPLAY", "WAYLAND_DISPLAY")}
    env["PATH"] = "/usr/bin:/bin"
    ui = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", "--port", str(port)],
        cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        printed = []
        for line in ui.stdout:
            printed.append(line)
            if line.startswith("(Ctrl-C"):
                break
        assert printed and printed[-1].startswith("(Ctrl-C"), ui.stderr.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as health:  # answering once links are out
            assert health.status == 200
        links = dict(re.match(r"\s+(\S.*?)\s{2,}(http\S+)", line).groups() for line in printed[1:-1])
        assert list(links) == ["trials", "sweep run", "trade-off plot", "interactive plot"]
        assert printed[0] == "sweep it-sweep in the MLflow UI:\n"
        with Chromium() as browser:
            _check_trials_view(browser, links["trials"], modes, tmp_path)
            _check_sweep_run(browser, links["sweep run"], modes, tmp_path)
            _check_plot(browser, links["trade-off plot"], tmp_path)
            _check_interactive_plot(browser, links["interactive plot"], modes, tmp_path)
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=60)
    assert ui.returncode == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)


GENAI_PAGE = ("Token Usage", "Detect Issues", "Evaluation runs")
"""Text on MLflow 3.17's GenAI overview and in its GenAI sidebar, absent from the model-training view."""


def _check_trials_view(browser, url, modes, tmp_path):
    browser.open(url)
    everything = " && ".join(f"document.body.innerText.includes('{mode}-')" for mode in modes)  # run names: MODE-TRIAL_ID
    rendered = browser.wait_for(everything)
    _keep_screenshot(browser, tmp_path / "trials.png")
    assert rendered, browser.text()
    text = browser.text()
    assert f"{len(modes)} matching runs" in text
    assert not any(genai in text for genai in GENAI_PAGE)
    assert "/overview" not in browser.evaluate("location.hash")


def _check_sweep_run(browser, url, modes, tmp_path):
    browser.open(url)
    rendered = browser.wait_for("document.body.innerText.includes('Sweep it-sweep')")
    _keep_screenshot(browser, tmp_path / "sweep_run.png")
    assert rendered, browser.text()
    assert "Evaluations" not in browser.text()  # the GenAI breadcrumb of a run
    assert all(mode in browser.text() for mode in modes)


def _check_plot(browser, url, tmp_path):
    browser.open(url)
    shown = browser.wait_for("Array.from(document.images).some((image) => image.complete && image.naturalWidth > 500)")
    _keep_screenshot(browser, tmp_path / "tradeoff_png.png")
    assert shown, browser.text()


def _check_interactive_plot(browser, url, modes, tmp_path):
    browser.open(url)
    page = browser.wait_for_frame_text("measured trials")  # MLflow previews .html in a sandboxed iframe
    _keep_screenshot(browser, tmp_path / "tradeoff_html.png")
    assert page, browser.text()
    assert all(mode in page for mode in modes)


def _keep_screenshot(browser, path):
    browser.screenshot(path)
    print(f"screenshot: {path}")
