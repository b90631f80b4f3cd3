"""Datasets: raw files acquired per kind (kinds/), prepared tensors (prepared.py), and data on the training device."""
