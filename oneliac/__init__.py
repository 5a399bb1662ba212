"""The documented import paths of the hospital SDK (re-exports of :mod:`oneliac_flwr.sdk`)."""
