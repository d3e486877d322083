"""hyperplane: a packet-by-packet emulator of the AWS Lambda Hyperplane ENI dataplane."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_vpc", "load_vpc_documents", "Engine", "EngineOptions", "Sandbox", "__version__"]


def __getattr__(name):  # lazy: importing the package stays cheap and never needs the extension
    if name in ("load_vpc", "load_vpc_documents"):
        import hyperplane.vpc.loader as loader

        return getattr(loader, name)
    if name in ("Engine", "EngineOptions", "Sandbox"):
        import hyperplane.engine as engine

        return getattr(engine, name)
    raise AttributeError(name)
