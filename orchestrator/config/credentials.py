"""Keep credentials that ride in URIs (`https://user:password@host`) out of what is shown or stored."""

import re
from urllib.parse import urlsplit

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]+@")


def redact(text: str) -> str:
    """`text` with the user and password of every URI in it replaced by `***`.

    Args:
        text: a URI, a message or a whole file's text.

    Returns:
        The same text, credentials hidden.

    Example:
        >>> redact("uri: https://alice:s3cret@mlflow.example.com:5000")
        'uri: https://***@mlflow.example.com:5000'
    """
    return _USERINFO.sub(r"\g<scheme>***@", text)


def has_credentials(uri: str) -> bool:
    """Whether a URI carries a user name or password.

    Args:
        uri: the URI.

    Example:
        >>> has_credentials("https://alice:s3cret@mlflow.example.com"), has_credentials("sqlite:///mlflow.db")
        (True, False)
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.username is not None or parts.password is not None
