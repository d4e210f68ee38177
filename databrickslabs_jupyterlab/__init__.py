"""Connect a local JupyterLab to the driver of a Databricks cluster over SSH."""

try:
    from ._version import __version__
except ImportError:  # running from a source tree that was never built
    __version__ = "0.0.0.dev0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "databrickslabs-jupyterlab"}]


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    from .app import DatabricksLabsJupyterLab

    return [{"module": "databrickslabs_jupyterlab", "app": DatabricksLabsJupyterLab}]
