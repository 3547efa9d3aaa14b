# Makefile: builds every pgd library, binary, test and benchmark into build/ (see README.md).
#   make            build everything (CPU; CUDA parts when nvcc and cudnn.h are found)
#   make test       install missing Debian packages, build, run every CUnit suite and integration test
#   make asan       the same tests under AddressSanitizer + UBSan (build/asan)
#   make fuzz       run each libFuzzer target for FUZZ_SECONDS (clang)
#   make bench      build the benchmarks (bench/README.md says how to run them)
#   make gpu-check  on a machine with a CUDA GPU: every GPU test and the PyTorch comparisons (docs/gpu.md)
#   make torch-check  the CPU backend against PyTorch, where torch is installed (docs/gpu.md)
#   make demo       the main job: synthesise slides, train PatchGD and GD on them, print a table
#   make deps       install the Debian packages the project needs, when missing

BUILD ?= build
CC ?= cc
ifeq ($(origin CC),default)
CC := gcc
endif

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE $(WARN) -pthread -fno-strict-aliasing -I. -Icommon
LDLIBS := -Wl,--as-needed -lopenblas -lopenslide -ltiff -lturbojpeg -lzmq -lpng -lz -lm -lrt -pthread
TEST_LDLIBS := -lcunit

CFLAGS_BASE = $(filter-out -fsanitize=% -fno-sanitize-recover=%,$(CFLAGS))
ifeq ($(SANITIZE),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# --- CUDA detection: nvcc under CUDA_HOME (default /usr/local/cuda), cudnn.h under CUDNN_HOME (when set),
# CUDA_HOME or /usr/include. cuDNN may live apart (CUDNN_HOME: Python's nvidia/cudnn, say), and so may cuBLAS
# and the CUDA runtime (CUDA_EXTRA_HOMES: more folders with include/ and lib/, e.g. CUDA 12's pip packages
# nvidia/cublas and nvidia/cuda_runtime); tests/gpu/env.sh finds and sets them (docs/gpu.md).
CUDA_HOME ?= /usr/local/cuda
CUDNN_HOME ?=
CUDA_EXTRA_HOMES ?=
NVCC := $(wildcard $(CUDA_HOME)/bin/nvcc)
CUDNN_H := $(firstword $(wildcard $(if $(CUDNN_HOME),$(CUDNN_HOME)/include/cudnn.h) $(CUDA_HOME)/include/cudnn.h \
                                  /usr/include/cudnn.h /usr/include/x86_64-linux-gnu/cudnn.h))
ifneq ($(and $(NVCC),$(CUDNN_H)),)
HAVE_CUDA := 1
CUDA_VERSION := $(shell $(NVCC) --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
CUDA_MSG := found: nvcc $(CUDA_VERSION) ($(NVCC)), cudnn.h ($(CUDNN_H))
else
HAVE_CUDA := 0
CUDA_MSG := not found (need $(CUDA_HOME)/bin/nvcc and cudnn.h; set CUDA_HOME, CUDNN_HOME or source tests/gpu/env.sh): \
            CPU-only build
endif
ifeq ($(MAKELEVEL),0)
ifeq ($(filter deps clean,$(MAKECMDGOALS)),)
$(info pgd: cuda $(CUDA_MSG))
endif
endif
CFLAGS += -DPGD_HAVE_CUDA=$(HAVE_CUDA)

# --- CUDA sources (trainer/*.cu -> libpgd_cuda.so), only when CUDA was found ----------------------------
# The CUDA backend is a shared library that the trainer loads when asked for the cuda device
# (trainer/cuda_load.c), so that every program starts without the CUDA libraries, which only it links.
# sm_80 (A100) and sm_90 (H100/H200) machine code, plus compute_90 PTX for newer GPUs. -fmad=false keeps our
# kernels' float arithmetic the CPU reference's (no fused multiply-add): the optimizer matches it to the bit.
# The library is never sanitized (SANITIZE=1 programs load it as it is).
CUDA_SRC := $(wildcard trainer/*.cu)
CUDA_LIB :=
ifeq ($(HAVE_CUDA),1)
CUDA_LIB := $(BUILD)/libpgd_cuda.so
CUDA_OBJ := $(patsubst %.cu,$(BUILD)/obj-pic/%.cu.o,$(CUDA_SRC))
CUDA_PIC := $(BUILD)/obj-pic/trainer/gpu_pool.o $(BUILD)/obj-pic/common/err.o
NVCC_ARCH ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90
NVCCFLAGS ?= -O2 -g -lineinfo
NVCCFLAGS += -std=c++17 $(NVCC_ARCH) -fmad=false -Werror all-warnings \
             -Xcompiler -fPIC,-Wall,-Wextra,-Werror,-Wno-unused-parameter,-fno-strict-aliasing \
             -D_GNU_SOURCE -DPGD_HAVE_CUDA=1 -I. -Icommon
ifneq ($(strip $(CUDNN_HOME) $(CUDA_EXTRA_HOMES)),)
NVCCFLAGS += $(addprefix -I,$(wildcard $(addsuffix /include,$(CUDNN_HOME) $(CUDA_EXTRA_HOMES))))
endif
# The library folder of each home (lib64, else lib), searched and put in the rpath in this order. A library
# whose plain name (libcudnn.so) is in none of them is linked by its first versioned name (-l:libcudnn.so.9):
# pip wheels ship only those. Not found at all: -lNAME, from the linker's default folders.
comma := ,
CUDA_LIB_DIRS := $(foreach h,$(CUDNN_HOME) $(CUDA_HOME) $(CUDA_EXTRA_HOMES),\
                   $(firstword $(wildcard $(h)/lib64 $(h)/lib)))
cuda_lib = $(if $(wildcard $(addsuffix /lib$(1).so,$(CUDA_LIB_DIRS))),-l$(1),$(or $(addprefix -l:,$(notdir \
             $(firstword $(sort $(wildcard $(addsuffix /lib$(1).so.[0-9]*,$(CUDA_LIB_DIRS))))))),-l$(1)))
CUDA_LDLIBS := $(addprefix -L,$(CUDA_LIB_DIRS)) $(addprefix -Wl$(comma)-rpath$(comma),$(CUDA_LIB_DIRS)) \
               $(call cuda_lib,cudnn) $(call cuda_lib,cublas) $(call cuda_lib,cudart) -lstdc++
endif
LDLIBS += -ldl

# --- sources ----------------------------------------------------------------------------------------
# common/*.c -> libpgd_common.a. For each process folder D: D/main.c is the pgd-D binary, D/X_main.c the
# pgd-X binary (a tool living beside the process it serves), and every other D/*.c goes into libpgd_D.a.
# tests/test_*.c are CUnit suites, bench/*.c benchmarks.
# In link order: a library may use those after it (trainer -> sampler -> loader -> zstore -> common).
PROCS := trainer sampler loader zstore
COMMON_SRC := $(wildcard common/*.c)
lib_src = $(filter-out $(1)/main.c $(1)/%_main.c,$(wildcard $(1)/*.c))
obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LIBS := $(foreach d,$(PROCS),$(if $(call lib_src,$(d)),$(BUILD)/libpgd_$(d).a)) $(BUILD)/libpgd_common.a
BINS := $(foreach d,$(PROCS),$(if $(wildcard $(d)/main.c),$(BUILD)/pgd-$(d)))
TOOL_SRC := $(foreach d,$(PROCS),$(wildcard $(d)/*_main.c))
BINS += $(foreach f,$(TOOL_SRC),$(BUILD)/pgd-$(patsubst %_main.c,%,$(notdir $(f))))
TEST_SRC := $(wildcard tests/test_*.c)
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
TEST_UTIL := $(call obj,tests/cunit_util.c)
GPU_TOOL_SRC := $(wildcard tests/gpu/*.c)
GPU_TOOLS := $(patsubst tests/gpu/%.c,$(BUILD)/tests/gpu/%,$(GPU_TOOL_SRC))
BENCH_SRC := $(wildcard bench/*.c)
BENCHES := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all test check asan fuzz bench deps clean demo gpu-check torch-check
.SECONDARY:
all: $(LIBS) $(CUDA_LIB) $(BINS) $(TESTS) $(GPU_TOOLS) $(BENCHES)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj-pic/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c $< -o $@

# The C files the CUDA library needs, compiled again as position-independent code without sanitizers.
$(BUILD)/obj-pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -fPIC -MMD -MP -c $< -o $@

$(CUDA_LIB): $(CUDA_OBJ) $(CUDA_PIC)
	$(CC) -shared -Wl,-Bsymbolic -Wl,--no-undefined $^ $(CUDA_LDLIBS) -lm -o $@

$(BUILD)/libpgd_common.a: $(call obj,$(COMMON_SRC))
	@rm -f $@
	ar rcs $@ $^

define proc_rules
$(BUILD)/libpgd_$(1).a: $(call obj,$(call lib_src,$(1)))
	@rm -f $$@
	ar rcs $$@ $$^
$(BUILD)/pgd-$(1): $(call obj,$(1)/main.c) $(LIBS)
	$(CC) $(LDFLAGS) $$< $(LIBS) $(LDLIBS) -o $$@
endef
$(foreach d,$(PROCS),$(eval $(call proc_rules,$(d))))
define tool_rule
$(BUILD)/pgd-$(patsubst %_main.c,%,$(notdir $(1))): $(call obj,$(1)) $(LIBS)
	$(CC) $(LDFLAGS) $$< $(LIBS) $(LDLIBS) -o $$@
endef
$(foreach f,$(TOOL_SRC),$(eval $(call tool_rule,$(f))))

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_UTIL) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(TEST_UTIL) $(LIBS) $(TEST_LDLIBS) $(LDLIBS) -o $@

# The comparison programs of make gpu-check (docs/gpu.md); built everywhere so that they always compile.
$(BUILD)/tests/gpu/%: $(BUILD)/obj/tests/gpu/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIBS) $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIBS) $(LDLIBS) -o $@

-include $(shell find $(BUILD)/obj $(BUILD)/obj-pic -name '*.d' 2>/dev/null)

# --- running ----------------------------------------------------------------------------------------
deps:
	@bash launch/deps.sh

test: deps
	@$(MAKE) --no-print-directory check

check: all
	@bash tests/run.sh $(BUILD)

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SANITIZE=1 check

bench: all

# Every GPU check in one command (docs/gpu.md): the GPU op suite, the allocator suite, the PyTorch
# comparisons and the demo on the GPU. Fails when the build has no CUDA or the machine no CUDA device: it is the explicit GPU command.
# check.sh builds (all) itself, so that it can name a missing library (tests/gpu/env.sh, fetch-deps.sh).
gpu-check:
	@HAVE_CUDA=$(HAVE_CUDA) MAKE='$(MAKE)' bash tests/gpu/check.sh $(BUILD)

# Our CPU backend against PyTorch (fp64 the reference) on ResNet50, MobileNetV2 and PatchGD's steps, where
# python3 imports torch, torchvision and numpy; no GPU needed (docs/gpu.md).
torch-check: all
	@python3 -c 'import torch, torchvision, numpy' 2>/dev/null || \
	  { echo "torch-check: python3 cannot import torch, torchvision and numpy (pip install torch torchvision numpy)"; exit 1; }
	@python3 tests/gpu/torch_compare.py --tool $(BUILD)/tests/gpu/gpu_compare --work $(BUILD)/torch-check --backends cpu

# The main job: synthetic slides, PatchGD and GD trained and evaluated, a table (launch/demo.sh).
demo: deps
	@$(MAKE) --no-print-directory all
	@bash launch/demo.sh

# libFuzzer targets: tests/fuzz/fuzz_NAME.c, seed corpus tests/corpus/NAME/ (replayed by make test).
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
fuzz: deps
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRC); do \
	  n=$$(basename $$f .c | sed 's/^fuzz_//'); \
	  clang -std=c11 -D_GNU_SOURCE -g -O1 -I. -Icommon -fsanitize=fuzzer,address,undefined \
	    $$f $(COMMON_SRC) $(LDLIBS) -o $(BUILD)/fuzz/fuzz_$$n || exit 1; \
	  mkdir -p $(BUILD)/fuzz/corpus_$$n; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s (seeds tests/corpus/$$n)"; \
	  $(BUILD)/fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    $(BUILD)/fuzz/corpus_$$n tests/corpus/$$n || exit 1; \
	done

clean:
	rm -rf $(BUILD)
