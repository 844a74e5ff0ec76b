"""Stored runs and sweeps: the store, method x image x sigma sweeps, the metrics of the dashboard, Ray, the batch CLI
(`python -m certlib`), every download as bytes."""
