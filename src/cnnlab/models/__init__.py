"""Models: the architectures params.yaml can name (registry.py), their cost (complexity.py), and backbones."""
