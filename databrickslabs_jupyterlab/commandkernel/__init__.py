"""A Jupyter kernel without SSH: cells run in one Command Execution API (REST 1.2) Python
context on the cluster, through databricks-sdk's ``command_execution`` with the user's own
profile. Nothing runs on the driver but the cells (and a short prelude); the token stays in the
local processes that build the SDK client from the profile.

Parts:

* :mod:`.remote`: the blocking REST 1.2 calls (context, execute, status, cancel, destroy) and
  what a failure means (a lost context or a workspace that does not answer);
* :mod:`.render`: REST 1.2 results as Jupyter messages, and ``%sql``/``%md`` as the SSH kernel's
  idioms show them;
* :mod:`.kernel`: the ipykernel ``Kernel`` that runs locally (``python -m
  databrickslabs_jupyterlab.commandkernel``) and polls each command with an adaptive interval;
* :mod:`.provisioner`: the kernel provisioner (``databricks-command-provisioner``) that creates
  the context, starts the local kernel, destroys the context, and keeps the kernel board.
"""

from __future__ import annotations

PROVISIONER_NAME = "databricks-command-provisioner"
#: ``metadata.databricks.transport`` of such a kernelspec (and of the cluster's status).
TRANSPORT = "command-api"
#: The module the provisioner starts locally.
KERNEL_MODULE = "databrickslabs_jupyterlab.commandkernel"

__all__ = ["PROVISIONER_NAME", "TRANSPORT", "KERNEL_MODULE"]
