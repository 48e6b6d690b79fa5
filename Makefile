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

.PHONY: install train test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,cloud]"
	touch $@

train: install
	$(BIN)/tenfold train --data $(DATA) --epochs $(EPOCHS) --out $(OUT)

# Where the kernel allows it, the suite runs in a network namespace of its own with only loopback: a test that
# reaches for any address but 127.0.0.1 then fails here instead of leaving the machine.
test: install
	@if command -v ip >/dev/null && unshare --net true 2>/dev/null; then \
	  echo "running the tests with only loopback networking (unshare --net)"; \
	  unshare --net sh -c 'ip link set lo up && exec $(BIN)/python -m pytest -q'; \
	else \
	  $(BIN)/python -m pytest -q; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache
