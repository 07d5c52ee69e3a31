# ouro: looped language models on ordinary machines.
#
#   make            build libouro.a and the programs into bin/
#   make test       unit tests, differential tests against the reference,
#                   shell tests of the programs, the fuzz corpora replayed
#   make check      make test, then all of it again built with
#                   AddressSanitizer, UBSan and LeakSanitizer (in
#                   build-san/, bin-san/)
#   make CFLAGS=... your flags after the build's own (-O3 -march=native
#                   and the like), CPPFLAGS and LDFLAGS likewise
#   make SANITIZE=1 build with AddressSanitizer and UBSan (into build-san/
#                   and bin-san/ unless BUILD and BIN say otherwise)
#   make DEBUG=1    no optimisation, full debug info
#   make fuzz       run the libFuzzer harnesses (FUZZ_SECONDS each; clang)
#   make valgrind   chosen shell tests with every program under valgrind

CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := openblas jansson libutf8proc zlib libpcre2-8

# The libraries the build needs, each named when pkg-config cannot find it
# (scripts/install-deps.sh installs them); not checked for clean.
ifeq ($(filter clean,$(MAKECMDGOALS)),)
MISSING := $(strip $(foreach p,$(PKGS),$(if $(shell pkg-config --exists $(p) && echo y),,$(p))))
ifneq ($(MISSING),)
$(error pkg-config finds no $(MISSING): run scripts/install-deps.sh)
endif
endif

# CFLAGS, CPPFLAGS and LDFLAGS are the user's (make CFLAGS='-O3 -march=native'
# keeps everything below); the flags the build needs are in OURO_CFLAGS,
# which comes first so that a user's -O or -f flag wins, and the build
# modes' flags (DEBUG, SANITIZE) in MODE_CFLAGS, which come last.
CFLAGS  ?= -O2 -g
OURO_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
	       -pthread -Ilibouro $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm -pthread
MODE_CFLAGS :=
MODE_LDFLAGS :=

ifeq ($(DEBUG),1)
MODE_CFLAGS += -O0
endif
ifeq ($(SANITIZE),1)
MODE_CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
	       -fno-sanitize-recover=all
MODE_LDFLAGS += -fsanitize=address,undefined
BUILD   ?= build-san
BIN     ?= bin-san
endif
# Where objects, the library and unit tests go (BUILD), and the programs (BIN).
BUILD   ?= build
BIN     ?= bin

# Where the programs find the bundled model when -m and $OURO_MODEL are unset.
DEFAULT_MODEL ?= $(CURDIR)/models/ouro-kjv-tiny
OURO_CFLAGS += -DOURO_DEFAULT_MODEL='"$(DEFAULT_MODEL)"'

# Everything a compile sees, in that order; every compile also writes the
# headers it read into $(BUILD)/dep/, so a changed header rebuilds exactly
# what includes it.
ALL_CFLAGS  = $(OURO_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(MODE_CFLAGS)
ALL_LDFLAGS = $(LDFLAGS) $(MODE_LDFLAGS)
DEPFLAGS    = -MMD -MP -MF $(BUILD)/dep/$(subst /,_,$@).d

# libouro/*.h is the public interface (but internal.h), libouro/*/ the
# parts that implement it
LIB_SRC := $(wildcard libouro/*/*.c)
LIB_HDR := $(wildcard libouro/*.h libouro/*/*.h)
LIB_OBJ := $(LIB_SRC:libouro/%.c=$(BUILD)/libouro/%.o)
LIB     := $(BUILD)/libouro.a
CMD_SRC := $(wildcard cmd/ouro-*.c)
CLI_OBJ := $(BUILD)/cli.o
PROGS   := $(CMD_SRC:cmd/%.c=$(BIN)/%)
UNIT_SRC := $(wildcard tests/unit/*.c)
UNITS   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

all: $(PROGS)

units: $(UNITS)

$(BUILD)/libouro/%.o: libouro/%.c | $(BUILD)/dep
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

# the helpers every program shares (cmd/common/cli.c; cmd/ouro-*.c are the
# programs, one file each)
$(CLI_OBJ): cmd/common/cli.c | $(BUILD)/dep
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c -o $@ $<

$(BIN)/%: cmd/%.c $(CLI_OBJ) $(LIB) | $(BIN) $(BUILD)/dep
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -Icmd/common $(ALL_LDFLAGS) -o $@ $< $(CLI_OBJ) $(LIB) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB) | $(BUILD)/tests $(BUILD)/dep
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) $(ALL_LDFLAGS) -Itests/unit -o $@ $< $(LIB) $(LDLIBS)

$(BUILD)/tests $(BUILD)/dep $(BIN):
	mkdir -p $@

-include $(wildcard $(BUILD)/dep/*.d)

# The fuzz harnesses of tests/fuzz/ with a plain main() that replays their
# seed and crash corpora (tests/fuzz/NAME/), built like everything else.
FUZZ_SRC  := $(filter-out tests/fuzz/fuzz.c tests/fuzz/replay.c,$(wildcard tests/fuzz/*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_REPLAY := $(FUZZ_NAMES:%=$(BUILD)/fuzz-replay/%)

FUZZ_DEPS := tests/fuzz/fuzz.c $(wildcard tests/fuzz/*.h) $(LIB_HDR)

$(BUILD)/fuzz-replay/%: tests/fuzz/%.c tests/fuzz/replay.c $(FUZZ_DEPS) $(LIB) | $(BUILD)/fuzz-replay
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -DFUZZ_ROOT='"$(CURDIR)"' -o $@ \
		$< tests/fuzz/fuzz.c tests/fuzz/replay.c $(LIB) $(LDLIBS)

$(BUILD)/fuzz-replay:
	mkdir -p $@

fuzz-replay: $(FUZZ_REPLAY)
	@for f in $(FUZZ_NAMES); do \
		$(BUILD)/fuzz-replay/$$f tests/fuzz/$$f || { echo "FAIL fuzz replay $$f"; exit 1; }; \
	done

# Shell tests run TEST_JOBS at a time (tests/run prints them in order).
TEST_JOBS ?= 2

# The sanitizer pass: LeakSanitizer on, every report fatal (an abort, so
# that no test mistakes it for an exit status of its own); a failed
# allocation returns NULL, as without the sanitizers. t-install is
# left out there: it tests make install, which builds its own programs.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1:allocator_may_return_null=1 \
	   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1

ifeq ($(SANITIZE),1)
check: all $(UNITS) $(FUZZ_REPLAY)
	$(SAN_ENV) $(MAKE) --no-print-directory fuzz-replay
	$(SAN_ENV) PYTHON=$(PYTHON) OURO_BIN=$(CURDIR)/$(BIN) OURO_LIB=$(CURDIR)/$(LIB) OURO_TEST_JOBS=$(TEST_JOBS) \
		OURO_SKIP=t-install tests/run $(UNITS)
else
# make test: everything once, as built; make check: that, then all of it
# again under the sanitizers.
test: all $(UNITS) $(FUZZ_REPLAY)
	PYTHON=$(PYTHON) OURO_BIN=$(CURDIR)/$(BIN) OURO_LIB=$(CURDIR)/$(LIB) OURO_TEST_JOBS=$(TEST_JOBS) tests/run $(UNITS)
	$(MAKE) --no-print-directory fuzz-replay

check: test
	$(MAKE) --no-print-directory SANITIZE=1 BUILD=$(BUILD)-san BIN=$(BIN)-san check
endif

clean:
	rm -rf build bin build-san bin-san build-fuzz build-arm64 bin-arm64

.PHONY: all units test check clean fuzz-replay
.DELETE_ON_ERROR:

# ---- fuzzing --------------------------------------------------------------
#
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_JOBS=2] [FUZZ="st config ..."]
#
# Builds the harnesses of tests/fuzz/ with clang's libFuzzer, AddressSanitizer
# and UBSan into build-fuzz/ and runs each for FUZZ_SECONDS, FUZZ_JOBS at a
# time, at low priority (tests/fuzz/run-fuzz says where corpora and crashes
# go). The library is instrumented too.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 2
FUZZ         ?= $(FUZZ_NAMES)
FUZZ_CFLAGS  := -O1 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -pthread \
		-Ilibouro $(shell pkg-config --cflags $(PKGS)) -fno-omit-frame-pointer \
		-fsanitize=address,undefined -fno-sanitize-recover=all \
		-DOURO_DEFAULT_MODEL='"$(DEFAULT_MODEL)"'
FUZZ_LIB_OBJ := $(LIB_SRC:libouro/%.c=build-fuzz/libouro/%.o)

build-fuzz/libouro/%.o: libouro/%.c $(LIB_HDR)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build-fuzz/libouro.a: $(FUZZ_LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

build-fuzz/%: tests/fuzz/%.c $(FUZZ_DEPS) build-fuzz/libouro.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer \
		-DFUZZ_ROOT='"$(CURDIR)"' -o $@ $< tests/fuzz/fuzz.c build-fuzz/libouro.a $(LDLIBS)

fuzz: $(FUZZ:%=build-fuzz/%)
	tests/fuzz/run-fuzz build-fuzz $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ)

.PHONY: fuzz

# ---- valgrind ---------------------------------------------------------------
#
#   make valgrind [VALGRIND_TESTS="t-generate ..."]
#
# Runs the chosen shell tests with every program of bin/ under valgrind
# (memcheck, full leak check): tests/valgrind-run puts wrappers first on
# PATH; any error or leak fails the program with status 99 and the test
# with it, and is listed from the logs. Not part of check: it takes minutes.

VALGRIND_TESTS ?= t-forward-errors t-generate t-quantize t-dump t-eval-errors t-pipes t-limits

valgrind: all
	tests/valgrind-run $(CURDIR)/$(BIN) $(VALGRIND_TESTS)

.PHONY: valgrind

# ---- install ------------------------------------------------------------
#
#   make install [PREFIX=/usr/local] [DESTDIR=]    make uninstall
#
# Installs the programs, libouro.a with its public headers (under
# include/ouro/: ouro.h and what it includes, tokenizer.h, ...) and a pkg-config file, the man pages and the bundled model
# under PREFIX/share/ouro/models/. The installed programs and library look
# for the model there, not in this tree: they are linked in build/install/
# against a libouro.a whose model.o is compiled with that directory as
# OURO_DEFAULT_MODEL, and rebuilt when PREFIX changes. DESTDIR only stages
# the files (for packaging); the paths compiled in are those under PREFIX.

PREFIX  ?= /usr/local
DESTDIR ?=
VERSION ?= 0.1.0
INSTALL ?= install
BINDIR  := $(PREFIX)/bin
LIBDIR  := $(PREFIX)/lib
INCDIR  := $(PREFIX)/include/ouro
MANDIR  := $(PREFIX)/share/man
DATADIR := $(PREFIX)/share/ouro
MODEL_NAME := ouro-kjv-tiny
# the headers of libouro/ but internal.h (those of its folders are internal)
PUBLIC_HEADERS := $(filter-out %internal.h,$(wildcard libouro/*.h))
MAN_PAGES := $(wildcard man/*.[0-9])
MODEL_FILES := $(wildcard models/$(MODEL_NAME)/*)
INST_LIB   := build/install/libouro.a
INST_PROGS := $(CMD_SRC:cmd/%.c=build/install/bin/%)

# The compiled-in model directory of the installed build; rewritten only
# when it changes, so that a new PREFIX relinks and an old one does not.
build/install/datadir: FORCE | build/install/bin
	@echo '$(DATADIR)/models/$(MODEL_NAME)' | cmp -s - $@ || \
		echo '$(DATADIR)/models/$(MODEL_NAME)' >$@

build/install/model.o: libouro/model/model.c build/install/datadir $(LIB_HDR)
	$(CC) $(ALL_CFLAGS) -UOURO_DEFAULT_MODEL \
		-DOURO_DEFAULT_MODEL='"$(DATADIR)/models/$(MODEL_NAME)"' -c -o $@ $<

$(INST_LIB): $(LIB) build/install/model.o
	cp $(LIB) $@.tmp
	cd build/install && ar rs libouro.a.tmp model.o
	mv $@.tmp $@

build/install/bin/%: cmd/%.c cmd/common/cli.c cmd/common/cli.h $(INST_LIB) $(LIB_HDR)
	$(CC) $(ALL_CFLAGS) -Icmd/common $(ALL_LDFLAGS) -o $@ $< cmd/common/cli.c $(INST_LIB) $(LDLIBS)

build/install/bin:
	mkdir -p $@

build/install/ouro.pc: libouro/ouro.pc.in build/install/datadir
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@REQUIRES@|$(PKGS)|g' libouro/ouro.pc.in >$@

install: $(INST_PROGS) $(INST_LIB) build/install/ouro.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7 \
		$(DESTDIR)$(DATADIR)/models/$(MODEL_NAME)
	$(INSTALL) -m 755 $(INST_PROGS) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 644 $(INST_LIB) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 644 build/install/ouro.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	$(INSTALL) -m 644 $(PUBLIC_HEADERS) $(DESTDIR)$(INCDIR)/
	for p in $(MAN_PAGES); do \
		$(INSTALL) -m 644 $$p $(DESTDIR)$(MANDIR)/man$${p##*.}/ || exit 1; \
	done
	$(INSTALL) -m 644 $(MODEL_FILES) $(DESTDIR)$(DATADIR)/models/$(MODEL_NAME)/

uninstall:
	rm -f $(CMD_SRC:cmd/%.c=$(DESTDIR)$(BINDIR)/%) $(DESTDIR)$(LIBDIR)/libouro.a \
		$(DESTDIR)$(LIBDIR)/pkgconfig/ouro.pc \
		$(PUBLIC_HEADERS:libouro/%=$(DESTDIR)$(INCDIR)/%) \
		$(foreach p,$(MAN_PAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(p)))/$(notdir $(p))) \
		$(MODEL_FILES:models/%=$(DESTDIR)$(DATADIR)/models/%)
	-rmdir $(DESTDIR)$(INCDIR) $(DESTDIR)$(DATADIR)/models/$(MODEL_NAME) \
		$(DESTDIR)$(DATADIR)/models $(DESTDIR)$(DATADIR) 2>/dev/null

FORCE:

.PHONY: install uninstall FORCE

# make bench: speed against this machine's ceilings and PyTorch (scripts/bench;
# BENCH_ARGS=--small for a quick run, BENCH_NEW=16 for shorter engine runs,
# which the script reads from the environment). Not part of check.
$(BUILD)/bench-kernels: scripts/bench-kernels.c $(CLI_OBJ) $(LIB)
	@mkdir -p $(BUILD)
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -Icmd/common $(ALL_LDFLAGS) -o $@ $< $(CLI_OBJ) $(LIB) $(LDLIBS)

bench: all $(BUILD)/bench-kernels
	$(PYTHON) scripts/bench --bin $(BIN) --kernels $(BUILD)/bench-kernels $(BENCH_ARGS)

# make bench-spec: the speculative-decoding section of make bench alone (a few minutes)
bench-spec: all
	$(PYTHON) scripts/bench --bin $(BIN) --spec $(BENCH_ARGS)

.PHONY: bench bench-spec
