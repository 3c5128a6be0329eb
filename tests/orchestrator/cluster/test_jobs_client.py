"""orchestrator.cluster.jobs_client and the job commands without a cluster: the job's runtime environment and entrypoint, where the
Jobs API address and the Ray token come from, which tracking URIs a cluster can use, and the clear
errors for a bad spec or an address where nothing answers. The real cluster round trip is in
tests/cluster/test_local_cluster.py."""

import argparse
import socket
import stat

import pytest

from orchestrator.cli import jobs, submit
from orchestrator.cluster.jobs_client import (
    DEFAULT_ADDRESS,
    PROJECT_ROOT,
    JobError,
    build_runtime_env,
    check_transport,
    find_auth_token,
    jobs_address,
    jobs_client,
    submission_tracking_uri,
    sweep_entrypoint,
)
from orchestrator.config.loading import parse_spec
from orchestrator.config.schema import SpecError
from orchestrator.errors import UserError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No Ray address, token or MLflow URI from the environment; HOME is an empty tmp_path."""
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


@pytest.fixture
def closed_port():
    """A loopback port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def jobparser():
    parser = argparse.ArgumentParser(prog="accelsweep")
    commands = parser.add_subparsers(required=True)
    submit.register(commands)
    jobs.register(commands)
    return parser


def test_runtime_env_carries_the_project_without_local_results():
    env = build_runtime_env("http://mlflow.internal:5000")
    assert env["working_dir"] == str(PROJECT_ROOT)
    assert (PROJECT_ROOT / "orchestrator" / "cluster" / "jobs_client.py").is_file()
    assert (PROJECT_ROOT / "trainers").is_dir()
    for left_behind in ("mlflow.db", "mlruns/", "accelsweep_results/", ".git/", "__pycache__/"):
        assert left_behind in env["excludes"]
    assert env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}
    assert "pip" not in env


def test_pip_only_when_asked_and_never_ray_itself():
    requirements = build_runtime_env("http://mlflow.internal:5000", pip=True)["pip"]
    assert any(requirement.startswith("torch") for requirement in requirements)
    assert any(requirement.startswith("mlflow") for requirement in requirements)
    assert not any(requirement.startswith("ray") for requirement in requirements)


def test_entrypoint_runs_the_spec_relative_to_the_project(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT / "search_spaces")
    assert sweep_entrypoint("quickstart.yaml") == "python -m orchestrator run search_spaces/quickstart.yaml"
    assert sweep_entrypoint(PROJECT_ROOT / "cluster/local/smoke.yaml") == "python -m orchestrator run cluster/local/smoke.yaml"


def test_a_spec_outside_the_project_is_refused(write_spec, quickstart):
    with pytest.raises(JobError, match="outside .*copy it under it"):
        sweep_entrypoint(write_spec(quickstart))


def test_token_lookup_follows_rays_order(clean_env, tmp_path):
    assert find_auth_token() == (None, "~/.ray/auth_token")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    assert find_auth_token() == ("home-token", "~/.ray/auth_token")
    (tmp_path / "elsewhere").write_text("path-token")
    clean_env.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert find_auth_token() == ("path-token", f"RAY_AUTH_TOKEN_PATH ({tmp_path / 'elsewhere'})")
    clean_env.setenv("RAY_AUTH_TOKEN", "env-token")
    assert find_auth_token() == ("env-token", "RAY_AUTH_TOKEN")


def test_address_comes_from_the_flag_then_the_environment_then_the_default(clean_env):
    assert jobs_address() == (DEFAULT_ADDRESS, "the default")
    clean_env.setenv("RAY_ADDRESS", "10.0.0.9:8265")
    assert jobs_address() == ("http://10.0.0.9:8265", "RAY_ADDRESS")
    clean_env.setenv("RAY_API_SERVER_ADDRESS", "https://ray.internal/")
    assert jobs_address() == ("https://ray.internal", "RAY_API_SERVER_ADDRESS")
    assert jobs_address("http://head:8265") == ("http://head:8265", "--address")


@pytest.mark.parametrize("address", ["ray://head:10001", "auto"])
def test_a_ray_client_address_is_not_a_jobs_api(clean_env, address):
    with pytest.raises(JobError, match="dashboard URL"):
        jobs_address(address)


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "file:./mlruns", "mlruns"])
def test_a_local_store_is_refused_unless_given_explicitly(clean_env, quickstart, uri):
    spec = parse_spec(quickstart)
    clean_env.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(JobError, match="cannot write.*--tracking-uri"):
        submission_tracking_uri(spec)
    assert submission_tracking_uri(spec, explicit=uri) == uri


def test_tracking_uri_from_the_environment_the_flag_or_the_spec(clean_env, quickstart):
    with pytest.raises(JobError, match="no MLflow tracking server"):
        submission_tracking_uri(parse_spec(quickstart))
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert submission_tracking_uri(parse_spec(quickstart)) == "http://env:5000"
    assert submission_tracking_uri(parse_spec(quickstart), "http://flag:5000") == "http://flag:5000"
    quickstart["tracking"]["uri"] = "http://spec:5000"
    assert submission_tracking_uri(parse_spec(quickstart)) == "http://spec:5000"
    with pytest.raises(JobError, match="the spec's wins"):
        submission_tracking_uri(parse_spec(quickstart), "http://flag:5000")


def test_an_unreachable_address_is_a_user_error(clean_env, closed_port):
    with pytest.raises(UserError, match=f"cannot reach the Ray Jobs API at http://127.0.0.1:{closed_port} \\(from --address\\)"):
        with jobs_client(f"http://127.0.0.1:{closed_port}"):
            pass


def test_submit_checks_the_spec_before_the_cluster(clean_env, write_spec, quickstart, closed_port):
    quickstart["train"]["epochs"] = 0
    args = jobparser().parse_args(["submit", str(write_spec(quickstart)), "--address", f"http://127.0.0.1:{closed_port}"])
    with pytest.raises(SpecError, match="train.epochs"):
        args.command(args)


def test_job_commands_parse():
    parser = jobparser()
    submit = parser.parse_args(["submit", "search_spaces/quickstart.yaml", "--no-wait", "--address", "http://head:8265"])
    assert (submit.spec, submit.no_wait, submit.pip, submit.address) == ("search_spaces/quickstart.yaml", True, False, "http://head:8265")
    logs = parser.parse_args(["jobs", "logs", "quickstart-1", "--follow"])
    assert (logs.job_id, logs.follow, logs.address) == ("quickstart-1", True, None)
    for action in ("list", "status x", "stop x"):
        assert callable(parser.parse_args(["jobs", *action.split()]).command)


@pytest.mark.parametrize(
    ("url", "token", "insecure", "refused"),
    [
        ("http://10.0.0.9:8265", "t0k3n", False, True),
        ("http://head.example.com:8265", "t0k3n", False, True),
        ("http://10.0.0.9:8265", "t0k3n", True, False),
        ("https://10.0.0.9:8265", "t0k3n", False, False),
        ("http://127.0.0.1:8265", "t0k3n", False, False),
        ("http://localhost:8265", "t0k3n", False, False),
        ("http://[::1]:8265", "t0k3n", False, False),
        ("http://10.0.0.9:8265", None, False, False),
    ],
)
def test_the_token_travels_in_clear_only_on_loopback_or_when_told(url, token, insecure, refused):
    if refused:
        with pytest.raises(JobError, match=f"refusing to send the Ray auth token over plain http to {url}.*--insecure"):
            check_transport(url, token, insecure)
    else:
        check_transport(url, token, insecure)


def test_jobs_refuse_a_remote_http_address_before_connecting(clean_env):
    clean_env.setenv("RAY_AUTH_TOKEN", "t0k3n")
    args = jobparser().parse_args(["jobs", "list", "--address", "http://192.0.2.7:8265"])  # TEST-NET: nothing there
    with pytest.raises(JobError, match="refusing to send the Ray auth token"):
        args.command(args)
    assert jobparser().parse_args(["jobs", "list", "--address", "http://192.0.2.7:8265", "--insecure"]).insecure


def test_a_token_file_readable_by_others_is_made_private(clean_env, tmp_path):
    token_file = tmp_path / ".ray" / "auth_token"
    token_file.parent.mkdir()
    token_file.write_text("home-token\n")
    token_file.chmod(0o644)  # as Ray writes it
    assert find_auth_token() == ("home-token", "~/.ray/auth_token")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_a_tracking_uri_with_credentials_is_not_put_in_the_jobs_environment(clean_env, quickstart):
    clean_env.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example.com")
    with pytest.raises(JobError, match="carries a user name or password.*MLFLOW_TRACKING_USERNAME") as caught:
        submission_tracking_uri(parse_spec(quickstart))
    assert "s3cret" not in str(caught.value)
