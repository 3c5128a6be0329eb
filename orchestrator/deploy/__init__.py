"""Deploying a trial: the MLflow Model Registry, and the trust rules for rebuilding from a stored spec."""

