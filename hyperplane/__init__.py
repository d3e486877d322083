"""hyperplane: a packet-by-packet emulator of the AWS Lambda Hyperplane ENI dataplane."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_vpc", "__version__"]


def __getattr__(name):  # lazy: importing the package stays cheap and never needs the extension
    if name == "load_vpc":
        from hyperplane.vpc.loader import load_vpc

        return load_vpc
    if name in ("Engine", "EngineOptions", "Sandbox"):
        import hyperplane.engine as engine

        return getattr(engine, name)
    raise AttributeError(name)
