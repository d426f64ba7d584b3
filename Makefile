# ferry — build, test, run.  `make run` and `make test` are the two commands the README opens with.
CC      ?= cc
PKGS    := libuv libcurl openssl libfyaml sqlite3
LLHTTP_DIR ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
VERSION := 0.1.0

WARN    := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CSTD    := -std=c17 -D_GNU_SOURCE
OPT     ?= -O2 -g
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CFLAGS_ALL  = $(CSTD) $(OPT) $(WARN) -I$(LLHTTP_INC) -Isrc $(PKG_CFLAGS) -DFERRY_VERSION='"$(VERSION)"' $(EXTRA_CFLAGS)
LDLIBS_ALL  = $(PKG_LIBS) -lpthread $(EXTRA_LDFLAGS)

B       ?= build
SRC     := $(filter-out src/main.c,$(wildcard src/*.c))
OBJ     := $(SRC:src/%.c=$(B)/%.o)
LLOBJ   := $(B)/llhttp/llhttp.o $(B)/llhttp/api.o $(B)/llhttp/http.o
MOCKSRC := $(wildcard tests/mock/*.c)
UNITSRC := $(wildcard tests/unit/test_*.c)
UNITBIN := $(UNITSRC:tests/unit/%.c=$(B)/unit/%)

.PHONY: all run test unit e2e e2e-asan asan clang soak deps deps-test clean format
all: ferry tests/mock/mock

ferry: $(B)/ferry
	cp $< $@.tmp && mv -f $@.tmp $@

$(B)/ferry: $(B)/main.o $(OBJ) $(LLOBJ)
	$(CC) $(OPT) $(EXTRA_CFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(B)/%.o: src/%.c $(wildcard src/*.h) | $(B)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

# llhttp is Debian's generated C; it is not ours to warn about.
$(B)/llhttp/%.o: $(LLHTTP_DIR)/%.c | $(B)
	@mkdir -p $(B)/llhttp
	$(CC) $(CSTD) $(OPT) -w -I$(LLHTTP_INC) $(EXTRA_CFLAGS) -c -o $@ $<

$(B):
	@mkdir -p $(B)

tests/mock/mock: $(MOCKSRC) $(wildcard tests/mock/*.h) $(LLOBJ)
	$(CC) $(CFLAGS_ALL) -Itests/mock -o $@ $(MOCKSRC) $(LLOBJ) $(LDLIBS_ALL)

$(B)/unit/%: tests/unit/%.c $(OBJ) $(LLOBJ) $(wildcard tests/unit/*.h)
	@mkdir -p $(B)/unit
	$(CC) $(CFLAGS_ALL) -o $@ $< $(OBJ) $(LLOBJ) $(LDLIBS_ALL) -lcmocka

# ASan + UBSan build of everything, in its own tree.
asan:
	$(MAKE) B=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" build-asan/ferry

# The same sources must build warning-free with clang (-Werror).
clang:
	$(MAKE) B=build-clang CC=clang build-clang/ferry

deps:
	bash scripts/deps.sh build

deps-test:
	bash scripts/deps.sh test

run: deps ferry
	./ferry $(ARGS)

unit: $(UNITBIN)
	@set -e; for t in $(UNITBIN); do echo "== $$t"; $$t; done

e2e: ferry tests/mock/mock
	node --test --test-concurrency=1 tests/e2e/

e2e-asan: asan tests/mock/mock
	FERRY_BIN=build-asan/ferry FERRY_ASAN=1 node --test --test-concurrency=1 tests/e2e/

# Mixed traffic against the ASan build for S seconds (CI: 60; before a release: 1200).
S ?= 60
soak: asan tests/mock/mock
	FERRY_BIN=build-asan/ferry FERRY_ASAN=1 node tests/soak/soak.mjs $(S)

test: deps-test all
	$(MAKE) clang
	$(MAKE) unit
	$(MAKE) fuzz-replay
	$(MAKE) e2e
	$(MAKE) e2e-asan
	$(MAKE) soak S=60
	$(MAKE) bench-smoke

format:
	clang-format -i src/*.c src/*.h tests/mock/*.c tests/unit/*.c

clean:
	rm -rf build build-asan ferry tests/mock/mock

# Benchmark and fuzzing rules live beside their sources.
-include bench/bench.mk
-include fuzz/fuzz.mk
