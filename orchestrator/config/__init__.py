"""The spec: its schema, the hardened YAML reading, the rules of `space`, the data and model pre-flight,
and the trial recipe a spec and a trial's choices make."""

