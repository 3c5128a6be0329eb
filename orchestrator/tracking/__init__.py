"""MLflow: tags, filters, the sweep's parent run, the trials' child runs, the outbox that
survives an outage, and reading a stored sweep back."""

