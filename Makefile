# `make test` and `make demo` work on a fresh clone: each installs what is missing, then runs.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# The tested torch release; installing it first keeps pip from resolving a (CUDA) torch itself.
TORCH_VERSION := 2.13.0
STAMP := .make/installed-$(TORCH_VERSION)
SOURCES := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: install test demo bench cuda-check lint format lint-tools clean

install: $(STAMP)

$(STAMP): $(SOURCES)
	@$(PYTHON) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PIP) install torch==$(TORCH_VERSION)
	@$(PYTHON) -c "import ninja" 2>/dev/null || $(PIP) install ninja
	@$(PYTHON) -c "import wheel, setuptools" 2>/dev/null || $(PIP) install wheel setuptools
	$(PIP) install --no-build-isolation -e ".[test,bench,demo]"
	@mkdir -p .make && touch $@

test: install
	$(PYTHON) -m pytest -q tests

demo: install
	$(PYTHON) -m compress_kernels study
	$(PYTHON) -m compress_kernels sensitivity
	$(PYTHON) -m compress_kernels transformer

# torchao is an optional peer; --no-deps keeps pip from touching torch.
bench: install
	@$(PYTHON) -c "import torchao" 2>/dev/null || $(PIP) install --no-deps torchao==0.14.1 || true
	$(PYTHON) benchmarks/run_all.py

# Compile every CUDA kernel file for sm_80 and sm_90 without torch (no GPU needed): a kernel
# that does not compile never lands. .ci/run calls it where nvcc exists.
NVCC ?= $(shell command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)
CUDA_ARCH_FLAGS := -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90
cuda-check:
	@mkdir -p .make/cuda-check
	@set -e; for f in $(wildcard csrc/cuda/*.cu); do \
		echo "nvcc $$f"; \
		$(NVCC) -std=c++17 -O3 --threads 2 -Werror all-warnings -Icsrc/include $(CUDA_ARCH_FLAGS) -c $$f -o .make/cuda-check/$$(basename $$f .cu).o; \
	done

# Lint: ruff (rules and line length in pyproject.toml) on the Python, clang-format (.clang-format)
# on csrc/. `make lint` only checks and fails on any finding; `make format` rewrites: ruff's safe
# fixes (import order, pyupgrade) and clang-format in place. Findings without an automatic fix
# (a line over 120 columns, say) stay for a person. Both install their pinned tools when missing.
RUFF_VERSION := 0.16.9
CLANG_FORMAT_VERSION := 23.1.1
CXX_SOURCES = $(shell find csrc -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
# The clang-format binary inside the pinned wheel (not whatever clang-format is on PATH).
CLANG_FORMAT = $(shell $(PYTHON) -c "import clang_format; print(clang_format.get_executable('clang-format'))")
installed_version = $(PYTHON) -c "import importlib.metadata as m, sys; sys.exit(m.version('$(1)') != '$(2)')" 2>/dev/null

lint-tools:
	@$(call installed_version,ruff,$(RUFF_VERSION)) || $(PIP) install "ruff==$(RUFF_VERSION)"
	@$(call installed_version,clang-format,$(CLANG_FORMAT_VERSION)) || $(PIP) install "clang-format==$(CLANG_FORMAT_VERSION)"

lint: lint-tools
	@status=0; \
	echo "ruff check ."; $(PYTHON) -m ruff check . || status=1; \
	echo "clang-format --dry-run on csrc/"; $(CLANG_FORMAT) --dry-run -Werror $(CXX_SOURCES) || status=1; \
	exit $$status

# --exit-zero: findings without an automatic fix are listed, and clang-format still runs.
format: lint-tools
	$(PYTHON) -m ruff check --fix --exit-zero .
	$(CLANG_FORMAT) -i $(CXX_SOURCES)

clean:
	rm -rf build .make compress_kernels/_C*.so *.egg-info
