"""orchestrator.config.credentials: user names and passwords in URIs are hidden wherever text is shown or stored."""

import pytest

from orchestrator.config.credentials import has_credentials, redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://alice:s3cret@mlflow.example.com:5000", "https://***@mlflow.example.com:5000"),
        ("tracking: {uri: 'http://bob@host/x'}", "tracking: {uri: 'http://***@host/x'}"),
        ("a https://u:p@one and postgresql://u:p@two/db", "a https://***@one and postgresql://***@two/db"),
        ("sqlite:///runs@2026/mlflow.db", "sqlite:///runs@2026/mlflow.db"),
        ("no uri here: user@example.com", "no uri here: user@example.com"),
    ],
)
def test_redact_hides_user_and_password_only(text, shown):
    assert redact(text) == shown


def test_has_credentials():
    assert has_credentials("https://alice:s3cret@mlflow.example.com")
    assert has_credentials("http://alice@mlflow.example.com")
    assert not has_credentials("http://mlflow.example.com:5000")
    assert not has_credentials("sqlite:///mlflow.db")
