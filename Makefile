# finprobe: build, test and run.
#
#   make          libfinprobe.so/.a in build/, the extension in python/finprobe/
#   make test     install missing Debian packages, build, run every test
#   make probe    build and run the close-behaviour probe against a Lab
#   make bench    benchmarks that print ratios against a baseline (scapy, the kernel, the C floor, a sequential matrix)
#   make fmt      clang-format the C sources (make test checks them: fmt-check)

PY      ?= /usr/bin/python3
CC      ?= gcc
BUILD   := build
PKGS    := libmnl libnftables libpcap

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
CFLAGS  ?= -O2 -g
FPFLAGS := -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) -Ic/include -Ic/src
LDLIBS  := -lmnl -lnftables -lpcap

LIB_SRCS  := $(sort $(wildcard c/src/*.c))
LIB_OBJS  := $(LIB_SRCS:c/src/%.c=$(BUILD)/obj/%.o)
ASAN_OBJS := $(LIB_SRCS:c/src/%.c=$(BUILD)/asan/%.o)
TEST_SRCS := $(sort $(wildcard c/tests/test_*.c))
TESTS     := $(TEST_SRCS:c/tests/%.c=$(BUILD)/tests/%)
ASAN_TESTS:= $(TEST_SRCS:c/tests/%.c=$(BUILD)/asan-tests/%)
ASAN      := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

EXT_SRCS  := $(sort $(wildcard python/ext/*.c))
EXT_SUFFIX = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
PY_INC     = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_path("include"))')
EXT        = python/finprobe/_core$(EXT_SUFFIX)
# The same package with an extension built under ASan and UBSan.
ASAN_PY    = $(BUILD)/asan-python
ASAN_EXT   = $(ASAN_PY)/finprobe/_core$(EXT_SUFFIX)
LIBASAN    = $(shell $(CC) -print-file-name=libasan.so)
LIBUBSAN   = $(shell $(CC) -print-file-name=libubsan.so)

# Debian packages the build and the tests need (checked, installed if missing).
DEBS := build-essential clang clang-format libclang-rt-14-dev pkg-config libmnl-dev libnftables-dev libpcap-dev \
        python3 python3-dev python3-setuptools python3-pip python3-venv python3-pytest \
        python3-scapy python3-nbclient python3-nbformat python3-ipykernel python3-pytest-xdist \
        tcpdump tshark nginx-light iproute2 nftables procps util-linux librsvg2-bin \
        liblwip-dev golang-go golang-gvisor-gvisor-dev libslirp-dev libglib2.0-dev

# What runs again under the sanitizers: the suites that drive the C code hardest.
ASAN_PYTESTS := tests/test_segment.py tests/test_handshake.py tests/test_active_close.py \
                tests/test_passive_close.py tests/test_rst.py tests/test_probe.py tests/test_connection.py tests/test_model.py \
                tests/test_ext_safety.py tests/test_arguments.py tests/test_trace.py tests/test_trace_record.py \
                tests/test_lab_args.py tests/test_stack_lab.py tests/test_matrix.py tests/test_profile_rfc.py \
                tests/test_violations.py tests/test_fast_path.py tests/test_replay_script.py

# libFuzzer targets (clang): the codec and the state machine. make test gives
# each a short run; make fuzz FUZZ_SECONDS=600 a long one.
FUZZ_TARGETS := $(patsubst c/fuzz/%.c,$(BUILD)/fuzz/%,$(wildcard c/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 15
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                -std=c11 -D_GNU_SOURCE -Ic/include -Ic/src

# The one C dialect (.clang-format): every C file of the project.
FMT_SRCS := $(wildcard c/include/*.h c/src/*.[ch] c/tests/*.[ch] c/fuzz/*.c python/ext/*.[ch] stacks/*/*.c)

.PHONY: all deps test ctest ctest-asan pytest pytest-asan fuzz probe bench fmt fmt-check clean stacks matrix-svg
all: $(BUILD)/libfinprobe.so $(BUILD)/libfinprobe.a $(EXT)

deps:
	@missing=$$(for p in $(DEBS); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing missing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BUILD)/obj/%.o: c/src/%.c c/include/finprobe.h $(wildcard c/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FPFLAGS) -c $< -o $@

$(BUILD)/asan/%.o: c/src/%.c c/include/finprobe.h $(wildcard c/src/*.h)
	@mkdir -p $(dir $@)
	$(CC) -O1 -g $(ASAN) $(FPFLAGS) -c $< -o $@

$(BUILD)/libfinprobe.a: $(LIB_OBJS)
	ar rcs $@ $^

$(BUILD)/libfinprobe.so: $(LIB_OBJS) c/libfinprobe.map
	$(CC) -shared -Wl,--version-script=c/libfinprobe.map -o $@ $(LIB_OBJS) $(LDLIBS)

$(BUILD)/tests/%: c/tests/%.c $(BUILD)/libfinprobe.a c/tests/check.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(FPFLAGS) $< -o $@ $(BUILD)/libfinprobe.a $(LDLIBS)

$(BUILD)/asan-tests/%: c/tests/%.c $(ASAN_OBJS) c/tests/check.h
	@mkdir -p $(dir $@)
	$(CC) -O1 -g $(ASAN) $(FPFLAGS) $< -o $@ $(ASAN_OBJS) $(LDLIBS)

$(EXT): $(EXT_SRCS) $(wildcard python/ext/*.h) $(BUILD)/libfinprobe.a
	$(CC) $(CFLAGS) $(FPFLAGS) -Wno-cast-function-type -Wno-unused-parameter -I$(PY_INC) -Ipython/ext -shared \
	    $(EXT_SRCS) -o $@ $(BUILD)/libfinprobe.a $(LDLIBS)

$(ASAN_EXT): $(EXT_SRCS) $(wildcard python/ext/*.h) $(ASAN_OBJS)
	@mkdir -p $(dir $@)
	$(CC) -O1 -g $(ASAN) $(FPFLAGS) -Wno-cast-function-type -Wno-unused-parameter -I$(PY_INC) -Ipython/ext \
	    -shared $(EXT_SRCS) -o $@ $(ASAN_OBJS) $(LDLIBS)

# Recipes (stacks/<name>/): small HTTP servers on user-space TCP stacks, the
# peers of stack Labs, each from Debian packages, one binary each, built by
# the rule in its stacks/<name>/build.mk.
STACK_BINS := $(patsubst stacks/%/build.mk,$(BUILD)/stacks/%-http,$(wildcard stacks/*/build.mk))
stacks: $(STACK_BINS)

include $(wildcard stacks/*/build.mk)  # after `all`, the default goal

$(BUILD)/fuzz/%: c/fuzz/%.c $(LIB_SRCS) c/include/finprobe.h $(wildcard c/src/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) $< c/src/segment.c c/src/tcb.c -o $@

fuzz: $(FUZZ_TARGETS)
	@for f in $(FUZZ_TARGETS); do \
	    mkdir -p $(BUILD)/corpus/$$(basename $$f); \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $(BUILD)/corpus/$$(basename $$f) \
	        2>$(BUILD)/fuzz/$$(basename $$f).log || { tail -40 $(BUILD)/fuzz/$$(basename $$f).log; exit 1; }; \
	    echo "$$(basename $$f): $$(grep -c . $(BUILD)/fuzz/$$(basename $$f).log) log lines, no crash in $(FUZZ_SECONDS) s"; \
	done

ctest: $(TESTS)
	@for t in $(TESTS); do $$t || exit 1; done

ctest-asan: $(ASAN_TESTS)
	@for t in $(ASAN_TESTS); do ASAN_OPTIONS=detect_leaks=1 $$t || exit 1; done

pytest: all stacks
	PYTHONPATH=python $(PY) -m pytest -q -p no:cacheprovider tests

# The Python suite once more over the sanitized extension (leaks are the
# interpreter's business: CPython keeps much alive until exit). PYTHONMALLOC=malloc:
# pymalloc reuses freed blocks itself, hiding a use-after-free from ASan. FINPROBE_STACKS:
# the recipes are in this tree's build/, not beside the sanitized copy of the package.
# --finprobe-cold-labs: no warm spare Lab made in a thread, for GCC 12's ASan allocator
# is not fork-safe: a subprocess forked while that thread allocated hung in malloc.
pytest-asan: $(ASAN_EXT) stacks
	rm -rf $(ASAN_PY)/finprobe/*.py $(ASAN_PY)/finprobe/profiles $(ASAN_PY)/finprobe/conformance
	cp python/finprobe/*.py $(ASAN_PY)/finprobe/ && cp -r python/finprobe/profiles python/finprobe/conformance $(ASAN_PY)/finprobe/
	LD_PRELOAD="$(LIBASAN) $(LIBUBSAN)" ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1 PYTHONMALLOC=malloc \
	    FINPROBE_STACKS=$(CURDIR)/$(BUILD)/stacks PYTHONPATH=$(ASAN_PY) $(PY) -m pytest -q -p no:cacheprovider --finprobe-cold-labs $(ASAN_PYTESTS)

test: deps
	$(MAKE) fmt-check
	$(MAKE) all
	$(MAKE) ctest
	$(MAKE) ctest-asan
	$(MAKE) fuzz
	$(MAKE) pytest-asan
	$(MAKE) pytest

probe: deps
	$(MAKE) all
	PYTHONPATH=python $(PY) -m finprobe probe

# The bare C floor and limit bench/lifecycle.py measures the Python API
# against: no finprobe library, raw frames on the Lab's packet socket.
$(BUILD)/floor $(BUILD)/limit: $(BUILD)/%: bench/%.c bench/wire.h
	@mkdir -p $(dir $@)
	$(CC) -O2 -std=c11 -D_GNU_SOURCE $(WARN) $< -o $@

bench: all $(BUILD)/floor $(BUILD)/limit
	PYTHONPATH=python $(PY) bench/codec.py
	PYTHONPATH=python $(PY) bench/lab.py
	PYTHONPATH=python $(PY) bench/lifecycle.py
	PYTHONPATH=python $(PY) bench/lab_fixture.py
	PYTHONPATH=python $(PY) bench/matrix.py
	PYTHONPATH=python $(PY) bench/hold.py

# The README's picture: the state x event matrix of Linux and the recipes side by side.
matrix-svg: all stacks
	PYTHONPATH=python $(PY) -m finprobe matrix --compare linux lwip gvisor slirp --svg docs/matrix.svg

fmt:
	clang-format -i $(FMT_SRCS)

fmt-check:
	@clang-format --dry-run --Werror $(FMT_SRCS) || \
	    { echo "fmt-check: C sources differ from .clang-format's dialect; make fmt rewrites them"; exit 1; }
	@echo "fmt-check: $(words $(FMT_SRCS)) C files in .clang-format's dialect"

clean:
	rm -rf $(BUILD) python/finprobe/_core*.so
