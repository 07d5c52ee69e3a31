# ouro: looped language models on ordinary machines.
#
#   make            build libouro.a and the programs into bin/
#   make check      unit tests, differential tests against the reference,
#                   shell tests of the programs
#   make SANITIZE=1 the same with AddressSanitizer and UBSan
#   make DEBUG=1    no optimisation, full debug info

CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := openblas jansson libutf8proc zlib libpcre2-8

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
MODEL_NAME := ouro-fixture
# every header of libouro but the internal ones (internal.h, tok_internal.h)
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

build/install/model.o: libouro/model.c build/install/datadir $(wildcard libouro/*.h)
	$(CC) $(CFLAGS) -UOURO_DEFAULT_MODEL \
		-DOURO_DEFAULT_MODEL='"$(DATADIR)/models/$(MODEL_NAME)"' -c -o $@ $<

$(INST_LIB): $(LIB) build/install/model.o
	cp $(LIB) $@.tmp
	cd build/install && ar rs libouro.a.tmp model.o
	mv $@.tmp $@

build/install/bin/%: cmd/%.c $(INST_LIB) $(wildcard libouro/*.h)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(INST_LIB) $(LDLIBS)

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
