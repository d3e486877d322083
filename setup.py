"""Builds the Cython extension ``hyperplane._core`` from the sources in ``ext/``.

Set ``HYPERPLANE_SANITIZE=address`` to build it with AddressSanitizer (see ``make asan``).
"""
import os
import shutil

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_demo(build_py):
    """Ships the demo scenario kept in ``pcaps/demo`` (beside the script that makes it) as package
    data ``hyperplane/data/demo``, so ``hyperplane demo`` works from an installed package."""

    def run(self):
        super().run()
        src = os.path.join(HERE, "pcaps", "demo")
        if os.path.isdir(src):
            dst = os.path.join(self.build_lib, "hyperplane", "data", "demo")
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst)

extra_compile = ["-O3", "-std=c99", "-Wno-unused-function"]
extra_link: list[str] = []
if os.environ.get("HYPERPLANE_SANITIZE") == "address":
    extra_compile = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-std=c99"]
    extra_link = ["-fsanitize=address"]

extensions = [
    Extension(
        "hyperplane._core",
        sources=["ext/_core.pyx"],
        include_dirs=["ext", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=extra_compile,
        extra_link_args=extra_link,
    )
]

setup(
    cmdclass={"build_py": build_py_with_demo},
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
