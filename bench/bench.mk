# bench/ — the benchmark of issue 3 (docs/performance.md).  Included by the top Makefile.
#   make bench         full run: REPS (default 6) repetitions, < 15 min, table in bench/results/latest.md
#   make bench-smoke   ~20 s harness check: tiny sizes, 1 repetition, fails on any relay error
#   make bench-instructions   callgrind: instructions per request, ferry and nginx (~1 min)
BENCH_B      := build/bench
BENCH_CFLAGS := -std=c17 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -I/usr/share/include/llhttp \
                $(shell pkg-config --cflags libuv openssl 2>/dev/null)
BENCH_LLOBJ  := $(BENCH_B)/llhttp/llhttp.o $(BENCH_B)/llhttp/api.o $(BENCH_B)/llhttp/http.o
BENCH_BINS   := $(BENCH_B)/upstream $(BENCH_B)/loadc

.PHONY: bench bench-smoke bench-instructions bench-tools bench-deps
bench-tools: $(BENCH_BINS)

bench-deps:
	bash scripts/deps.sh bench

$(BENCH_B)/llhttp/%.o: /usr/share/llhttp/%.c
	@mkdir -p $(BENCH_B)/llhttp
	$(CC) -std=c17 -O2 -w -I/usr/share/include/llhttp -c -o $@ $<

$(BENCH_B)/upstream: bench/upstream.c $(BENCH_LLOBJ)
	@mkdir -p $(BENCH_B)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_LLOBJ) $(shell pkg-config --libs openssl 2>/dev/null)

$(BENCH_B)/loadc: bench/loadc.c $(BENCH_LLOBJ)
	@mkdir -p $(BENCH_B)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_LLOBJ) $(shell pkg-config --libs libuv 2>/dev/null)

# 5000 streams need ~10000 descriptors in the relay: raise the soft limit (root may raise the hard one)
BENCH_ULIMIT := ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn)

bench: bench-deps ferry bench-tools
	$(BENCH_ULIMIT); node bench/run.mjs

bench-smoke: bench-deps ferry bench-tools
	$(BENCH_ULIMIT); node bench/run.mjs --smoke

bench-instructions: bench-deps ferry bench-tools
	bash bench/instructions.sh
