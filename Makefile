# The two commands a fresh clone needs: `make train` (the main job) and `make test` (the suite).
# Both install what they need into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A CPU build of PyTorch where no NVIDIA GPU is present; pip picks the CUDA build otherwise.
TORCH  ?= torch==2.13.0
SHARED_DATA := ../shared/datasets/cifar10-train-jpeg.tar.gz
# Offline default: the shared JPEG copy of CIFAR-10 when it is there; else the official download.
DATA   ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),cifar10)
EPOCHS ?= 10
OUT    ?= runs/lenet5-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install train test test-deps testbed clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,cloud,pretrained,export]"
	touch $@

train: install
	$(BIN)/tenfold train --data $(DATA) --epochs $(EPOCHS) --out $(OUT)

# The cloud tests' "instance" is a real OpenSSH server on 127.0.0.1 (with rsync); the report is checked in a real
# headless Chromium (with its matching chromedriver). Install them from Debian where we can.
test-deps:
	@if [ ! -x /usr/sbin/sshd ] || ! command -v rsync >/dev/null || ! command -v chromium >/dev/null \
	     || ! command -v chromedriver >/dev/null || ! command -v g++ >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      openssh-server rsync chromium chromium-driver g++ >/dev/null; \
	  else echo "note: no sshd/rsync/chromium/g++ and no root apt-get: the tests that need them will be skipped"; fi; \
	fi

# Where the kernel allows it, the suite runs in a network namespace of its own with only loopback: a test that
# reaches for any address but 127.0.0.1 then fails here instead of leaving the machine.
test: install test-deps
	@if command -v ip >/dev/null && unshare --net true 2>/dev/null; then \
	  echo "running the tests with only loopback networking (unshare --net)"; \
	  unshare --net sh -c 'ip link set lo up && exec $(BIN)/python -m pytest -q -n 2'; \
	else \
	  $(BIN)/python -m pytest -q -n 2; \
	fi

# The cloud test bed from a shell (moto as AWS, a local sshd as the instance): see tests/cloud_testbed.py.
testbed: install test-deps
	$(BIN)/python tests/cloud_testbed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
