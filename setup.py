"""The one compiled part: app/audit/_rowhash.c, the common case of `sbt audit verify`'s row check.

Optional: where there is no C compiler or no OpenSSL headers the install goes on without it, and
verification takes the pure-Python path (same answers, slower; app/audit/rowcheck.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("app.audit._rowhash", ["app/audit/_rowhash.c"], libraries=["crypto"], optional=True,
              extra_compile_args=["-O2"]),
])
