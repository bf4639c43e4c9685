"""Build the Cython extension; a failed compile fails the install (no silent fallback)."""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("STREAMLOG_DEBUG") == "1"

directives = {"language_level": "3", "boundscheck": DEBUG, "wraparound": False, "cdivision": True}
macros = []
if DEBUG:
    directives.update({"linetrace": True, "binding": True})
    macros.append(("CYTHON_TRACE_NOGIL", "1"))

extensions = [
    Extension(
        "streamlog._ext",
        ["ext/_ext.pyx"],
        include_dirs=[numpy.get_include(), "ext"],
        define_macros=macros + [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O2"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives, annotate=DEBUG))
