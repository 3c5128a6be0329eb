"""`accelsweep ui`: the MLflow UI on the sweep's tracking store, with deep links straight to a sweep.

MLflow 3.17's UI is a single-page app with hash routes. It opens an experiment as a GenAI project
(traces, token usage) unless the URL or the sidebar's "GenAI | Model training" switch says
otherwise, so every link carries `workflowType=machine_learning`. The links name:
- the sweep's trials, as a flat table (filtered on their parent run, best test accuracy first);
- the sweep's parent run (its description is the trade-off table);
- the parent run's trade-off plot, as a PNG and as the interactive `tradeoff.html`.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import webbrowser
from urllib.parse import quote, urlencode

from mlflow.tracking import MlflowClient

from orchestrator.errors import UserError
from orchestrator.results.html import HTML_FILE
from orchestrator.results.png import PLOT_FILE
from orchestrator.tracking.store import connect, find_sweep_run
from orchestrator.tracking.tags import EXPERIMENT_KIND_TAG, KIND_TAG, MODEL_TRAINING, PARENT_TAG, SWEEP_TAG

logger = logging.getLogger(__name__)
MODEL_TRAINING_VIEW = {"workflowType": "machine_learning"}
"""The URL parameter that makes MLflow 3.17's UI show model training, whatever the sidebar switch says."""
STARTUP_SECONDS = 180.0
"""How long the server may take to answer before `accelsweep ui` gives up (it imports a lot)."""


class UIError(UserError):
    """The MLflow UI server could not start."""


def sweep_links(base_url: str, parent_run) -> dict[str, str]:
    """Deep links into the MLflow UI for one sweep, by what they show.

    Args:
        base_url: where the MLflow UI answers, e.g. "http://127.0.0.1:5000".
        parent_run: the sweep's parent run.

    Returns:
        {"trials": ..., "sweep run": ..., "trade-off plot": ..., "interactive plot": ...}.

    Example:
        >>> sweep_links("http://127.0.0.1:5000", find_sweep_run(client, "quickstart"))["trials"]  # doctest: +SKIP
        "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning&searchFilter=..."
    """
    run = f"{base_url}/#/experiments/{parent_run.info.experiment_id}/runs"
    run_id = parent_run.info.run_id
    trials = MODEL_TRAINING_VIEW | {
        "searchFilter": f"tags.{PARENT_TAG} = '{run_id}'",
        "orderByKey": "metrics.`test_accuracy`",
        "orderByAsc": "false",
    }
    view = urlencode(MODEL_TRAINING_VIEW)
    return {
        "trials": f"{run}?{urlencode(trials, quote_via=quote)}",
        "sweep run": f"{run}/{run_id}?{view}",
        "trade-off plot": f"{run}/{run_id}/artifacts/{PLOT_FILE}?{view}",
        "interactive plot": f"{run}/{run_id}/artifacts/{HTML_FILE}?{view}",
    }


def newest_sweep(client: MlflowClient):
    """The parent run of the most recently started sweep in the store, or None when there is none.

    Example:
        >>> newest_sweep(client).data.tags["accelsweep.sweep"]  # doctest: +SKIP
        'quickstart'
    """
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(
        experiments, f"tags.`{KIND_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def serve(uri: str, sweep: str | None = None, host: str = "127.0.0.1", port: int = 5000, verbose: bool = False) -> int:
    """Serve the MLflow UI for `uri` until Ctrl-C, printing (and opening) deep links to a sweep.

    The links are printed once the server answers. They are opened in a browser only where a
    desktop one can be (on Linux: DISPLAY or WAYLAND_DISPLAY set). The sweep's experiment is
    tagged as model training first, for stores written before accelsweep did so.

    Args:
        uri: the tracking store.
        sweep: a sweep name or parent run id; None for the newest sweep in the store.
        host: the address to bind; 127.0.0.1 keeps the UI on this machine.
        port: the port to bind.
        verbose: show the server's own log.

    Returns:
        0 once the server stopped after Ctrl-C (or SIGTERM).

    Raises:
        UIError: the server exited or did not answer in STARTUP_SECONDS.

    Example:
        >>> serve("sqlite:///mlflow.db", "quickstart")  # blocks until Ctrl-C  # doctest: +SKIP
    """
    client = connect(uri, create=False)
    parent = find_sweep_run(client, sweep) if sweep else newest_sweep(client)
    if parent is not None:
        client.set_experiment_tag(parent.info.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    _check_port_free(host, port)
    on_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it too, like Ctrl-C
    with tempfile.TemporaryFile("w+") as server_log:
        server = _start_server(uri, host, port, None if verbose else server_log)
        try:
            _wait_until_answering(base_url, server, server_log)
            links = sweep_links(base_url, parent) if parent is not None else {"MLflow UI": base_url}
            _announce(links, parent)
            server.wait()
            raise UIError(f"the MLflow UI server stopped (exit code {server.returncode})")
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(server)
            signal.signal(signal.SIGTERM, on_sigterm)


def desktop_browser_available() -> bool:
    """Whether a desktop web browser can be opened here (on Linux, only with a display).

    Example:
        >>> desktop_browser_available()  # over ssh, no X forwarding  # doctest: +SKIP
        False
    """
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _start_server(uri, host, port, output):
    mlflow = shutil.which("mlflow")
    command = [mlflow] if mlflow else [sys.executable, "-m", "mlflow"]
    # one worker, and no job runner (its seven processes serve GenAI judges): a personal viewer
    command += ["ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | dict(os.environ)
    logger.info("starting the MLflow UI for %s on %s:%d", uri, host, port)
    # its own process group, so that stopping it also stops the uvicorn worker it starts
    return subprocess.Popen(command, stdout=output, stderr=output, env=env, start_new_session=True)


def _check_port_free(host, port):
    # the server would fail on it with a traceback; Ctrl-C'd servers' TIME_WAIT ports are free (SO_REUSEADDR)
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise UIError(f"ui --host {host!r}: not an address of this machine ({error.strerror})") from None
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UIError(f"ui --port {port}: cannot serve on {host}:{port}: {error.strerror} (give another --port)") from None


def _wait_until_answering(base_url, server, server_log):
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            server_log.seek(0)
            last_line = (server_log.read().strip().splitlines() or ["(no output; -v shows its log)"])[-1]
            raise UIError(f"the MLflow UI server exited with code {server.returncode}: {last_line}")
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise UIError(f"the MLflow UI server did not answer at {base_url} within {STARTUP_SECONDS:.0f} s")


def _announce(links, parent):
    if parent is not None:
        print(f"sweep {parent.data.tags.get(SWEEP_TAG, parent.info.run_id)} in the MLflow UI:")
    else:
        print("no sweep in this store yet (accelsweep run SPEC); the MLflow UI:")
    width = max(len(label) for label in links)
    for label, url in links.items():
        print(f"  {label.ljust(width)}  {url}", flush=True)
    if desktop_browser_available():
        for url in list(links.values())[:2]:  # the trials and the plot; the rest are a click away
            webbrowser.open_new_tab(url)
    print("(Ctrl-C to stop the server)", flush=True)


def _stop(server):
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
