"""Ray clusters: the local or remote Ray connection, and the Jobs API client for submitted sweeps."""

