"""Every environment variable tenfold reads, in one place: the name, what it changes, and who sets it.

The agent on a cloud instance (tenfold/cloud/agent.py) runs with the standard library only, away from this
package: the two it reads at first boot, TENFOLD_USER and TENFOLD_ROOT, are listed here too.
"""

HOME = "TENFOLD_HOME"                  # tenfold's cache and state (decoded data, kernels, keys, ledger); ~/.cache/tenfold
DEBUG = "TENFOLD_DEBUG"                # 1: tracebacks (with what caused them) as well as the one-line error
KERNELS = "TENFOLD_KERNELS"            # 0: never the fused C kernels; 1: wherever they apply (nothing measured)
CPU_ISA = "TENFOLD_CPU_ISA"            # avx2 | avx512 | generic: the ISA the C kernels are built for
MALLOPT = "TENFOLD_MALLOPT"            # 0: leave glibc's allocator settings alone
CIFAR10_URL = "TENFOLD_CIFAR10_URL"    # a mirror of the CIFAR-10 archive (the tests' local server)
HOST = "TENFOLD_HOST"                  # the default ssh host of `tenfold cloud run | logs | ...` when no NAME is given
REMOTE_DIR = "TENFOLD_REMOTE_DIR"      # tenfold's folder on the host (default ~/tenfold)
CHECKIP_URL = "TENFOLD_CHECKIP_URL"    # where `cloud up` asks for this machine's public address
AGENT_OVERRIDES = "TENFOLD_AGENT_OVERRIDES"  # JSON on top of the agent's settings (the tests' harmless stop)
NOW = "TENFOLD_NOW"                    # ISO 8601: the clock of `cloud cost` (the tests fix it)
WORKER_CONFIG = "TENFOLD_WORKER_CONFIG"  # set by `train --devices` for its workers: the resolved TrainConfig (JSON)
WORKER_ERRORS = "TENFOLD_WORKER_ERRORS"  # set by `train --devices`: the folder where each worker leaves its error
INSTANCE_TYPE = "TENFOLD_INSTANCE_TYPE"  # set by the agent for a job on a tenfold instance: its EC2 type
AGENT_USER = "TENFOLD_USER"            # the instance's login the agent runs as at first boot (default ubuntu)
AGENT_ROOT = "TENFOLD_ROOT"            # the agent's folder at first boot (default /home/$TENFOLD_USER/tenfold)
