"""The params model: params.yaml as typed, validated sections (see params.py for the whole file)."""
