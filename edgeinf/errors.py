"""The project's exceptions: user errors carry a one-line message that names the fix."""


class EdgeinfError(Exception):
    """A user-facing error (bad input, missing file, corrupt package...).

    The CLI prints ``edgeinf: error: <message>`` and exits 1 without a traceback, so the
    message must say what is wrong and what to do, in one line.
    """


class MissingDependencyError(EdgeinfError, ImportError):
    """An optional dependency (torch, tensorrt, pycuda, matplotlib...) is not installed."""


class PackageError(EdgeinfError):
    """A package directory is missing, corrupt, tampered with or of a newer schema."""
