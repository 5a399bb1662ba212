"""Flower's minimal FedAvg ClientApp/ServerApp (the anchor of benchmarks/deployment.py)."""
