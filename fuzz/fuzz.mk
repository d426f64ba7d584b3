# fuzz — libFuzzer targets for the hand-written parsers (clang from Debian, with libclang-rt-dev).
# Each target is a plain LLVMFuzzerTestOneInput file, so AFL++ can build it too (afl-clang-fast
# + its libAFLDriver). Included by the Makefile; everything lands in build-fuzz/.
#
#   make fuzz-replay                  build with ASan+UBSan, run every corpus file of every target
#   make fuzz T=request S=600         fuzz one target for S seconds; new inputs go to build-fuzz/new/T,
#                                     crashes to build-fuzz/crash/T/ (nothing is written under fuzz/)
#   make fuzz T=guard_head KNOWN=1    the same, letting reported findings through (FUZZ_ALLOW_KNOWN)
#   make fuzz-merge T=request         add to fuzz/corpus/T only the new inputs that reach new edges
FUZZ_CC      ?= clang
FUZZ_B       := build-fuzz
FUZZ_TARGETS := guard_head guard_chunk request config usage_fuzz h1resp
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS   = $(CSTD) -O1 -g -fno-omit-frame-pointer $(WARN) -I$(LLHTTP_INC) -Isrc -Ifuzz $(PKG_CFLAGS) \
                $(FUZZ_SAN) -fsanitize=fuzzer-no-link -DFERRY_VERSION='"$(VERSION)"' $(FUZZ_EXTRA)
# The modules each target links (the others need libcurl; h1resp brings its own libuv loop).
FUZZ_LLOBJ   := $(FUZZ_B)/llhttp/llhttp.o $(FUZZ_B)/llhttp/api.o $(FUZZ_B)/llhttp/http.o
FUZZ_OBJ_guard_head  := $(FUZZ_B)/guard.o $(FUZZ_B)/headers.o
FUZZ_OBJ_guard_chunk := $(FUZZ_B)/guard.o $(FUZZ_B)/headers.o
FUZZ_OBJ_request     := $(FUZZ_B)/guard.o $(FUZZ_B)/headers.o $(FUZZ_B)/cors.o $(FUZZ_LLOBJ)
FUZZ_OBJ_config      := $(patsubst src/%.c,$(FUZZ_B)/%.o,$(wildcard src/config.c src/config_file.c src/headers.c))
FUZZ_OBJ_usage_fuzz  := $(FUZZ_B)/sse.o $(FUZZ_B)/usage.o $(FUZZ_B)/jsonedit.o
# h1resp runs the real client on a libuv loop; config.o only for the defaults (config_load).
FUZZ_OBJ_h1resp      := $(FUZZ_B)/h1client.o $(FUZZ_B)/buf.o $(FUZZ_B)/guard.o $(FUZZ_OBJ_config) $(FUZZ_LLOBJ)
FUZZ_OBJ     := $(sort $(foreach t,$(FUZZ_TARGETS),$(FUZZ_OBJ_$(t))))
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_B)/fuzz_%)

# objects are kept between builds (make would delete them as intermediates)
.SECONDARY: $(FUZZ_OBJ)
T            ?= request
S            ?= 60
FUZZ_ARGS    ?=
FUZZ_MAXLEN_guard_head  := 4096
FUZZ_MAXLEN_guard_chunk := 8192
FUZZ_MAXLEN_request     := 16384
FUZZ_MAXLEN_config      := 2048
FUZZ_MAXLEN_usage_fuzz  := 16384
FUZZ_MAXLEN_h1resp      := 8192

.PHONY: fuzz fuzz-build fuzz-replay fuzz-merge fuzz-clean

$(FUZZ_B)/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(FUZZ_B)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_B)/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(FUZZ_B)/llhttp
	$(FUZZ_CC) $(CSTD) -O1 -g -w -I$(LLHTTP_INC) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<

.SECONDEXPANSION:
$(FUZZ_B)/fuzz_%: fuzz/%.c fuzz/fuzz.h $$(FUZZ_OBJ_$$*)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ_$*) $(PKG_LIBS) -lm

# The same target with the reported, not yet fixed, findings let through (FUZZ_ALLOW_KNOWN), so
# that a long run digs past them: make fuzz T=guard_head KNOWN=1
$(FUZZ_B)/known/fuzz_%: fuzz/%.c fuzz/fuzz.h $$(FUZZ_OBJ_$$*)
	@mkdir -p $(FUZZ_B)/known
	$(FUZZ_CC) $(FUZZ_CFLAGS) -DFUZZ_ALLOW_KNOWN -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ_$*) $(PKG_LIBS) -lm

fuzz-build: $(FUZZ_BINS)

# Every corpus file once, under ASan+UBSan; the first failure stops with its log.
fuzz-replay: $(FUZZ_BINS)
	@failed=; for t in $(FUZZ_TARGETS); do \
	  n=$$(find fuzz/corpus/$$t -type f | wc -l); bad=0; \
	  if ! find fuzz/corpus/$$t -type f -print0 | sort -z | \
	       xargs -0 $(FUZZ_B)/fuzz_$$t -timeout=10 >$(FUZZ_B)/replay.log 2>&1; then \
	    for f in $$(find fuzz/corpus/$$t -type f | sort); do \
	      if ! $(FUZZ_B)/fuzz_$$t -timeout=10 $$f >$(FUZZ_B)/replay.log 2>&1; then \
	        bad=$$((bad + 1)); \
	        grep -A1 -e 'fuzz invariant' -e 'ERROR:' -e 'SUMMARY:' $(FUZZ_B)/replay.log | head -6; \
	        echo "fuzz-replay: $$t: FAILED on $$f"; \
	      fi; \
	    done; \
	  fi; \
	  echo "fuzz-replay: $$t: $$n inputs, $$bad failed"; \
	  [ $$bad = 0 ] || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz-replay: failures in:$$failed"; exit 1; fi

FUZZ_BIN = $(FUZZ_B)/$(if $(KNOWN),known/)fuzz_$(T)
fuzz: $(FUZZ_BIN)
	@mkdir -p $(FUZZ_B)/new/$(T) $(FUZZ_B)/crash/$(T)
	$(if $(KNOWN),LSAN_OPTIONS=suppressions=fuzz/known.supp:print_suppressions=0) nice -n 10 $(FUZZ_BIN) -dict=fuzz/$(T).dict -max_total_time=$(S) -timeout=10 -print_final_stats=1 \
	  -max_len=$(FUZZ_MAXLEN_$(T)) -artifact_prefix=$(FUZZ_B)/crash/$(T)/ $(FUZZ_ARGS) \
	  $(FUZZ_B)/new/$(T) fuzz/corpus/$(T)

# Edges only (-use_counters=0): an input is kept when it reaches code the corpus does not, not
# merely more often; that keeps the committed corpus to a few hundred files.
# Inputs that hit a reported finding crash the merge and stay out; their artifacts go to
# $(FUZZ_B)/crash/T, not the working directory.
fuzz-merge: $(FUZZ_B)/fuzz_$(T)
	@mkdir -p $(FUZZ_B)/crash/$(T)
	$(FUZZ_B)/fuzz_$(T) -merge=1 -use_counters=0 -max_len=$(FUZZ_MAXLEN_$(T)) \
	  -artifact_prefix=$(FUZZ_B)/crash/$(T)/ fuzz/corpus/$(T) $(FUZZ_B)/new/$(T)

fuzz-clean:
	rm -rf $(FUZZ_B)
