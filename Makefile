# ouro: looped language models on ordinary machines.
#
#   make            build libouro.a and the programs into bin/
#   make check      unit tests, differential tests against the reference,
#                   shell tests of the programs
#   make SANITIZE=1 the same with AddressSanitizer and UBSan
#   make DEBUG=1    no optimisation, full debug info

CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := openblas jansson libutf8proc zlib

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter \
           -pthread -Ilibouro $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lm -pthread

ifeq ($(DEBUG),1)
CFLAGS  += -O0
endif
ifeq ($(SANITIZE),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
           -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Where the programs find the bundled model when -m and $OURO_MODEL are unset.
DEFAULT_MODEL ?= $(CURDIR)/models/ouro-fixture
CFLAGS  += -DOURO_DEFAULT_MODEL='"$(DEFAULT_MODEL)"'

LIB_SRC := $(wildcard libouro/*.c)
LIB_OBJ := $(LIB_SRC:libouro/%.c=build/libouro/%.o)
LIB     := build/libouro.a
CMD_SRC := $(wildcard cmd/*.c)
PROGS   := $(CMD_SRC:cmd/%.c=bin/%)
UNIT_SRC := $(wildcard tests/unit/*.c)
UNITS   := $(UNIT_SRC:tests/unit/%.c=build/tests/%)

all: $(PROGS)

build/libouro/%.o: libouro/%.c $(wildcard libouro/*.h) | build/libouro
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $^

bin/%: cmd/%.c $(LIB) $(wildcard libouro/*.h) | bin
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB) $(LDLIBS)

build/tests/%: tests/unit/%.c tests/unit/unit.h $(LIB) | build/tests
	$(CC) $(CFLAGS) $(LDFLAGS) -Itests/unit -o $@ $< $(LIB) $(LDLIBS)

build/libouro build/tests bin:
	mkdir -p $@

check: all $(UNITS)
	PYTHON=$(PYTHON) tests/run $(UNITS)

clean:
	rm -rf build bin

.PHONY: all check clean
.DELETE_ON_ERROR:
