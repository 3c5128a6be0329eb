"""Values in MLflow search filter strings, quoted so that a quote inside them cannot break the filter.

MLflow's filter grammar has no escape character: a string is written between single quotes, or
between double quotes when it holds a single quote. A value holding both cannot be searched for.
"""


def quoted(value: str) -> str:
    """`value` as a string literal of an MLflow filter string.

    Args:
        value: the text to compare with, e.g. a tag value a user typed.

    Returns:
        The literal, quotes included.

    Raises:
        ValueError: the value holds both kinds of quote, which MLflow's grammar cannot express.

    Example:
        >>> quoted("name'x")
        '"name\\'x"'
        >>> f"tags.`accelsweep.sweep` = {quoted('quickstart')}"
        "tags.`accelsweep.sweep` = 'quickstart'"
    """
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both ' and \", which an MLflow filter string cannot quote")
