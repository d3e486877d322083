# hyperplane developer targets.
#   make build   build the Cython extension in place (hyperplane/_core*.so)
#   make test    build, then run the whole test suite
#   make asan    build the extension with AddressSanitizer into build/asan and run the parser and
#                capture fuzz tests, the C flow table, policy, port-pool and LPM tests and the
#                core/reference differential tests against it (the ASan _core is the one
#                imported; the parser fuzz test checks it)
#   make clean   remove build products

PYTHON ?= python3
PYTEST_ARGS ?=
ASAN_DIR := build/asan
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
ASAN_TESTS ?= tests/property/test_parser_fuzz.py tests/unit/test_core_parse.py tests/unit/test_checksum.py \
	tests/property/test_fuzz_capture.py tests/unit/test_io_scan.py tests/unit/test_core_flow.py \
	tests/unit/test_core_policy.py tests/unit/test_core_ports.py tests/unit/test_core_lpm.py \
	tests/property/test_differential.py tests/unit/test_core_regressions.py tests/scenarios/test_behaviours.py \
	tests/unit/test_core_flowlog.py tests/scenarios/test_flow_log_stream.py tests/unit/test_core_rewrite.py \
	tests/unit/test_core_open.py

.PHONY: build test asan clean

build:
	$(PYTHON) setup.py -q build_ext --inplace

test: build
	$(PYTHON) -m pytest $(PYTEST_ARGS)

# The ASan build goes to its own build dir next to a copy of the Python sources, and the tests run
# from that dir, so `import hyperplane` finds the copy and its ASan _core first (not the in-place
# build). HYPERPLANE_EXPECT_CORE makes the tests fail unless _core was loaded from there and
# ASan is in the process. PYTHONMALLOC=malloc lets ASan see Python's own allocations too;
# --capture=sys leaves fd 2 alone so an ASan report (which aborts the run) is printed.
asan:
	rm -rf $(ASAN_DIR) build/asan-temp
	HYPERPLANE_SANITIZE=address $(PYTHON) setup.py -q build_ext --force \
		--build-lib $(ASAN_DIR) --build-temp build/asan-temp
	$(PYTHON) -c "import shutil; shutil.copytree('hyperplane', '$(ASAN_DIR)/hyperplane', \
		ignore=shutil.ignore_patterns('*.so', '__pycache__'), dirs_exist_ok=True)"
	cd $(ASAN_DIR) && \
		LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONMALLOC=malloc \
		HYPERPLANE_EXPECT_CORE=$(CURDIR)/$(ASAN_DIR)/hyperplane HYPERPLANE_EXPECT_ASAN=1 \
		$(PYTHON) -m pytest -p no:cacheprovider --capture=sys --rootdir=$(CURDIR) \
		$(addprefix $(CURDIR)/,$(ASAN_TESTS)) $(PYTEST_ARGS)

clean:
	rm -rf build ext/_core.c hyperplane/_core*.so
