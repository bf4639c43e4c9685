"""The backends: engines that implement the contract of ``streamlog.api``.

``local`` is the embedded engine (a directory of segment files and an LMDB
environment). Each backend is a sibling folder; the views run unchanged on
any of them.
"""
