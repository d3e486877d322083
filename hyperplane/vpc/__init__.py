"""The VPC model: AWS API responses loaded into validated, immutable objects (``load_vpc``), the
queries the dataplane asks of them, and the flat tables compiled for the core."""
from __future__ import annotations

from hyperplane.vpc.errors import ConfigError, ConfigWarning
from hyperplane.vpc.loader import load_vpc, load_vpc_documents
from hyperplane.vpc.model import VpcModel

__all__ = ["load_vpc", "load_vpc_documents", "ConfigError", "ConfigWarning", "VpcModel", "compile_model", "EXAMPLE_VPC"]


def __getattr__(name):  # numpy is imported only by those who compile
    if name == "compile_model":
        from hyperplane.vpc.compiled import compile_model

        return compile_model
    if name == "EXAMPLE_VPC":
        return example_vpc_path()
    raise AttributeError(name)


def example_vpc_path() -> str:
    """The folder of the bundled example export (``hyperplane/data/example-vpc``)."""
    import os

    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "example-vpc")
