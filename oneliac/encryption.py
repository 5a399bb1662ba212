"""``from oneliac.encryption import DifferentialPrivacy`` (see :mod:`oneliac_flwr.sdk.dp`)."""

from oneliac_flwr.sdk import DifferentialPrivacy, Release

__all__ = ["DifferentialPrivacy", "Release"]
