"""``python -m databrickslabs_jupyterlab.commandkernel -f CONNECTION_FILE``: the local kernel of
a Command Execution API kernelspec (started by its provisioner, see ``provisioner``)."""

from __future__ import annotations

from ipykernel.kernelapp import IPKernelApp

from .kernel import CommandApiKernel


def main() -> None:
    IPKernelApp.launch_instance(kernel_class=CommandApiKernel)


if __name__ == "__main__":
    main()
